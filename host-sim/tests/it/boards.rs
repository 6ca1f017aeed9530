//! Boards in a round (issue 7): a run where two QEMU boards train some clients of every round
//! is bit-identical to the all-virtual run (same item matrix bits, same losses).
//!
//! Needs the firmware image (`cargo build-fw`) and qemu-system-arm; skips with a printed
//! reason when either is missing, unless `FEDRECON_REQUIRE_QEMU=1` (scripts/check.sh sets it
//! after building the images), which turns a skip into a failure.

use crate::common;

use std::fmt::Write as _;
use std::path::Path;

use fedrecon_host_sim::board::BoardOptions;
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::output::Record;
use fedrecon_host_sim::run::{RunOptions, run, run_with_boards};

/// `ratings.dat` with `users` users rating between 20 and 420 distinct items of `items`
/// (so some exceed the qemu image's 300), ratings 1..=5 from a rank-2 model.
fn synthetic(dir: &Path, users: u32, items: u32) {
    let mut s = 0xb0a2du64;
    let mut rnd = || {
        s = fedrecon_host_sim::seeds::splitmix64(s);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let vf: Vec<[f64; 2]> = (0..items).map(|_| [rnd(), rnd()]).collect();
    let mut text = String::new();
    for u in 0..users {
        let uf = [rnd(), rnd()];
        let n = 20 + (rnd() * 400.0) as usize;
        let mut chosen: Vec<u32> = Vec::new();
        while chosen.len() < n {
            let i = (rnd() * f64::from(items)) as u32;
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        for (t, &i) in chosen.iter().enumerate() {
            let dot = uf[0] * vf[i as usize][0] + uf[1] * vf[i as usize][1];
            let r = (1.0 + 2.0 * dot).round().clamp(1.0, 5.0) as u32;
            writeln!(text, "{}::{}::{}::{}", u + 1, i + 1, r, 978_300_000 + t).unwrap();
        }
    }
    std::fs::write(dir.join("ratings.dat"), text).unwrap();
}

/// The train records without wall-clock and byte figures (a board's update carries its own
/// client id, so its bytes differ by a varint from a virtual device's).
fn learning(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r {
            Record::Train {
                round,
                loss,
                rating_accuracy,
                ..
            } => format!(
                "train {round} {:x?} {:x?}",
                loss.map(f64::to_bits),
                rating_accuracy.map(f64::to_bits)
            ),
            Record::Eval(e) => format!(
                "{} {} {:x} {:x}",
                e.split,
                e.round,
                e.loss.to_bits(),
                e.rating_accuracy.to_bits()
            ),
        })
        .collect()
}

#[test]
fn rounds_with_qemu_boards_are_bit_identical_to_virtual_rounds() {
    if !common::qemu_boards_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 120, 1000);
    let ratings = movielens::load(dir.path()).unwrap();
    let mut cfg = common::board_config();
    cfg.run.rounds = 3;
    cfg.run.clients_per_round = 8;
    cfg.run.eval_every = 0;
    cfg.run.eval_clients = Some(20);
    cfg.run.threads = Some(2);
    cfg.run.seed = 11;
    let opts = RunOptions::default();
    let all_virtual = run(&cfg, &ratings, &opts).unwrap();
    let boards = BoardOptions {
        qemu_devices: 2,
        ..BoardOptions::default()
    };
    let t0 = std::time::Instant::now();
    let with_boards = run_with_boards(&cfg, &ratings, &opts, &boards).unwrap();
    eprintln!(
        "{} rounds with 2 QEMU boards among {} clients: {:.1} s",
        cfg.run.rounds,
        cfg.run.clients_per_round,
        t0.elapsed().as_secs_f64()
    );
    let trained: u64 = with_boards.boards.iter().map(|(_, s)| s.clients).sum();
    eprintln!("boards: {:?}", with_boards.boards);
    assert_eq!(with_boards.boards.len(), 2);
    assert!(
        trained >= 2 * u64::from(cfg.run.rounds) - 1,
        "the boards trained only {trained} clients"
    );
    assert_eq!(
        learning(&with_boards.records),
        learning(&all_virtual.records)
    );
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&with_boards.items), bits(&all_virtual.items));
}

/// One client path (issue 13): boards honour `--dropout`, so a run with dropouts and two QEMU
/// boards is bit-identical to the all-virtual run (the boards' clients drop exactly when the
/// virtual devices' would), and a board client's downlink is counted like a virtual one's.
/// Through the binary, as a user runs it; seed 6 drops a client the boards took before the fix.
#[test]
fn dropout_with_qemu_boards_is_bit_identical_to_virtual() {
    if !common::qemu_boards_available() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    synthetic(data.path(), 120, 1000);
    let out = tempfile::tempdir().unwrap();
    let run = |name: &str, boards: bool| {
        let dir = out.path().join(name);
        let mut args = vec![
            "train",
            "--data",
            data.path().to_str().unwrap(),
            "--preset",
            "tutorial",
            "--max-clients",
            "none",
            "--max-ratings-per-user",
            "none",
            "--k",
            "50",
            "--rounds",
            "3",
            "--clients-per-round",
            "8",
            "--eval-every",
            "0",
            "--eval-clients",
            "20",
            "--seed",
            "6",
            "--dropout",
            "0.3",
            "--threads",
            "2",
            "--no-progress",
            "--no-plots",
            "--out",
            dir.to_str().unwrap(),
        ];
        if boards {
            args.extend(["--qemu-devices", "2"]);
        }
        let o = common::fedrecon(&args);
        assert!(o.status.success(), "{name}: {}", common::stderr(&o));
        dir
    };
    let (virt, boards) = (run("virtual", false), run("boards", true));
    assert_eq!(
        std::fs::read(virt.join("items.npy")).unwrap(),
        std::fs::read(boards.join("items.npy")).unwrap(),
        "items.npy differs between the all-virtual run and the run with 2 QEMU boards"
    );
    // Every metric but wall-clock time and upload bytes (a board's update carries its own
    // client id, a varint shorter or longer than the user's) is equal, downlink bytes included.
    let rows = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                for k in [
                    "seconds",
                    "bytes_up",
                    "payload_up",
                    "bytes_up_mean",
                    "bytes_up_max",
                ] {
                    o.remove(k);
                }
                v
            })
            .collect()
    };
    let (rv, rb) = (rows(&virt), rows(&boards));
    assert!(
        rv.iter().any(|r| r["dropped"].as_u64().unwrap_or(0) > 0),
        "the run had no dropout: {rv:?}"
    );
    assert_eq!(rv, rb);
}

/// The attack bench and the robust rules on boards (issue 19): a board's update is decoded,
/// rewritten by the attack and validated in the same phase as a virtual device's, so an
/// attacked, Krum-defended run with two QEMU boards is bit-identical to the all-virtual one,
/// counts the same attackers, and differs from the clean run.
#[test]
fn attacked_robust_rounds_with_qemu_boards_are_bit_identical_to_virtual() {
    use fedrecon_host_sim::attack::AttackKind;
    use fedrecon_host_sim::server::robust::Rule;
    if !common::qemu_boards_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 120, 1000);
    let ratings = movielens::load(dir.path()).unwrap();
    let mut cfg = common::board_config();
    cfg.run.rounds = 3;
    cfg.run.clients_per_round = 8;
    cfg.run.eval_every = 0;
    cfg.run.eval_clients = Some(20);
    cfg.run.threads = Some(2);
    cfg.run.seed = 11;
    cfg.robust.aggregator = Rule::Krum;
    cfg.robust.krum_byzantine = 2;
    cfg.robust.krum_select = 4;
    let opts = RunOptions::default();
    let clean = run(&cfg, &ratings, &opts).unwrap();
    cfg.attack.kind = AttackKind::SignFlip;
    cfg.attack.fraction = 0.4;
    cfg.attack.scale = 4.0;
    let all_virtual = run(&cfg, &ratings, &opts).unwrap();
    let boards = BoardOptions {
        qemu_devices: 2,
        ..BoardOptions::default()
    };
    let with_boards = run_with_boards(&cfg, &ratings, &opts, &boards).unwrap();
    let trained: u64 = with_boards.boards.iter().map(|(_, s)| s.clients).sum();
    assert!(trained >= 1, "the boards trained no client");
    let security = |records: &[Record]| {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Train { security, .. } => Some(security.expect("an attack is on")),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let attackers: u32 = security(&all_virtual.records)
        .iter()
        .map(|s| s.attackers)
        .sum();
    assert!(attackers > 0, "no attacker was sampled");
    assert_eq!(
        security(&with_boards.records),
        security(&all_virtual.records)
    );
    assert_eq!(
        learning(&with_boards.records),
        learning(&all_virtual.records)
    );
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&with_boards.items), bits(&all_virtual.items));
    assert_ne!(bits(&clean.items), bits(&all_virtual.items));
}
