//! Simulator engine tests: aggregation, server optimizers against hand-computed Keras/TFA
//! formulas (docs/SEMANTICS.md "Server"), determinism across thread counts, an end-to-end run on a
//! synthetic low-rank dataset, output files, and a short real ML-1M run when the data exists.

use crate::common::synthetic;

use std::path::{Path, PathBuf};

use fedrecon_core::Metrics;
use fedrecon_host_sim::config::{Config, Preset, ServerConfig};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::output::{self, Record};
use fedrecon_host_sim::run::{RunOptions, run};
use fedrecon_host_sim::server::{Aggregator, ClientRows, ServerOptimizer};

// ---------------------------------------------------------------- aggregation

#[test]
fn aggregation_is_the_weighted_mean_of_sparse_deltas() {
    // 4 items, K = 2. Client A (weight 3) sends rows 0 and 2; client B (weight 1) rows 2 and 3.
    let a_items = [0u32, 2];
    let a_rows = [1.0f32, 2.0, 4.0, -4.0];
    let b_items = [2u32, 3];
    let b_rows = [8.0f32, 0.0, 1.0, 1.0];
    // Direct: sum w·delta / sum w with sum w = 4.
    let expected = [
        3.0 / 4.0,
        6.0 / 4.0,
        0.0,
        0.0,
        (3.0 * 4.0 + 8.0) / 4.0,
        (3.0 * -4.0) / 4.0,
        1.0 / 4.0,
        1.0 / 4.0,
    ];

    let mut seq = Aggregator::new(4, 2, false);
    for (items, rows, w) in [(&a_items, &a_rows, 3), (&b_items, &b_rows, 1)] {
        for (r, &i) in items.iter().enumerate() {
            seq.add_row(i, w, &rows[r * 2..r * 2 + 2], None).unwrap();
        }
        seq.add_client(w, &Metrics::default());
    }
    let mut out = [0f32; 8];
    assert!(seq.mean_delta(&mut out));
    assert_eq!(out, expected);

    let mut par = Aggregator::new(4, 2, false);
    let clients = [
        (
            ClientRows {
                weight: 3,
                items: &a_items,
                rows: &a_rows,
                biases: &[],
            },
            Metrics::default(),
        ),
        (
            ClientRows {
                weight: 1,
                items: &b_items,
                rows: &b_rows,
                biases: &[],
            },
            Metrics::default(),
        ),
    ];
    par.add_clients(&clients).unwrap();
    let mut out2 = [0f32; 8];
    assert!(par.mean_delta(&mut out2));
    assert_eq!(out, out2);
    assert_eq!(par.weight_sum(), 4.0);
    assert_eq!(par.touched_rows(), 3);
}

#[test]
fn parallel_aggregation_matches_sequential_bits() {
    let (items, k) = (1000usize, 8usize);
    let mut clients_data = Vec::new();
    let mut x = 12345u64;
    let mut next = || {
        x = fedrecon_host_sim::seeds::splitmix64(x);
        x
    };
    for _ in 0..50 {
        let mut ids: Vec<u32> = (0..40).map(|_| (next() % items as u64) as u32).collect();
        ids.sort_unstable();
        ids.dedup();
        let rows: Vec<f32> = (0..ids.len() * k)
            .map(|_| (next() % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        clients_data.push(((next() % 50 + 1) as u32, ids, rows));
    }
    let mut seq = Aggregator::new(items, k, false);
    for (w, ids, rows) in &clients_data {
        for (r, &i) in ids.iter().enumerate() {
            seq.add_row(i, *w, &rows[r * k..(r + 1) * k], None).unwrap();
        }
        seq.add_client(*w, &Metrics::default());
    }
    let list: Vec<_> = clients_data
        .iter()
        .map(|(w, ids, rows)| {
            (
                ClientRows {
                    weight: *w,
                    items: ids,
                    rows,
                    biases: &[],
                },
                Metrics::default(),
            )
        })
        .collect();
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut par = Aggregator::new(items, k, false);
        pool.install(|| par.add_clients(&list)).unwrap();
        let (mut a, mut b) = (vec![0f32; items * k], vec![0f32; items * k]);
        assert!(seq.mean_delta(&mut a));
        assert!(par.mean_delta(&mut b));
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

#[test]
fn non_finite_or_weightless_aggregate_is_skipped() {
    let mut agg = Aggregator::new(2, 1, false);
    let mut out = [0f32; 2];
    assert!(!agg.mean_delta(&mut out), "no weight: no update");
    agg.add_row(1, 1, &[f32::INFINITY], None).unwrap();
    agg.add_client(1, &Metrics::default());
    assert!(!agg.mean_delta(&mut out), "non-finite: no update");
    assert!(agg.add_row(5, 1, &[0.0], None).is_err(), "row out of range");
}

// ---------------------------------------------------------------- server optimizers

/// Within f32 rounding (the optimizers compute in f32, as Keras does) of the f64 reference.
fn close(a: f32, b: f64) -> bool {
    (f64::from(a) - b).abs() <= 1e-5 * b.abs().max(1e-3)
}

#[test]
fn sgd_step_adds_lr_times_mean_delta() {
    let mut o = ServerOptimizer::new(&ServerConfig::Sgd { lr: 1.0 }, 2);
    let mut p = [1.0f32, -2.0];
    o.step(&mut p, &[0.25, 0.5]);
    assert_eq!(p, [1.25, -1.5]);
}

#[test]
fn adam_matches_keras_formulas() {
    // Keras: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    // p -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps), with g = -mean_delta.
    let (lr, b1, b2, eps) = (0.001f64, 0.9f64, 0.999f64, 1e-7f64);
    let mut o = ServerOptimizer::new(
        &ServerConfig::Adam {
            lr: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        },
        2,
    );
    let mut p = [0.5f32, -0.25];
    let deltas = [[0.1f32, -0.3], [-0.2, 0.05]];
    let (mut m, mut v, mut q) = ([0f64; 2], [0f64; 2], [0.5f64, -0.25]);
    for (t, d) in deltas.iter().enumerate() {
        o.step(&mut p, d);
        let t = (t + 1) as i32;
        let lr_t = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        for i in 0..2 {
            let g = -f64::from(d[i]);
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            q[i] -= lr_t * m[i] / (v[i].sqrt() + eps);
        }
        assert!(close(p[0], q[0]) && close(p[1], q[1]), "{p:?} vs {q:?}");
    }
}

#[test]
fn adagrad_matches_keras_formulas() {
    // Keras: acc starts at 0.1; acc += g^2; p -= lr * g / (sqrt(acc) + eps).
    let mut o = ServerOptimizer::new(
        &ServerConfig::Adagrad {
            lr: 0.1,
            initial_accumulator: 0.1,
            epsilon: 1e-7,
        },
        1,
    );
    let mut p = [1.0f32];
    o.step(&mut p, &[0.5]);
    let g = -0.5f64;
    let acc = 0.1 + g * g;
    let expect = 1.0 - 0.1 * g / (acc.sqrt() + 1e-7);
    assert!(close(p[0], expect), "{} vs {expect}", p[0]);
}

#[test]
fn yogi_matches_tfa_formulas() {
    // TFA: v starts at 1e-6, m at 0; m = b1 m + (1-b1) g; v += (1-b2) sign(g^2 - v) g^2;
    // p -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps), eps = 1e-3.
    let (lr, b1, b2, eps) = (0.01f64, 0.9f64, 0.999f64, 1e-3f64);
    let mut o = ServerOptimizer::new(
        &ServerConfig::Yogi {
            lr: 0.01,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-3,
            initial_accumulator: 1e-6,
        },
        2,
    );
    let mut p = [0.0f32, 0.0];
    // Second step's gradient squared is below v in component 1, exercising sign = -1.
    let deltas = [[0.5f32, 1.0], [0.25, 1e-4]];
    let (mut m, mut v, mut q) = ([0f64; 2], [1e-6f64; 2], [0f64; 2]);
    for (t, d) in deltas.iter().enumerate() {
        o.step(&mut p, d);
        let t = (t + 1) as i32;
        let lr_t = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        for i in 0..2 {
            let g = -f64::from(d[i]);
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            let g2 = g * g;
            v[i] += (1.0 - b2) * (g2 - v[i]).signum() * g2;
            q[i] -= lr_t * m[i] / (v[i].sqrt() + eps);
        }
        assert!(close(p[0], q[0]) && close(p[1], q[1]), "{p:?} vs {q:?}");
    }
}

// ---------------------------------------------------------------- synthetic data

fn synthetic_config(threads: usize) -> Config {
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.data.max_clients = None;
    cfg.model.k = 8;
    cfg.run.rounds = 12;
    cfg.run.clients_per_round = 30;
    cfg.run.eval_every = 4;
    cfg.run.eval_clients = None;
    cfg.run.threads = Some(threads);
    cfg.run.seed = 7;
    cfg
}

fn losses(records: &[Record]) -> (Vec<f64>, Vec<f64>) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for r in records {
        match r {
            Record::Train { loss, .. } => train.push(loss.expect("no round is skipped here")),
            Record::Eval(e) if e.split == "val" => val.push(e.loss),
            _ => {}
        }
    }
    (train, val)
}

#[test]
fn model_is_bit_identical_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 150, 120, 40);
    let ratings = movielens::load(dir.path()).unwrap();
    let mut results = Vec::new();
    for threads in [1, 2, 4] {
        let r = run(&synthetic_config(threads), &ratings, &RunOptions::default()).unwrap();
        let bits: Vec<u32> = r.items.iter().map(|x| x.to_bits()).collect();
        results.push((bits, r.test.clone(), losses(&r.records)));
    }
    assert_eq!(results[0], results[1], "1 vs 2 threads");
    assert_eq!(results[0], results[2], "1 vs 4 threads");
}

#[test]
fn end_to_end_synthetic_run_learns_and_writes_outputs() {
    let data = tempfile::tempdir().unwrap();
    synthetic(data.path(), 200, 100, 50);
    let ratings = movielens::load(data.path()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let out_dir: PathBuf = out.path().join("run");
    output::prepare_out_dir(&out_dir, false).unwrap();
    let mut cfg = synthetic_config(2);
    cfg.run.rounds = 30;
    let res = run(
        &cfg,
        &ratings,
        &RunOptions {
            out: Some(out_dir.clone()),
            progress: false,
            plots: true,
            ..RunOptions::default()
        },
    )
    .unwrap();
    let (train, val) = losses(&res.records);
    assert_eq!(train.len(), 30);
    let early: f64 = train[..3].iter().sum::<f64>() / 3.0;
    let late: f64 = train[27..].iter().sum::<f64>() / 3.0;
    assert!(late < 0.5 * early, "train loss {early} -> {late}");
    assert!(val.last().unwrap() < &(0.5 * val[0]), "val loss {val:?}");
    assert!(res.test.loss.is_finite() && res.test.loss < val[0]);

    // Outputs: metrics (last line = final test), csv, npy, config, plots.
    let jsonl = std::fs::read_to_string(out_dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), res.records.len());
    let last = lines.last().unwrap();
    assert_eq!(last["kind"], "eval");
    assert_eq!(last["split"], "test");
    for key in [
        "loss",
        "rating_accuracy",
        "rmse",
        "mae",
        "recall_at_10",
        "ndcg_at_10",
    ] {
        assert!(last[key].as_f64().unwrap().is_finite(), "{key}");
    }
    let first_train = lines.iter().find(|l| l["kind"] == "train").unwrap();
    for key in [
        "round",
        "loss",
        "rating_accuracy",
        "seconds",
        "bytes_down",
        "bytes_up",
    ] {
        assert!(!first_train[key].is_null(), "{key}");
    }
    let csv = std::fs::read_to_string(out_dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), res.records.len() + 1);
    assert!(csv.starts_with("kind,round,split,loss"));
    let (items, rows, cols) = output::read_npy(&out_dir.join("items.npy")).unwrap();
    assert_eq!((rows, cols), (ratings.items(), 8));
    assert_eq!(items, res.items);
    let cfg_back = Config::from_toml_str(
        &std::fs::read_to_string(out_dir.join("config.toml")).unwrap(),
        "config.toml",
        None,
    )
    .unwrap();
    assert_eq!(cfg_back, cfg);
    assert!(out_dir.join("train.png").is_file());
    assert!(out_dir.join("eval.png").is_file());

    // The directory now holds a run: refused without --force, allowed with it.
    assert!(output::prepare_out_dir(&out_dir, false).is_err());
    assert!(output::prepare_out_dir(&out_dir, true).is_ok());
}

#[test]
fn npy_header_parses_as_numpy_expects() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.npy");
    let data: Vec<f32> = (0..3706 * 2).map(|i| i as f32).collect();
    output::write_npy(&p, &data, 3706, 2).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "data starts 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3706, 2), }"));
    assert!(header.ends_with('\n'));
    assert_eq!(bytes.len(), 10 + hlen + data.len() * 4);
    assert_eq!(output::read_npy(&p).unwrap(), (data, 3706, 2));
}

// ---------------------------------------------------------------- real data

fn ml1m() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ml-1m");
    p.join("ratings.dat").is_file().then_some(p)
}

#[test]
fn short_real_tutorial_run_has_finite_metrics() {
    let Some(dir) = ml1m() else {
        println!("skipped: ../shared/data/ml-1m (beside the workspace) does not exist");
        return;
    };
    let ratings = movielens::load(&dir).unwrap();
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.run.rounds = 3;
    cfg.run.threads = Some(2);
    let r = run(&cfg, &ratings, &RunOptions::default()).unwrap();
    assert_eq!(r.test.users, 200);
    for x in [
        r.test.loss,
        r.test.rating_accuracy,
        r.test.rmse,
        r.test.mae,
        r.test.recall_at_10,
        r.test.ndcg_at_10,
    ] {
        assert!(x.is_finite(), "{:?}", r.test);
    }
    // Three rounds barely move the model from its initial (untrained) loss of about 14.
    assert!(r.test.loss > 5.0 && r.test.loss < 16.0, "{}", r.test.loss);
    assert!(r.items.iter().all(|x| x.is_finite()));
}

/// Fixed-point devices (Q16.16, Q3.12) learn the synthetic task like f32 devices do: the
/// training loss halves, the final test loss ends within 5 % of the f32 run's, and the
/// fixed-point model is bit-identical across thread counts too.
#[test]
fn fixed_point_devices_track_f32() {
    use fedrecon_host_sim::config::Scalar;
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 200, 100, 50);
    let ratings = movielens::load(dir.path()).unwrap();
    let run_with = |scalar: Scalar, threads: usize| {
        let mut cfg = synthetic_config(threads);
        cfg.run.rounds = 30;
        cfg.run.scalar = scalar;
        run(&cfg, &ratings, &RunOptions::default()).unwrap()
    };
    let f = run_with(Scalar::F32, 2);
    for scalar in [Scalar::Q16, Scalar::Q12] {
        let r = run_with(scalar, 2);
        let (train, _) = losses(&r.records);
        let early: f64 = train[..3].iter().sum::<f64>() / 3.0;
        let late: f64 = train[27..].iter().sum::<f64>() / 3.0;
        assert!(
            late < 0.5 * early,
            "{scalar:?}: train loss {early} -> {late}"
        );
        assert!(
            (r.test.loss - f.test.loss).abs() < 0.05 * f.test.loss,
            "{scalar:?}: test loss {} vs f32 {}",
            r.test.loss,
            f.test.loss
        );
        let again = run_with(scalar, 1);
        assert_eq!(r.items, again.items, "{scalar:?}: 1 vs 2 threads");
    }
}

/// With `reshuffle_each_round` a client's device shuffle differs per round and per user (as
/// TFF's reshuffle on every iteration) and is a pure function of (seed, round, user); without
/// it the configured seed is used unchanged.
#[test]
fn reshuffle_each_round_derives_a_seed_per_round_and_user() {
    use fedrecon_host_sim::round::client_round_config;
    let cfg = fedrecon_core::RoundConfig {
        split: fedrecon_core::SplitConfig {
            shuffle_seed: Some(42),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(client_round_config(&cfg, false, 3, 7), cfg);
    let seed = |round, user| {
        client_round_config(&cfg, true, round, user)
            .split
            .shuffle_seed
    };
    assert_eq!(seed(3, 7), seed(3, 7));
    assert_ne!(seed(3, 7), seed(4, 7));
    assert_ne!(seed(3, 7), seed(3, 8));
    assert_ne!(seed(3, 7), Some(42));
    let unshuffled = fedrecon_core::RoundConfig::default();
    assert_eq!(
        client_round_config(&unshuffled, true, 3, 7)
            .split
            .shuffle_seed,
        None
    );
}

// ---------------------------------------------------------------- capacity classes

/// A client with more ratings than the small device holds (2,400) trains in the large one when
/// the configuration keeps every rating, for any thread count, bit-identically.
#[test]
fn a_client_beyond_the_small_capacity_trains_uncapped() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let mut s = 99u64;
    for user in 1..=40u32 {
        // Every fourth user is heavy, so the training split surely has some.
        let n = if user % 4 == 0 { 2400 + 37 * user } else { 40 };
        for k in 0..n {
            s = fedrecon_host_sim::seeds::splitmix64(s);
            let item = (k * 7 + user) % 4000 + 1;
            text.push_str(&format!("{user}::{item}::{}::{k}\n", s % 5 + 1));
        }
    }
    std::fs::write(dir.path().join("ratings.dat"), text).unwrap();
    let ratings = movielens::load(dir.path()).unwrap();
    assert!((0..ratings.users()).any(|u| ratings.user_len(u) > fedrecon_host_sim::round::N));
    let mut cfg = synthetic_config(1);
    cfg.data.max_ratings_per_user = None;
    cfg.run.rounds = 2;
    cfg.run.clients_per_round = 25;
    let mut runs = Vec::new();
    for threads in [1, 3] {
        cfg.run.threads = Some(threads);
        let r = run(&cfg, &ratings, &RunOptions::default()).unwrap();
        let bits: Vec<u32> = r.items.iter().map(|x| x.to_bits()).collect();
        runs.push((bits, r.test.clone(), losses(&r.records)));
    }
    assert_eq!(runs[0], runs[1], "1 vs 3 threads");
}

/// The same client's round gives the same bits in a small and a large device.
#[test]
fn small_and_large_devices_compute_the_same_round() {
    // Unoptimised builds build a device on the stack before boxing it.
    std::thread::Builder::new()
        .stack_size(fedrecon_host_sim::round::WORKER_STACK)
        .spawn(same_round_in_both_classes)
        .unwrap()
        .join()
        .unwrap();
}

fn same_round_in_both_classes() {
    use fedrecon_core::{DenseRows, Device};
    use fedrecon_host_sim::round::{LARGE_N, N, round_config};
    const K: usize = 8;
    let items = 500u32;
    let rows: Vec<[f32; K]> = (0..items)
        .map(|i| std::array::from_fn(|d| ((i as usize * K + d) % 13) as f32 * 0.01 - 0.06))
        .collect();
    let rows = DenseRows::new(&rows);
    let rc = round_config(&synthetic_config(1), false, 0.0, items as usize).unwrap();
    let mut small = Box::new(Device::<f32, N, K>::new());
    let mut large = Box::new(Device::<f32, LARGE_N, K>::new());
    for k in 0..2000u32 {
        let (item, rating) = (k * 31 % items, (k % 5 + 1) as f32);
        small.data_mut().push(item, rating, items).unwrap();
        large.data_mut().push(item, rating, items).unwrap();
    }
    let a = small.train(&rows, &rc, 5).unwrap();
    let b = large.train(&rows, &rc, 5).unwrap();
    assert!(!a.items.is_empty());
    assert_eq!((a.items, a.weight), (b.items, b.weight));
    let bits =
        |d: &[[f32; K]]| -> Vec<u32> { d.as_flattened().iter().map(|x| x.to_bits()).collect() };
    assert_eq!(bits(a.deltas), bits(b.deltas));
}
