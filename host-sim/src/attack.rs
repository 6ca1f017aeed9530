//! The attack bench (issue 19): a seeded fraction of the training users are malicious and
//! rewrite the update they send, after their honest round, from what such a client holds (its
//! own update and the item rows it received).
//!
//! * `promote`: a promotion attack on `target` in the manner of FedRecAttack / PipAttack. The
//!   client approximates the users' taste direction by the mean `v̄` of the current rows of the
//!   items it rated (those are mostly popular items) and sends, besides its honest rows as
//!   camouflage, the target row's delta `scale · v̄` (and bias delta `scale · mean bias`), so
//!   the target drifts toward where popular items score high.
//! * `promote_aligned`: the adaptive variant: the target's delta is the client's largest honest
//!   row delta times `scale`, signed so that it raises the target's score for the client's
//!   own user embedding (every honest row delta is a multiple of it), so the update passes a
//!   row-alignment check and has an honest row's magnitude.
//! * `boost` / `sign_flip`: untargeted: every value of the honest update is multiplied by
//!   `scale` or `−scale`.
//!
//! Who is malicious is fixed per user by the run seed (an attacker holds accounts), so a
//! fraction `fraction` of the population, and in expectation of each round's sample, attacks.
//! The poisoned update then goes through the server's usual validation. The target item's hit
//! ratio@10 over test users is reported whenever `target` is set (also for clean runs).

use serde::{Deserialize, Serialize};

pub use crate::config::attack::{AttackConfig, AttackKind};

/// What a round records about attackers and the defense (in `metrics.jsonl` when either is on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundSecurity {
    /// Malicious clients among the aggregated ones.
    pub attackers: u32,
    /// What the robust rule did.
    #[serde(flatten)]
    pub defense: crate::server::robust::RobustStats,
}

/// A decoded update a malicious client rewrites in place.
#[derive(Debug)]
pub struct Poisoned<'a> {
    /// Row ids, strictly ascending.
    pub items: &'a mut Vec<u32>,
    /// Row deltas, `items.len() × K`.
    pub rows: &'a mut Vec<f32>,
    /// Bias deltas parallel to `items`, or empty.
    pub biases: &'a mut Vec<f32>,
}

/// Rewrites one malicious client's update. `params` are the server parameters the client
/// received (`num_items × k` rows, then biases when `with_bias`).
pub fn poison(
    cfg: &AttackConfig,
    params: &[f32],
    (num_items, k, with_bias): (usize, usize, bool),
    u: Poisoned<'_>,
) {
    match cfg.kind {
        AttackKind::None => {}
        AttackKind::Boost | AttackKind::SignFlip => {
            let s = if cfg.kind == AttackKind::Boost {
                cfg.scale
            } else {
                -cfg.scale
            };
            for x in u.rows.iter_mut().chain(u.biases.iter_mut()) {
                *x *= s;
            }
        }
        AttackKind::PromoteAligned => {
            let Some(target) = cfg.target else { return };
            let (dir, bias) = mean_row(params, (num_items, k, with_bias), u.items, target);
            let norm2 = |r: &[f32]| r.iter().map(|&x| x * x).sum::<f32>();
            let Some(lead) = u
                .rows
                .chunks_exact(k)
                .max_by(|a, b| norm2(a).total_cmp(&norm2(b)))
            else {
                return;
            };
            let len = norm2(lead).sqrt();
            if len == 0.0 {
                return;
            }
            // The embedding's sign: the one under which the client's items score positive.
            let along: f64 = lead.iter().zip(&dir).map(|(&x, &d)| f64::from(x) * d).sum();
            let s = cfg.scale * if along < 0.0 { -1.0 } else { 1.0 };
            let delta: Vec<f32> = lead.iter().map(|&x| s * x).collect();
            insert_row(u, k, with_bias, target, delta, cfg.scale * bias as f32);
        }
        AttackKind::Promote => {
            let Some(target) = cfg.target else { return };
            let (dir, bias) = mean_row(params, (num_items, k, with_bias), u.items, target);
            let delta: Vec<f32> = dir.iter().map(|&d| cfg.scale * d as f32).collect();
            insert_row(u, k, with_bias, target, delta, cfg.scale * bias as f32);
        }
    }
}

/// The mean of the current rows (and biases) of the items of an update other than `target`.
fn mean_row(
    params: &[f32],
    (num_items, k, with_bias): (usize, usize, bool),
    items: &[u32],
    target: u32,
) -> (Vec<f64>, f64) {
    let mut dir = vec![0f64; k];
    let mut bias = 0f64;
    let n = items.iter().filter(|&&i| i != target).count().max(1) as f64;
    for &i in items.iter().filter(|&&i| i != target) {
        let row = &params[i as usize * k..(i as usize + 1) * k];
        for (d, &x) in dir.iter_mut().zip(row) {
            *d += f64::from(x) / n;
        }
        if with_bias {
            bias += f64::from(params[num_items * k + i as usize]) / n;
        }
    }
    (dir, bias)
}

/// Sets (or inserts, in id order) the target's row and bias delta.
fn insert_row(
    u: Poisoned<'_>,
    k: usize,
    with_bias: bool,
    target: u32,
    delta: Vec<f32>,
    bias_delta: f32,
) {
    let at = u.items.partition_point(|&i| i < target);
    if u.items.get(at) == Some(&target) {
        u.rows[at * k..(at + 1) * k].copy_from_slice(&delta);
        if with_bias {
            u.biases[at] = bias_delta;
        }
    } else {
        u.items.insert(at, target);
        u.rows.splice(at * k..at * k, delta);
        if with_bias {
            u.biases.insert(at, bias_delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_inserts_the_target_row_along_the_mean_of_the_clients_rows() {
        // 4 items, K = 2; the client sent rows 0 and 3, whose current rows are [1, 0] and
        // [0, 2]: v̄ = [0.5, 1], scale 4 → target 2 gets [2, 4], inserted in order.
        let params = [1.0, 0.0, 9.0, 9.0, 7.0, 7.0, 0.0, 2.0];
        let cfg = AttackConfig {
            kind: AttackKind::Promote,
            fraction: 1.0,
            target: Some(2),
            scale: 4.0,
        };
        let (mut items, mut rows, mut biases) = (vec![0, 3], vec![0.1, 0.2, 0.3, 0.4], vec![]);
        let u = Poisoned {
            items: &mut items,
            rows: &mut rows,
            biases: &mut biases,
        };
        poison(&cfg, &params, (4, 2, false), u);
        assert_eq!(items, [0, 2, 3]);
        assert_eq!(rows, [0.1, 0.2, 2.0, 4.0, 0.3, 0.4]);
    }

    #[test]
    fn aligned_promotion_copies_the_largest_row_with_the_sign_of_the_users_taste() {
        // Honest rows are multiples of u = [3, 4]: -[0.3, 0.4] and [0.6, 0.8] (largest).
        // The items' rows [-1, -1] and [-1, -2] make v̄ · [0.6, 0.8] < 0, so the sign flips:
        // target 1 gets -2 · [0.6, 0.8].
        let params = [-1.0, -1.0, 5.0, 5.0, -1.0, -2.0];
        let cfg = AttackConfig {
            kind: AttackKind::PromoteAligned,
            fraction: 1.0,
            target: Some(1),
            scale: 2.0,
        };
        let (mut items, mut rows, mut biases) = (vec![0, 2], vec![-0.3, -0.4, 0.6, 0.8], vec![]);
        let u = Poisoned {
            items: &mut items,
            rows: &mut rows,
            biases: &mut biases,
        };
        poison(&cfg, &params, (3, 2, false), u);
        assert_eq!(items, [0, 1, 2]);
        assert_eq!(rows, [-0.3, -0.4, -1.2, -1.6, 0.6, 0.8]);
    }

    #[test]
    fn untargeted_attacks_scale_everything() {
        let cfg = AttackConfig {
            kind: AttackKind::SignFlip,
            fraction: 1.0,
            target: None,
            scale: 3.0,
        };
        let (mut items, mut rows, mut biases) = (vec![1], vec![1.0, -2.0], vec![0.5]);
        let u = Poisoned {
            items: &mut items,
            rows: &mut rows,
            biases: &mut biases,
        };
        poison(&cfg, &[0.0; 6], (2, 2, true), u);
        assert_eq!((rows, biases), (vec![-3.0, 6.0], vec![-1.5]));
    }

    #[test]
    fn the_malicious_share_follows_the_fraction() {
        let cfg = AttackConfig {
            kind: AttackKind::Boost,
            fraction: 0.05,
            ..AttackConfig::default()
        };
        let n = (0..20_000).filter(|&u| cfg.is_malicious(7, u)).count();
        assert!((900..1100).contains(&n), "{n} of 20000 malicious at 5 %");
        let none = AttackConfig::default();
        assert!(!(0..1000).any(|u| none.is_malicious(7, u)));
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = AttackConfig {
            kind: AttackKind::Promote,
            ..AttackConfig::default()
        };
        assert!(
            e.validate()
                .unwrap_err()
                .to_string()
                .contains("attack.target")
        );
        let e = AttackConfig {
            fraction: 1.5,
            ..AttackConfig::default()
        };
        assert!(
            e.validate()
                .unwrap_err()
                .to_string()
                .contains("attack.fraction")
        );
        let t = AttackConfig {
            target: Some(10),
            ..AttackConfig::default()
        };
        assert!(
            t.check_target(10)
                .unwrap_err()
                .to_string()
                .contains("attack.target = 10")
        );
    }
}
