//! Streaming aggregation (issue 14): a round folds its updates window by window of the sample
//! (64 clients per worker thread), so different thread counts cut the sample into different
//! windows; the model, the metrics and the faults must not notice. Skipped rounds release
//! nothing of what was folded.

use crate::common::{many_clients_config, round_figures, synthetic};

use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::data::partition::partition;
use fedrecon_host_sim::round::Simulation;
use fedrecon_host_sim::server::robust::{RobustConfig, Rule};

fn run(cfg: &Config, dir: &std::path::Path, rounds: u32) -> (Vec<u32>, Vec<String>) {
    let ratings = movielens::load(dir).unwrap();
    let part = partition(&ratings, &cfg.data);
    let mut sim = Simulation::<f32, 8>::new(cfg, &part, ratings.items()).unwrap();
    // Every 13th user's upload arrives empty: rejected as malformed.
    sim.set_tamper(Some(Box::new(|_, user, bytes: &mut Vec<u8>| {
        if user % 13 == 0 {
            bytes.clear();
        }
    })));
    let stats = (0..rounds)
        .map(|_| round_figures(&sim.train_round().unwrap()))
        .collect();
    (sim.params().iter().map(|x| x.to_bits()).collect(), stats)
}

#[test]
fn streaming_rounds_are_bit_identical_for_1_2_3_and_8_threads() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 700, 150, 20);
    for dp in [false, true] {
        let runs: Vec<_> = [1, 2, 3, 8]
            .into_iter()
            .map(|threads| {
                let mut cfg = many_clients_config(threads);
                cfg.privacy.enabled = dp;
                cfg.privacy.noise_multiplier = 0.5;
                cfg.privacy.clip = 0.5;
                run(&cfg, dir.path(), 3)
            })
            .collect();
        let stats = &runs[0].1;
        assert!(stats.iter().all(|s| s.contains("malformed")), "{stats:?}");
        assert!(stats.iter().all(|s| s.contains("surplus")), "{stats:?}");
        for (threads, r) in [2, 3, 8].iter().zip(&runs[1..]) {
            assert_eq!(r.1, runs[0].1, "dp {dp}: figures, 1 vs {threads} threads");
            assert!(r.0 == runs[0].0, "dp {dp}: model, 1 vs {threads} threads");
        }
    }
}

#[test]
fn a_skipped_dp_round_releases_nothing_it_folded() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 120, 60, 20);
    let ratings = movielens::load(dir.path()).unwrap();
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.data.max_clients = None;
    cfg.model.k = 8;
    cfg.run.clients_per_round = 10;
    cfg.run.threads = Some(2);
    cfg.reliability.min_clients = 5;
    cfg.privacy.enabled = true;
    cfg.privacy.noise_multiplier = 0.5;
    cfg.privacy.clip = 0.5;
    let part = partition(&ratings, &cfg.data);
    // Round 1 of both is skipped: `a` folds two valid updates first, `b` none.
    let sim = |valid_in_round_1: usize| {
        let mut sim = Simulation::<f32, 8>::new(&cfg, &part, ratings.items()).unwrap();
        let seen = std::sync::atomic::AtomicUsize::new(0);
        sim.set_tamper(Some(Box::new(move |round, _, bytes: &mut Vec<u8>| {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if round == 1 && n >= valid_in_round_1 {
                bytes.clear();
            }
        })));
        let first = sim.train_round().unwrap();
        assert!(first.faults.skipped && !first.applied, "{first:?}");
        let second = sim.train_round().unwrap();
        assert!(second.applied && !second.faults.skipped, "{second:?}");
        sim.params().to_vec()
    };
    assert!(
        sim(2) == sim(0),
        "a skipped round's clients leaked into the next"
    );
}

/// The robust rules (issue 19) fold the same windows: the streaming ones (norm bound and row
/// alignment, alone and before DP's clip) and those that hold the round's updates (median,
/// trimmed means, multi-Krum) give the same bits for any thread count.
#[test]
fn robust_rounds_are_bit_identical_for_1_2_3_and_8_threads() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 700, 150, 20);
    let bounded = RobustConfig {
        norm_bound: 0.05,
        row_alignment: 0.999,
        ..RobustConfig::default()
    };
    let mut cases: Vec<(RobustConfig, bool)> = vec![(bounded.clone(), false), (bounded, true)];
    for aggregator in [
        Rule::Median,
        Rule::TrimmedMean,
        Rule::TrimmedMeanAll,
        Rule::Krum,
    ] {
        let robust = RobustConfig {
            aggregator,
            norm_bound: 0.05,
            krum_select: 200,
            ..RobustConfig::default()
        };
        cases.push((robust, false));
    }
    for (robust, dp) in cases {
        let runs: Vec<_> = [1, 2, 3, 8]
            .into_iter()
            .map(|threads| {
                let mut cfg = many_clients_config(threads);
                cfg.robust = robust.clone();
                cfg.privacy.enabled = dp;
                cfg.privacy.noise_multiplier = 0.5;
                cfg.privacy.clip = 0.5;
                run(&cfg, dir.path(), 2)
            })
            .collect();
        let case = format!("{:?} dp {dp}", robust.aggregator);
        let stats = &runs[0].1;
        // The defense acted: some updates were bounded (and Krum dropped some).
        assert!(
            stats
                .iter()
                .all(|s| s.contains("norm_bounded: ") && !s.contains("norm_bounded: 0,")),
            "{case}: {stats:?}"
        );
        if robust.aggregator == Rule::Krum {
            assert!(
                stats.iter().all(|s| !s.contains("krum_dropped: 0,")),
                "{stats:?}"
            );
        }
        for (threads, r) in [2, 3, 8].iter().zip(&runs[1..]) {
            assert_eq!(r.1, runs[0].1, "{case}: figures, 1 vs {threads} threads");
            assert!(r.0 == runs[0].0, "{case}: model, 1 vs {threads} threads");
        }
    }
}
