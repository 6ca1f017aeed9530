//! Unreliable clients: seeded dropouts, over-selection, the minimum number of reports a round
//! needs, and what a round records about them (issue 9).
//!
//! A round samples `ceil(clients_per_round · (1 + over_select))` training clients (without
//! replacement, from the round's seed). Each sampled client independently drops out with
//! probability `dropout`, decided by a seed derived from `(seed, round, user)`, so the same run
//! drops the same clients on any machine and after a resume. The server aggregates the first
//! `clients_per_round` clients, in sample order, whose update arrives and passes validation
//! (the server's update validation); later reports are surplus and ignored. When fewer than `min_clients`
//! are accepted the round is skipped as a whole: nothing is aggregated, the optimizer does not
//! step, and the metrics row says `skipped: true` with the reason.
//!
//! With the defaults (`dropout = 0`, `over_select = 0`, `min_clients = 1`) a round samples and
//! aggregates exactly the clients it did before these knobs existed.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::seeds::derive;

/// The `[reliability]` section of a configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReliabilityConfig {
    /// Probability that a sampled client does not report in a round (seeded per client and
    /// round), in `[0, 1)`.
    pub dropout: f64,
    /// Over-selection factor `F >= 0`: sample `ceil(clients_per_round · (1 + F))` clients and
    /// aggregate the first `clients_per_round` that report.
    pub over_select: f64,
    /// A round with fewer accepted updates is skipped (never half-applied); `>= 1`.
    pub min_clients: usize,
    /// Largest L2 norm of an update's deltas (rows and biases together) the server accepts.
    pub max_update_norm: f64,
    /// Largest aggregation weight the server accepts from any client (`"none"`: only the
    /// per-client bound, the examples the client's own data allows).
    #[serde(with = "none_or_u32")]
    pub max_weight: Option<u32>,
    /// Write a checkpoint into the output directory every this many rounds (0 = never).
    pub checkpoint_every: u32,
}

impl Default for ReliabilityConfig {
    fn default() -> Self {
        Self {
            dropout: 0.0,
            over_select: 0.0,
            min_clients: 1,
            max_update_norm: 1e6,
            max_weight: None,
            checkpoint_every: 0,
        }
    }
}

impl ReliabilityConfig {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, value: String, reason: &'static str| {
            Err(ConfigError::Invalid {
                field,
                value,
                reason,
            })
        };
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return bad(
                "reliability.dropout",
                format!("{:?}", self.dropout),
                "must be in [0, 1)",
            );
        }
        if !(self.over_select.is_finite() && (0.0..=10.0).contains(&self.over_select)) {
            return bad(
                "reliability.over_select",
                format!("{:?}", self.over_select),
                "must be a finite number in [0, 10]",
            );
        }
        if self.min_clients == 0 {
            return bad("reliability.min_clients", "0".into(), "must be >= 1");
        }
        if !(self.max_update_norm.is_finite() && self.max_update_norm > 0.0) {
            return bad(
                "reliability.max_update_norm",
                format!("{:?}", self.max_update_norm),
                "must be a finite number > 0",
            );
        }
        if self.max_weight == Some(0) {
            return bad(
                "reliability.max_weight",
                "0".into(),
                "must be >= 1 (or \"none\")",
            );
        }
        Ok(())
    }

    /// Clients sampled per round: `ceil(clients_per_round · (1 + over_select))`.
    pub fn sample_size(&self, clients_per_round: usize) -> usize {
        let n = (clients_per_round as f64 * (1.0 + self.over_select)).ceil();
        (n as usize).max(clients_per_round)
    }

    /// Whether `user` drops out of `round` (seeded; never with `dropout = 0`).
    pub fn drops(&self, seed: u64, round: u32, user: u32) -> bool {
        if self.dropout <= 0.0 {
            return false;
        }
        // Purpose tag 7 (after seeds::Purpose's 1..=5 and recommend's 6).
        let x = derive(&[seed, 7, u64::from(round), u64::from(user)]);
        // 53 random bits as a uniform number in [0, 1).
        ((x >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < self.dropout
    }
}

/// serde helper: an optional `u32` written as the number or `"none"`.
mod none_or_u32 {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_u32(*v),
            None => s.serialize_str("none"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            N(i64),
            S(String),
        }
        match V::deserialize(d)? {
            V::N(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("{n} is not in 0..=4294967295"))),
            V::S(s) if s == "none" => Ok(None),
            V::S(s) => Err(D::Error::custom(format!(
                "expected a non-negative integer or \"none\", got \"{s}\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_rate_is_close_and_seeded() {
        let c = ReliabilityConfig {
            dropout: 0.3,
            ..Default::default()
        };
        let n = (0..20_000u32).filter(|&u| c.drops(5, 3, u)).count();
        assert!((5_700..6_300).contains(&n), "{n}");
        assert_eq!(c.drops(5, 3, 17), c.drops(5, 3, 17));
        assert!(!ReliabilityConfig::default().drops(5, 3, 17));
    }

    #[test]
    fn sample_size_rounds_up() {
        let mut c = ReliabilityConfig::default();
        assert_eq!(c.sample_size(50), 50);
        c.over_select = 0.3;
        assert_eq!(c.sample_size(50), 65);
        c.over_select = 0.01;
        assert_eq!(c.sample_size(50), 51);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = ReliabilityConfig {
            dropout: 1.0,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "invalid config: reliability.dropout = 1.0: must be in [0, 1)"
        );
        let bad = ReliabilityConfig {
            min_clients: 0,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("reliability.min_clients")
        );
    }
}
