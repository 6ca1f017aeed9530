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
use serde::{Deserialize, Serialize};

use super::{AdaptiveClipParams, DpAggregator, DpParams, RdpAccountant, default_delta};
use crate::seeds::derive;

/// The `[privacy]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpConfig {
    /// Differentially private aggregation on (clipping, uniform weights, noise).
    pub enabled: bool,
    /// Noise stddev / clip norm (z); 0 clips without noise (ε = ∞).
    pub noise_multiplier: f64,
    /// L2 clip norm of a client's whole update (the initial norm with adaptive clipping).
    pub clip: f64,
    /// Track the `target_quantile` of the update norms privately (Andrew et al. 2021).
    pub adaptive_clip: bool,
    /// Fraction of clients that should not be clipped, with adaptive clipping.
    pub target_quantile: f64,
    /// δ of the reported (ε, δ); absent = 1 / training users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
}

impl Default for DpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            noise_multiplier: 0.0,
            clip: 0.1,
            adaptive_clip: false,
            target_quantile: 0.5,
            delta: None,
        }
    }
}

impl DpConfig {
    /// Checks the values, on or off (an error names the field). A section that sets values
    /// without `enabled = true` is an error: the run would silently train without DP.
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            let d = DpConfig::default();
            let set: Vec<&str> = [
                (
                    self.noise_multiplier != d.noise_multiplier,
                    "noise_multiplier",
                ),
                (self.clip != d.clip, "clip"),
                (self.adaptive_clip != d.adaptive_clip, "adaptive_clip"),
                (self.target_quantile != d.target_quantile, "target_quantile"),
                (self.delta != d.delta, "delta"),
            ]
            .into_iter()
            .filter_map(|(differs, key)| differs.then_some(key))
            .collect();
            anyhow::ensure!(
                set.is_empty(),
                "[privacy] sets {} but not enabled = true: the run would train without \
                 differential privacy; add enabled = true (or remove the values)",
                set.iter()
                    .map(|k| format!("privacy.{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let z = self.noise_multiplier;
        anyhow::ensure!(
            z.is_finite() && z >= 0.0,
            "privacy.noise_multiplier = {z}: must be a finite number >= 0"
        );
        anyhow::ensure!(
            self.clip.is_finite() && self.clip > 0.0,
            "privacy.clip = {}: must be a finite number > 0",
            self.clip
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.target_quantile),
            "privacy.target_quantile = {}: must be in [0, 1]",
            self.target_quantile
        );
        if let Some(d) = self.delta {
            anyhow::ensure!(d > 0.0 && d < 1.0, "privacy.delta = {d}: must be in (0, 1)");
        }
        Ok(())
    }
}

/// Command-line flags of the `[privacy]` section; any of them turns DP on.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DpArgs {
    /// Central DP: Gaussian noise multiplier z (noise stddev = z × clip on the sum of clipped
    /// updates, uniform client weights). 0 clips without noise.
    #[arg(long)]
    pub dp_noise_multiplier: Option<f64>,
    /// Central DP: L2 clip norm of a client's update (initial norm with --dp-adaptive-clip;
    /// default 0.1).
    #[arg(long)]
    pub dp_clip: Option<f64>,
    /// Central DP: adapt the clip norm to a quantile of the update norms.
    #[arg(long)]
    pub dp_adaptive_clip: bool,
    /// Central DP: target quantile of adaptive clipping (default 0.5).
    #[arg(long)]
    pub dp_target_quantile: Option<f64>,
    /// δ of the reported ε (default 1 / training users).
    #[arg(long)]
    pub dp_delta: Option<f64>,
}

impl DpArgs {
    /// Applies the given flags to `c` (any DP flag enables DP).
    pub fn apply(&self, c: &mut DpConfig) {
        let mut on = false;
        if let Some(z) = self.dp_noise_multiplier {
            c.noise_multiplier = z;
            on = true;
        }
        if let Some(clip) = self.dp_clip {
            c.clip = clip;
            on = true;
        }
        if self.dp_adaptive_clip {
            c.adaptive_clip = true;
            on = true;
        }
        if let Some(q) = self.dp_target_quantile {
            c.target_quantile = q;
            on = true;
        }
        if let Some(d) = self.dp_delta {
            c.delta = Some(d);
            on = true;
        }
        c.enabled |= on;
    }
}

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
            .map_err(|e| anyhow!("--dp-*: {e}"))?;
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
