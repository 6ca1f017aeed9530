//! The attack bench on synthetic data (issue 19): a promotion attack moves its target into the
//! test users' top 10, the default defense for untrusted deployments contains it, and a robust
//! run is bit-identical across thread counts.

use crate::common::synthetic;

use fedrecon_host_sim::attack::AttackKind;
use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::run::{RunOptions, RunResult, run};
use fedrecon_host_sim::server::robust::{RobustConfig, Rule};

fn config() -> Config {
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.data.max_clients = None;
    cfg.model.k = 8;
    cfg.run.rounds = 40;
    cfg.run.clients_per_round = 40;
    cfg.run.eval_clients = None;
    cfg.run.threads = Some(2);
    cfg.run.seed = 11;
    cfg.attack.target = Some(3);
    cfg
}

fn attacked(mut cfg: Config, fraction: f64) -> Config {
    cfg.attack.kind = AttackKind::Promote;
    cfg.attack.fraction = fraction;
    cfg
}

fn defended(mut cfg: Config) -> Config {
    cfg.robust = RobustConfig::untrusted();
    cfg
}

fn go(cfg: &Config, data: &std::path::Path) -> RunResult {
    cfg.validate().unwrap();
    let ratings = movielens::load(data).unwrap();
    run(cfg, &ratings, &RunOptions::default()).unwrap()
}

fn hit_ratio(r: &RunResult) -> f64 {
    r.test.target_hit_ratio.expect("a target is set")
}

#[test]
fn promotion_moves_the_target_and_the_untrusted_defense_contains_it() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 400, 150, 40);
    let clean = go(&config(), dir.path());
    let attack = go(&attacked(config(), 0.1), dir.path());
    let defense_clean = go(&defended(config()), dir.path());
    let defense = go(&defended(attacked(config(), 0.1)), dir.path());
    let (c, a, dc, d) = (
        hit_ratio(&clean),
        hit_ratio(&attack),
        hit_ratio(&defense_clean),
        hit_ratio(&defense),
    );
    assert!(
        a > c + 0.5,
        "the attack should promote the target: clean {c}, attacked {a}"
    );
    assert!(
        d <= (2.0 * dc).max(dc + 0.05),
        "the defense should contain it: defended clean {dc}, defended attacked {d}"
    );
    let attackers: u32 = defense
        .records
        .iter()
        .filter_map(|r| match r {
            fedrecon_host_sim::output::Record::Train { security, .. } => {
                security.map(|s| s.attackers)
            }
            _ => None,
        })
        .sum();
    assert!(attackers > 0, "some malicious clients were aggregated");
}

#[test]
fn robust_rules_are_bit_identical_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 150, 100, 30);
    for aggregator in [Rule::Median, Rule::TrimmedMeanAll, Rule::Krum] {
        let mut bits = Vec::new();
        for threads in [1, 3] {
            let mut cfg = attacked(config(), 0.1);
            cfg.run.rounds = 6;
            cfg.run.threads = Some(threads);
            cfg.robust.aggregator = aggregator;
            cfg.robust.norm_bound = 2.0;
            let r = go(&cfg, dir.path());
            bits.push(r.items.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
        assert_eq!(bits[0], bits[1], "{aggregator:?}");
    }
}
