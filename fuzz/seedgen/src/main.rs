//! Writes `fuzz/seeds/<target>/` from frames and files the project itself produces (never
//! MovieLens data): `cargo run --manifest-path fuzz/seedgen/Cargo.toml`. The seeds are
//! committed; rerun this when a format changes.

use fedrecon_core::wire::*;
use fedrecon_core::{Metrics, RoundConfig, ScalarKind, SplitConfig, Update};
use std::path::{Path, PathBuf};

/// The wire targets' width (`fedrecon_fuzz::K`).
const K: usize = 50;
/// The board target's device (`firmware_board.rs`).
const BK: usize = 8;
const BN: u32 = 40;
const ITEMS: u32 = 60;

fn frame_stream(f: impl FnOnce(&mut dyn FnMut(&[u8]))) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut |b: &[u8]| out.extend_from_slice(b));
    out
}

/// A frame stream as the record format of `fedrecon_fuzz::records` (header + payload per
/// frame, CRC and COBS stripped).
fn to_records(stream: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 16];
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let (used, r) = next_frame(&stream[pos..], &mut buf);
        pos += used;
        let f = r.expect("seed frames are valid").expect("non-empty");
        let len = (3 + f.payload.len()) as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&[f.major, f.minor, f.kind as u8]);
        out.extend_from_slice(f.payload);
    }
    out
}

fn msg<const W: usize>(m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; max_frame_buf_len(W)];
    let n = m.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn hello(k: usize) -> Message<'static> {
    Message::Hello(Hello {
        protocol: Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
        },
        scalar: ScalarKind::F32,
        k: k as u32,
        max_examples: 300,
        max_rows: 300,
        max_frame: 2048,
        encodings: 7,
        firmware: FirmwareVersion::default(),
    })
}

fn value(i: usize, j: usize) -> f32 {
    ((i * 31 + j * 7) % 201) as f32 / 1000.0 - 0.1
}

/// Updates in every encoding, with and without biases, and one frame of every other kind.
fn wire_streams() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; update_buf_len(K)];
    for n in [0usize, 1, 8, 20] {
        for enc in RowEncoding::ALL {
            for bias in [false, true] {
                let items: Vec<u32> = (0..n as u32).map(|i| i * 5 + 1).collect();
                let d: Vec<[f32; K]> = (0..n)
                    .map(|i| core::array::from_fn(|j| value(i, j)))
                    .collect();
                let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
                let upd = Update::<f32, K> {
                    items: &items,
                    deltas: &d,
                    bias_deltas: bias.then_some(&b[..]),
                    weight: n as u32,
                    metrics: Metrics::default(),
                };
                let s = frame_stream(|sink| {
                    let info = UpdateInfo {
                        round: 3,
                        client: 77,
                    };
                    encode_update(info, &upd, enc, &mut buf, |f: &[u8]| {
                        sink(f);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                });
                out.push((format!("update-{n}-{enc:?}-bias{}", bias as u8), s));
            }
        }
    }
    let items: Vec<u32> = (0..12).collect();
    let m: Vec<[f32; K]> = (0..12)
        .map(|i| core::array::from_fn(|j| value(i, j)))
        .collect();
    out.push((
        "item-rows-i16".into(),
        frame_stream(|sink| {
            encode_item_rows::<f32, K, ()>(
                9,
                RowEncoding::I16,
                false,
                items.len(),
                |i| (items[i], &m[i], None),
                &mut buf,
                |f: &[u8]| {
                    sink(f);
                    Ok(())
                },
            )
            .unwrap();
        }),
    ));
    let singles = [
        ("hello", hello(K)),
        (
            "round-start",
            Message::RoundStart(RoundStart {
                round: 1,
                seed: 42,
                mode: RoundMode::Train,
                config: RoundConfig::default(),
                num_items: 3706,
                rows: 3,
                down: RowEncoding::I16,
                up: RowEncoding::I8,
            }),
        ),
        (
            "ratings",
            Message::Ratings(RatingsChunk {
                seq: 0,
                total: 3,
                ratings: (0..3)
                    .map(|i| Rating {
                        item: i,
                        rating: 4.0,
                    })
                    .collect(),
            }),
        ),
        (
            "eval-report",
            Message::EvalReport(EvalReport {
                round: 1,
                client: 2,
                metrics: Metrics::default(),
            }),
        ),
        (
            "top-k-request",
            Message::TopKRequest(TopKRequest { round: 1, k: 10 }),
        ),
        (
            "top-k-answer",
            Message::TopKAnswer(TopKAnswer {
                round: 1,
                items: (0..10)
                    .map(|i| Scored {
                        item: i,
                        score: 1.0 / (i + 1) as f32,
                    })
                    .collect(),
            }),
        ),
        (
            "error",
            Message::Error(ErrorMsg {
                round: 1,
                code: ErrorCode::Crc,
                detail: 0,
            }),
        ),
    ];
    for (name, m) in singles {
        out.push((name.into(), msg::<K>(&m)));
    }
    out
}

fn board_start(round: u32, mode: RoundMode, rows: u32, enc: RowEncoding) -> Message<'static> {
    Message::RoundStart(RoundStart {
        round,
        seed: 99,
        mode,
        config: RoundConfig {
            split: SplitConfig {
                shuffle_seed: Some(42),
                ..SplitConfig::default()
            },
            ..RoundConfig::default()
        },
        num_items: ITEMS,
        rows,
        down: enc,
        up: enc,
    })
}

/// Whole board sessions: hello, a client's ratings, a train, an evaluate and a reconstruct
/// round with their rows, and a top-k request over the catalogue.
fn board_sessions() -> Vec<(String, Vec<u8>)> {
    let m: Vec<[f32; BK]> = (0..ITEMS as usize)
        .map(|i| core::array::from_fn(|j| value(i, j) * 3.0))
        .collect();
    let items: Vec<u32> = (0..30).map(|i| (i * 17 + 5) % ITEMS).collect();
    let ratings: Vec<f32> = (0..30).map(|i| (1 + i % 5) as f32).collect();
    let mut rated = items.clone();
    rated.sort_unstable();
    let all: Vec<u32> = (0..ITEMS).collect();
    let mut buf = vec![0u8; max_frame_buf_len(BK)];
    let mut rows = |round: u32, enc: RowEncoding, ids: &[u32], out: &mut Vec<u8>| {
        encode_item_rows::<f32, BK, ()>(
            round,
            enc,
            false,
            ids.len(),
            |i| (ids[i], &m[ids[i] as usize], None),
            &mut buf,
            |f: &[u8]| {
                out.extend_from_slice(f);
                Ok(())
            },
        )
        .unwrap();
    };
    let mut out = Vec::new();
    for enc in RowEncoding::ALL {
        let mut s = msg::<BK>(&hello(BK));
        let mut rbuf = vec![0u8; max_frame_buf_len(BK)];
        encode_ratings(&items, &ratings, &mut rbuf, |f: &[u8]| {
            s.extend_from_slice(f);
            Ok::<(), ()>(())
        })
        .unwrap();
        let n = rated.len() as u32;
        for (round, mode) in [
            (1, RoundMode::Train),
            (2, RoundMode::Evaluate),
            (3, RoundMode::Reconstruct),
        ] {
            s.extend(msg::<BK>(&board_start(round, mode, n, enc)));
            rows(round, enc, &rated, &mut s);
        }
        s.extend(msg::<BK>(&Message::TopKRequest(TopKRequest {
            round: 3,
            k: 5,
        })));
        rows(3, enc, &all, &mut s);
        assert!(BN as usize >= rated.len());
        out.push((format!("session-{enc:?}"), s));
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let streams = wire_streams();
    let sessions = board_sessions();
    for (name, s) in streams.iter().chain(&sessions) {
        write(&root.join("wire_bytes"), name, s);
        // The first byte of a wire_messages input is the accumulator's read size.
        let mut r = vec![63u8];
        r.extend(to_records(s));
        write(&root.join("wire_messages"), name, &r);
    }
    for (name, s) in &sessions {
        for (mode, tag) in [(2 * 12, "f32"), (2 * 12 + 1, "q16")] {
            let mut r = vec![mode];
            r.extend(to_records(s));
            write(&root.join("firmware_board"), &format!("{name}-{tag}"), &r);
        }
    }
    println!("seeds written under {}", root.display());
}
