//! The messages between rank 0 and the other ranks (postcard-encoded).

use serde::{Deserialize, Serialize};

use fedrecon_core::Metrics;

use crate::round::evaluate::UserEval;
use crate::server::validate::Reject;

/// Rank 0's order to another rank; the model follows every `Train` and `Evaluate` as a
/// broadcast.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Command {
    /// The run's constants that need the whole training split (`f32` bits of its mean rating),
    /// sent once when rank 0 takes the lead.
    Setup { global_mean: u32 },
    /// Run these jobs (indices into the round's sample) of round `round`, reporting window by
    /// window of `window` jobs.
    Train {
        round: u32,
        window: u32,
        assigned: Vec<u32>,
        /// Count the downlink and decode and validate the uploads there (else rank 0 does,
        /// from the bytes).
        decode: bool,
        /// Fold the round sharded by item rows: after each window's report, rank 0
        /// broadcasts which of its jobs it took and the ranks exchange those updates' rows by
        /// shard ([`Piece`]); the rank's shard of the sums goes to rank 0 at the round's end.
        shard: bool,
    },
    /// Evaluate these users (indices into the split's clients) on the model after `round`
    /// rounds.
    Evaluate {
        round: u32,
        test: bool,
        users: Vec<u32>,
    },
    /// The run is over.
    Stop,
}

/// What became of one client a rank ran (the server's `Outcome`, minus what only rank 0
/// decides).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Ran {
    Sent { wire_client: u32 },
    NoBatch,
    LinkFailed,
    Failed(String),
    NotRun,
}

/// One client's report: its job index, what became of it, its upload (as bytes, or as the
/// rank decoded and checked it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClientReport {
    pub(crate) job: u32,
    pub(crate) ran: Ran,
    pub(crate) padded_overflow: bool,
    pub(crate) bytes: Vec<u8>,
    /// Whether the upload came over a serial link (a board's COBS frames) rather than in process.
    pub(crate) serial: bool,
    pub(crate) decoded: Option<Decoded>,
}

/// An upload as the server's decoder and validator read it on the rank that ran the client
/// (without its rows in a sharded fold: they go to their shards' owners).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Decoded {
    pub(crate) weight: u32,
    pub(crate) row_count: u32,
    pub(crate) malicious: bool,
    pub(crate) metrics: Metrics,
    pub(crate) rows_in_header: u32,
    pub(crate) items: Vec<u32>,
    pub(crate) rows: Vec<f32>,
    pub(crate) biases: Vec<f32>,
    pub(crate) reject: Option<(Reject, String)>,
    pub(crate) bytes_down: u64,
    pub(crate) framing_down: u64,
    pub(crate) up_len: u64,
    pub(crate) framing_up: u64,
    pub(crate) norm: f64,
}

/// A rank's clients of one window, in sample order, and its boards' link figures.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WindowReport {
    pub(crate) clients: Vec<ClientReport>,
    pub(crate) link_faults: u64,
    pub(crate) link_errors: u32,
    pub(crate) link_retries: u32,
}

/// The rows of one taken client that fall in one shard of the items, for the shard's owner.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Piece {
    /// The client's index in the round's sample (the order every row is summed in).
    pub(crate) job: u32,
    pub(crate) weight: u32,
    pub(crate) items: Vec<u32>,
    pub(crate) rows: Vec<f32>,
    pub(crate) biases: Vec<f32>,
}

/// A rank's evaluation of its users, in order (`None`: the user had no example to evaluate).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EvalReply {
    Done(Vec<Option<UserEval>>),
    Failed(String),
}
