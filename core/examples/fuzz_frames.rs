//! A stable-Rust fuzz harness for the frame decoder: feeds pseudo-random bytes, mutated valid
//! frame streams, and valid-CRC frames with mutated payloads through every decoding entry
//! point (`decode_update`, `next_frame` + `Message::decode` + row unpacking, and
//! `FrameAccumulator` with random split points), and fails on any panic.
//!
//! ```text
//! cargo run --release -p fedrecon-core --example fuzz_frames -- --seconds 15      # CI
//! cargo run --release -p fedrecon-core --example fuzz_frames -- --inputs 10000000 # long run
//! ```
//! Options: `--seconds S` (time budget), `--inputs N` (input budget; the first budget reached
//! stops the run), `--seed X`. Prints the number of inputs and the outcome counts.

use fedrecon_core::wire::*;
use fedrecon_core::{Metrics, RoundConfig, Update};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

const K: usize = 50;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Valid frame streams to mutate: updates in every encoding, with and without biases, and one
/// frame of every other kind.
fn corpus() -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; update_buf_len(K)];
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for n in [0usize, 1, 7, 8, 9, 20] {
        for enc in RowEncoding::ALL {
            for bias in [false, true] {
                let items: Vec<u32> = (0..n as u32).map(|i| i * 5 + 1).collect();
                let d: Vec<[f32; K]> = (0..n)
                    .map(|_| core::array::from_fn(|_| (rng.below(2001) as f32 - 1000.0) / 1e4))
                    .collect();
                let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
                let upd = Update::<f32, K> {
                    items: &items,
                    deltas: &d,
                    bias_deltas: bias.then_some(&b[..]),
                    weight: n as u32,
                    metrics: Metrics::default(),
                };
                let mut frames = Vec::new();
                encode_update(
                    UpdateInfo {
                        round: 3,
                        client: 77,
                    },
                    &upd,
                    enc,
                    &mut buf,
                    |f: &[u8]| {
                        frames.push(f.to_vec());
                        Ok::<(), ()>(())
                    },
                )
                .unwrap();
                out.push(frames);
            }
        }
    }
    let mut mbuf = vec![0u8; max_frame_buf_len(K)];
    let msgs = [
        Message::Hello(Hello {
            protocol: Version { major: 1, minor: 0 },
            scalar: fedrecon_core::ScalarKind::F32,
            k: K as u32,
            max_examples: 300,
            max_rows: 300,
            max_frame: 2048,
            encodings: 7,
            firmware: FirmwareVersion::default(),
        }),
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
        Message::EvalReport(EvalReport {
            round: 1,
            client: 2,
            metrics: Metrics::default(),
        }),
        Message::TopKRequest(TopKRequest { round: 1, k: 10 }),
        Message::TopKAnswer(TopKAnswer {
            round: 1,
            items: (0..10)
                .map(|i| Scored {
                    item: i,
                    score: 1.0 / (i + 1) as f32,
                })
                .collect(),
        }),
        Message::Error(ErrorMsg {
            round: 1,
            code: ErrorCode::Crc,
            detail: None,
        }),
    ];
    for m in &msgs {
        let n = m.encode(&mut mbuf).unwrap();
        out.push(vec![mbuf[..n].to_vec()]);
    }
    out
}

fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.byte();
            }
            2 => {
                let i = rng.below(len + 1);
                v.insert(i, if rng.below(4) == 0 { 0 } else { rng.byte() });
            }
            3 if len > 0 => {
                v.remove(rng.below(len));
            }
            4 => v.truncate(rng.below(len + 1)),
            5 if len > 1 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            6 if len > 0 => {
                // Interesting values for lengths, counts and codes.
                let i = rng.below(len);
                v[i] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF][rng.below(6)];
            }
            _ => {}
        }
    }
}

/// Re-frames a mutated payload of a valid frame with a correct CRC (reaches layer two).
fn reframe(rng: &mut Rng, frame: &[u8], buf: &mut [u8], out: &mut Vec<u8>) {
    let (_, res) = next_frame(frame, buf);
    let Ok(Some(f)) = res else { return };
    let mut header = [f.major, f.minor, f.kind as u8];
    let mut payload = f.payload.to_vec();
    mutate(rng, &mut payload);
    if rng.below(8) == 0 {
        header[rng.below(3)] = rng.byte();
    }
    let mut fb = vec![0u8; frame_buf_len(payload.len() + 16)];
    if let Ok(n) = encode_frame_raw(header, &mut fb, |o| {
        o[..payload.len()].copy_from_slice(&payload);
        Ok(payload.len())
    }) {
        out.extend_from_slice(&fb[..n]);
    }
}

fn make_input(rng: &mut Rng, corpus: &[Vec<Vec<u8>>], buf: &mut [u8], out: &mut Vec<u8>) {
    out.clear();
    match rng.below(6) {
        0 => {
            let n = rng.below(2500);
            let zeros = rng.below(64) + 1;
            out.extend((0..n).map(|_| if rng.below(zeros) == 0 { 0 } else { rng.byte() }));
        }
        1 | 2 => {
            for f in &corpus[rng.below(corpus.len())] {
                out.extend_from_slice(f);
            }
            mutate(rng, out);
        }
        3 => {
            // Reordered, dropped or duplicated frames of a valid stream.
            let s = &corpus[rng.below(corpus.len())];
            for _ in 0..s.len() + rng.below(2) {
                out.extend_from_slice(&s[rng.below(s.len())]);
            }
        }
        _ => {
            let s = &corpus[rng.below(corpus.len())];
            let pick = rng.below(s.len());
            for (i, f) in s.iter().enumerate() {
                if i == pick {
                    reframe(rng, f, buf, out);
                } else {
                    out.extend_from_slice(f);
                }
            }
        }
    }
}

fn outcome<T>(r: &Result<T, WireError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(WireError::Crc { .. }) => "crc",
        Err(WireError::Truncated) => "truncated",
        Err(WireError::TooLarge { .. }) => "too_large",
        Err(WireError::Cobs) => "cobs",
        Err(WireError::UnsupportedVersion { .. }) => "version",
        Err(WireError::UnknownKind { .. }) => "unknown_kind",
        Err(WireError::UnexpectedKind { .. }) => "unexpected_kind",
        Err(WireError::BadChunkSequence { .. }) => "chunk_sequence",
        Err(WireError::DimensionMismatch { .. }) => "dimension",
        Err(WireError::Decode) => "decode",
        Err(WireError::TrailingData) => "trailing",
        Err(WireError::InvalidValue { .. }) => "invalid_value",
        Err(_) => "other",
    }
}

/// Runs every decoder over `input`; returns `decode_update`'s outcome.
fn run_one(
    input: &[u8],
    buf: &mut [u8],
    acc: &mut FrameAccumulator<{ max_frame_buf_len(K) }>,
    split: usize,
) -> &'static str {
    let mut rows = 0u32;
    let res = decode_update::<K>(input, buf, |_, d, b| {
        assert!(d.iter().all(|x| x.is_finite()) && b.is_none_or(f32::is_finite));
        rows += 1;
    });
    if let Ok(s) = &res {
        assert_eq!(s.rows, rows);
    }
    let o = outcome(&res);

    // Frame by frame, typed.
    let mut pos = 0;
    while pos < input.len() {
        let (used, r) = next_frame(&input[pos..], buf);
        assert!(used > 0 && used <= input.len() - pos);
        pos += used;
        if let Ok(Some(frame)) = r
            && let Ok(Message::ItemRows(c) | Message::UpdateRows(c)) = Message::decode::<K>(&frame)
        {
            for (_, d, b) in c.rows::<K>().flatten() {
                assert!(d.iter().all(|x| x.is_finite()) && b.is_none_or(f32::is_finite));
            }
        }
    }

    // The accumulator, fed in pieces.
    acc.reset();
    for piece in input.chunks(split.max(1)) {
        let mut rest = piece;
        let mut guard = 0;
        loop {
            guard += 1;
            assert!(guard <= piece.len() + 2, "accumulator made no progress");
            match acc.feed(rest) {
                Feed::Consumed => break,
                Feed::Frame { frame, rest: r } => {
                    let _ = Message::decode::<K>(&frame);
                    assert!(r.len() < rest.len());
                    rest = r;
                }
                Feed::Error { rest: r, .. } => {
                    assert!(r.len() < rest.len());
                    rest = r;
                }
            }
        }
    }
    o
}

fn main() {
    let mut seconds = f64::INFINITY;
    let mut inputs = u64::MAX;
    let mut seed = 0xF00D_u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seconds" => seconds = v.parse().expect("--seconds S"),
            "--inputs" => inputs = v.parse().expect("--inputs N"),
            "--seed" => seed = v.parse().expect("--seed X"),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    if seconds.is_infinite() && inputs == u64::MAX {
        seconds = 15.0;
    }
    let budget = Duration::from_secs_f64(seconds.min(1e9));
    let corpus = corpus();
    let mut rng = Rng(seed | 1);
    let mut buf = vec![0u8; max_frame_buf_len(K)];
    let mut acc = Box::new(FrameAccumulator::<{ max_frame_buf_len(K) }>::new());
    let mut input = Vec::with_capacity(8192);
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut bytes = 0u64;
    let start = Instant::now();
    let mut n = 0u64;
    while n < inputs {
        if n.is_multiple_of(4096) && start.elapsed() >= budget {
            break;
        }
        make_input(&mut rng, &corpus, &mut buf, &mut input);
        let split = 1 + rng.below(300);
        let r = catch_unwind(AssertUnwindSafe(|| {
            run_one(&input, &mut buf, &mut acc, split)
        }));
        match r {
            Ok(o) => *counts.entry(o).or_default() += 1,
            Err(_) => {
                eprintln!("PANIC on input #{n} (seed {seed}): {input:02x?}");
                std::process::exit(1);
            }
        }
        bytes += input.len() as u64;
        n += 1;
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "fuzz_frames: {n} inputs ({:.1} MB) in {t:.1} s ({:.0} inputs/s), 0 panics",
        bytes as f64 / 1e6,
        n as f64 / t
    );
    println!("decode_update outcomes: {counts:?}");
}
