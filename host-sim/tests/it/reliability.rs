//! Issue 9 through the real binary and the engine: SIGKILL mid-run then `--resume` gives the
//! bit-identical model and each metrics row once; broken resumes fail cleanly leaving outputs
//! intact; dropouts skip rounds whole; hostile update bytes are rejected and change nothing.

use crate::common::{bin, fedrecon, snapshot, stderr};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fedrecon_core::wire::RowEncoding;
use fedrecon_core::{Metrics, Update};
use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::data::partition::partition;
use fedrecon_host_sim::round::Simulation;

/// 80 users × 25 ratings over 60 items.
fn synthetic(dir: &Path) {
    let mut text = String::new();
    let mut s = 7u64;
    for u in 1..=80u32 {
        for j in 0..25u32 {
            s = fedrecon_host_sim::seeds::splitmix64(s);
            let item = (u * 11 + j * 7) % 60 + 1;
            let r = 1 + (s % 5) as u32;
            writeln!(text, "{u}::{item}::{r}::{}", 1000 + j).unwrap();
        }
    }
    std::fs::write(dir.join("ratings.dat"), text).unwrap();
}

fn train_args<'a>(data: &'a str, out: &'a str, rounds: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--preset",
        "tutorial",
        "--max-clients",
        "none",
        "--rounds",
        rounds,
        "--clients-per-round",
        "10",
        "--k",
        "8",
        "--eval-every",
        "50",
        "--threads",
        "2",
        "--no-progress",
        "--no-plots",
        "--out",
        out,
    ]
}

/// metrics.jsonl rows without their wall-clock field.
fn rows(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

#[test]
fn sigkill_then_resume_is_bit_identical() {
    let data = tempfile::tempdir().unwrap();
    synthetic(data.path());
    let d = data.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (full, killed) = (tmp.path().join("full"), tmp.path().join("killed"));
    let rounds = "400";

    let o = fedrecon(&train_args(d, full.to_str().unwrap(), rounds));
    assert!(o.status.success(), "{}", stderr(&o));

    let mut args = train_args(d, killed.to_str().unwrap(), rounds);
    args.extend(["--checkpoint-every", "7"]);
    let mut child = bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Poll (generously) until the first checkpoint exists, then SIGKILL.
    let ck = killed.join("checkpoint.bin");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ck.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");
    assert!(
        !killed.join("items.npy").exists(),
        "killed after the end of the run"
    );
    let before = rows(&killed);
    assert!(before.len() < 400, "killed mid-run: {} rows", before.len());

    let o = fedrecon(&[
        "train",
        "--resume",
        killed.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let a = std::fs::read(full.join("items.npy")).unwrap();
    let b = std::fs::read(killed.join("items.npy")).unwrap();
    assert!(
        a == b,
        "resumed items.npy differs from the uninterrupted run's"
    );
    // Every row once, in order, with the same values (wall-clock time aside).
    let (ra, rb) = (rows(&full), rows(&killed));
    assert_eq!(ra, rb);
    let train_rounds: Vec<u64> = rb
        .iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| r["round"].as_u64().unwrap())
        .collect();
    assert_eq!(train_rounds, (1..=400).collect::<Vec<_>>());
    let csv = std::fs::read_to_string(killed.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + rb.len());
    assert_eq!(
        std::fs::read_to_string(full.join("config.toml")).unwrap(),
        std::fs::read_to_string(killed.join("config.toml"))
            .unwrap()
            .replace("checkpoint_every = 7", "checkpoint_every = 0")
    );
}

/// A finished checkpointed run to break in different ways.
fn checkpointed_run(tmp: &Path) -> (PathBuf, PathBuf) {
    let data = tmp.join("data");
    std::fs::create_dir(&data).unwrap();
    synthetic(&data);
    let out = tmp.join("run");
    let mut args = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "6");
    args.extend(["--checkpoint-every", "3"]);
    let o = fedrecon(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    (data, out)
}

#[test]
fn broken_resumes_fail_clearly_and_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, out) = checkpointed_run(tmp.path());
    let o = out.to_str().unwrap();

    // A config flag that contradicts the run.
    let before = snapshot(&out);
    let r = fedrecon(&["train", "--resume", o, "--rounds", "9", "--no-progress"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("run.rounds = 9"), "{}", stderr(&r));
    assert_eq!(snapshot(&out), before);
    // Matching flags and another thread count are fine (the run is complete: it re-evaluates).
    let r = fedrecon(&[
        "train",
        "--resume",
        o,
        "--rounds",
        "6",
        "--threads",
        "1",
        "--no-progress",
    ]);
    assert!(r.status.success(), "{}", stderr(&r));

    // An edited config.toml.
    let before = snapshot(&out);
    let cfg = out.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("seed = 42", "seed = 43")).unwrap();
    let r = fedrecon(&["train", "--resume", o, "--no-progress"]);
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("config.toml does not match") && stderr(&r).contains("run.seed"),
        "{}",
        stderr(&r)
    );
    std::fs::write(&cfg, text).unwrap();
    assert_eq!(snapshot(&out), before);

    // A corrupted checkpoint.
    let ck = out.join("checkpoint.bin");
    let mut bytes = std::fs::read(&ck).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&ck, &bytes).unwrap();
    let before = snapshot(&out);
    let r = fedrecon(&["train", "--resume", o, "--no-progress"]);
    assert!(!r.status.success());
    let e = stderr(&r);
    assert!(
        e.contains("checksum mismatch") && e.contains("checkpoint.bin"),
        "{e}"
    );
    assert_eq!(snapshot(&out), before);
    // Truncated.
    std::fs::write(&ck, &bytes[..100]).unwrap();
    let r = fedrecon(&["train", "--resume", o, "--no-progress"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("truncated"), "{}", stderr(&r));

    // No checkpoint at all.
    std::fs::remove_file(&ck).unwrap();
    let r = fedrecon(&["train", "--resume", o, "--no-progress"]);
    assert!(!r.status.success());
    assert!(stderr(&r).contains("no checkpoint"), "{}", stderr(&r));
    let r = fedrecon(&["train", "--resume", "/definitely/not/here", "--no-progress"]);
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("/definitely/not/here"),
        "{}",
        stderr(&r)
    );
}

#[test]
fn dropout_skips_whole_rounds_deterministically() {
    let data = tempfile::tempdir().unwrap();
    synthetic(data.path());
    let d = data.path().to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = tmp.path().join(name);
        let mut args = train_args(d, out.to_str().unwrap(), "30");
        args.extend([
            "--dropout",
            "0.5",
            "--min-clients",
            "6",
            "--over-select",
            "0.2",
        ]);
        let o = fedrecon(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        (rows(&out), std::fs::read(out.join("items.npy")).unwrap())
    };
    let (a, ia) = run("a");
    let (b, ib) = run("b");
    assert_eq!(a, b);
    assert_eq!(ia, ib);
    let train: Vec<_> = a.iter().filter(|r| r["kind"] == "train").collect();
    assert_eq!(train.len(), 30);
    let skipped: Vec<_> = train.iter().filter(|r| r["skipped"] == true).collect();
    assert!(!skipped.is_empty() && skipped.len() < 30, "{train:?}");
    for r in &train {
        let dropped = r["dropped"].as_u64().unwrap_or(0);
        let agg = r["aggregated"].as_u64().unwrap();
        // 12 sampled: the first 10 reports are aggregated, the rest surplus.
        if r["skipped"] != true {
            assert_eq!(
                agg + dropped + r["surplus"].as_u64().unwrap_or(0),
                12,
                "{r}"
            );
        }
        if r["skipped"] == true {
            assert_eq!(agg, 0);
            assert!(r["reason"].as_str().unwrap().contains("min_clients"), "{r}");
            assert!(12 - dropped < 6, "{r}");
        } else {
            assert!((6..=10).contains(&agg), "{r}");
        }
    }
}

fn engine_config() -> Config {
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.data.max_clients = None;
    cfg.model.k = 8;
    cfg.run.clients_per_round = 10;
    cfg.run.threads = Some(2);
    cfg
}

/// Frames of a well-formed update with hostile content (core's own encoder).
fn craft(round: u32, user: u32, items: &[u32], deltas: &[[f32; 8]], weight: u32) -> Vec<u8> {
    let u = Update::<f32, 8> {
        items,
        deltas,
        bias_deltas: None,
        weight,
        metrics: Metrics {
            loss_sum: 1.0,
            abs_err_sum: 1.0,
            correct: 1,
            count: 2,
        },
    };
    let mut buf = vec![0u8; fedrecon_core::wire::update_buf_len(8)];
    let mut out = Vec::new();
    // What an in-process device hands the server: the link's packets.
    fedrecon_core::wire::encode_update_in(
        fedrecon_host_sim::comm::transport::VIRTUAL_LINK,
        fedrecon_core::wire::UpdateInfo {
            round,
            client: user,
        },
        &u,
        RowEncoding::F32,
        &mut buf,
        |f: &[u8]| {
            out.extend_from_slice(f);
            Ok::<(), core::convert::Infallible>(())
        },
    )
    .unwrap();
    out
}

/// What a hostile device of kind `i % 5` sends.
fn hostile(i: u32, round: u32, user: u32, num_items: u32) -> Vec<u8> {
    let row = [0.01f32; 8];
    match i % 5 {
        // A row past the catalogue.
        0 => craft(round, user, &[1, num_items + 3], &[row, row], 2),
        // A weight no client of 25 ratings can have.
        1 => craft(round, user, &[1, 2], &[row, row], 1_000_000),
        // An absurd norm.
        2 => craft(round, user, &[1, 2], &[[1e7; 8], row], 2),
        // A valid update whose first message claims another protocol major (in-process
        // packets carry no CRC: nothing corrupts memory; the serial path's CRC is tested by
        // core's wire_props and the boards' link_faults).
        3 => {
            let mut b = craft(round, user, &[1, 2], &[row, row], 2);
            b[fedrecon_core::wire::PACKET_LEN_BYTES] ^= 0x04;
            b
        }
        // Another client's update (replay).
        _ => craft(round, user + 1, &[1, 2], &[row, row], 2),
    }
}

#[test]
fn hostile_updates_are_rejected_and_change_nothing() {
    let data = tempfile::tempdir().unwrap();
    synthetic(data.path());
    let ratings = movielens::load(data.path()).unwrap();
    let cfg = engine_config();
    let part = partition(&ratings, &cfg.data);
    let n = ratings.items() as u32;

    // Every client hostile: the round is skipped and the model is bit-identical.
    let mut sim = Simulation::<f32, 8>::new(&cfg, &part, ratings.items()).unwrap();
    let before = sim.params().to_vec();
    sim.set_tamper(Some(Box::new(move |round, user, bytes: &mut Vec<u8>| {
        *bytes = hostile(user, round, user, n);
    })));
    let s = sim.train_round().unwrap();
    assert!(s.faults.skipped && !s.applied, "{s:?}");
    assert_eq!(s.faults.rejected_total(), 10, "{:?}", s.faults.rejected);
    for reason in ["row_out_of_range", "weight", "norm", "malformed"] {
        assert!(
            s.faults.rejected.contains_key(reason),
            "{reason}: {:?}",
            s.faults.rejected
        );
    }
    assert!(sim.params() == before.as_slice());

    // Some clients hostile: the model equals the one where those clients sent nothing usable.
    let victims = |user: u32| user.is_multiple_of(3);
    let mut a = Simulation::<f32, 8>::new(&cfg, &part, ratings.items()).unwrap();
    a.set_tamper(Some(Box::new(move |round, user, bytes: &mut Vec<u8>| {
        if victims(user) {
            *bytes = hostile(user, round, user, n);
        }
    })));
    let mut b = Simulation::<f32, 8>::new(&cfg, &part, ratings.items()).unwrap();
    b.set_tamper(Some(Box::new(move |_, user, bytes: &mut Vec<u8>| {
        if victims(user) {
            bytes.clear();
        }
    })));
    let mut rejected = 0;
    for _ in 0..5 {
        let (sa, sb) = (a.train_round().unwrap(), b.train_round().unwrap());
        assert_eq!(sa.faults.rejected_total(), sb.faults.rejected_total());
        assert_eq!(sa.faults.aggregated, sb.faults.aggregated);
        rejected += sa.faults.rejected_total();
        assert!(sa.applied);
    }
    assert!(rejected > 0);
    assert!(a.params() == b.params(), "hostile bytes changed the model");
    let mut clean = Simulation::<f32, 8>::new(&cfg, &part, ratings.items()).unwrap();
    for _ in 0..5 {
        clean.train_round().unwrap();
    }
    assert!(clean.params() != a.params());
}
