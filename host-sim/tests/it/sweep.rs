//! `fedrecon sweep` (issue 18): a 2-row × 2-seed grid run in parallel gives exactly the
//! figures of the same runs done one by one, and the command prints and writes its table.

use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::run::{RunOptions, run};
use fedrecon_host_sim::sweep::{SweepOptions, SweepSpec, sweep};

use crate::common::{self, fedrecon, stderr};

const SPEC: &str = r#"
seeds = [9]

[[row]]
name = "tutorial, K = 8"
preset = "tutorial"
config = { model = { k = 8 }, data = { max_clients = "none" }, run = { rounds = 3, clients_per_round = 15, eval_every = 2 } }

[[row]]
name = "best, K = 8"
preset = "best"
[row.config.model]
k = 8
[row.config.run]
rounds = 2
clients_per_round = 20
eval_every = 0
"#;

#[test]
fn a_sweep_gives_exactly_the_runs_done_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    common::synthetic(tmp.path(), 120, 90, 25);
    let ratings = movielens::load(tmp.path()).unwrap();
    let spec = SweepSpec::parse(SPEC, "spec.toml").unwrap();
    assert_eq!(spec.rows[1].config.preset, Preset::Best);
    let seeds = vec![3, 4];
    let res = sweep(
        &spec,
        &ratings,
        &SweepOptions {
            seeds: seeds.clone(),
            threads: 2,
            ..SweepOptions::default()
        },
    )
    .unwrap();
    assert_eq!(res.runs.len(), 4);
    for (i, row) in spec.rows.iter().enumerate() {
        for (j, &seed) in seeds.iter().enumerate() {
            let mut cfg: Config = row.config.clone();
            cfg.run.seed = seed;
            let alone = run(&cfg, &ratings, &RunOptions::default()).unwrap();
            let f = &res.runs[i * seeds.len() + j];
            assert_eq!((f.row.as_str(), f.seed), (row.name.as_str(), seed));
            let t = &alone.test;
            assert_eq!(
                [f.loss, f.rmse, f.accuracy, f.recall_at_10, f.ndcg_at_10].map(f64::to_bits),
                [
                    t.loss,
                    t.rmse,
                    t.rating_accuracy,
                    t.recall_at_10,
                    t.ndcg_at_10
                ]
                .map(f64::to_bits),
                "{} seed {seed}",
                row.name
            );
            assert_eq!(f.rounds, cfg.run.rounds);
        }
        // The summary is the mean and half-range of those runs.
        let mine = &res.runs[i * 2..i * 2 + 2];
        let s = &res.rows[i];
        assert_eq!(s.runs, 2);
        assert_eq!(s.rmse.mean, (mine[0].rmse + mine[1].rmse) / 2.0);
        assert_eq!(s.rmse.half_range, (mine[0].rmse - mine[1].rmse).abs() / 2.0);
    }
    let md = res.markdown();
    assert!(md.contains("| tutorial, K = 8 | 3 |"), "{md}");
    assert!(md.contains("| best, K = 8 | 2 |"), "{md}");
}

#[test]
fn the_command_prints_and_writes_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::synthetic(&data, 80, 60, 20);
    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = tmp.path().join("out");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "sweep",
            "--data",
            data.to_str().unwrap(),
            "--sweep",
            spec.to_str().unwrap(),
            "--threads",
            "2",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| fedrecon(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(args(&["--keep-runs"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("Seeds 9 "), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| ")).count(),
        4,
        "{table}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("sweep.md")).unwrap(),
        table
            .lines()
            .take(6)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 3, "{runs}");
    assert!(runs.contains("\"best, K = 8\",9,2,"), "{runs}");
    assert!(
        out.join("runs/02-best-k-8-s9/model.npz").is_file(),
        "--keep-runs keeps each run's bundle"
    );
    // A used directory is refused without --force; a seed twice is refused.
    let o = run(args(&[]));
    assert!(
        !o.status.success() && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    let o = run(args(&["--force", "--seeds", "1,2,1"]));
    assert!(
        !o.status.success() && stderr(&o).contains("seed 1 is listed twice"),
        "{}",
        stderr(&o)
    );
}
