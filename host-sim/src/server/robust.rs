//! Robust aggregation of sparse item-row updates (issue 19): a strategy the round calls instead
//! of the weighted mean when `[robust]` asks for one.
//!
//! Every strategy first bounds each client's update (rows and biases together) to the L2 norm
//! `norm_bound` (0 = no bound), then combines the bounded updates:
//!
//! * `mean`: the weighted mean `Σ_c w_c·Δ_c / Σ_c w_c` over all clients, as [`super::Aggregator`].
//! * `median` / `trimmed_mean`: per touched row, per coordinate (the row's K values and its
//!   bias), the median or `trim`-trimmed mean of the values of the clients that sent the row,
//!   scaled by the share of the round's weight those clients hold (`Σ_{c∋i} w_c / Σ_c w_c`), so
//!   a row every client agrees on gets exactly what the mean gives it.
//! * `trimmed_mean_all`: the same over all the round's `n` clients, a client that did not send
//!   the row counting as 0 (unweighted), so `floor(trim · n)` colluders pushing a rare row are
//!   cut whatever the row's other senders do; rows sent by few clients learn slower.
//! * `krum`: multi-Krum (Blanchard et al. 2017): each client's score is the sum of its squared
//!   distances to its `n − f − 2` nearest other updates (`f` = `krum_byzantine`; distances of the
//!   dense vectors, rows nobody sent are 0); the `krum_select` lowest scores are kept and
//!   averaged as `mean` does.
//!
//! Determinism: per-client norms and Krum distances are computed in `f64` in row order, each
//! row's values are gathered in client order and sorted by value (ties keep client order), and
//! rows are independent, so rows may run in parallel and the result is bit-identical for any
//! thread count. Differential privacy already bounds every update (its clip) and calibrates its
//! noise to a clipped sum, so the median, trimmed means and Krum are refused together with
//! `privacy.enabled`; the norm bound and the alignment check compose with it
//! ([`super::strategy`]).

use anyhow::{Result, ensure};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::config::robust::{RobustConfig, Rule};
use crate::server::ClientRows;

/// The shape of the flat parameter vector (see [`super`]).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Catalogue size.
    pub items: usize,
    /// Embedding width.
    pub k: usize,
    /// Whether a bias per item follows the rows.
    pub with_bias: bool,
}

/// What a robust round did, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RobustStats {
    /// Clients whose update the norm bound scaled down.
    pub norm_bounded: u32,
    /// Clients Krum left out.
    pub krum_dropped: u32,
    /// Clients left out because their rows were not aligned (`row_alignment`).
    pub misaligned: u32,
}

/// Combines `clients` by `cfg` into the dense delta `out` (layout of [`super`]). Returns
/// `Ok(false)` when there is no weight or the result is not finite (the server then skips the
/// step, as for the mean).
pub fn aggregate(
    cfg: &RobustConfig,
    shape: Shape,
    clients: &[ClientRows<'_>],
    out: &mut [f32],
) -> Result<(bool, RobustStats)> {
    let Shape {
        items,
        k,
        with_bias,
    } = shape;
    let len = items * k + if with_bias { items } else { 0 };
    ensure!(
        out.len() == len,
        "robust aggregate buffer has {} values, expected {len}",
        out.len()
    );
    for c in clients {
        ensure!(
            c.rows.len() == c.items.len() * k
                && (c.biases.is_empty() || c.biases.len() == c.items.len()),
            "update rows or biases have the wrong length"
        );
        ensure!(
            c.items.windows(2).all(|w| w[0] < w[1]),
            "update item ids are not strictly ascending"
        );
        if let Some(&last) = c.items.last() {
            ensure!(
                (last as usize) < items,
                "update row {last} is out of range ({items} items)"
            );
        }
    }
    let mut stats = RobustStats::default();
    let scale: Vec<f64> = clients
        .iter()
        .map(|c| {
            let s = bound_scale(norm(c), cfg.norm_bound);
            stats.norm_bounded += u32::from(s < 1.0);
            s
        })
        .collect();
    let mut keep: Vec<bool> = clients
        .iter()
        .map(|c| cfg.row_alignment <= 0.0 || aligned(c, k, cfg.row_alignment))
        .collect();
    stats.misaligned = keep.iter().filter(|&&kept| !kept).count() as u32;
    if cfg.aggregator == Rule::Krum {
        let idx: Vec<usize> = (0..clients.len()).filter(|&c| keep[c]).collect();
        let sub: Vec<ClientRows<'_>> = idx.iter().map(|&c| clients[c]).collect();
        let sub_scale: Vec<f64> = idx.iter().map(|&c| scale[c]).collect();
        let chosen = krum(&sub, &sub_scale, cfg.krum_byzantine, cfg.krum_select);
        keep.fill(false);
        for &c in &chosen {
            keep[idx[c]] = true;
        }
        stats.krum_dropped = (idx.len() - chosen.len()) as u32;
    }
    let weight_sum: f64 = clients
        .iter()
        .zip(&keep)
        .filter(|&(_, &kept)| kept)
        .map(|(c, _)| f64::from(c.weight))
        .sum();
    out.fill(0.0);
    if weight_sum <= 0.0 {
        return Ok((false, stats));
    }
    // Per row, the (client, position) of every kept client with weight that sent it, in
    // client order.
    let mut senders: Vec<Vec<(u32, u32)>> = vec![Vec::new(); items];
    for (ci, c) in clients.iter().enumerate() {
        if !keep[ci] || c.weight == 0 {
            continue;
        }
        for (r, &item) in c.items.iter().enumerate() {
            senders[item as usize].push((ci as u32, r as u32));
        }
    }
    let clients_kept = keep.iter().filter(|&&kept| kept).count();
    let (rows_out, bias_out) = out.split_at_mut(items * k);
    let trim = cfg.trim;
    let rule = cfg.aggregator;
    let bias_column: Vec<f32> = rows_out
        .par_chunks_mut(k)
        .zip(senders.par_iter())
        .map_init(Vec::new, |values: &mut Vec<(f64, f64)>, (row_out, send)| {
            if send.is_empty() {
                return 0.0;
            }
            let touch: f64 = send
                .iter()
                .map(|&(c, _)| f64::from(clients[c as usize].weight))
                .sum();
            let share = touch / weight_sum;
            // Coordinates 0..k are the row, k is the bias.
            let mut coordinate = |j: usize| {
                values.clear();
                for &(c, r) in send {
                    let cl = &clients[c as usize];
                    let (r, s) = (r as usize, scale[c as usize]);
                    let v = if j < k {
                        f64::from(cl.rows[r * k + j])
                    } else if cl.biases.is_empty() {
                        0.0
                    } else {
                        f64::from(cl.biases[r])
                    };
                    values.push((s * v, f64::from(cl.weight)));
                }
                let value = match rule {
                    Rule::Mean | Rule::Krum => {
                        values.iter().map(|&(v, w)| w * v).sum::<f64>() / weight_sum
                    }
                    Rule::Median => median(values) * share,
                    Rule::TrimmedMean => trimmed_mean(values, trim) * share,
                    Rule::TrimmedMeanAll => {
                        values.resize(clients_kept, (0.0, 0.0));
                        trimmed_mean(values, trim)
                    }
                };
                value as f32
            };
            for (j, o) in row_out.iter_mut().enumerate() {
                *o = coordinate(j);
            }
            if with_bias { coordinate(k) } else { 0.0 }
        })
        .collect();
    if with_bias {
        bias_out.copy_from_slice(&bias_column);
    }
    Ok((out.iter().all(|x| x.is_finite()), stats))
}

/// Whether every row delta of `c` has `|cos| >= min` with its largest row (rows of zero norm
/// pass: they carry nothing).
pub(crate) fn aligned(c: &ClientRows<'_>, k: usize, min: f64) -> bool {
    let rows = c.rows.chunks_exact(k);
    let norm2 = |r: &[f32]| r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
    let Some(lead) = rows.clone().max_by(|a, b| norm2(a).total_cmp(&norm2(b))) else {
        return true;
    };
    let lead_norm = norm2(lead).sqrt();
    rows.into_iter().all(|r| {
        let n = norm2(r).sqrt();
        if n == 0.0 || lead_norm == 0.0 {
            return true;
        }
        let dot: f64 = r
            .iter()
            .zip(lead)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        (dot / (n * lead_norm)).abs() >= min
    })
}

/// L2 norm of one update's rows and biases, in `f64`, in order.
pub(crate) fn norm(c: &ClientRows<'_>) -> f64 {
    c.rows
        .iter()
        .chain(c.biases)
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// The factor that brings an update of norm `n` within `bound` (1 when it is; `bound = 0` is
/// no bound).
pub fn bound_scale(n: f64, bound: f64) -> f64 {
    if bound > 0.0 && n > bound {
        bound / n
    } else {
        1.0
    }
}

/// Median of the values (unweighted; the mean of the middle two for an even count).
fn median(values: &mut [(f64, f64)]) -> f64 {
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2].0
    } else {
        (values[n / 2 - 1].0 + values[n / 2].0) / 2.0
    }
}

/// Mean of the values left after cutting `floor(trim · n)` from each end (unweighted).
fn trimmed_mean(values: &mut [(f64, f64)], trim: f64) -> f64 {
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = values.len();
    let cut = ((trim * n as f64).floor() as usize).min((n - 1) / 2);
    let kept = &values[cut..n - cut];
    kept.iter().map(|v| v.0).sum::<f64>() / kept.len() as f64
}

/// Squared distance between two bounded sparse updates (rows nobody sent are 0).
fn distance2(a: &ClientRows<'_>, sa: f64, b: &ClientRows<'_>, sb: f64, k: usize) -> f64 {
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    let bias = |c: &ClientRows<'_>, r: usize| c.biases.get(r).map_or(0.0, |&x| f64::from(x));
    let sq = |c: &ClientRows<'_>, s: f64, r: usize| {
        let row: f64 = c.rows[r * k..(r + 1) * k]
            .iter()
            .map(|&x| (s * f64::from(x)).powi(2))
            .sum();
        row + (s * bias(c, r)).powi(2)
    };
    while i < a.items.len() || j < b.items.len() {
        let ia = a.items.get(i).copied().unwrap_or(u32::MAX);
        let ib = b.items.get(j).copied().unwrap_or(u32::MAX);
        if ia < ib {
            d += sq(a, sa, i);
            i += 1;
        } else if ib < ia {
            d += sq(b, sb, j);
            j += 1;
        } else {
            let ra = &a.rows[i * k..(i + 1) * k];
            let rb = &b.rows[j * k..(j + 1) * k];
            for (&x, &y) in ra.iter().zip(rb) {
                d += (sa * f64::from(x) - sb * f64::from(y)).powi(2);
            }
            d += (sa * bias(a, i) - sb * bias(b, j)).powi(2);
            i += 1;
            j += 1;
        }
    }
    d
}

/// Multi-Krum: the indices (ascending) of the `select` clients with the lowest scores, a score
/// being the sum of the `n − f − 2` smallest squared distances to the other clients (at least
/// one neighbour; ties go to the earlier client).
fn krum(clients: &[ClientRows<'_>], scale: &[f64], f: usize, select: usize) -> Vec<usize> {
    let n = clients.len();
    if n <= 1 {
        return (0..n).collect();
    }
    let k = clients
        .iter()
        .find(|c| !c.items.is_empty())
        .map_or(1, |c| c.rows.len() / c.items.len());
    let neighbours = n.saturating_sub(f + 2).clamp(1, n - 1);
    let scores: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|a| {
            let mut d: Vec<f64> = (0..n)
                .filter(|&b| b != a)
                .map(|b| distance2(&clients[a], scale[a], &clients[b], scale[b], k))
                .collect();
            d.sort_by(f64::total_cmp);
            d[..neighbours].iter().sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut chosen: Vec<usize> = order.into_iter().take(select.min(n)).collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client<'a>(weight: u32, items: &'a [u32], rows: &'a [f32]) -> ClientRows<'a> {
        ClientRows {
            weight,
            items,
            rows,
            biases: &[],
        }
    }

    fn run(cfg: &RobustConfig, items: usize, clients: &[ClientRows<'_>]) -> Vec<f32> {
        let mut out = vec![f32::NAN; items * 2];
        let shape = Shape {
            items,
            k: 2,
            with_bias: false,
        };
        let (ok, _) = aggregate(cfg, shape, clients, &mut out).unwrap();
        assert!(ok);
        out
    }

    fn rule(aggregator: Rule) -> RobustConfig {
        RobustConfig {
            aggregator,
            ..RobustConfig::default()
        }
    }

    #[test]
    fn mean_matches_the_weighted_mean() {
        // Weights 1 and 3, total 4: row 0 = (1·[4,0] + 3·[0,4]) / 4 = [1, 3]; row 1 only the
        // second client: 3·[2,2] / 4 = [1.5, 1.5].
        let a = client(1, &[0], &[4.0, 0.0]);
        let b = client(3, &[0, 1], &[0.0, 4.0, 2.0, 2.0]);
        assert_eq!(
            run(&rule(Rule::Mean), 3, &[a, b]),
            [1.0, 3.0, 1.5, 1.5, 0.0, 0.0]
        );
    }

    #[test]
    fn median_is_per_row_over_senders_scaled_by_their_weight_share() {
        // Row 0 sent by three clients (weights 1 each of 4): values x = 1, 2, 100 → 2;
        // y = -1, 0, 5 → 0; share 3/4. Row 1 only by the fourth client: [8, -8] · 1/4.
        let a = client(1, &[0], &[1.0, -1.0]);
        let b = client(1, &[0], &[100.0, 0.0]);
        let c = client(1, &[0], &[2.0, 5.0]);
        let d = client(1, &[1], &[8.0, -8.0]);
        let out = run(&rule(Rule::Median), 2, &[a, b, c, d]);
        assert_eq!(out, [1.5, 0.0, 2.0, -2.0]);
        // Even count: the mean of the middle two.
        let out = run(&rule(Rule::Median), 1, &[a, b]);
        assert_eq!(out, [50.5, -0.5]);
    }

    #[test]
    fn trimmed_mean_cuts_each_end() {
        // Five senders of row 0, trim 0.2 cuts one from each end: x = mean(2, 3, 4) = 3.
        let rows = [
            [1.0f32, 0.0],
            [2.0, 0.0],
            [3.0, 0.0],
            [4.0, 0.0],
            [1e3, 0.0],
        ];
        let cs: Vec<_> = rows.iter().map(|r| client(2, &[0], r)).collect();
        let cfg = RobustConfig {
            aggregator: Rule::TrimmedMean,
            trim: 0.2,
            ..RobustConfig::default()
        };
        assert_eq!(run(&cfg, 1, &cs), [3.0, 0.0]);
        // Trim 0.1 of 5 cuts nothing: the plain mean (1010 / 5).
        let cfg = RobustConfig { trim: 0.1, ..cfg };
        assert_eq!(run(&cfg, 1, &cs), [202.0, 0.0]);
    }

    #[test]
    fn trimmed_mean_all_counts_non_senders_as_zero() {
        // Ten clients, trim 0.2 cuts two from each end. Row 0: three colluders send 9 and
        // seven clients send nothing: values 0×7, 9×3 → cut 0, 0 and 9, 9 → (0×5 + 9) / 6.
        // Row 1: every client sends 1 → 1.
        let evil = [9.0f32, 9.0, 1.0, 1.0];
        let honest = [1.0f32, 1.0];
        let mut cs: Vec<_> = (0..3).map(|_| client(1, &[0, 1], &evil)).collect();
        cs.extend((0..7).map(|_| client(1, &[1], &honest)));
        let cfg = RobustConfig {
            aggregator: Rule::TrimmedMeanAll,
            trim: 0.2,
            ..RobustConfig::default()
        };
        assert_eq!(run(&cfg, 2, &cs), [1.5, 1.5, 1.0, 1.0]);
        // Two colluders of ten are cut entirely.
        let cs: Vec<_> = cs
            .into_iter()
            .skip(1)
            .chain([client(1, &[1], &honest)])
            .collect();
        assert_eq!(run(&cfg, 2, &cs), [0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn misaligned_updates_are_left_out() {
        // a's rows are ±multiples of [1, 2] (an honest reconstruction update); b's second row
        // [2, -1] is orthogonal to its first: left out, so only a counts (weight 1 of 1).
        let a = client(1, &[0, 1], &[1.0, 2.0, -0.5, -1.0]);
        let b = client(1, &[0, 1], &[2.0, 4.0, 2.0, -1.0]);
        let cfg = RobustConfig {
            row_alignment: 0.99,
            ..RobustConfig::default()
        };
        let mut out = vec![0.0; 4];
        let shape = Shape {
            items: 2,
            k: 2,
            with_bias: false,
        };
        let (ok, stats) = aggregate(&cfg, shape, &[a, b], &mut out).unwrap();
        assert!(ok);
        assert_eq!(stats.misaligned, 1);
        assert_eq!(out, [1.0, 2.0, -0.5, -1.0]);
    }

    #[test]
    fn norm_bound_scales_large_updates_only() {
        // Norms 5 and 1 with bound 2: the first becomes [1.2, 1.6], the second stays.
        let a = client(1, &[0], &[3.0, 4.0]);
        let b = client(1, &[0], &[1.0, 0.0]);
        let cfg = RobustConfig {
            norm_bound: 2.0,
            ..RobustConfig::default()
        };
        let mut out = vec![0.0; 2];
        let shape = Shape {
            items: 1,
            k: 2,
            with_bias: false,
        };
        let (ok, stats) = aggregate(&cfg, shape, &[a, b], &mut out).unwrap();
        assert!(ok);
        assert_eq!(stats.norm_bounded, 1);
        assert!(
            (out[0] - 1.1).abs() < 1e-6 && (out[1] - 0.8).abs() < 1e-6,
            "{out:?}"
        );
    }

    #[test]
    fn krum_drops_the_outlier() {
        // Three close updates and one far away; f = 1 → one neighbour each; keep 3.
        let a = client(1, &[0], &[1.0, 0.0]);
        let b = client(1, &[0], &[1.0, 0.0]);
        let c = client(1, &[0], &[1.0, 0.3]);
        let evil = client(1, &[1], &[50.0, 50.0]);
        let cfg = RobustConfig {
            aggregator: Rule::Krum,
            krum_byzantine: 1,
            krum_select: 3,
            ..RobustConfig::default()
        };
        let mut out = vec![0.0; 4];
        let shape = Shape {
            items: 2,
            k: 2,
            with_bias: false,
        };
        let (ok, stats) = aggregate(&cfg, shape, &[a, evil, b, c], &mut out).unwrap();
        assert!(ok);
        assert_eq!(stats.krum_dropped, 1);
        // The mean of the three kept: [1, 0.1]; row 1 (only the outlier's) stays 0.
        assert!(
            (out[0] - 1.0).abs() < 1e-6 && (out[1] - 0.1).abs() < 1e-6,
            "{out:?}"
        );
        assert_eq!(&out[2..], [0.0, 0.0]);
        // Plain Krum: a and b tie at score 0; the earlier client wins.
        assert_eq!(krum(&[a, evil, b, c], &[1.0; 4], 1, 1), [0]);
    }

    #[test]
    fn biases_are_a_coordinate_of_their_row() {
        let a = ClientRows {
            weight: 1,
            items: &[0],
            rows: &[1.0, 1.0],
            biases: &[10.0],
        };
        let b = ClientRows {
            biases: &[-2.0],
            ..a
        };
        let c = ClientRows {
            biases: &[0.5],
            ..a
        };
        let mut out = vec![0.0; 3];
        let shape = Shape {
            items: 1,
            k: 2,
            with_bias: true,
        };
        aggregate(&rule(Rule::Median), shape, &[a, b, c], &mut out).unwrap();
        assert_eq!(out, [1.0, 1.0, 0.5]);
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        let n = 40;
        let data: Vec<(Vec<u32>, Vec<f32>)> = (0..n)
            .map(|c: u32| {
                let items: Vec<u32> = (0..200).filter(|i| (i * 7 + c).is_multiple_of(5)).collect();
                let rows = (0..items.len() * 2)
                    .map(|j| ((j as f32 + 1.3) * (c as f32 + 0.7)).sin())
                    .collect();
                (items, rows)
            })
            .collect();
        let cs: Vec<_> = data
            .iter()
            .enumerate()
            .map(|(c, (i, r))| client(1 + c as u32 % 3, i, r))
            .collect();
        for aggregator in [Rule::Mean, Rule::Median, Rule::TrimmedMean, Rule::Krum] {
            let cfg = RobustConfig {
                aggregator,
                norm_bound: 3.0,
                ..RobustConfig::default()
            };
            let outs: Vec<Vec<u32>> = [1, 2, 5]
                .iter()
                .map(|&t| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(t)
                        .build()
                        .unwrap();
                    let out = pool.install(|| run(&cfg, 200, &cs));
                    out.iter().map(|x| x.to_bits()).collect()
                })
                .collect();
            assert_eq!(outs[0], outs[1], "{aggregator:?}");
            assert_eq!(outs[0], outs[2], "{aggregator:?}");
        }
    }

    #[test]
    fn dp_refuses_order_statistics_and_krum_only() {
        assert!(RobustConfig::default().validate(true).is_ok());
        let e = rule(Rule::Median).validate(true).unwrap_err().to_string();
        assert!(e.contains("privacy.enabled"), "{e}");
        // The per-client checks compose with DP's clip.
        assert!(RobustConfig::untrusted().validate(true).is_ok());
        let bad = RobustConfig {
            trim: 0.5,
            ..RobustConfig::default()
        };
        assert!(
            bad.validate(false)
                .unwrap_err()
                .to_string()
                .contains("robust.trim")
        );
    }
}
