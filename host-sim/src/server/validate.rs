//! The server's check of every decoded client update before it may be aggregated (issue 9).
//!
//! The wire decoder already guarantees well-formed frames (COBS, CRC, sequence numbers, width,
//! finite values, strictly ascending ids); this module checks what only the server can know or
//! should not trust a decoder for: row ids inside the catalogue, no duplicate rows, a weight no
//! larger than the client's own data allows (and than `reliability.max_weight`), finite values,
//! an L2 norm no larger than `reliability.max_update_norm`, and metric sums consistent with the
//! examples the client could have iterated. A failing update is rejected as a whole.

use fedrecon_core::Metrics;

use crate::config::reliability::ReliabilityConfig;

/// What the server knows when it checks one update.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Catalogue size: row ids must be below it.
    pub num_items: usize,
    /// Embedding width.
    pub k: usize,
    /// Largest weight this client may claim (its post-reconstruction examples, or 1 with
    /// uniform weighting).
    pub client_max_weight: u32,
    /// Largest example count its metrics may report (its post-reconstruction examples).
    pub client_max_examples: u32,
    /// `reliability.max_weight`.
    pub max_weight: Option<u32>,
    /// `reliability.max_update_norm`.
    pub max_norm: f64,
}

impl Limits {
    /// Limits from the configuration for one client.
    pub fn new(
        rel: &ReliabilityConfig,
        num_items: usize,
        k: usize,
        client_max_weight: u32,
        client_max_examples: u32,
    ) -> Self {
        Self {
            num_items,
            k,
            client_max_weight,
            client_max_examples,
            max_weight: rel.max_weight,
            max_norm: rel.max_update_norm,
        }
    }
}

/// One decoded update as the server holds it.
#[derive(Clone, Copy, Debug)]
pub struct Decoded<'a> {
    /// Claimed aggregation weight.
    pub weight: u32,
    /// Claimed metric sums.
    pub metrics: Metrics,
    /// Row ids.
    pub items: &'a [u32],
    /// Row deltas, `items.len() × k`.
    pub rows: &'a [f32],
    /// Bias deltas (empty without item biases).
    pub biases: &'a [f32],
}

/// Checks one update; `Err((reason, explanation))` when it must not be aggregated.
pub fn check(limits: &Limits, u: &Decoded<'_>) -> Result<(), (Reject, String)> {
    let k = limits.k;
    if u.rows.len() != u.items.len() * k
        || (!u.biases.is_empty() && u.biases.len() != u.items.len())
    {
        return Err((
            Reject::Malformed,
            format!(
                "{} rows of {} values for {} ids",
                u.rows.len() / k.max(1),
                k,
                u.items.len()
            ),
        ));
    }
    if let Some(&bad) = u.items.iter().find(|&&i| i as usize >= limits.num_items) {
        return Err((
            Reject::RowOutOfRange,
            format!("row {bad} is outside the {} items", limits.num_items),
        ));
    }
    if let Some(w) = u.items.windows(2).find(|w| w[0] >= w[1]) {
        return Err((
            Reject::DuplicateRow,
            format!(
                "row {} follows row {} (ids must be strictly ascending)",
                w[1], w[0]
            ),
        ));
    }
    if u.weight > limits.client_max_weight {
        return Err((
            Reject::Weight,
            format!(
                "weight {} exceeds the {} examples the client's data allows",
                u.weight, limits.client_max_weight
            ),
        ));
    }
    if let Some(max) = limits.max_weight.filter(|&m| u.weight > m) {
        return Err((
            Reject::Weight,
            format!("weight {} exceeds reliability.max_weight = {max}", u.weight),
        ));
    }
    let m = &u.metrics;
    if m.count > limits.client_max_examples
        || m.correct > m.count
        || !(m.loss_sum.is_finite() && m.loss_sum >= 0.0)
        || !(m.abs_err_sum.is_finite() && m.abs_err_sum >= 0.0)
    {
        return Err((
            Reject::Metrics,
            format!(
                "metrics (count {}, correct {}, loss sum {}) do not fit the client's {} examples",
                m.count, m.correct, m.loss_sum, limits.client_max_examples
            ),
        ));
    }
    let mut sq = 0f64;
    for (i, &x) in u.rows.iter().chain(u.biases).enumerate() {
        if !x.is_finite() {
            return Err((Reject::NonFinite, format!("value {i} is {x}")));
        }
        sq += f64::from(x) * f64::from(x);
    }
    let norm = sq.sqrt();
    if norm > limits.max_norm {
        return Err((
            Reject::Norm,
            format!(
                "L2 norm {norm:.3e} exceeds reliability.max_update_norm = {:e}",
                limits.max_norm
            ),
        ));
    }
    Ok(())
}

/// Why the server refused a client's update (see [`check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reject {
    /// The bytes did not decode as an update of this client for this round (bad frame, CRC,
    /// sequence, width, non-finite or unordered rows as the wire decoder checks them).
    Malformed,
    /// A row id outside the catalogue.
    RowOutOfRange,
    /// The same row twice (or rows out of order).
    DuplicateRow,
    /// A weight larger than the client's data allows, or than `max_weight`.
    Weight,
    /// A non-finite delta or bias.
    NonFinite,
    /// An L2 norm above `max_update_norm`.
    Norm,
    /// Metric sums that do not fit the weight (more examples counted than iterated).
    Metrics,
}

impl Reject {
    /// The key in `metrics.jsonl`'s `rejected` map.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::RowOutOfRange => "row_out_of_range",
            Reject::DuplicateRow => "duplicate_row",
            Reject::Weight => "weight",
            Reject::NonFinite => "non_finite",
            Reject::Norm => "norm",
            Reject::Metrics => "metrics",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(&ReliabilityConfig::default(), 10, 2, 30, 30)
    }

    fn ok_metrics() -> Metrics {
        Metrics {
            loss_sum: 3.0,
            abs_err_sum: 2.0,
            correct: 4,
            count: 30,
        }
    }

    fn run(items: &[u32], rows: &[f32], weight: u32) -> Result<(), Reject> {
        check(
            &limits(),
            &Decoded {
                weight,
                metrics: ok_metrics(),
                items,
                rows,
                biases: &[],
            },
        )
        .map_err(|e| e.0)
    }

    #[test]
    fn each_reason() {
        assert_eq!(run(&[1, 3], &[0.1, 0.2, 0.3, 0.4], 30), Ok(()));
        assert_eq!(run(&[1, 10], &[0.1; 4], 5), Err(Reject::RowOutOfRange));
        assert_eq!(run(&[3, 3], &[0.1; 4], 5), Err(Reject::DuplicateRow));
        assert_eq!(run(&[1, 3], &[0.1; 4], 31), Err(Reject::Weight));
        assert_eq!(
            run(&[1, 3], &[0.1, f32::NAN, 0.0, 0.0], 5),
            Err(Reject::NonFinite)
        );
        assert_eq!(run(&[1, 3], &[1e6, 1e6, 0.0, 0.0], 5), Err(Reject::Norm));
        assert_eq!(run(&[1], &[0.1; 4], 5), Err(Reject::Malformed));
    }
}
