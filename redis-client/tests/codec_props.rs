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
    decode_bounded(input, chunk, 1 << 20, 32)
}

/// [`decode_chunked`] with explicit limits, checking after every step that the decoder holds
/// no more than they allow: the partial frame within `max_frame` bytes (at least 3 bytes per
/// token) and `max_depth` levels, and the buffer grown by at most what was fed plus one frame
/// (a declared length past the limit is refused before anything is reserved for it).
fn decode_bounded(
    input: &[u8],
    chunk: usize,
    max_frame: usize,
    max_depth: usize,
) -> Result<Vec<Frame>, String> {
    let mut d = Decoder::with_limits(max_frame, max_depth);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let step = d.decode(&mut buf).map_err(|e| e.to_string());
            let (tokens, depth) = d.held();
            assert!(
                d.pending() <= max_frame,
                "partial frame of {} bytes",
                d.pending()
            );
            assert!(tokens <= max_frame / 3 + 1, "{tokens} tokens held");
            assert!(depth <= max_depth, "{depth} levels open");
            // BytesMut may round a reservation up to twice what was asked.
            let bound = 2 * (fed + max_frame + 2) + 64;
            assert!(
                buf.capacity() <= bound,
                "buffer of {} bytes after {fed} fed",
                buf.capacity()
            );
            match step? {
                Some(f) => out.push(f),
                None => break,
            }
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        // Errors are fine; a panic or growth past the limits (asserted inside) is not.
        let _ = decode_bounded(&input, chunk, 256, 4);
    }

    #[test]
    fn protocol_shaped_garbage_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("*".to_string()), Just("$".to_string()), Just("%".to_string()), Just(">".to_string()),
        Just("|".to_string()), Just("=".to_string()), Just("\r\n".to_string()), Just("-1".to_string()),
        Just("2".to_string()), Just("999999999999".to_string()), Just("+OK".to_string()), Just(":".to_string()),
        "[a-z0-9]{0,4}",
    ], 0..40)) {
        let input = parts.concat();
        let _ = decode_bounded(input.as_bytes(), 3, 256, 4);
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
