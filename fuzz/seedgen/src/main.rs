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

/// [`to_records`] with every record marked genuine for `firmware_keyed_board` (its first
/// header byte, the major, replaced by 0xFF: the target seals the kind and payload).
fn sealed_records(stream: &[u8]) -> Vec<u8> {
    let mut recs = to_records(stream);
    let mut pos = 0;
    while pos + 2 < recs.len() {
        let len = u16::from_le_bytes([recs[pos], recs[pos + 1]]) as usize;
        recs[pos + 2] = 0xFF;
        pos += 2 + len;
    }
    recs
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
                detail: Some(0),
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

/// Checkpoints of every optimizer kind, as `train --checkpoint-every` writes them.
fn checkpoints() -> Vec<(String, Vec<u8>)> {
    use fedrecon_host_sim::config::{Config, Preset};
    use fedrecon_host_sim::output::checkpoint::Checkpoint;
    let cfg = Config::preset(Preset::Tutorial).to_toml_string();
    let jsonl = "{\"kind\":\"train\",\"round\":1,\"loss\":1.5,\"rating_accuracy\":0.25,\"seconds\":0.01,\"bytes_down\":10,\"bytes_up\":20}\n";
    let vecs: [(u8, u32, Vec<Vec<f32>>); 5] = [
        (0, 0, vec![]),
        (1, 3, vec![vec![0.5; 6], vec![0.25; 6]]),
        (2, 0, vec![vec![0.1; 6]]),
        (3, 3, vec![vec![0.5; 6], vec![1e-6; 6]]),
        (4, 0, vec![vec![-0.5; 6]]),
    ];
    vecs.into_iter()
        .map(|(tag, t, opt_vecs)| {
            let ck = Checkpoint {
                round: 3,
                config_toml: cfg.clone(),
                data_dir: "/data/synthetic".into(),
                fingerprint: [8, 200, 1, 25, 1, 25, 6],
                data_digest: 0x9E37_79B9_7F4A_7C15,
                params: (0..6).map(|i| i as f32 * 0.125 - 0.3).collect(),
                opt_tag: tag,
                opt_t: t,
                opt_vecs,
                metrics_jsonl: jsonl.into(),
                metrics_csv: "kind,round\ntrain,1\n".into(),
            };
            (format!("optimizer-{tag}"), ck.encode())
        })
        .collect()
}

/// NPY files as `train` writes `items.npy`, and a version-2 header.
fn npys() -> Vec<(String, Vec<u8>)> {
    use fedrecon_host_sim::output::npy_header;
    let mut out = Vec::new();
    for (r, c) in [(3usize, 4usize), (0, 8), (5, 1)] {
        let mut b = npy_header(&[r, c]);
        for i in 0..r * c {
            b.extend_from_slice(&(i as f32 * 0.5).to_le_bytes());
        }
        out.push((format!("items-{r}x{c}"), b));
    }
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n";
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    v2.extend_from_slice(dict.as_bytes());
    for i in 0..4 {
        v2.extend_from_slice(&(i as f32).to_le_bytes());
    }
    out.push(("v2-2x2".into(), v2));
    out
}

/// Model bundles (`model.npz`) as `train` writes them: `best` with biases, and `tutorial`
/// without, with an empty catalogue too.
fn bundles() -> Vec<(String, Vec<u8>)> {
    use fedrecon_host_sim::config::{Config, Preset};
    use fedrecon_host_sim::output::bundle::ModelBundle;
    let mut out = Vec::new();
    for (preset, n) in [
        (Preset::Best, 5usize),
        (Preset::Tutorial, 3),
        (Preset::Tutorial, 0),
    ] {
        let mut cfg = Config::preset(preset);
        cfg.model.k = 8;
        let b = ModelBundle {
            config_toml: cfg.to_toml_string(),
            k: 8,
            items: (0..n * 8).map(|i| i as f32 * 0.125 - 1.0).collect(),
            item_biases: (0..n)
                .map(|i| {
                    if cfg.model.item_bias {
                        i as f32 * 0.1
                    } else {
                        0.0
                    }
                })
                .collect(),
            global_mean: if cfg.model.global_mean { 3.58 } else { 0.0 },
            item_ids: (0..n as u32).map(|i| i * 7 + 1).collect(),
            data_digest: 0x0123_4567_89AB_CDEF,
            rounds: 3,
            implicit: Vec::new(),
        };
        out.push((format!("{preset}-{n}"), b.encode().unwrap()));
    }
    out
}

/// Every preset's full configuration as `fedrecon config` prints it, and variants with every
/// server optimizer, differential privacy, compressed links and the reliability knobs.
fn configs() -> Vec<(String, Vec<u8>)> {
    use fedrecon_host_sim::config::{Config, Preset};
    let mut out = Vec::new();
    for p in [Preset::Tutorial, Preset::Paper, Preset::Best] {
        out.push((format!("preset-{p}"), Config::preset(p).to_toml_string()));
    }
    let base = Config::preset(Preset::Paper).to_toml_string();
    let sgd = "[server]\noptimizer = \"sgd\"\nlr = 1.0\n";
    for (name, server) in [
        (
            "momentum",
            "[server]\noptimizer = \"momentum\"\nlr = 1.0\nmomentum = 0.9\nnesterov = true\n",
        ),
        ("adam", "[server]\noptimizer = \"adam\"\nlr = 0.01\n"),
        (
            "yogi",
            "[server]\noptimizer = \"yogi\"\nlr = 0.01\ninitial_accumulator = 1e-6\n",
        ),
        ("adagrad", "[server]\noptimizer = \"adagrad\"\nlr = 0.1\n"),
    ] {
        out.push((format!("server-{name}"), base.replace(sgd, server)));
    }
    out.push((
        "privacy".into(),
        "preset = \"tutorial\"\n[privacy]\nenabled = true\nnoise_multiplier = 1.0\nclip = 0.5\nadaptive_clip = true\ntarget_quantile = 0.5\ndelta = 1e-5\n".into(),
    ));
    out.push((
        "comm".into(),
        "preset = \"paper\"\n[comm]\ndownlink = \"full\"\nupdate_mode = \"padded\"\npad_rows = 150\nuplink = \"i8\"\nstochastic_rounding = true\n".into(),
    ));
    out.push((
        "reliability".into(),
        "preset = \"tutorial\"\n[reliability]\ncheckpoint_every = 5\ndropout = 0.1\nover_select = 0.2\nmin_clients = 3\nmax_update_norm = 100.0\nmax_weight = 300\n[run]\nthreads = \"none\"\nrounds = 7\n".into(),
    ));
    out.into_iter().map(|(n, s)| (n, s.into_bytes())).collect()
}

/// Small synthetic rating and movie files in every MovieLens format (never MovieLens data):
/// format byte, ratings, NUL, movies.
fn movielens_files() -> Vec<(String, Vec<u8>)> {
    let mut dat = String::new();
    let mut tab = String::new();
    let mut csv = String::from("userId,movieId,rating,timestamp\n");
    for u in 1..=6u32 {
        for j in 0..5u32 {
            let item = (u * 7 + j * 3) % 11 + 1;
            let r = 1 + (u + j) % 5;
            dat.push_str(&format!("{u}::{item}::{r}::{}\n", 978_300_000 + j));
            tab.push_str(&format!("{u}\t{item}\t{r}\t{}\r\n", 881_250_000 + j));
            let value = if j % 2 == 0 {
                format!("{}.5", r - 1)
            } else {
                format!("{r}.0")
            };
            csv.push_str(&format!("{u},{item},{value},{}\n", 1_100_000_000 + j));
        }
    }
    let mut movies_dat = String::new();
    let mut movies_tab = String::new();
    let mut movies_csv = String::from("movieId,title,genres\n");
    for i in 1..=11u32 {
        movies_dat.push_str(&format!("{i}::Film {i} (1999)::Drama|Comedy\n"));
        movies_tab.push_str(&format!(
            "{i}|Film {i} (1999)|01-Jan-1999||http://x|0|1|0\n"
        ));
        movies_csv.push_str(&if i % 3 == 0 {
            format!("{i},\"Film, {i} (1999)\",Drama\n")
        } else {
            format!("{i},Film {i} (1999),Comedy|Drama\n")
        });
    }
    let mut out = Vec::new();
    for (f, name, r, m) in [
        (0u8, "dat", dat, movies_dat),
        (1, "tab", tab, movies_tab),
        (2, "csv", csv, movies_csv),
    ] {
        let mut with = vec![f];
        with.extend_from_slice(r.as_bytes());
        out.push((format!("{name}-ratings"), with.clone()));
        with.push(0);
        with.extend_from_slice(m.as_bytes());
        out.push((format!("{name}-with-movies"), with));
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
        // The keyed board's seeds: the same session, every frame genuine (sealed by the
        // target's server: a record whose first byte is 0xFF).
        let mut r = vec![12u8];
        r.extend(sealed_records(s));
        write(&root.join("firmware_keyed_board"), name, &r);
    }
    // Seeds that the readers refuse would start the fuzzer in the error paths only.
    for (name, b) in checkpoints() {
        fedrecon_host_sim::output::checkpoint::Checkpoint::decode(&b).expect(&name);
    }
    for (name, b) in npys() {
        fedrecon_host_sim::output::parse_npy(&b).expect(&name);
    }
    for (name, b) in bundles() {
        fedrecon_host_sim::output::bundle::ModelBundle::decode(&b).expect(&name);
    }
    for (name, b) in configs() {
        let text = String::from_utf8(b).unwrap();
        let cfg = fedrecon_host_sim::config::Config::from_toml_str(&text, &name, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, b) in movielens_files() {
        use fedrecon_host_sim::data::movielens::{Format, parse};
        let p = std::path::Path::new(&name);
        let (ratings, movies) = match b[1..].iter().position(|&x| x == 0) {
            Some(i) => (&b[1..1 + i], Some(&b[2 + i..])),
            None => (&b[1..], None),
        };
        parse(
            Format::ALL[usize::from(b[0])],
            (p, ratings),
            movies.map(|m| (p, m)),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (target, seeds) in [
        ("checkpoint", checkpoints()),
        ("npy", npys()),
        ("model_bundle", bundles()),
        ("config_toml", configs()),
        ("movielens", movielens_files()),
    ] {
        for (name, bytes) in seeds {
            write(&root.join(target), &name, &bytes);
        }
    }
    println!("seeds written under {}", root.display());
}
