//! What the fuzz targets share: the input format of the targets that need valid frames, and
//! the checks every wire decoder must pass on any input.
//!
//! Raw bytes rarely survive a frame's CRC-32, so targets that must reach the typed decoders
//! read their input as *records* (a little-endian `u16` length, then that many bytes: a
//! frame's `[major, minor, kind]` header and its payload) and frame each record with a valid
//! CRC before decoding. `seedgen` writes real frames in this format.

use fedrecon_core::wire::{
    Feed, FrameAccumulator, Framing, Message, decode_update, decode_update_in, encode_frame_raw,
    frame_buf_len, max_frame_buf_len, next_frame,
};

/// The embedding width the wire targets decode for (the tutorial's).
pub const K: usize = 50;

/// Splits `data` into records: a little-endian `u16` length, then that many bytes (the last
/// record may be shorter than its length says).
pub fn records(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let rest = &data[2..];
        let (rec, tail) = rest.split_at(len.min(rest.len()));
        out.push(rec);
        data = tail;
    }
    out
}

/// Appends `record` (header and payload) to `out` as one frame with a valid CRC; records
/// shorter than a header are skipped.
pub fn push_frame(record: &[u8], out: &mut Vec<u8>) {
    let Some((header, payload)) = record.split_first_chunk::<3>() else {
        return;
    };
    let mut buf = vec![0u8; frame_buf_len(payload.len())];
    let n = encode_frame_raw(*header, &mut buf, |o| {
        o[..payload.len()].copy_from_slice(payload);
        Ok(payload.len())
    })
    .expect("frame_buf_len holds the payload");
    out.extend_from_slice(&buf[..n]);
}

/// The byte stream of `data`'s records, each framed with a valid CRC.
pub fn framed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records(data) {
        push_frame(r, &mut out);
    }
    out
}

/// Runs every wire decoding entry point over `input` and asserts what must hold for any
/// input: `decode_update` visits finite values and as many rows as it reports, every frame
/// consumes input, and the accumulator (fed `split` bytes at a time) always makes progress.
pub fn check_stream(input: &[u8], split: usize) {
    let mut buf = vec![0u8; max_frame_buf_len(K)];
    let mut rows = 0u32;
    let res = decode_update::<K>(input, &mut buf, |_, d, b| {
        assert!(d.iter().all(|x| x.is_finite()) && b.is_none_or(f32::is_finite));
        rows += 1;
    });
    if let Ok(s) = &res {
        assert_eq!(s.rows, rows);
    }

    // The same bytes as in-process packets (no COBS, no CRC): the second layer alone.
    let mut rows = 0u32;
    let res = decode_update_in::<K>(Framing::Packet, input, &mut buf, |_, d, b| {
        assert!(d.iter().all(|x| x.is_finite()) && b.is_none_or(f32::is_finite));
        rows += 1;
    });
    if let Ok(s) = &res {
        assert_eq!((s.rows, s.bytes), (rows, input.len()));
        assert!(s.payload < s.bytes);
    }

    let mut pos = 0;
    while pos < input.len() {
        let (used, r) = next_frame(&input[pos..], &mut buf);
        assert!(used > 0 && used <= input.len() - pos);
        pos += used;
        if let Ok(Some(frame)) = r {
            match Message::decode::<K>(&frame) {
                Ok(Message::ItemRows(c) | Message::UpdateRows(c)) => {
                    for (_, d, b) in c.rows::<K>().flatten() {
                        assert!(d.iter().all(|x| x.is_finite()) && b.is_none_or(f32::is_finite));
                    }
                }
                Ok(m) => {
                    // What decodes must encode again (the device answers with these types).
                    let mut out = vec![0u8; max_frame_buf_len(K)];
                    let _ = m.encode(&mut out);
                }
                Err(_) => {}
            }
        }
    }

    let mut acc = Box::new(FrameAccumulator::<{ max_frame_buf_len(K) }>::new());
    for piece in input.chunks(split.max(1)) {
        let mut rest = piece;
        loop {
            match acc.feed(rest) {
                Feed::Consumed => break,
                Feed::Frame { frame, rest: r } => {
                    let _ = Message::decode::<K>(&frame);
                    assert!(r.len() < rest.len(), "accumulator made no progress");
                    rest = r;
                }
                Feed::Error { rest: r, .. } => {
                    assert!(r.len() < rest.len(), "accumulator made no progress");
                    rest = r;
                }
            }
        }
    }
}
