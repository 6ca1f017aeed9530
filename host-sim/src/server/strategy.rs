//! How a round turns its accepted updates into the server's delta. The round hands each window
//! of accepted updates, in sample order, to a [`Strategy`] as soon as they are decoded and
//! validated, then asks for the result. The mean and the DP mean fold them into sums and keep
//! nothing else (memory independent of the clients per round); a robust strategy (median,
//! trimmed mean, Krum) needs every client's rows and would copy them in [`Strategy::fold`].

use anyhow::{Context, Result};
use fedrecon_core::Metrics;

use super::privacy::{DpSession, PrivacySpent};
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

/// The strategy of the configuration: the weighted mean, or the clipped and noised DP mean
/// (whose metrics still go to `agg`).
pub(crate) fn for_round<'a>(
    agg: &'a mut Aggregator,
    dp: Option<&'a mut DpSession>,
) -> Box<dyn Strategy + 'a> {
    match dp {
        None => Box::new(Mean(agg)),
        Some(dp) => Box::new(DpMean { dp, agg }),
    }
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
