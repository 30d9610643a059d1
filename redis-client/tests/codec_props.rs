//! Property tests (proptest) of the RESP decoder: arbitrary bytes never panic and never grow
//! memory past the limits; encode → decode round-trips every frame, whole or split at any
//! point.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use redis_client::resp::{Decoder, Frame};

fn leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        "[a-zA-Z0-9 ]{0,20}".prop_map(|s| Frame::Simple(Bytes::from(s))),
        "[a-zA-Z0-9 ]{1,20}".prop_map(|s| Frame::Error(Bytes::from(s))),
        any::<i64>().prop_map(Frame::Integer),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|v| Frame::Bulk(Bytes::from(v))),
        Just(Frame::Null),
        any::<bool>().prop_map(Frame::Boolean),
        (-1e12f64..1e12).prop_map(Frame::Double),
        "-?[1-9][0-9]{0,40}".prop_map(|s| Frame::BigNumber(Bytes::from(s))),
        "[a-z ]{0,20}".prop_map(|s| Frame::Verbatim {
            format: *b"txt",
            data: Bytes::from(s)
        }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Set),
            proptest::collection::vec(inner.clone(), 1..8).prop_map(Frame::Push),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
        ]
    })
}

/// Decodes everything in `input`, fed in pieces of `chunk` bytes.
fn decode_chunked(input: &[u8], chunk: usize) -> Result<Vec<Frame>, String> {
    let mut d = Decoder::with_limits(1 << 20, 32);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(f) = d.decode(&mut buf).map_err(|e| e.to_string())? {
            out.push(f);
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        let _ = decode_chunked(&input, chunk);
    }

    #[test]
    fn protocol_shaped_garbage_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("*".to_string()), Just("$".to_string()), Just("%".to_string()), Just(">".to_string()),
        Just("|".to_string()), Just("=".to_string()), Just("\r\n".to_string()), Just("-1".to_string()),
        Just("2".to_string()), Just("999999999999".to_string()), Just("+OK".to_string()), Just(":".to_string()),
        "[a-z0-9]{0,4}",
    ], 0..40)) {
        let input = parts.concat();
        let _ = decode_chunked(input.as_bytes(), 3);
    }

    #[test]
    fn encode_then_decode_round_trips(frames in proptest::collection::vec(frame(), 1..6), chunk in 1usize..200) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let decoded = decode_chunked(&wire, chunk).unwrap();
        prop_assert_eq!(decoded.len(), frames.len());
        for (a, b) in decoded.iter().zip(&frames) {
            // NaN aside (not generated), doubles survive ryu's shortest representation.
            prop_assert_eq!(a, b);
        }
    }
}
