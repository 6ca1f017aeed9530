//! The serial link under faults (issue 9): two QEMU boards behind the fault-injecting proxy
//! (`--link-faults`) at a high rate. Rounds complete, the faults are detected (counters
//! non-zero), and the model is bit-identical to an all-virtual run where exactly the clients
//! the boards failed on sent nothing usable: every aggregated board update is the one the
//! host computes for that client.
//!
//! Needs the firmware image (`cargo build-fw`) and qemu-system-arm; skips with a printed
//! reason when either is missing, unless `FEDRECON_REQUIRE_QEMU=1`.

use crate::common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use fedrecon_core::ScalarKind;
use fedrecon_host_sim::board::{BoardOptions, Boards};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::data::partition::partition;
use fedrecon_host_sim::round::Simulation;

/// `ratings.dat` with `users` users rating 20..80 distinct items of `items` (small clients:
/// few frames per exchange, short board runs).
fn synthetic(dir: &Path, users: u32, items: u32) {
    let mut s = 0x11u64;
    let mut rnd = || {
        s = fedrecon_host_sim::seeds::splitmix64(s);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut text = String::new();
    for u in 0..users {
        let n = 20 + (rnd() * 60.0) as usize;
        let mut chosen: Vec<u32> = Vec::new();
        while chosen.len() < n {
            let i = (rnd() * f64::from(items)) as u32;
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        for (t, &i) in chosen.iter().enumerate() {
            let r = 1 + (rnd() * 5.0) as u32 % 5;
            writeln!(text, "{}::{}::{}::{}", u + 1, i + 1, r, 978_300_000 + t).unwrap();
        }
    }
    std::fs::write(dir.join("ratings.dat"), text).unwrap();
}

#[test]
fn faulty_links_never_let_a_corrupted_update_through() {
    if !common::qemu_boards_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 60, 400);
    let ratings = movielens::load(dir.path()).unwrap();
    let mut cfg = common::board_config();
    cfg.run.clients_per_round = 6;
    cfg.run.threads = Some(2);
    cfg.run.seed = 5;
    let rounds = 4;
    let part = partition(&ratings, &cfg.data);

    let t0 = std::time::Instant::now();
    let opts = BoardOptions {
        qemu_devices: 2,
        link_faults: 0.1,
        // Clients of at most 80 ratings train in well under a second.
        link_timeout: Some(std::time::Duration::from_secs(2)),
        ..BoardOptions::default()
    };
    let boards = Boards::open(&opts, 50, ScalarKind::F32, cfg.run.seed).unwrap();
    // Faults injected while the boards were greeted (their sessions opened), before any round.
    let at_boot = boards.injected_faults();
    let mut faulty = Simulation::<f32, 50>::new(&cfg, &part, ratings.items()).unwrap();
    faulty.attach_boards(boards).unwrap();
    let mut failed = BTreeSet::new();
    let (mut injected, mut errors, mut retries) = (0u64, 0u32, 0u32);
    let mut losses = Vec::new();
    for _ in 0..rounds {
        let s = faulty.train_round().unwrap();
        eprintln!("round {}: {:?}", s.round, s.faults);
        assert!(s.applied && !s.faults.skipped);
        assert!(s.faults.rejected.is_empty(), "{:?}", s.faults.rejected);
        injected += s.faults.link_faults;
        errors += s.faults.link_errors;
        retries += s.faults.link_retries;
        failed.extend(s.faults.link_failed.iter().map(|&u| (s.round, u)));
        losses.push(s.loss.to_bits());
    }
    let stats: Vec<_> = faulty.boards().boards().iter().map(|b| b.stats()).collect();
    eprintln!(
        "{rounds} rounds, 2 faulty boards: {:.1} s; injected {injected}, failed exchanges \
         {errors}, retries {retries}, dropped {failed:?}; {stats:?}",
        t0.elapsed().as_secs_f64()
    );
    let trained: u64 = stats.iter().map(|s| s.clients).sum();
    assert!(
        injected > 0 && errors > 0 && retries > 0,
        "no fault was exercised"
    );
    assert!(trained > 0, "no board update got through");
    assert_eq!(
        injected + at_boot,
        stats.iter().map(|s| s.faults.total()).sum::<u64>()
    );
    assert_bit_identical_to_virtual(&cfg, &part, &ratings, rounds, failed, &losses, &faulty);
}

/// Forged, altered, replayed and wrong-device frames on two QEMU boards' authenticated
/// links (`--link-attacks`): every attack kind is injected, each is refused and counted by
/// reason, the round goes on, and the model is bit-identical to an all-virtual run where
/// exactly the dropped clients sent nothing usable (no refused frame was aggregated).
#[test]
fn attacked_links_never_let_a_refused_frame_through() {
    if !common::qemu_boards_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 60, 400);
    let ratings = movielens::load(dir.path()).unwrap();
    let mut cfg = common::board_config();
    cfg.run.clients_per_round = 6;
    cfg.run.threads = Some(2);
    cfg.run.seed = 6;
    let rounds = 4;
    let part = partition(&ratings, &cfg.data);
    let opts = BoardOptions {
        qemu_devices: 2,
        link_attacks: 0.08,
        link_timeout: Some(std::time::Duration::from_secs(2)),
        ..BoardOptions::default()
    };
    let boards = Boards::open(&opts, 50, ScalarKind::F32, cfg.run.seed).unwrap();
    assert!(boards.boards().iter().all(|b| b.authenticated()));
    let mut sim = Simulation::<f32, 50>::new(&cfg, &part, ratings.items()).unwrap();
    sim.attach_boards(boards).unwrap();
    let mut failed = BTreeSet::new();
    let mut reasons = std::collections::BTreeMap::<String, u32>::new();
    let mut losses = Vec::new();
    for _ in 0..rounds {
        let s = sim.train_round().unwrap();
        eprintln!("round {}: {:?}", s.round, s.faults);
        assert!(s.applied && !s.faults.skipped);
        assert!(s.faults.rejected.is_empty(), "{:?}", s.faults.rejected);
        for (k, v) in &s.faults.auth_refused {
            *reasons.entry(k.clone()).or_default() += v;
        }
        failed.extend(s.faults.link_failed.iter().map(|&u| (s.round, u)));
        losses.push(s.loss.to_bits());
    }
    let stats: Vec<_> = sim.boards().boards().iter().map(|b| b.stats()).collect();
    eprintln!("refused {reasons:?}; dropped {failed:?}; {stats:?}");
    let sum =
        |f: fn(&fedrecon_host_sim::board::BoardStats) -> u64| -> u64 { stats.iter().map(f).sum() };
    assert!(sum(|s| s.faults.forged) > 0, "{stats:?}");
    assert!(sum(|s| s.faults.altered) > 0, "{stats:?}");
    assert!(sum(|s| s.faults.replayed) > 0, "{stats:?}");
    assert!(sum(|s| s.faults.wrong_device) > 0, "{stats:?}");
    assert_eq!(sum(|s| s.faults.total()), 0, "attacks only");
    // Every dropped client was refused (an attack on a frame nobody reads any more, after a
    // refusal, is not counted again).
    let refused: u32 = reasons.values().sum();
    assert!(refused as usize >= failed.len(), "{reasons:?} {failed:?}");
    assert!(sum(|s| s.auth_refused) >= u64::from(refused), "{stats:?}");
    for why in ["bad_tag", "replayed"] {
        assert!(
            reasons.contains_key(why),
            "no {why} in the rounds: {reasons:?}"
        );
    }
    assert!(!failed.is_empty(), "no client was dropped");
    assert!(sum(|s| s.clients) > 0, "no board update got through");
    assert_bit_identical_to_virtual(&cfg, &part, &ratings, rounds, failed, &losses, &sim);
}

/// The all-virtual reference of a run with boards, the `failed` (round, user) clients'
/// updates made unusable: its losses and model must equal the board run's bit for bit.
fn assert_bit_identical_to_virtual(
    cfg: &fedrecon_host_sim::config::Config,
    part: &fedrecon_host_sim::data::partition::Partition,
    ratings: &fedrecon_host_sim::data::movielens::Ratings,
    rounds: u32,
    failed: BTreeSet<(u32, u32)>,
    losses: &[u64],
    boards: &Simulation<f32, 50>,
) {
    let faulty = boards;
    // The reference: all virtual, the failed clients' updates made unusable.
    let failed = Arc::new(failed);
    let mut reference = Simulation::<f32, 50>::new(cfg, part, ratings.items()).unwrap();
    let f = Arc::clone(&failed);
    reference.set_tamper(Some(Box::new(move |round, user, bytes: &mut Vec<u8>| {
        if f.contains(&(round, user)) {
            bytes.clear();
            bytes.push(1);
        }
    })));
    let mut ref_losses = Vec::new();
    for _ in 0..rounds {
        let s = reference.train_round().unwrap();
        assert_eq!(s.faults.rejected_total() as usize, {
            failed.iter().filter(|(r, _)| *r == s.round).count()
        });
        ref_losses.push(s.loss.to_bits());
    }
    assert_eq!(losses, ref_losses);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(faulty.params()), bits(reference.params()));
}
