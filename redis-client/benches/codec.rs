//! Our RESP codec against `redis-protocol` (fred's codec), side by side: decoding mixed reply
//! streams (RESP2 and RESP3), encoding commands, encoding reply frames.
//!
//! `cargo bench -p redis-client --bench codec`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis_client::resp::{Decoder, Frame, encode_command};
use redis_protocol::resp2::types::BytesFrame as P2;
use redis_protocol::resp3::types::BytesFrame as P3;

const REPEAT: usize = 200;

/// A reply stream like a busy client sees: OKs, 64-byte values, integers, arrays, nulls, errors.
fn resp2_corpus() -> BytesMut {
    let value = "v".repeat(64);
    let mut one = format!("+OK\r\n${}\r\n{value}\r\n:123456\r\n*10\r\n", value.len());
    for i in 0..10 {
        one.push_str(&format!("$16\r\nmember:{i:09}\r\n"));
    }
    one.push_str("$-1\r\n-ERR wrong number of arguments for 'get' command\r\n");
    BytesMut::from(one.repeat(REPEAT).as_bytes())
}

fn resp3_corpus() -> BytesMut {
    // RESP3 servers send `_` for null.
    let mut c = BytesMut::from(
        String::from_utf8(resp2_corpus().to_vec())
            .unwrap()
            .replace("$-1\r\n", "_\r\n")
            .as_bytes(),
    );
    let extra = "%2\r\n+field\r\n:1\r\n+other\r\n,3.14\r\n#t\r\n_\r\n>3\r\n+message\r\n$4\r\nchan\r\n$5\r\nhello\r\n".repeat(REPEAT);
    c.extend_from_slice(extra.as_bytes());
    c
}

fn decode(c: &mut Criterion) {
    let corpus2 = resp2_corpus();
    let frames2 = {
        let mut d = Decoder::new();
        let mut b = corpus2.clone();
        let mut n = 0;
        while d.decode(&mut b).unwrap().is_some() {
            n += 1;
        }
        n
    };
    let mut g = c.benchmark_group("decode_resp2_mixed");
    g.throughput(Throughput::Elements(frames2));
    g.bench_function("ours", |b| {
        b.iter(|| {
            let mut buf = corpus2.clone();
            let mut d = Decoder::new();
            while let Some(f) = d.decode(&mut buf).unwrap() {
                black_box(f);
            }
        })
    });
    g.bench_function("redis_protocol", |b| {
        b.iter(|| {
            let mut buf = corpus2.clone();
            while let Some((f, _, _)) =
                redis_protocol::resp2::decode::decode_bytes_mut(&mut buf).unwrap()
            {
                black_box(f);
            }
        })
    });
    g.finish();

    let corpus3 = resp3_corpus();
    let mut g = c.benchmark_group("decode_resp3_mixed");
    g.throughput(Throughput::Elements(frames2 + 5 * REPEAT as u64));
    g.bench_function("ours", |b| {
        b.iter(|| {
            let mut buf = corpus3.clone();
            let mut d = Decoder::new();
            while let Some(f) = d.decode(&mut buf).unwrap() {
                black_box(f);
            }
        })
    });
    g.bench_function("redis_protocol", |b| {
        b.iter(|| {
            let mut buf = corpus3.clone();
            while let Some((f, _, _)) =
                redis_protocol::resp3::decode::complete::decode_bytes_mut(&mut buf).unwrap()
            {
                black_box(f);
            }
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let key = b"user:000001234".to_vec();
    let value = vec![b'x'; 64];
    let mut g = c.benchmark_group("encode_set_command");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("ours", |b| {
        let mut out = BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for _ in 0..1000 {
                encode_command(&mut out, &[&b"SET"[..], &key, &value]);
            }
            black_box(&out);
        })
    });
    // The peer gets its frame built once, outside the loop: only encoding is measured.
    let frame = P2::Array(vec![
        P2::BulkString(Bytes::from_static(b"SET")),
        P2::BulkString(Bytes::from(key.clone())),
        P2::BulkString(Bytes::from(value.clone())),
    ]);
    g.bench_function("redis_protocol", |b| {
        let mut out = BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for _ in 0..1000 {
                redis_protocol::resp2::encode::extend_encode(&mut out, &frame, false).unwrap();
            }
            black_box(&out);
        })
    });
    g.finish();

    // Reply frames, as a server (objstore's RESP port) writes them.
    let ours: Vec<Frame> = {
        let mut d = Decoder::new();
        let mut b = resp3_corpus();
        std::iter::from_fn(|| d.decode(&mut b).unwrap()).collect()
    };
    let peer: Vec<P3> = {
        let mut b = resp3_corpus();
        std::iter::from_fn(|| {
            redis_protocol::resp3::decode::complete::decode_bytes_mut(&mut b)
                .unwrap()
                .map(|x| x.0)
        })
        .collect()
    };
    let mut g = c.benchmark_group("encode_reply_frames");
    g.throughput(Throughput::Elements(ours.len() as u64));
    g.bench_function("ours", |b| {
        let mut out = BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for f in &ours {
                f.encode(&mut out);
            }
            black_box(&out);
        })
    });
    g.bench_function("redis_protocol", |b| {
        let mut out = BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for f in &peer {
                redis_protocol::resp3::encode::complete::extend_encode(&mut out, f, false).unwrap();
            }
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
