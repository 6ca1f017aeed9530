//! The model bundle (`model.npz`, issue 18): `recommend` maps rows by raw movie id (users
//! reordered in the ratings file once printed wrong titles with exit 0), refuses data whose
//! movies differ naming the first offending id and the file, works for every preset, and
//! ranks a user exactly as the simulator's evaluation does.

use std::fmt::Write as _;
use std::path::Path;

use fedrecon_core::{DenseRows, Phase};
use fedrecon_host_sim::baselines::centralized::{CentralConfig, run_partition};
use fedrecon_host_sim::baselines::seen::{SeenSplit, run_seen};
use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::data::partition::{Client, partition};
use fedrecon_host_sim::output::bundle::{self, ModelBundle};
use fedrecon_host_sim::round::recommend::{ModelView, recommend};
use fedrecon_host_sim::round::{self, Simulation, Split};
use fedrecon_host_sim::run::{RunOptions, run};

use crate::common::{self, fedrecon, stderr};

/// `ratings.dat` lines grouped by user, and a `movies.dat` with a title per movie.
fn write_data(dir: &Path, users: &[(u32, Vec<String>)]) {
    let text: String = users.iter().flat_map(|(_, l)| l.iter()).cloned().collect();
    std::fs::write(dir.join("ratings.dat"), text).unwrap();
    let mut ids: Vec<u32> = users
        .iter()
        .flat_map(|(_, l)| {
            l.iter()
                .map(|x| x.split("::").nth(1).unwrap().parse().unwrap())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut movies = String::new();
    for i in ids {
        writeln!(movies, "{i}::Film number {i} (2000)::Drama").unwrap();
    }
    std::fs::write(dir.join("movies.dat"), movies).unwrap();
}

/// The generated data's lines per user, in file order.
fn users_of(dir: &Path) -> Vec<(u32, Vec<String>)> {
    let text = std::fs::read_to_string(dir.join("ratings.dat")).unwrap();
    let mut users: Vec<(u32, Vec<String>)> = Vec::new();
    for l in text.lines() {
        let u: u32 = l.split("::").next().unwrap().parse().unwrap();
        match users.last_mut() {
            Some((last, lines)) if *last == u => lines.push(format!("{l}\n")),
            _ => users.push((u, vec![format!("{l}\n")])),
        }
    }
    users
}

/// `preset` may carry `-priors`: `best` without implicit feedback (a config overlay).
fn train(data: &Path, preset: &str, out: &Path) {
    let (preset, overlay_text) = match preset.split_once('-') {
        Some((p, "priors")) => (p, "[client]\nimplicit = false\nboth_halves = false\n"),
        _ => (preset, ""),
    };
    let overlay = out.with_extension("overlay.toml");
    std::fs::write(&overlay, overlay_text).unwrap();
    let o = fedrecon(&[
        "train",
        "--config",
        overlay.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--preset",
        preset,
        "--max-clients",
        "none",
        "--k",
        "8",
        "--rounds",
        "3",
        "--clients-per-round",
        "20",
        "--eval-every",
        "0",
        "--threads",
        "2",
        "--no-progress",
        "--no-plots",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn recommend_cli(data: &Path, model: &Path, user: u32) -> std::process::Output {
    fedrecon(&[
        "recommend",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--user",
        &user.to_string(),
        "-k",
        "8",
    ])
}

/// Users reordered in the ratings file change every dense item id; the bundle's raw ids keep
/// each row with its movie, so the answer (titles and scores) is the same, for the tutorial's
/// SGD reconstruction, `best`'s biases and exact reconstruction with and without implicit
/// feedback (whose implicit rows are keyed by movie id too).
#[test]
fn recommend_maps_rows_by_movie_id_whatever_the_user_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, reordered) = (tmp.path().join("data"), tmp.path().join("reordered"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&reordered).unwrap();
    common::synthetic(&data, 90, 70, 24);
    let users = users_of(&data);
    write_data(&data, &users);
    let mut reversed = users.clone();
    reversed.reverse();
    write_data(&reordered, &reversed);
    let (a, b) = (
        movielens::load(&data).unwrap(),
        movielens::load(&reordered).unwrap(),
    );
    assert_ne!(
        a.item_raw_ids(),
        b.item_raw_ids(),
        "the reordering must change the dense item ids for this test to mean anything"
    );
    for preset in ["tutorial", "best-priors", "best"] {
        let run = tmp.path().join(format!("run-{preset}"));
        train(&data, preset, &run);
        for user in [1, 45, 90] {
            let here = recommend_cli(&data, &run.join(bundle::FILE), user);
            assert!(here.status.success(), "{preset}: {}", stderr(&here));
            let text = String::from_utf8(here.stdout).unwrap();
            assert_eq!(
                text.lines().filter(|l| l.contains("Film number")).count(),
                8,
                "{text}"
            );
            // The run directory and the items.npy beside the bundle name it too.
            for model in [run.clone(), run.join("items.npy")] {
                let o = recommend_cli(&data, &model, user);
                assert_eq!(String::from_utf8(o.stdout).unwrap(), text, "{preset}");
            }
            let there = recommend_cli(&reordered, &run.join(bundle::FILE), user);
            assert!(there.status.success(), "{preset}: {}", stderr(&there));
            assert_eq!(
                String::from_utf8(there.stdout).unwrap(),
                text,
                "{preset}, user {user}: the reordered file gives another answer"
            );
        }
    }
}

/// Data with a movie the model lacks, or a model with a movie the data lacks, is refused
/// naming the movie and the file; an `items.npy` alone (no ids) is refused.
#[test]
fn recommend_refuses_data_whose_movies_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::synthetic(&data, 60, 50, 20);
    let users = users_of(&data);
    write_data(&data, &users);
    let run = tmp.path().join("run");
    train(&data, "tutorial", &run);
    let model = run.join(bundle::FILE);

    // A movie the model never saw.
    let extra = tmp.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    let mut more = users.clone();
    let u = more[3].0;
    more[3].1.push(format!("{u}::9999::4::978300999\n"));
    write_data(&extra, &more);
    let o = recommend_cli(&extra, &model, 1);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("movie 9999") && e.contains(&extra.join("ratings.dat").display().to_string()),
        "{e}"
    );

    // A movie of the model that the data lacks: drop every rating of the first movie.
    let first: u32 = users[0].1[0].split("::").nth(1).unwrap().parse().unwrap();
    let fewer = tmp.path().join("fewer");
    std::fs::create_dir_all(&fewer).unwrap();
    let kept: Vec<(u32, Vec<String>)> = users
        .iter()
        .map(|(u, l)| {
            let l = l
                .iter()
                .filter(|x| x.split("::").nth(1).unwrap() != first.to_string())
                .cloned()
                .collect();
            (*u, l)
        })
        .collect();
    write_data(&fewer, &kept);
    let o = recommend_cli(&fewer, &model, 1);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!("movie {first} ")) && e.contains(&model.display().to_string()),
        "{e}"
    );

    // An items.npy without its bundle carries no ids.
    let lone = tmp.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(run.join("items.npy"), lone.join("items.npy")).unwrap();
    let o = recommend_cli(&data, &lone.join("items.npy"), 1);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no movie ids"), "{}", stderr(&o));
}

/// The bundle holds what the run trained: `items.npy`'s rows, the configuration, the movie
/// ids in the data's order, nonzero item biases and the training mean for `best`.
#[test]
fn bundle_holds_the_trained_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::synthetic(&data, 60, 50, 20);
    let run = tmp.path().join("run");
    train(&data, "best", &run);
    let b = ModelBundle::read(&run.join(bundle::FILE)).unwrap();
    let (items, rows, cols) = fedrecon_host_sim::output::read_npy(&run.join("items.npy")).unwrap();
    assert_eq!((b.items.clone(), b.len(), b.k), (items, rows, cols));
    let ratings = movielens::load(&data).unwrap();
    assert_eq!(b.item_ids, ratings.item_raw_ids());
    let cfg = b.config("bundle").unwrap();
    assert_eq!(cfg.preset, Preset::Best);
    assert_eq!(
        b.config_toml,
        std::fs::read_to_string(run.join("config.toml")).unwrap()
    );
    assert_eq!(b.rounds, 3);
    assert!(b.item_biases.iter().any(|&x| x != 0.0));
    let part = partition(&ratings, &cfg.data);
    assert_eq!(b.global_mean, round::mean_rating(&part.train));
}

/// `recommend` on a test user's reconstruction half is the evaluation's ranking of that user:
/// the same top 10, so the same recall@10 and NDCG@10 as `Simulation::evaluate_users`, for
/// `best` (item and user biases, global mean, exact reconstruction), with and without implicit
/// feedback (whose rows the bundle carries and the ranking must never offer).
#[test]
fn recommend_ranks_as_evaluation_does() {
    for implicit in [false, true] {
        std::thread::Builder::new()
            .stack_size(round::WORKER_STACK)
            .spawn(move || ranks_as_evaluation(implicit))
            .unwrap()
            .join()
            .unwrap();
    }
}

fn ranks_as_evaluation(implicit: bool) {
    const K: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::synthetic(&data, 150, 120, 40);
    let ratings = movielens::load(&data).unwrap();
    let mut cfg = Config::preset(Preset::Best);
    cfg.model.k = K;
    cfg.data.max_clients = None;
    cfg.run.rounds = 4;
    cfg.run.clients_per_round = 30;
    cfg.run.eval_every = 0;
    cfg.run.eval_clients = None;
    cfg.run.threads = Some(2);
    cfg.client.implicit = implicit;
    cfg.client.both_halves = implicit;
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    let opts = RunOptions {
        out: Some(out.clone()),
        ..RunOptions::default()
    };
    run(&cfg, &ratings, &opts).unwrap();
    let path = out.join(bundle::FILE);
    let model = ModelBundle::read(&path)
        .unwrap()
        .align(&ratings, &path, &data)
        .unwrap();
    assert_eq!(model.config, cfg);

    let part = partition(&ratings, &cfg.data);
    let n = ratings.items();
    let mut sim = Simulation::<f32, K>::new(&cfg, &part, n).unwrap();
    assert_eq!(model.implicit.len(), if implicit { (n + 1) * K } else { 0 });
    // The trained mean row is not the zero it starts at.
    assert!(!implicit || model.implicit[n * K..].iter().any(|&x| x != 0.0));
    let all_rows: Vec<f32> = model.items.iter().chain(&model.implicit).copied().collect();
    let mut biases = model.item_biases.clone();
    biases.resize(all_rows.len() / K, 0.0);
    let params: Vec<f32> = all_rows.iter().chain(&biases).copied().collect();
    let opt = sim.optimizer().clone();
    sim.restore(cfg.run.rounds, params, opt).unwrap();
    assert_eq!(sim.global_mean(), Some(model.global_mean));

    let rows = DenseRows::<f32, K>::with_biases(all_rows.as_chunks::<K>().0, &biases).unwrap();
    let eval_rc = round::round_config(&cfg, true, model.global_mean, n).unwrap();
    let view = ModelView {
        items: &model.items,
        cols: K,
        item_biases: &model.item_biases,
        global_mean: model.global_mean,
        implicit: &model.implicit,
    };
    let mut ws = round::new_workspace::<f32, K>();
    let mut compared = 0;
    for c in 0..part.test.len() {
        let client = part.test.client(c);
        let sums = sim.evaluate_users(&part.test, &[c], Split::Test).unwrap();
        if sums.ranked_users == 0 {
            continue;
        }
        // The halves evaluation uses for this user in this round.
        let rc = round::client_round_config(
            &eval_rc,
            cfg.client.reshuffle_each_round,
            cfg.run.rounds,
            client.user,
        );
        let loaded = round::load_client(&mut ws, &client, n as u32).unwrap();
        let (recon, mut relevant) = fedrecon_host_sim::on_device!(loaded, |dev| {
            dev.evaluate(&rows, &rc, 0).unwrap();
            let recon: Vec<(u32, f32)> = dev.phase_examples(&rc, Phase::Reconstruction).collect();
            let relevant: Vec<u32> = dev
                .phase_examples(&rc, Phase::PostReconstruction)
                .filter(|&(_, r)| r >= 4.0)
                .map(|(i, _)| i)
                .collect();
            (recon, relevant)
        });
        relevant.sort_unstable();
        relevant.dedup();
        // The reconstruction schedule repeats its examples over its epochs; the half is each
        // example once (the exact solve counts each once, and its priors scale with the count).
        let mut seen = std::collections::HashSet::new();
        let (items, values): (Vec<u32>, Vec<f32>) =
            recon.into_iter().filter(|&(i, _)| seen.insert(i)).unzip();
        let half = Client {
            user: client.user,
            items: &items,
            ratings: &values,
        };
        let top = recommend(&cfg, &view, &half, 10).unwrap();
        let (mut hits, mut dcg) = (0usize, 0f64);
        for (pos, (item, _)) in top.iter().enumerate() {
            if relevant.binary_search(item).is_ok() {
                hits += 1;
                dcg += 1.0 / ((pos + 2) as f64).log2();
            }
        }
        let ideal: f64 = (0..relevant.len().min(10))
            .map(|p| 1.0 / ((p + 2) as f64).log2())
            .sum();
        assert!(top.iter().all(|&(item, _)| (item as usize) < n));
        assert_eq!(
            (hits as f64 / relevant.len() as f64, dcg / ideal),
            (sums.recall_sum, sums.ndcg_sum),
            "test user {c}: recommend's top 10 {top:?} against relevant {relevant:?}"
        );
        compared += 1;
    }
    assert!(
        compared >= 5,
        "only {compared} test users had a relevant item"
    );
}

/// A notebook's session saves the same bundle `train` writes for the same run.
#[test]
fn a_session_saves_the_bundle_train_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::synthetic(&data, 60, 50, 20);
    write_data(&data, &users_of(&data));
    let run_dir = tmp.path().join("run");
    train(&data, "best", &run_dir);
    let from_train = ModelBundle::read(&run_dir.join(bundle::FILE)).unwrap();
    let cfg = from_train.config("bundle").unwrap();
    let ratings = std::sync::Arc::new(movielens::load(&data).unwrap());
    let mut s = fedrecon_host_sim::Session::new(cfg, ratings, data.clone()).unwrap();
    s.start().unwrap();
    while !s.done() {
        s.step().unwrap();
    }
    let saved = tmp.path().join("session.npz");
    s.save_model(&saved).unwrap();
    assert_eq!(ModelBundle::read(&saved).unwrap(), from_train);
    // And recommends from it as the command does, biases included.
    let o = recommend_cli(&data, &saved, 7);
    assert!(o.status.success(), "{}", stderr(&o));
    let top = s.recommend(7, 8).unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    for (line, (item, score)) in text.lines().skip(1).zip(&top) {
        let id = movielens::load(&data).unwrap().item_raw_ids()[*item as usize];
        assert!(
            line.contains(&format!("{score:.3}  Film number {id} ")),
            "{line} vs {item} {score}"
        );
    }
}

/// `fedrecon centralized --out DIR` writes the bundle `train` writes, for either split: the
/// rows the library's centralized training gives, with the data's movie ids and `items.npy`
/// beside it; `recommend` reads it and ranks as the library's recommendation from those rows.
#[test]
fn centralized_writes_the_bundle_recommend_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::synthetic(&data, 80, 60, 20);
    write_data(&data, &users_of(&data));
    let ratings = movielens::load(&data).unwrap();
    for split in ["unseen", "seen"] {
        let out = tmp.path().join(format!("central-{split}"));
        let o = fedrecon(&[
            "centralized",
            "--data",
            data.to_str().unwrap(),
            "--preset",
            "best",
            "--epochs",
            "3",
            "--seed",
            "4",
            "--split",
            split,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{split}: {}", stderr(&o));
        let b = ModelBundle::read(&out.join(bundle::FILE)).unwrap();
        let (items, rows, cols) =
            fedrecon_host_sim::output::read_npy(&out.join("items.npy")).unwrap();
        assert_eq!((&b.items, b.len(), b.k), (&items, rows, cols), "{split}");
        assert_eq!(b.item_ids, ratings.item_raw_ids(), "{split}");
        assert_eq!(b.rounds, 0);
        assert!(b.item_biases.iter().any(|&x| x != 0.0), "{split}");
        let cfg = b.config("bundle").unwrap();
        assert_eq!((cfg.preset, cfg.run.seed), (Preset::Best, 4), "{split}");

        let central = CentralConfig {
            epochs: 3,
            seed: 4,
            ..CentralConfig::default()
        };
        let fit = if split == "seen" {
            run_seen(&cfg, &central, &ratings, &SeenSplit::default(), 0)
                .unwrap()
                .fit
        } else {
            let part = partition(&ratings, &cfg.data);
            run_partition(&cfg, &central, &part, ratings.items(), 0)
                .unwrap()
                .fit
        };
        assert_eq!(fit.bundle(ratings.item_raw_ids()).unwrap(), b, "{split}");

        let raw_user = 7;
        let o = recommend_cli(&data, &out, raw_user);
        assert!(o.status.success(), "{split}: {}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        let mine = ratings.user(
            ratings
                .user_raw_ids()
                .iter()
                .position(|&u| u == raw_user)
                .unwrap(),
        );
        let view = ModelView {
            items: &fit.items,
            cols: cfg.model.k,
            item_biases: &fit.item_biases,
            global_mean: fit.global_mean.unwrap(),
            implicit: &[],
        };
        let client = Client {
            user: raw_user,
            items: mine.items,
            ratings: mine.values,
        };
        let top = recommend(&cfg, &view, &client, 8).unwrap();
        assert_eq!(top.len(), 8);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines.len(), 8, "{text}");
        for (line, (item, score)) in lines.iter().zip(&top) {
            let id = ratings.item_raw_ids()[*item as usize];
            assert!(
                line.contains(&format!("{score:.3}  Film number {id} ")),
                "{split}: {line} vs movie {id} {score}"
            );
        }
    }
}
