//! Server learning-rate schedules: the factor the configured `server.lr` is multiplied by in
//! each round (`run.server_lr_decay`, decaying towards `run.server_lr_final` × `server.lr` at
//! the last round).

use serde::{Deserialize, Serialize};

/// How the server learning rate evolves over the run's rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    /// `server.lr` in every round (both presets).
    #[default]
    Constant,
    /// Linear from `server.lr` at round 1 to `final × server.lr` at the last round.
    Linear,
    /// Half a cosine from `server.lr` at round 1 to `final × server.lr` at the last round.
    Cosine,
}

impl LrDecay {
    /// The learning-rate factor of 1-based `round` out of `rounds`, ending at `final_fraction`.
    pub fn factor(self, round: u32, rounds: u32, final_fraction: f32) -> f32 {
        let t = if rounds <= 1 {
            0.0
        } else {
            (round.clamp(1, rounds) - 1) as f32 / (rounds - 1) as f32
        };
        let f = final_fraction;
        match self {
            LrDecay::Constant => 1.0,
            LrDecay::Linear => 1.0 - (1.0 - f) * t,
            LrDecay::Cosine => f + (1.0 - f) * 0.5 * (1.0 + (std::f32::consts::PI * t).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_start_at_one_and_end_at_final() {
        for d in [LrDecay::Linear, LrDecay::Cosine] {
            assert_eq!(d.factor(1, 100, 0.1), 1.0);
            assert!((d.factor(100, 100, 0.1) - 0.1).abs() < 1e-6);
            let mid = d.factor(50, 99, 0.1);
            assert!((mid - 0.55).abs() < 1e-6, "{d:?}: {mid}");
        }
        assert_eq!(LrDecay::Constant.factor(70, 100, 0.1), 1.0);
        assert_eq!(LrDecay::Cosine.factor(1, 1, 0.1), 1.0);
    }
}
