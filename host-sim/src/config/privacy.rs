//! The `[privacy]` section: central differential privacy of the aggregate (the mechanism is
//! the server's `privacy` module).

use anyhow::Result;
use serde::{Deserialize, Serialize};

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
    /// Checks the values (an error names the field).
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
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
