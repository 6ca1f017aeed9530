//! `fedrecon synth`: the synthetic MovieLens-shaped data is deterministic by seed (and not by
//! thread count), has MovieLens' shape (counts, heavy tails, distinct movies per user), loads
//! with the simulator's own loader, and a short federated run on it learns.

use crate::common;

use std::collections::HashSet;
use std::path::Path;

use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens::{self, Format};
use fedrecon_host_sim::data::synth::{Shape, SynthError, SynthOptions, SynthSummary, generate};
use fedrecon_host_sim::output::Record;
use fedrecon_host_sim::run::{RunOptions, run};

/// A small ML-25M-like population: 400 users, 300 movies, about 60 ratings a user.
fn small() -> SynthOptions {
    SynthOptions {
        users: 400,
        items: 300,
        mean_ratings_per_user: 60.0,
        max_ratings_per_user: 290,
        ..SynthOptions::shaped(Shape::Ml25m)
    }
}

fn generate_on(threads: usize, o: &SynthOptions, dir: &Path) -> SynthSummary {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| generate(o, dir)).unwrap()
}

fn files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join("ratings.csv")).unwrap(),
        std::fs::read(dir.join("movies.csv")).unwrap(),
    )
}

#[test]
fn same_seed_same_bytes_for_any_thread_count_other_seed_other_bytes() {
    let o = small();
    let mut outputs = Vec::new();
    for threads in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate_on(threads, &o, dir.path());
        outputs.push((files(dir.path()), summary));
    }
    assert_eq!(outputs[0], outputs[1], "1 vs 2 threads");
    assert_eq!(outputs[0], outputs[2], "1 vs 3 threads");

    let dir = tempfile::tempdir().unwrap();
    generate_on(2, &SynthOptions { seed: 2, ..o }, dir.path());
    let (ratings, _) = files(dir.path());
    assert_ne!(
        ratings, outputs[0].0.0,
        "seed 2 wrote the same ratings as seed 1"
    );
}

#[test]
fn shape_counts_heavy_tails_and_distinct_movies() {
    // Enough users for the tails to show; a few seconds even in a debug build.
    let o = SynthOptions {
        users: 3000,
        items: 2000,
        mean_ratings_per_user: 80.0,
        max_ratings_per_user: 1500,
        ..SynthOptions::shaped(Shape::Ml25m)
    };
    let dir = tempfile::tempdir().unwrap();
    let summary = generate_on(2, &o, dir.path());
    let r = movielens::load(dir.path()).unwrap();

    // Counts: every user is there, the loader sees exactly what the generator wrote.
    assert_eq!(r.users(), 3000);
    assert_eq!(r.len() as u64, summary.ratings);
    assert!(
        r.items() <= 2000 && r.items() > 1500,
        "{} movies rated",
        r.items()
    );
    let mean = summary.ratings as f64 / 3000.0;
    assert!((70.0..90.0).contains(&mean), "mean ratings per user {mean}");
    let stats = r.stats();
    assert_eq!(stats.per_user_min, summary.min_per_user as usize);
    assert_eq!(stats.per_user_max, summary.max_per_user as usize);
    assert!(stats.per_user_min >= 20);

    // Heavy tail per user: the median is well below the mean, the largest far above it.
    assert!(
        stats.per_user_median < 0.8 * mean && stats.per_user_max as f64 > 8.0 * mean,
        "per user: median {} max {} mean {mean}",
        stats.per_user_median,
        stats.per_user_max
    );
    // Heavy tail per movie: the top 5 % of movies hold more than a quarter of the ratings.
    let mut per_item = vec![0usize; r.items()];
    for &i in r.items_of() {
        per_item[i as usize] += 1;
    }
    per_item.sort_unstable_by(|a, b| b.cmp(a));
    let top: usize = per_item[..r.items() / 20].iter().sum();
    assert!(
        top as f64 > 0.25 * r.len() as f64,
        "top 5 % of movies hold {top} of {}",
        r.len()
    );

    // Half stars over the whole scale, centred like MovieLens, and no user rates a movie twice.
    assert_eq!(
        stats.counts_by_value.len(),
        10,
        "{:?}",
        stats.counts_by_value
    );
    assert!(
        (3.2..3.9).contains(&stats.mean),
        "mean rating {}",
        stats.mean
    );
    for u in 0..r.users() {
        let items = r.user(u).items;
        let distinct: HashSet<u32> = items.iter().copied().collect();
        assert_eq!(distinct.len(), items.len(), "user {u} rates a movie twice");
    }
}

#[test]
fn loads_with_the_simulators_loader_titles_included() {
    let dir = tempfile::tempdir().unwrap();
    let o = SynthOptions {
        half_stars: false,
        ..small()
    };
    generate_on(2, &o, dir.path());
    let r = movielens::load(dir.path()).unwrap();
    assert_eq!(r.format(), Some(Format::Csv));
    assert!(
        (0..r.items()).all(|i| r
            .title(i)
            .is_some_and(|t| t.starts_with("Synthetic Movie "))),
        "every rated movie has its title"
    );
    // Whole stars: only 1..=5.
    let values: Vec<f32> = r.stats().counts_by_value.iter().map(|c| c.0).collect();
    assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0]);
    // Users are written in id order, so dense user u is raw user u + 1.
    assert!(
        r.user_raw_ids()
            .iter()
            .enumerate()
            .all(|(u, &raw)| raw == u as u32 + 1)
    );
}

#[test]
fn a_short_federated_run_on_it_learns() {
    let dir = tempfile::tempdir().unwrap();
    generate_on(2, &small(), dir.path());
    let ratings = movielens::load(dir.path()).unwrap();
    let mut cfg = Config::preset(Preset::Tutorial);
    cfg.data.max_clients = None;
    cfg.model.k = 8;
    cfg.run.rounds = 30;
    cfg.run.clients_per_round = 40;
    cfg.run.eval_every = 10;
    cfg.run.eval_clients = None;
    cfg.run.threads = Some(2);
    let res = run(&cfg, &ratings, &RunOptions::default()).unwrap();
    let train: Vec<f64> = res
        .records
        .iter()
        .filter_map(|r| match r {
            // No round of this run is skipped: every training row carries its loss.
            Record::Train { loss, .. } => Some(loss.expect("a trained round's loss")),
            _ => None,
        })
        .collect();
    assert_eq!(train.len(), 30);
    let early: f64 = train[..3].iter().sum::<f64>() / 3.0;
    let late: f64 = train[27..].iter().sum::<f64>() / 3.0;
    assert!(late < 0.5 * early, "train loss {early} -> {late}");
    assert!(
        res.test.loss.is_finite() && res.test.loss < 0.5 * early,
        "test loss {} vs early train loss {early}",
        res.test.loss
    );
}

#[test]
fn bad_options_are_refused_by_name() {
    let cases: [(SynthOptions, &str); 4] = [
        (
            SynthOptions {
                users: 0,
                ..small()
            },
            "users",
        ),
        (
            SynthOptions {
                max_ratings_per_user: 301,
                ..small()
            },
            "max_ratings_per_user",
        ),
        (
            SynthOptions {
                mean_ratings_per_user: 10.0,
                ..small()
            },
            "mean_ratings_per_user",
        ),
        (
            SynthOptions {
                noise: -1.0,
                ..small()
            },
            "noise",
        ),
    ];
    for (o, name) in cases {
        let dir = tempfile::tempdir().unwrap();
        match generate(&o, dir.path()) {
            Err(SynthError::Invalid { option, .. }) => assert_eq!(option, name),
            other => panic!("{name}: expected an error naming it, got {other:?}"),
        }
        assert!(!dir.path().join("ratings.csv").exists());
    }
}

#[test]
fn cli_writes_a_loadable_folder_and_refuses_a_full_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let args = [
        "synth",
        "--out",
        "",
        "--shape",
        "ml-1m",
        "--users",
        "50",
        "--items",
        "80",
        "--ratings-per-user",
        "30",
        "--max-ratings-per-user",
        "70",
        "--seed",
        "3",
    ];
    let mut args: Vec<&str> = args.to_vec();
    let out_str = out.to_str().unwrap();
    args[2] = out_str;
    let o = common::fedrecon(&args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("wrote 50 users, 80 movies"), "{stdout}");
    assert_eq!(movielens::load(&out).unwrap().users(), 50);

    let again = common::fedrecon(&args);
    assert!(!again.status.success());
    assert!(
        common::stderr(&again).contains("not empty"),
        "{}",
        common::stderr(&again)
    );
}

#[test]
fn bench_runs_any_configuration_on_it_and_prints_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    generate_on(2, &small(), dir.path());
    let data = dir.path().to_str().unwrap();
    let o = common::fedrecon(&[
        "bench",
        "--data",
        data,
        "--preset",
        "tutorial",
        "--k",
        "8",
        "--rounds",
        "1",
        "--clients-per-round",
        "20",
        "--eval-clients",
        "5",
        "--max-ratings-per-user",
        "none",
        "--threads",
        "2",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for phase in [
        "20 clients per round",
        "K = 8",
        "device training",
        "encode",
        "decode + validate",
        "aggregate",
        "server step",
        "evaluation",
        "(5 validation users",
        "M rating-steps/s",
        "per-core speed vs baseline",
        "peak RSS: ",
    ] {
        assert!(out.contains(phase), "no '{phase}' in:\n{out}");
    }
}

/// Python's `fedrecon.synthetic` generates in memory: the ratings, ids and titles are exactly
/// those of the folder `fedrecon synth` writes with the same options, and the movie text is
/// the file's.
#[test]
fn in_memory_is_the_folder_loaded() {
    use fedrecon_host_sim::data::synth::in_memory;
    let o = small();
    let dir = tempfile::tempdir().unwrap();
    generate_on(2, &o, dir.path());
    let from_disk = movielens::load(dir.path()).unwrap();
    let (in_mem, movies) = in_memory(&o).unwrap();
    assert_eq!(in_mem.user_raw_ids(), from_disk.user_raw_ids());
    assert_eq!(in_mem.item_raw_ids(), from_disk.item_raw_ids());
    assert_eq!(in_mem.offsets(), from_disk.offsets());
    assert_eq!(in_mem.items_of(), from_disk.items_of());
    assert_eq!(in_mem.values(), from_disk.values());
    assert_eq!(in_mem.timestamps(), from_disk.timestamps());
    assert_eq!(in_mem.titles(), from_disk.titles());
    assert_eq!(movies.as_bytes(), files(dir.path()).1);
    // Invalid options are refused before anything is generated, naming the option.
    let e = in_memory(&SynthOptions { rank: 0, ..o }).unwrap_err();
    assert!(e.to_string().contains("option rank"), "{e}");
}

/// The command line's flags and Python's keywords go through one mapping: unset keeps the
/// shape's options, the per-user cap follows the catalogue, and a total sets the mean.
#[test]
fn overrides_change_only_what_they_name() {
    use fedrecon_host_sim::data::synth::Overrides;
    let shape = SynthOptions::shaped(Shape::Ml1m);
    assert_eq!(
        SynthOptions::shaped_with(Shape::Ml1m, &Overrides::default()),
        shape
    );
    let o = SynthOptions::shaped_with(
        Shape::Ml1m,
        &Overrides {
            users: Some(100),
            items: Some(500),
            ratings: Some(10_000),
            seed: Some(9),
            ..Overrides::default()
        },
    );
    assert_eq!((o.users, o.items, o.seed), (100, 500, 9));
    assert_eq!(o.max_ratings_per_user, 500, "cap follows the catalogue");
    assert_eq!(o.mean_ratings_per_user, 100.0);
    assert_eq!(
        (o.rank, o.noise, o.half_stars),
        (shape.rank, shape.noise, false)
    );
    let mean = SynthOptions::shaped_with(
        Shape::Ml25m,
        &Overrides {
            ratings: Some(1),
            ratings_per_user: Some(42.0),
            whole_stars: true,
            ..Overrides::default()
        },
    );
    assert_eq!(mean.mean_ratings_per_user, 42.0, "the per-user mean wins");
    assert!(!mean.half_stars);
}
