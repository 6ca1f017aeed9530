//! Differential privacy in a run: the `[privacy]` configuration section, its command-line flags,
//! and [`DpSession`], which the engine feeds each round's decoded client updates.
//!
//! Per round: every client update that decoded is clipped to the clip norm and summed with
//! uniform weight ([`DpAggregator`]); Gaussian noise of `noise_multiplier × clip` is added to
//! every coordinate of the sum from a seeded server-side stream; the sum is divided by
//! `clients_per_round`; the server optimizer applies it. The [`RdpAccountant`] then steps once
//! with `q = clients_per_round / training users` and reports (ε, δ), δ = 1 / training users
//! unless `--dp-delta` says otherwise.
//!
//! Caveats (printed with the results): the accountant assumes Poisson sampling with probability
//! `q`, while the simulator samples exactly `clients_per_round` clients without replacement,
//! so ε is the conventional approximation (as in TF Privacy's reports), not a proof for this
//! sampler. Central DP protects the released item matrix from anyone who sees it (other users,
//! whoever downloads the model); it does not hide a client's update from the server that
//! aggregates it (see `comm` for what the row set of an update reveals).

use anyhow::{Result, anyhow};
use serde::Serialize;

use super::{AdaptiveClipParams, DpAggregator, DpParams, RdpAccountant, default_delta};
use crate::config::privacy::DpConfig;
use crate::seeds::derive;

/// Privacy spent so far and this round's clipping, as written to `metrics.jsonl`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PrivacySpent {
    /// ε of (ε, δ)-DP for all rounds so far (+∞, written `null`, without noise).
    #[serde(deserialize_with = "null_is_infinite")]
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Clip norm of the round.
    #[serde(rename = "dp_clip")]
    pub clip: f64,
    /// Fraction of the round's clients whose update was scaled down.
    #[serde(rename = "dp_clipped_fraction")]
    pub clipped_fraction: f64,
}

/// Reads back an ε that JSON wrote as `null` (+∞: no noise) when a run resumes.
fn null_is_infinite<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// Seed tag of the server's DP noise.
const NOISE_TAG: u64 = 0xD9_0015E;

/// DP aggregation and accounting of one run.
#[derive(Debug)]
pub struct DpSession {
    agg: DpAggregator,
    accountant: RdpAccountant,
    q: f64,
    z: f64,
    delta: f64,
    seed: u64,
    spent: Option<PrivacySpent>,
}

impl DpSession {
    /// A session for `train_users` training users, `clients_per_round` sampled per round, an
    /// item matrix of `num_items × k` (plus biases).
    pub fn new(
        cfg: &DpConfig,
        clients_per_round: usize,
        train_users: usize,
        num_items: usize,
        k: usize,
        with_bias: bool,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        let params = DpParams {
            noise_multiplier: cfg.noise_multiplier,
            clip: cfg.clip,
            adaptive: cfg.adaptive_clip.then(|| AdaptiveClipParams {
                target_quantile: cfg.target_quantile,
                ..AdaptiveClipParams::default()
            }),
            expected_clients: clients_per_round.min(train_users) as f64,
        };
        let agg = DpAggregator::new(&params, num_items, k, with_bias)
            .map_err(|e| anyhow!("privacy: {e}"))?;
        Ok(Self {
            agg,
            accountant: RdpAccountant::default(),
            q: (clients_per_round as f64 / train_users as f64).min(1.0),
            z: cfg.noise_multiplier,
            delta: cfg.delta.unwrap_or_else(|| default_delta(train_users)),
            seed,
            spent: None,
        })
    }

    /// Sampling probability the accountant uses.
    pub fn q(&self) -> f64 {
        self.q
    }

    /// The accountant (its RDP so far).
    pub fn accountant(&self) -> &RdpAccountant {
        &self.accountant
    }

    /// Privacy spent after the last finished round (`None` before the first).
    pub fn spent(&self) -> Option<PrivacySpent> {
        self.spent
    }

    /// Clips and adds one client's decoded update (`items` ascending, `rows` `items × k`,
    /// `biases` parallel to `items` or empty). Returns the update's norm before clipping.
    pub fn add_client(&mut self, items: &[u32], rows: &[f32], biases: &[f32]) -> Result<f64> {
        let k = rows.len() / items.len().max(1);
        let info = self
            .agg
            .add_client(
                items
                    .iter()
                    .zip(rows.chunks_exact(k.max(1)))
                    .map(|(&i, r)| (i, r)),
                items.iter().copied().zip(biases.iter().copied()),
            )
            .map_err(|e| anyhow!("DP aggregation: {e}"))?;
        Ok(info.norm)
    }

    /// Ends round `round`: the noised mean delta (dense, as [`DpAggregator::finish`]) and the
    /// privacy spent including this round.
    pub fn finish(&mut self, round: u32) -> Result<(Vec<f32>, PrivacySpent)> {
        let mean = self
            .agg
            .finish(derive(&[self.seed, NOISE_TAG, u64::from(round)]));
        let stats = self
            .agg
            .last_round()
            .cloned()
            .ok_or_else(|| anyhow!("internal: DP round without statistics"))?;
        self.accountant
            .step(self.q, self.z, 1)
            .map_err(|e| anyhow!("DP accountant: {e}"))?;
        let (epsilon, _order) = self
            .accountant
            .epsilon(self.delta)
            .map_err(|e| anyhow!("DP accountant: {e}"))?;
        let spent = PrivacySpent {
            epsilon,
            delta: self.delta,
            clip: stats.clip_norm,
            clipped_fraction: stats.clipped_clients as f64 / stats.clients.max(1) as f64,
        };
        self.spent = Some(spent);
        Ok((mean, spent))
    }
}
