//! `fedrecon centralized --split seen`: the centralized model on a *seen-user* split, for
//! context beside published seen-user figures (Surprise's ML-1M table, 5-fold CV: SVD RMSE
//! 0.873, SVD++ 0.862). Not comparable to the unseen-user figures: every evaluated user
//! trained an embedding on their other ratings, and nothing is reconstructed.
//!
//! The split is Surprise's: a random fraction of *all* ratings of the data (every user, every
//! rating; the configuration's user split and per-user cap are not used), 0.2 by default (one
//! fold of 5-fold cross-validation), drawn from the seed alone, so it is the same for every
//! model and hyperparameter. Training is [`super::centralized::train`] on the other ratings,
//! one embedding (and bias) per user, the global mean being the training ratings' mean;
//! each held-out rating is predicted with its user's trained embedding.

use std::time::Instant;

use anyhow::{Result, ensure};
use fedrecon_core::rng::DeviceRng;
use serde::Serialize;

use super::centralized::{CentralConfig, CentralFit, CentralModel, Triples, train};
use crate::config::{Config, Scalar};
use crate::data::movielens::Ratings;
use crate::output::checkpoint::Fnv;
use crate::seeds::derive;

/// The seen-user split's one option.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SeenSplit {
    /// Fraction of all ratings held out, in (0, 1).
    pub holdout: f64,
}

impl Default for SeenSplit {
    fn default() -> Self {
        Self { holdout: 0.2 }
    }
}

/// The ratings of a seen-user split; user indices are dense user ids, so every user with a
/// training rating has an embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenData {
    /// The ratings trained on, in ratings-file order.
    pub train: Triples,
    /// The held-out ratings, in ratings-file order.
    pub heldout: Triples,
}

impl SeenSplit {
    /// Splits every rating of `ratings`: `round(holdout × n)` of them, drawn by a shuffle
    /// seeded from `seed`, are held out, the others trained on.
    pub fn split(&self, ratings: &Ratings, seed: u64) -> Result<SeenData> {
        ensure!(
            self.holdout.is_finite() && self.holdout > 0.0 && self.holdout < 1.0,
            "the held-out fraction {} must be in (0, 1)",
            self.holdout
        );
        let n = ratings.len();
        ensure!(
            n >= 2,
            "a seen-user split needs at least 2 ratings ({n} in the data)"
        );
        let held = ((self.holdout * n as f64).round() as usize).clamp(1, n - 1);
        let mut order: Vec<u32> = (0..n as u32).collect();
        DeviceRng::new(derive(&[seed, 0x5EE_u64])).shuffle(&mut order);
        let mut is_held = vec![false; n];
        for &j in &order[..held] {
            is_held[j as usize] = true;
        }
        let (mut train, mut heldout) = (Triples::default(), Triples::default());
        let (offsets, items, values) = (ratings.offsets(), ratings.items_of(), ratings.values());
        for u in 0..ratings.users() {
            let mine = offsets[u] as usize..offsets[u + 1] as usize;
            let all = is_held[mine.clone()]
                .iter()
                .zip(&items[mine.clone()])
                .zip(&values[mine]);
            for ((&held, &i), &r) in all {
                let t = if held { &mut heldout } else { &mut train };
                t.users.push(u as u32);
                t.items.push(i);
                t.ratings.push(r);
            }
        }
        Ok(SeenData { train, heldout })
    }
}

/// Figures on the held-out ratings of a seen-user split (one line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeenReport {
    /// Always `"seen_heldout"`: held-out ratings of users the model trained on.
    pub split: &'static str,
    /// Training epochs done.
    pub epoch: u32,
    /// Root mean squared error of the raw prediction.
    pub rmse: f64,
    /// Root mean squared error with predictions clipped to the training ratings' range, as
    /// Surprise reports.
    pub rmse_clipped: f64,
    /// Mean absolute error of the raw prediction.
    pub mae: f64,
    /// Fraction with `|y − ŷ| <= client.accuracy_threshold`.
    pub rating_accuracy: f64,
    /// Held-out ratings measured.
    pub examples: usize,
}

/// What a seen-user run produced.
#[derive(Clone, Debug)]
pub struct SeenResult {
    /// Train RMSE of each epoch.
    pub train_rmse: Vec<f64>,
    /// Held-out figures every `eval_every` epochs, the last after the final epoch.
    pub heldout: Vec<SeenReport>,
    /// Ratings trained on.
    pub train_examples: usize,
    /// The trained item rows and biases.
    pub fit: CentralFit,
    /// Wall-clock seconds (after data loading).
    pub seconds: f64,
}

/// The figures of parameters `p` on `data`, with `range` the clipping interval.
fn measure(
    model: &CentralModel,
    p: &[f32],
    data: &Triples,
    threshold: f32,
    range: (f32, f32),
    epoch: u32,
) -> SeenReport {
    let (mut sq, mut sq_clipped, mut abs, mut correct) = (0f64, 0f64, 0f64, 0usize);
    for j in 0..data.len() {
        let (a, i) = (data.users[j] as usize, data.items[j] as usize);
        let y_hat = model.predict(p, a, i);
        let e = f64::from(y_hat - data.ratings[j]);
        let ec = f64::from(y_hat.clamp(range.0, range.1) - data.ratings[j]);
        sq += e * e;
        sq_clipped += ec * ec;
        abs += e.abs();
        correct += usize::from((y_hat - data.ratings[j]).abs() <= threshold);
    }
    let n = data.len().max(1) as f64;
    SeenReport {
        split: "seen_heldout",
        epoch,
        rmse: (sq / n).sqrt(),
        rmse_clipped: (sq_clipped / n).sqrt(),
        mae: abs / n,
        rating_accuracy: correct as f64 / n,
        examples: data.len(),
    }
}

/// Trains centrally on the training part of `split` over every rating of `ratings` and
/// measures the held-out part with the trained user embeddings (`eval_every` = 0: at the end
/// only). The model (K, biases, global mean) and the accuracy threshold come from `cfg`.
pub fn run_seen(
    cfg: &Config,
    central: &CentralConfig,
    ratings: &Ratings,
    split: &SeenSplit,
    eval_every: u32,
) -> Result<SeenResult> {
    let t0 = Instant::now();
    let mut cfg = cfg.clone();
    cfg.run.scalar = Scalar::F32;
    let data = split.split(ratings, central.seed)?;
    let n = data.train.len() as f64;
    let mean = data
        .train
        .ratings
        .iter()
        .map(|&r| f64::from(r))
        .sum::<f64>()
        / n;
    let range = data
        .train
        .ratings
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
    let model = CentralModel {
        k: cfg.model.k,
        items: ratings.items(),
        users: ratings.users(),
        user_bias: cfg.model.user_bias,
        item_bias: cfg.model.item_bias,
        mu: cfg.model.global_mean.then_some(mean as f32),
    };
    let threshold = cfg.client.accuracy_threshold;
    let (mut train_rmse, mut heldout) = (Vec::new(), Vec::new());
    let p = train(&model, &data.train, central, |epoch, rmse, p| {
        train_rmse.push(rmse);
        if eval_every > 0 && epoch % eval_every == 0 && epoch != central.epochs {
            let r = measure(&model, p, &data.heldout, threshold, range, epoch);
            tracing::info!(
                epoch,
                train_rmse = rmse,
                heldout_rmse = r.rmse,
                heldout_accuracy = r.rating_accuracy,
                "centralized, seen users"
            );
            heldout.push(r);
        } else {
            tracing::info!(epoch, train_rmse = rmse, "centralized, seen users");
        }
        Ok(())
    })?;
    heldout.push(measure(
        &model,
        &p,
        &data.heldout,
        threshold,
        range,
        central.epochs,
    ));
    // What was trained on and held out (the held-out values included: other data, other model
    // figures).
    let mut h = Fnv::new();
    h.eat(model.items as u32);
    for t in [&data.train, &data.heldout] {
        h.eat(t.len() as u32);
        for j in 0..t.len() {
            h.eat(t.users[j]);
            h.eat(t.items[j]);
            h.eat(t.ratings[j].to_bits());
        }
    }
    Ok(SeenResult {
        train_rmse,
        heldout,
        train_examples: data.train.len(),
        fit: CentralFit::new(&cfg, &model, &p, h.finish()),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 users, user `u` rates `5 + u % 7` of 30 items, values 1..=5.
    fn small() -> Ratings {
        let mut records = Vec::new();
        for u in 0..40u32 {
            for i in 0..(5 + u % 7) {
                let item = (u * 3 + i * 7) % 30;
                records.push((u + 100, item + 1, (1 + (u + i) % 5) as f32, i));
            }
        }
        Ratings::from_records(records)
    }

    fn set(t: &Triples) -> Vec<(u32, u32, u32)> {
        let mut v: Vec<_> = (0..t.len())
            .map(|j| (t.users[j], t.items[j], t.ratings[j].to_bits()))
            .collect();
        v.sort_unstable();
        v
    }

    /// The held-out and training ratings are disjoint and together every rating once; the
    /// held-out count is the fraction's; the split depends on the seed and on nothing else.
    #[test]
    fn split_is_disjoint_complete_and_deterministic() {
        let r = small();
        let all = SeenSplit { holdout: 0.5 }.split(&r, 0).unwrap();
        let everything = {
            let mut t = all.train.clone();
            t.users.extend(&all.heldout.users);
            t.items.extend(&all.heldout.items);
            t.ratings.extend(&all.heldout.ratings);
            set(&t)
        };
        let mut dedup = everything.clone();
        dedup.dedup_by_key(|x| (x.0, x.1));
        assert_eq!(
            dedup.len(),
            r.len(),
            "a (user, item) pair twice in the split"
        );
        for (frac, seed) in [(0.2, 1u64), (0.1, 2), (0.2, 3)] {
            let s = SeenSplit { holdout: frac };
            let d = s.split(&r, seed).unwrap();
            assert_eq!(
                d,
                s.split(&r, seed).unwrap(),
                "seed {seed}: not deterministic"
            );
            assert_eq!(
                d.heldout.len(),
                (frac * r.len() as f64).round() as usize,
                "{frac}"
            );
            let (tr, he) = (set(&d.train), set(&d.heldout));
            assert!(
                he.iter().all(|x| tr.binary_search(x).is_err()),
                "a held-out rating is also a training rating"
            );
            let mut union = tr.clone();
            union.extend(&he);
            union.sort_unstable();
            assert_eq!(union, everything, "seed {seed}: ratings lost or added");
        }
        let a = SeenSplit::default().split(&r, 1).unwrap();
        let b = SeenSplit::default().split(&r, 2).unwrap();
        assert_ne!(
            set(&a.heldout),
            set(&b.heldout),
            "the seed does not move the split"
        );
    }

    /// Fractions outside (0, 1) are refused, naming the value.
    #[test]
    fn bad_fractions_are_refused() {
        for f in [0.0, 1.0, -0.1, f64::NAN] {
            let e = SeenSplit { holdout: f }.split(&small(), 1).unwrap_err();
            assert!(e.to_string().contains(&format!("{f}")), "{e}");
        }
    }
}
