//! The `[robust]` section (issue 19): which robust aggregation rule the server uses
//! (`server::robust` implements them). Lives in `config` so the configuration does not depend
//! on the server.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// How the server combines the round's updates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Weighted mean (TFF's; the default).
    #[default]
    Mean,
    /// Per-row, per-coordinate median over the clients that sent the row.
    Median,
    /// Per-row, per-coordinate trimmed mean over the clients that sent the row.
    TrimmedMean,
    /// Per-row, per-coordinate trimmed mean over all the round's clients, a client that did
    /// not send the row counting as 0: a row only moves when more than `trim · n` clients
    /// push it the same way, so a few colluders cannot move a rare item.
    TrimmedMeanAll,
    /// Multi-Krum selection, then the weighted mean of the selected clients.
    Krum,
}

/// The `[robust]` section of a configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RobustConfig {
    /// The combining rule.
    pub aggregator: Rule,
    /// Largest L2 norm of a client's update after bounding (rows and biases); 0 = unbounded.
    pub norm_bound: f64,
    /// Fraction of a row's senders cut from each end per coordinate (`trimmed_mean`), `[0, 0.5)`.
    pub trim: f64,
    /// Clients Krum assumes may be Byzantine (`f`).
    pub krum_byzantine: usize,
    /// Clients multi-Krum keeps (1 = plain Krum); capped at the round's clients.
    pub krum_select: usize,
    /// Least `|cos|` between every row delta of an update and its largest row (0 = no check).
    /// In a reconstruction round the item rows train with the user embedding frozen, so every
    /// honest row delta is a multiple of that embedding (cos = ±1 up to rounding); an update
    /// failing the check is left out of the aggregate.
    pub row_alignment: f64,
}

impl Default for RobustConfig {
    fn default() -> Self {
        Self {
            aggregator: Rule::Mean,
            norm_bound: 0.0,
            trim: 0.1,
            krum_byzantine: 5,
            krum_select: 90,
            row_alignment: 0.0,
        }
    }
}

impl RobustConfig {
    /// The defense for deployments whose clients may be malicious (issue 19's attack bench:
    /// host-sim/SECURITY.md): the weighted mean of the updates whose rows are all aligned
    /// (|cos| >= 0.99999) with one direction, as a reconstruction round's are, each bounded
    /// to norm 10 (ML-1M's honest updates have a median norm of 5 to 7).
    pub fn untrusted() -> Self {
        Self {
            row_alignment: 0.99999,
            norm_bound: 10.0,
            ..Self::default()
        }
    }

    /// Whether the round must call `server::robust::aggregate` instead of the plain weighted mean.
    pub fn is_active(&self) -> bool {
        self.aggregator != Rule::Mean || self.norm_bound > 0.0 || self.row_alignment > 0.0
    }

    /// Checks the values; `dp` says whether differential privacy is on.
    pub fn validate(&self, dp: bool) -> Result<(), ConfigError> {
        let bad = |field: &'static str, value: String, reason: &'static str| {
            Err(ConfigError::Invalid {
                field,
                value,
                reason,
            })
        };
        if !(self.norm_bound.is_finite() && self.norm_bound >= 0.0) {
            return bad(
                "robust.norm_bound",
                format!("{:?}", self.norm_bound),
                "must be a finite number >= 0 (0 = no bound)",
            );
        }
        if !(self.trim.is_finite() && (0.0..0.5).contains(&self.trim)) {
            return bad(
                "robust.trim",
                format!("{:?}", self.trim),
                "must be in [0, 0.5)",
            );
        }
        if !(self.row_alignment.is_finite() && (0.0..=1.0).contains(&self.row_alignment)) {
            return bad(
                "robust.row_alignment",
                format!("{:?}", self.row_alignment),
                "must be in [0, 1] (0 = no check)",
            );
        }
        if self.krum_select == 0 {
            return bad("robust.krum_select", "0".into(), "must be >= 1");
        }
        if dp && self.aggregator != Rule::Mean {
            return bad(
                "robust.aggregator",
                format!("{:?}", self.aggregator),
                "cannot be combined with privacy.enabled: DP calibrates its noise to a sum \
                 of clipped updates, one client changing it by at most privacy.clip; a \
                 median, trimmed mean or Krum selection can move further when one client \
                 joins (robust.norm_bound and robust.row_alignment do compose with DP: they \
                 act per client, before DP's clip)",
            );
        }
        Ok(())
    }
}

/// The config names (`trimmed_mean`), for the `--aggregator` flag.
impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "mean" => Self::Mean,
            "median" => Self::Median,
            "trimmed_mean" => Self::TrimmedMean,
            "trimmed_mean_all" => Self::TrimmedMeanAll,
            "krum" => Self::Krum,
            o => {
                return Err(format!(
                    "unknown aggregator {o:?} (mean, median, trimmed_mean, trimmed_mean_all, krum)"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `--aggregator` names are the config file's names.
    #[test]
    fn flag_names_match_the_config_names() {
        for rule in [
            Rule::Mean,
            Rule::Median,
            Rule::TrimmedMean,
            Rule::TrimmedMeanAll,
            Rule::Krum,
        ] {
            let name = serde_json::to_value(rule).unwrap();
            assert_eq!(name.as_str().unwrap().parse::<Rule>(), Ok(rule));
        }
        let err = "mode".parse::<Rule>().unwrap_err();
        assert!(
            err.contains("\"mode\"") && err.contains("trimmed_mean_all"),
            "{err}"
        );
    }
}
