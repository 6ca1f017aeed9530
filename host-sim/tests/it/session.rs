//! The owned, one-call-at-a-time `Session` (the Python binding's engine): its schedule gives
//! exactly `run`'s records and model, checkpoints resume bit-identically, and errors name what
//! is wrong.

use crate::common;

use std::sync::Arc;

use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens;
use fedrecon_host_sim::output::Record;
use fedrecon_host_sim::round::Split;
use fedrecon_host_sim::run::{RunOptions, run};
use fedrecon_host_sim::session::Session;

fn cfg() -> Config {
    let mut c = Config::preset(Preset::Tutorial);
    c.model.k = 8;
    c.run.rounds = 5;
    c.run.clients_per_round = 10;
    c.run.eval_every = 2;
    c.run.threads = Some(2);
    c
}

/// Records without wall-clock fields.
fn timeless(r: &[Record]) -> Vec<Record> {
    r.iter()
        .cloned()
        .map(|mut r| {
            if let Record::Train { seconds, .. } = &mut r {
                *seconds = 0.0;
            }
            r
        })
        .collect()
}

fn data() -> Arc<movielens::Ratings> {
    let d = tempfile::tempdir().unwrap();
    common::synthetic(d.path(), 120, 60, 30);
    Arc::new(movielens::load(d.path()).unwrap())
}

#[test]
fn stepping_the_schedule_equals_run() {
    let ratings = data();
    let reference = run(&cfg(), &ratings, &RunOptions::default()).unwrap();
    let mut s = Session::new(cfg(), Arc::clone(&ratings), Default::default()).unwrap();
    assert_eq!(s.start().unwrap().len(), 1);
    let mut steps = 0;
    while !s.done() {
        let added = s.step().unwrap();
        steps += 1;
        // Validation after rounds 2 and 4, not after the last (5).
        assert_eq!(
            added.len(),
            if steps % 2 == 0 { 2 } else { 1 },
            "round {steps}"
        );
    }
    let test = s.finish().unwrap();
    assert_eq!(steps, 5);
    assert_eq!(timeless(s.records()), timeless(&reference.records));
    assert_eq!(test, reference.test);
    assert_eq!(s.params().unwrap(), reference.items);
    let top = s.recommend(ratings.user_raw_ids()[0], 5).unwrap();
    assert_eq!(top.len(), 5);
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
    let mine = ratings.user(0).items;
    assert!(top.iter().all(|(i, _)| !mine.contains(i)));
}

#[test]
fn checkpoint_resumes_bit_identically() {
    let ratings = data();
    let mut full = Session::new(cfg(), Arc::clone(&ratings), Default::default()).unwrap();
    full.start().unwrap();
    while !full.done() {
        full.step().unwrap();
    }
    full.finish().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut a = Session::new(cfg(), Arc::clone(&ratings), Default::default()).unwrap();
    a.start().unwrap();
    for _ in 0..3 {
        a.step().unwrap();
    }
    a.save_checkpoint(dir.path()).unwrap();
    drop(a);
    let mut b = Session::resume(dir.path(), Arc::clone(&ratings)).unwrap();
    assert_eq!(b.rounds_done(), 3);
    while !b.done() {
        b.step().unwrap();
    }
    b.finish().unwrap();
    assert_eq!(b.params().unwrap(), full.params().unwrap());
    // Records up to the checkpoint come back from its metrics.jsonl (JSON numbers, as for
    // `train --resume`); the ones after it are computed again and must be identical.
    let (got, want) = (timeless(b.records()), timeless(full.records()));
    assert_eq!(got.len(), want.len());
    let saved = 1 + 3 + 1; // val at 0, rounds 1-3, val at 2
    let via_json: Vec<Record> = want[..saved]
        .iter()
        .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
        .collect();
    assert_eq!(got[..saved], via_json[..]);
    assert_eq!(got[saved..], want[saved..]);
}

#[test]
fn errors_name_the_problem() {
    let ratings = data();
    let mut bad = cfg();
    bad.model.k = 7;
    let e = Session::new(bad, Arc::clone(&ratings), Default::default())
        .err()
        .expect("K = 7 is refused");
    assert!(format!("{e:#}").contains("model.k"), "{e:#}");
    let mut s = Session::new(cfg(), Arc::clone(&ratings), Default::default()).unwrap();
    let e = s.recommend(999_999, 5).unwrap_err();
    assert_eq!(format!("{e:#}"), "user 999999: no such user in the data");
    let e = s.recommend(1, 0).unwrap_err();
    assert!(format!("{e:#}").contains("must be in 1..=100"), "{e:#}");
    let e = Session::resume(std::path::Path::new("/nonexistent-fedrecon"), ratings)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("not a directory"), "{e:#}");
    // Evaluation after training keeps working on the same thread.
    s.train_round().unwrap();
    assert_eq!(s.evaluate(Split::Test).unwrap().round, 1);
}
