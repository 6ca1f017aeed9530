//! Differential privacy for federated reconstruction (issue 8; docs/SEMANTICS.md "Differential privacy
//! (paper's code)").
//!
//! The paper's code (TensorFlow Federated) protects the *global* item matrix with central DP: every
//! sampled client's update is clipped to an L2 norm, the clipped updates are summed with uniform
//! weights, Gaussian noise of standard deviation `noise_multiplier × clip` is added to every
//! coordinate of the sum on the server, and the sum is divided by the number of clients per round
//! (`tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed` / `gaussian_adaptive`). TFF never
//! reports an ε; fedrecon does, with the Rényi-DP accountant that TensorFlow Privacy and Google's
//! `dp_accounting` use for the Poisson-subsampled Gaussian mechanism.
//!
//! * [`accountant`]: [`RdpAccountant`] (RDP of the subsampled Gaussian, conversion to (ε, δ)).
//! * [`clip`]: per-client clipping, the [`DpAggregator`] (clip, sum, noise, mean) and
//!   [`AdaptiveClip`] (quantile-tracking clip norm of Andrew et al. 2021).
//! * [`noise`]: the seeded server-side Gaussian noise stream.
//!
//! How the engine uses it, once per run:
//! 1. `DpAggregator::new(&DpParams { .. }, num_items, dim, with_bias)`;
//! 2. each round, `add_client(rows, biases)` for every sampled client in a fixed order, then
//!    `finish(round_seed)` for the dense noised mean delta (adaptive clipping updates its norm
//!    there);
//! 3. each round, `RdpAccountant::step(clients_per_round / num_train_users, noise_multiplier, 1)`
//!    and `epsilon(default_delta(num_train_users))` for the report. With adaptive clipping the
//!    accountant gets the *total* noise multiplier: the value and count noises are calibrated so
//!    that together they are worth exactly that (Andrew et al. 2021, Theorem 1).
//!
//! Caveat (stated in reports, as TF Privacy does): the accountant assumes Poisson sampling of
//! clients with probability q, while the paper's code samples a fixed number of clients uniformly
//! without replacement; the numbers are the conventional approximation, not a proof for that
//! sampler.

pub mod accountant;
pub mod clip;
pub mod noise;
pub mod session;

pub use crate::config::privacy::DpConfig;
pub use accountant::{
    RdpAccountant, compute_rdp, default_delta, default_orders, eps_from_rdp, eps_from_rdp_classic,
};
pub use clip::{
    AdaptiveClip, AdaptiveClipParams, ClipInfo, DpAggregator, DpParams, DpRoundStats,
    clip_in_place, clip_scale,
};
pub use noise::GaussianNoise;
pub use session::{DpSession, PrivacySpent};

/// Errors from invalid privacy parameters or malformed client updates.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DpError {
    /// A parameter is outside its domain (message names it and the value).
    #[error("invalid differential-privacy parameter: {0}")]
    InvalidParameter(String),
    /// A client update refers to an item outside the item matrix.
    #[error("client update names item {item}, but the model has {num_items} items")]
    ItemOutOfRange {
        /// Offending item index.
        item: u32,
        /// Items in the model.
        num_items: usize,
    },
    /// A client update row does not have the embedding dimension.
    #[error("client update row for item {item} has {len} values, expected {dim}")]
    RowLength {
        /// Item of the offending row.
        item: u32,
        /// Its length.
        len: usize,
        /// Embedding dimension.
        dim: usize,
    },
    /// The same item appears twice in one client's rows (or biases): the norm would be wrong.
    #[error("client update names item {0} twice")]
    DuplicateItem(u32),
    /// Bias deltas were given to an aggregator built without item biases.
    #[error("client update has bias deltas, but the aggregator was built without item biases")]
    UnexpectedBias,
    /// A client update contains NaN or an infinity, which clipping cannot bound.
    #[error("client update for item {0} contains a non-finite value")]
    NonFinite(u32),
}
