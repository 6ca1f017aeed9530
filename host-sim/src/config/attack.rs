//! The `[attack]` section (issue 19): the attack bench's malicious clients (`attack` runs
//! them). Lives in `config` so the configuration does not depend on the bench.

use anyhow::ensure;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// What a malicious client does to its update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// Nobody attacks.
    #[default]
    None,
    /// Push `target` toward the popular items' direction.
    Promote,
    /// Push `target` along the client's own user embedding (recovered from its honest rows,
    /// which are all multiples of it), as large as its largest honest row: an update that
    /// looks like an honest reconstruction round.
    PromoteAligned,
    /// Multiply the update by `scale`.
    Boost,
    /// Multiply the update by `−scale`.
    SignFlip,
}

/// The `[attack]` section of a configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttackConfig {
    /// The attack.
    pub kind: AttackKind,
    /// Fraction of the training users that are malicious, `[0, 1]`.
    pub fraction: f64,
    /// Dense id of the promoted item; its hit ratio@10 is reported whenever set.
    #[serde(with = "crate::config::none_or")]
    pub target: Option<u32>,
    /// Strength of the attack (see the module docs), finite and > 0.
    pub scale: f32,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self {
            kind: AttackKind::None,
            fraction: 0.0,
            target: None,
            scale: 10.0,
        }
    }
}

impl AttackConfig {
    /// Checks the values (the target against the catalogue is checked by [`Self::check_target`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, value: String, reason: &'static str| {
            Err(ConfigError::Invalid {
                field,
                value,
                reason,
            })
        };
        if !(self.fraction.is_finite() && (0.0..=1.0).contains(&self.fraction)) {
            return bad(
                "attack.fraction",
                format!("{:?}", self.fraction),
                "must be in [0, 1]",
            );
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return bad(
                "attack.scale",
                format!("{:?}", self.scale),
                "must be a finite number > 0",
            );
        }
        if matches!(self.kind, AttackKind::Promote | AttackKind::PromoteAligned)
            && self.target.is_none()
        {
            return bad(
                "attack.target",
                "none".into(),
                "the promote attack needs a target item",
            );
        }
        Ok(())
    }

    /// Refuses a target outside a catalogue of `num_items`.
    pub fn check_target(&self, num_items: usize) -> anyhow::Result<()> {
        if let Some(t) = self.target {
            ensure!(
                (t as usize) < num_items,
                "attack.target = {t} is not an item of the dataset ({num_items} items)"
            );
        }
        Ok(())
    }

    /// Whether `user` is one of the malicious users of a run with seed `seed`.
    pub fn is_malicious(&self, seed: u64, user: u32) -> bool {
        if self.kind == AttackKind::None || self.fraction <= 0.0 {
            return false;
        }
        // Top 53 bits of a per-user hash as a uniform number in [0, 1).
        let h = crate::seeds::derive(&[seed, 0x00a7_7ac4, u64::from(user)]);
        ((h >> 11) as f64 / (1u64 << 53) as f64) < self.fraction
    }
}

/// The config names (`sign_flip`), for the `--attack` flag.
impl std::str::FromStr for AttackKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Self::None,
            "promote" => Self::Promote,
            "promote_aligned" => Self::PromoteAligned,
            "boost" => Self::Boost,
            "sign_flip" => Self::SignFlip,
            o => {
                return Err(format!(
                    "unknown attack {o:?} (none, promote, promote_aligned, boost, sign_flip)"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `--attack` names are the config file's names.
    #[test]
    fn flag_names_match_the_config_names() {
        for kind in [
            AttackKind::None,
            AttackKind::Promote,
            AttackKind::PromoteAligned,
            AttackKind::Boost,
            AttackKind::SignFlip,
        ] {
            let name = serde_json::to_value(kind).unwrap();
            assert_eq!(name.as_str().unwrap().parse::<AttackKind>(), Ok(kind));
        }
        let err = "flip".parse::<AttackKind>().unwrap_err();
        assert!(
            err.contains("\"flip\"") && err.contains("sign_flip"),
            "{err}"
        );
    }
}
