use super::*;
use proptest::prelude::*;

/// Some MUD-like text with repetition, so it compresses.
fn sample(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut i = 0u32;
    while v.len() < len {
        v.extend_from_slice(format!("Room {i}: a dusty hall.\r\n").as_bytes());
        v.extend_from_slice(&[0xff, 0xf9]);
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12345) % 997;
    }
    v.truncate(len);
    v
}

fn deflate_all(data: &[u8], writes: &[usize], level: u32) -> Vec<u8> {
    let mut d = Deflater::new(level);
    let mut out = Vec::new();
    let mut pos = 0;
    for &w in writes {
        let end = (pos + w).min(data.len());
        d.compress(&data[pos..end], &mut out);
        pos = end;
    }
    d.compress(&data[pos..], &mut out);
    d.finish(&mut out);
    out
}

/// Inflates `wire` fed in chunks of the given sizes (cycled); returns
/// (output, offset just past the stream end if seen).
fn inflate_chunked(wire: &[u8], chunks: &[usize], max_out: usize) -> (Vec<u8>, Option<usize>) {
    let mut inf = Inflater::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut ci = 0;
    while pos < wire.len() {
        let size = chunks[ci % chunks.len()].max(1);
        ci += 1;
        let chunk = &wire[pos..(pos + size).min(wire.len())];
        let mut off = 0;
        loop {
            let before = out.len();
            match inf.decompress(&chunk[off..], &mut out, max_out).unwrap() {
                Progress::NeedInput => {
                    assert!(out.len() - before <= max_out);
                    break;
                }
                Progress::OutputFull(n) => {
                    assert_eq!(out.len() - before, max_out);
                    off += n;
                }
                Progress::StreamEnd(n) => return (out, Some(pos + off + n)),
            }
        }
        pos += chunk.len();
    }
    (out, None)
}

#[test]
fn round_trip_various_chunkings() {
    let data = sample(200_000);
    for writes in [&[1usize][..], &[7, 300, 5000], &[65536], &[200_000]] {
        let wire = deflate_all(&data, writes, 6);
        for chunks in [&[1usize][..], &[3, 1000], &[4096], &[wire.len()]] {
            for max_out in [1, 100, 1 << 20] {
                if chunks == [1] && max_out == 1 && writes == [1] {
                    continue; // too slow byte-by-byte-by-byte; covered elsewhere
                }
                let (out, end) = inflate_chunked(&wire, chunks, max_out);
                assert_eq!(end, Some(wire.len()));
                assert!(
                    out == data,
                    "writes {writes:?} chunks {chunks:?} max {max_out}"
                );
            }
        }
    }
}

#[test]
fn each_write_decodable_immediately() {
    let mut d = Deflater::new(9);
    let mut inf = Inflater::new();
    let mut got = Vec::new();
    for msg in [&b"look\r\n"[..], b"You see a lamp.\r\n", b"", b"> \xff\xf9"] {
        let mut wire = Vec::new();
        d.compress(msg, &mut wire);
        assert_eq!(wire.is_empty(), msg.is_empty());
        got.clear();
        let p = inf.decompress(&wire, &mut got, 1 << 16).unwrap();
        assert_eq!(p, Progress::NeedInput);
        assert_eq!(got, msg);
    }
}

#[test]
fn end_of_stream_with_trailing_plain_bytes() {
    let data = sample(5000);
    let mut wire = deflate_all(&data, &[1000], 6);
    let end = wire.len();
    wire.extend_from_slice(b"\xff\xfb\x56plain text after");
    for split in 0..wire.len() {
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        let p1 = inf
            .decompress(&wire[..split], &mut out, usize::MAX)
            .unwrap();
        let rest_at = match p1 {
            Progress::StreamEnd(n) => n,
            Progress::NeedInput => {
                match inf
                    .decompress(&wire[split..], &mut out, usize::MAX)
                    .unwrap()
                {
                    Progress::StreamEnd(n) => split + n,
                    other => panic!("split {split}: {other:?}"),
                }
            }
            Progress::OutputFull(_) => unreachable!(),
        };
        assert_eq!(rest_at, end, "split {split}");
        assert_eq!(out, data);
        assert_eq!(
            inf.decompress(b"more", &mut out, 10).unwrap(),
            Progress::StreamEnd(0)
        );
    }
    // And a second stream after reset.
    let mut inf = Inflater::new();
    let mut out = Vec::new();
    assert_eq!(
        inf.decompress(&wire, &mut out, usize::MAX).unwrap(),
        Progress::StreamEnd(end)
    );
    inf.reset();
    out.clear();
    let again = deflate_all(b"second", &[], 1);
    assert_eq!(
        inf.decompress(&again, &mut out, 100).unwrap(),
        Progress::StreamEnd(again.len())
    );
    assert_eq!(out, b"second");
}

#[test]
fn zip_bomb_is_capped() {
    let bomb_src = vec![0u8; 50 << 20];
    let wire = deflate_all(&bomb_src, &[], 9);
    assert!(wire.len() < 100_000);
    let mut inf = Inflater::new();
    let mut out = Vec::new();
    let cap = 64 * 1024;
    let mut pos = 0;
    let mut calls = 0;
    let mut total = 0usize;
    loop {
        out.clear();
        let p = inf.decompress(&wire[pos..], &mut out, cap).unwrap();
        assert!(out.len() <= cap);
        assert!(
            out.capacity() <= cap + INFLATE_STEP,
            "buffer grew to {}",
            out.capacity()
        );
        total += out.len();
        calls += 1;
        match p {
            Progress::OutputFull(n) => {
                assert_eq!(out.len(), cap);
                pos += n;
            }
            Progress::StreamEnd(n) => {
                assert_eq!(pos + n, wire.len());
                break;
            }
            Progress::NeedInput => panic!("stream should end"),
        }
    }
    assert_eq!(total, bomb_src.len());
    // The last full step may already see the stream end.
    assert!(calls <= bomb_src.len() / cap + 1);
}

#[test]
fn zero_max_out_consumes_nothing() {
    let wire = deflate_all(b"hello", &[], 6);
    let mut inf = Inflater::new();
    let mut out = Vec::new();
    assert_eq!(
        inf.decompress(&wire, &mut out, 0).unwrap(),
        Progress::OutputFull(0)
    );
    assert!(out.is_empty());
}

#[test]
fn corrupt_input_is_error() {
    let mut out = Vec::new();
    // Bad zlib header.
    assert!(Inflater::new()
        .decompress(b"not zlib at all", &mut out, 1000)
        .is_err());
    // Valid header, invalid block type (BTYPE=11).
    assert!(Inflater::new()
        .decompress(&[0x78, 0x9c, 0xff, 0xff], &mut out, 1000)
        .is_err());
    // Bad checksum.
    let mut wire = deflate_all(b"hello hello hello", &[], 6);
    let n = wire.len();
    wire[n - 1] ^= 1;
    let e = Inflater::new()
        .decompress(&wire, &mut out, 1000)
        .unwrap_err();
    assert!(e.to_string().contains("corrupt"));
    // Flipped bits in the middle of a longer stream.
    let data = sample(20_000);
    let mut wire = deflate_all(&data, &[], 6);
    let mid = wire.len() / 2;
    wire[mid] ^= 0x55;
    wire[mid + 1] ^= 0xaa;
    out.clear();
    let r = Inflater::new().decompress(&wire, &mut out, usize::MAX);
    assert!(r.is_err() || out != data, "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn round_trip_arbitrary_chunking(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        writes in proptest::collection::vec(1usize..500, 1..8),
        chunks in proptest::collection::vec(1usize..300, 1..8),
        max_out in 1usize..5000,
        level in 0u32..12,
    ) {
        let wire = deflate_all(&data, &writes, level);
        let (out, end) = inflate_chunked(&wire, &chunks, max_out);
        prop_assert_eq!(end, Some(wire.len()));
        prop_assert_eq!(out, data);
    }

    #[test]
    fn garbage_inflate_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..500),
        max_out in 0usize..2000,
    ) {
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        if let Ok(p) = inf.decompress(&data, &mut out, max_out) {
            prop_assert!(out.len() <= max_out);
            match p {
                Progress::OutputFull(n) | Progress::StreamEnd(n) => prop_assert!(n <= data.len()),
                Progress::NeedInput => {}
            }
        }
    }
}
