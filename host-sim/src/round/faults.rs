//! What a round records about its clients besides normal aggregation: dropouts, rejected
//! updates by reason, over-selection surplus, a skipped round, link failures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::server::validate::Reject;

/// What happened to a round's clients besides normal aggregation; serialised flat into the
/// round's `metrics.jsonl` row, each field only when it is not empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoundFaults {
    /// Sampled clients that dropped out.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: u32,
    /// Updates rejected, by reason ([`Reject::name`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<String, u32>,
    /// Valid reports beyond `clients_per_round` (over-selection surplus), not aggregated.
    #[serde(skip_serializing_if = "is_zero")]
    pub surplus: u32,
    /// Updates aggregated (written only when the run uses dropout, over-selection or saw a
    /// rejection, or the round was skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregated: Option<u32>,
    /// The round was skipped: nothing aggregated, no server step.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Why the round was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Faults injected on the boards' links this round (`--link-faults`).
    #[serde(skip_serializing_if = "is_zero64")]
    pub link_faults: u64,
    /// Board exchanges that failed on the link (corruption detected by CRC, COBS, chunk
    /// sequence, the board's `Error`, a timeout or a reset); each is followed by a resync.
    #[serde(skip_serializing_if = "is_zero")]
    pub link_errors: u32,
    /// Board clients retried after a failed exchange.
    #[serde(skip_serializing_if = "is_zero")]
    pub link_retries: u32,
    /// Users of board clients dropped for the round after a failed retry (link failures;
    /// nothing of theirs is aggregated).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_failed: Vec<u32>,
    /// Board frames and sessions the authentication layer refused (core/WIRE.md 7.3), by
    /// reason (`bad_tag`, `replayed`, ...; by the host or by the board): each dropped its
    /// client for the round (its user is in `link_failed`), nothing of it aggregated.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub auth_refused: BTreeMap<String, u32>,
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

fn is_zero64(x: &u64) -> bool {
    *x == 0
}

impl RoundFaults {
    /// Counts one rejection.
    pub fn reject(&mut self, why: Reject) {
        *self.rejected.entry(why.name().to_owned()).or_default() += 1;
    }

    /// Total rejections.
    pub fn rejected_total(&self) -> u32 {
        self.rejected.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_serialise_only_when_present() {
        let mut f = RoundFaults::default();
        assert_eq!(serde_json::to_string(&f).unwrap(), "{}");
        f.reject(Reject::Norm);
        f.reject(Reject::Norm);
        f.skipped = true;
        f.reason = Some("x".into());
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"rejected":{"norm":2},"skipped":true,"reason":"x"}"#
        );
    }
}
