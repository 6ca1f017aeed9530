//! How a round turns its accepted updates into the server's delta. The round hands each window
//! of accepted updates, in sample order, to a [`Strategy`] as soon as they are decoded and
//! validated, then asks for the result.
//!
//! * The mean and the DP mean fold them into sums and keep nothing else (memory independent
//!   of the clients per round). Norm bounding and the row-alignment check (`[robust]`, issue
//!   19) are per-client decisions, so with the mean rule (and with DP, before its clip) they
//!   stream too ([`Bounded`]).
//! * The median, the trimmed means and Krum need every update of the round at once: they copy
//!   each window's updates into [`RobustRound`] (`4·(K + 2)` bytes a row: ids, deltas, bias)
//!   and combine them in [`Strategy::finish`] ([`super::robust::aggregate`]).

use anyhow::{Context, Result, bail};
use fedrecon_core::Metrics;

use super::privacy::{DpSession, PrivacySpent};
use super::robust::{self, RobustConfig, RobustStats, Rule, Shape};
use super::{Aggregator, ClientRows};

/// A round's aggregation: fold accepted updates in sample order, then finish once.
pub(crate) trait Strategy: Send {
    /// Adds accepted updates, in sample order (the round calls it once per window, inside its
    /// worker pool).
    fn fold(&mut self, updates: &[(ClientRows<'_>, Metrics)]) -> Result<()>;

    /// Writes the round's delta into `out`: `Ok((false, _))` when there is nothing finite to
    /// apply; the privacy spent for DP.
    fn finish(&mut self, round: u32, out: &mut [f32]) -> Result<(bool, Option<PrivacySpent>)>;

    /// Forgets the folded rows of a skipped round (nothing of it is released; the metrics
    /// stay).
    fn discard(&mut self);
}

/// The robust aggregation state of a round (`[robust]` active), kept by the simulation
/// across the round's windows: what the defense did and, for the rules that need every
/// update, the round's updates.
#[derive(Debug)]
pub(crate) struct RobustRound {
    cfg: RobustConfig,
    shape: Shape,
    stats: RobustStats,
    held: Held,
}

/// The round's updates, copied (only for the median, trimmed means and Krum).
#[derive(Debug, Default)]
struct Held {
    /// Per client: weight, its rows' range in `items`, whether it sent biases.
    clients: Vec<(u32, std::ops::Range<usize>, bool)>,
    items: Vec<u32>,
    rows: Vec<f32>,
    /// Parallel to `items` (0 for a client without biases).
    biases: Vec<f32>,
}

impl RobustRound {
    /// The state for `cfg` (which must be active) over parameters of `shape`.
    pub(crate) fn new(cfg: &RobustConfig, shape: Shape) -> Self {
        Self {
            cfg: cfg.clone(),
            shape,
            stats: RobustStats::default(),
            held: Held::default(),
        }
    }

    /// Clears the state for the next round.
    pub(crate) fn reset(&mut self) {
        self.stats = RobustStats::default();
        self.held.clear();
    }

    /// What the defense did this round.
    pub(crate) fn stats(&self) -> RobustStats {
        self.stats
    }

    /// Whether the rule folds per client (the mean, with a norm bound or alignment check).
    fn streams(&self) -> bool {
        self.cfg.aggregator == Rule::Mean
    }

    /// Each update's fate under the per-client checks: `None` when the alignment check
    /// leaves it out, else the factor that bounds its norm. Counts both in the stats.
    fn screen(&mut self, c: &ClientRows<'_>) -> Option<f64> {
        // Counted as `robust::aggregate` counts: every update over the bound, kept or not.
        let s = robust::bound_scale(robust::norm(c), self.cfg.norm_bound);
        self.stats.norm_bounded += u32::from(s < 1.0);
        let min = self.cfg.row_alignment;
        if min > 0.0 && !robust::aligned(c, self.shape.k, min) {
            self.stats.misaligned += 1;
            return None;
        }
        Some(s)
    }
}

impl Held {
    fn clear(&mut self) {
        self.clients.clear();
        self.items.clear();
        self.rows.clear();
        self.biases.clear();
    }

    fn push(&mut self, c: &ClientRows<'_>) {
        let start = self.items.len();
        self.items.extend_from_slice(c.items);
        self.rows.extend_from_slice(c.rows);
        if c.biases.is_empty() {
            self.biases.resize(self.items.len(), 0.0);
        } else {
            self.biases.extend_from_slice(c.biases);
        }
        self.clients
            .push((c.weight, start..self.items.len(), !c.biases.is_empty()));
    }

    fn views(&self, k: usize) -> Vec<ClientRows<'_>> {
        self.clients
            .iter()
            .map(|(weight, r, with_bias)| ClientRows {
                weight: *weight,
                items: &self.items[r.clone()],
                rows: &self.rows[r.start * k..r.end * k],
                biases: if *with_bias {
                    &self.biases[r.clone()]
                } else {
                    &[]
                },
            })
            .collect()
    }
}

/// The strategy of the configuration: the weighted mean or the clipped and noised DP mean
/// (whose metrics still go to `agg`), each behind the per-client robust checks when `robust`
/// is given, or a robust rule that holds the round's updates.
pub(crate) fn for_round<'a>(
    agg: &'a mut Aggregator,
    dp: Option<&'a mut DpSession>,
    robust: Option<&'a mut RobustRound>,
) -> Result<Box<dyn Strategy + 'a>> {
    Ok(match (dp, robust) {
        (None, None) => Box::new(Mean(agg)),
        (Some(dp), None) => Box::new(DpMean { dp, agg }),
        (dp, Some(robust)) if robust.streams() => Box::new(Bounded {
            inner: match dp {
                None => Mean(agg).into(),
                Some(dp) => DpMean { dp, agg }.into(),
            },
            robust,
        }),
        (None, Some(robust)) => Box::new(Holding { agg, robust }),
        (Some(_), Some(r)) => bail!(
            "internal: robust.aggregator = {:?} with privacy.enabled (the configuration \
             refuses it)",
            r.cfg.aggregator
        ),
    })
}

/// The weighted mean: rows folded into the aggregator's `f64` sums in client order, item
/// stripes in parallel ([`Aggregator::add_clients`]).
struct Mean<'a>(&'a mut Aggregator);

impl Strategy for Mean<'_> {
    fn fold(&mut self, updates: &[(ClientRows<'_>, Metrics)]) -> Result<()> {
        self.0.add_clients(updates)
    }

    fn finish(&mut self, _: u32, out: &mut [f32]) -> Result<(bool, Option<PrivacySpent>)> {
        Ok((self.0.mean_delta(out), None))
    }

    fn discard(&mut self) {}
}

/// Central DP: clipped, uniformly weighted, noised on the server (the aggregator only sums
/// the metrics).
struct DpMean<'a> {
    dp: &'a mut DpSession,
    agg: &'a mut Aggregator,
}

impl Strategy for DpMean<'_> {
    fn fold(&mut self, updates: &[(ClientRows<'_>, Metrics)]) -> Result<()> {
        for (u, m) in updates {
            self.dp
                .add_client(u.items, u.rows, u.biases)
                .context("DP aggregation")?;
            self.agg.add_client(u.weight, m);
        }
        Ok(())
    }

    fn finish(&mut self, round: u32, out: &mut [f32]) -> Result<(bool, Option<PrivacySpent>)> {
        let (mean, spent) = self.dp.finish(round)?;
        out.copy_from_slice(&mean);
        Ok((out.iter().all(|x| x.is_finite()), Some(spent)))
    }

    fn discard(&mut self) {
        self.dp.discard_round();
    }
}

/// The mean or DP mean behind the streaming robust checks.
enum Inner<'a> {
    Mean(Mean<'a>),
    Dp(DpMean<'a>),
}

impl<'a> From<Mean<'a>> for Inner<'a> {
    fn from(m: Mean<'a>) -> Self {
        Self::Mean(m)
    }
}

impl<'a> From<DpMean<'a>> for Inner<'a> {
    fn from(m: DpMean<'a>) -> Self {
        Self::Dp(m)
    }
}

/// Norm bounding and the row-alignment check, per client as it is folded: a left-out client
/// keeps its metrics but adds no weight (the mean) or no rows (DP); a bounded client's rows
/// are scaled in `f64` (the mean) or scaled before DP's own clip (so with DP the tighter of
/// `norm_bound` and the clip wins, and DP's sensitivity is unchanged: both are per-client).
struct Bounded<'a> {
    inner: Inner<'a>,
    robust: &'a mut RobustRound,
}

impl Strategy for Bounded<'_> {
    fn fold(&mut self, updates: &[(ClientRows<'_>, Metrics)]) -> Result<()> {
        let fate: Vec<Option<f64>> = updates.iter().map(|(c, _)| self.robust.screen(c)).collect();
        match &mut self.inner {
            Inner::Mean(Mean(agg)) => {
                // Weight 0 folds no rows and no weight but still records the metrics.
                let kept: Vec<_> = updates
                    .iter()
                    .zip(&fate)
                    .map(|(&(c, m), f)| {
                        let weight = if f.is_some() { c.weight } else { 0 };
                        (ClientRows { weight, ..c }, m)
                    })
                    .collect();
                agg.add_clients_scaled(&kept, |i| fate[i].unwrap_or(0.0))
            }
            Inner::Dp(DpMean { dp, agg }) => {
                let (mut rows, mut biases) = (Vec::new(), Vec::new());
                for ((u, m), f) in updates.iter().zip(&fate) {
                    agg.add_client(u.weight, m);
                    let Some(s) = *f else { continue };
                    let scaled = |v: &[f32], out: &mut Vec<f32>| {
                        out.clear();
                        out.extend(v.iter().map(|&x| (s * f64::from(x)) as f32));
                    };
                    scaled(u.rows, &mut rows);
                    scaled(u.biases, &mut biases);
                    dp.add_client(u.items, &rows, &biases)
                        .context("DP aggregation")?;
                }
                Ok(())
            }
        }
    }

    fn finish(&mut self, round: u32, out: &mut [f32]) -> Result<(bool, Option<PrivacySpent>)> {
        match &mut self.inner {
            Inner::Mean(m) => m.finish(round, out),
            Inner::Dp(d) => d.finish(round, out),
        }
    }

    fn discard(&mut self) {
        match &mut self.inner {
            Inner::Mean(m) => m.discard(),
            Inner::Dp(d) => d.discard(),
        }
    }
}

/// The median, trimmed means and Krum: every accepted update is copied into the round's
/// [`RobustRound`] and combined at the end (the aggregator sums the weights and metrics).
struct Holding<'a> {
    agg: &'a mut Aggregator,
    robust: &'a mut RobustRound,
}

impl Strategy for Holding<'_> {
    fn fold(&mut self, updates: &[(ClientRows<'_>, Metrics)]) -> Result<()> {
        for (c, m) in updates {
            self.robust.held.push(c);
            self.agg.add_client(c.weight, m);
        }
        Ok(())
    }

    fn finish(&mut self, _: u32, out: &mut [f32]) -> Result<(bool, Option<PrivacySpent>)> {
        let r = &mut *self.robust;
        let views = r.held.views(r.shape.k);
        let (ok, stats) = robust::aggregate(&r.cfg, r.shape, &views, out)?;
        drop(views);
        r.stats = stats;
        r.held.clear();
        Ok((ok, None))
    }

    fn discard(&mut self) {
        self.robust.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streaming norm bound and alignment check, folded in windows, give the bits of the
    /// all-at-once robust mean (`robust::aggregate`, which the attack table was measured with).
    #[test]
    fn bounded_mean_streams_the_robust_mean_bit_for_bit() {
        let (items, k) = (50usize, 2usize);
        let data: Vec<(Vec<u32>, Vec<f32>, Vec<f32>)> = (0..30u32)
            .map(|c| {
                let ids: Vec<u32> = (0..items as u32)
                    .filter(|i| (i * 3 + c).is_multiple_of(4))
                    .collect();
                // Every fifth client's rows are not aligned with one direction.
                let rows = ids
                    .iter()
                    .enumerate()
                    .flat_map(|(r, _)| {
                        let s = ((r as f32 + 1.0) * (c as f32 + 0.3)).sin() * (1.0 + c as f32);
                        let skew = if c % 5 == 0 { r as f32 } else { 0.0 };
                        [s, 2.0 * s + skew]
                    })
                    .collect();
                let biases = ids.iter().map(|&i| i as f32 * 0.01 - 0.2).collect();
                (ids, rows, biases)
            })
            .collect();
        let updates: Vec<(ClientRows<'_>, Metrics)> = data
            .iter()
            .enumerate()
            .map(|(c, (ids, rows, biases))| {
                let rows = ClientRows {
                    weight: 1 + c as u32 % 4,
                    items: ids,
                    rows,
                    biases,
                };
                (rows, Metrics::default())
            })
            .collect();
        let cfg = RobustConfig {
            norm_bound: 3.0,
            row_alignment: 0.999,
            ..RobustConfig::default()
        };
        let shape = Shape {
            items,
            k,
            with_bias: true,
        };
        let len = items * (k + 1);
        let mut want = vec![0.0; len];
        let views: Vec<_> = updates.iter().map(|(c, _)| *c).collect();
        let (ok, want_stats) = robust::aggregate(&cfg, shape, &views, &mut want).unwrap();
        assert!(ok && want_stats.norm_bounded > 0 && want_stats.misaligned > 0);
        let mut agg = Aggregator::new(items, k, true);
        let mut round = RobustRound::new(&cfg, shape);
        let mut got = vec![0.0; len];
        {
            let mut s = for_round(&mut agg, None, Some(&mut round)).unwrap();
            for window in updates.chunks(7) {
                s.fold(window).unwrap();
            }
            assert!(s.finish(1, &mut got).unwrap().0);
        }
        assert_eq!(round.stats(), want_stats);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }
}
