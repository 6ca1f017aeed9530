//! Evaluation on users never seen in training (docs/SEMANTICS.md "Evaluation"): per user, reconstruct on
//! the first split, measure loss / rating accuracy / absolute error on the second, and rank the
//! catalogue for recall@10 and NDCG@10.
//!
//! Ranking: the relevant items are the distinct second-split items rated `>= 4`; candidates are
//! all items except the first split's (the ones the reconstruction saw), scored by the
//! reconstructed user through [`Device::rank`] into a [`TopK`]. Users without a relevant item
//! are skipped for the ranking metrics (they still count for loss and accuracy).
//! `recall@10 = hits / |relevant|`; `NDCG@10` uses binary gains, `DCG = Σ_hits 1/log2(rank+1)`
//! over the ideal `Σ_{i ≤ min(10, |relevant|)} 1/log2(i+1)`.
//!
//! With a target item (the attack bench, `attack.target`), its hit ratio@10 is the share of
//! users whose top-10 contains it, over every user whose reconstruction split does not hold it.

use fedrecon_core::rank::TopK;
use fedrecon_core::{Device, ItemRows, Metrics, Phase, RoundConfig, Scalar};
use serde::Serialize;

/// Cut-off of the ranking metrics.
pub(crate) const TOP_K: usize = 10;

/// Ratings at or above this make a held-out item relevant.
pub(crate) const RELEVANT_RATING: f32 = 4.0;

/// One user's evaluation result.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserEval {
    /// Metric sums over the user's second split.
    pub metrics: Metrics,
    /// `(recall@10, NDCG@10)`, or `None` when the user has no relevant item.
    pub ranking: Option<(f64, f64)>,
    /// Whether the target item is in the user's top 10 (`None`: no target, or the user's
    /// reconstruction split holds it).
    pub target_hit: Option<bool>,
}

/// Sums of per-user results, merged in user order (so deterministic).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalSums {
    /// Summed metric sums.
    pub metrics: Metrics,
    /// Users evaluated.
    pub users: u32,
    /// Users with at least one relevant item.
    pub ranked_users: u32,
    /// Sum of per-user recall@10.
    pub recall_sum: f64,
    /// Sum of per-user NDCG@10.
    pub ndcg_sum: f64,
    /// Users the target item's hit ratio counts, and those with it in their top 10.
    pub target: Option<(u32, u32)>,
}

impl EvalSums {
    /// Adds one user's result.
    pub fn add(&mut self, u: &UserEval) {
        self.metrics.merge(&u.metrics);
        self.users += 1;
        if let Some((r, n)) = u.ranking {
            self.ranked_users += 1;
            self.recall_sum += r;
            self.ndcg_sum += n;
        }
        if let Some(hit) = u.target_hit {
            let (users, hits) = self.target.get_or_insert((0, 0));
            *users += 1;
            *hits += u32::from(hit);
        }
    }

    /// Finalises into the reported figures for `split`.
    pub fn finish(&self, split: &str, round: u32) -> EvalReport {
        let m = &self.metrics;
        let count = f64::from(m.count.max(1));
        let loss = f64::from(m.loss_sum) / count;
        let ranked = f64::from(self.ranked_users.max(1));
        EvalReport {
            split: split.to_owned(),
            round,
            loss,
            rating_accuracy: f64::from(m.correct) / count,
            rmse: loss.sqrt(),
            mae: f64::from(m.abs_err_sum) / count,
            recall_at_10: self.recall_sum / ranked,
            ndcg_at_10: self.ndcg_sum / ranked,
            users: self.users,
            ranked_users: self.ranked_users,
            examples: m.count,
            epsilon: None,
            delta: None,
            target_hit_ratio: self
                .target
                .map(|(users, hits)| f64::from(hits) / f64::from(users.max(1))),
        }
    }
}

/// Finalised evaluation figures (one line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// `"val"` or `"test"`.
    pub split: String,
    /// Training rounds completed when this evaluation ran.
    pub round: u32,
    /// Example-weighted mean squared error.
    pub loss: f64,
    /// Fraction of examples with `|y − ŷ| <= threshold`.
    pub rating_accuracy: f64,
    /// `sqrt(loss)`.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Mean over ranked users of recall@10.
    pub recall_at_10: f64,
    /// Mean over ranked users of NDCG@10.
    pub ndcg_at_10: f64,
    /// Users evaluated.
    pub users: u32,
    /// Users with a relevant held-out item (denominator of the ranking metrics).
    pub ranked_users: u32,
    /// Held-out examples measured.
    pub examples: u32,
    /// DP runs: ε spent by the training so far (`null` when infinite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// DP runs: δ of that ε.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// Attack bench: the target item's hit ratio@10 (present when `attack.target` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hit_ratio: Option<f64>,
}

/// Evaluates the user whose data is already loaded into `dev` (see [`Device::data_mut`]).
/// `relevant` is scratch space; `target` is the item whose hit ratio is measured, if any.
pub(crate) fn evaluate_loaded<S: Scalar, R: ItemRows<S, K>, const N: usize, const K: usize>(
    dev: &mut Device<S, N, K>,
    rows: &R,
    cfg: &RoundConfig,
    seed: u64,
    relevant: &mut Vec<u32>,
    target: Option<u32>,
) -> fedrecon_core::Result<UserEval> {
    let metrics = dev.evaluate(rows, cfg, seed)?;
    relevant.clear();
    relevant.extend(
        dev.phase_examples(cfg, Phase::PostReconstruction)
            .filter(|&(_, r)| r.to_f32() >= RELEVANT_RATING)
            .map(|(i, _)| i),
    );
    relevant.sort_unstable();
    relevant.dedup();
    let target = target.filter(|&t| {
        !dev.phase_examples(cfg, Phase::Reconstruction)
            .any(|(i, _)| i == t)
    });
    if relevant.is_empty() && target.is_none() {
        return Ok(UserEval {
            metrics,
            ranking: None,
            target_hit: None,
        });
    }
    let mut top = TopK::<S, TOP_K>::new(TOP_K)?;
    dev.rank(rows, cfg, &mut top)?;
    let top = top.into_sorted();
    let ranking = (!relevant.is_empty())
        .then(|| ranking_metrics(top.iter().map(|&(item, _)| item), relevant));
    let target_hit = target.map(|t| top.iter().any(|&(item, _)| item == t));
    Ok(UserEval {
        metrics,
        ranking,
        target_hit,
    })
}

/// `(recall@k, NDCG@k)` of a ranked list (best first, length `k`) against sorted `relevant`.
pub(crate) fn ranking_metrics(ranked: impl Iterator<Item = u32>, relevant: &[u32]) -> (f64, f64) {
    let mut hits = 0usize;
    let mut dcg = 0.0f64;
    for (pos, item) in ranked.take(TOP_K).enumerate() {
        if relevant.binary_search(&item).is_ok() {
            hits += 1;
            dcg += 1.0 / ((pos + 2) as f64).log2();
        }
    }
    let ideal: f64 = (0..relevant.len().min(TOP_K))
        .map(|pos| 1.0 / ((pos + 2) as f64).log2())
        .sum();
    let recall = hits as f64 / relevant.len() as f64;
    let ndcg = if ideal > 0.0 { dcg / ideal } else { 0.0 };
    (recall, ndcg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_metrics_hand_case() {
        // Relevant {3, 7}; ranked list hits 7 at rank 1 and 3 at rank 3.
        let (r, n) = ranking_metrics([7, 1, 3, 4].into_iter(), &[3, 7]);
        assert_eq!(r, 1.0);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        assert!((n - dcg / idcg).abs() < 1e-12);
        let (r, n) = ranking_metrics([1, 2].into_iter(), &[3]);
        assert_eq!((r, n), (0.0, 0.0));
    }
}
