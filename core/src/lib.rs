//! # fedrecon-core
//!
//! One device's Federated Reconstruction round (Singhal et al., NeurIPS 2021) for
//! matrix-factorization recommendation, with the semantics of TensorFlow Federated's
//! `tff.learning.reconstruction` (see `docs/SEMANTICS.md`):
//!
//! 1. [`split`]: cap, seeded shuffle, batches, even/odd split, epochs then step caps;
//! 2. [`Device::train`]: reconstruct the user embedding with the item rows frozen (SGD, or the
//!    exact ridge solve of [`ridge`] when [`RoundConfig::reconstruction`] says so), train the
//!    touched item rows with the user embedding frozen, return the sparse [`Update`];
//! 3. [`Device::evaluate`]: reconstruct on one half, measure on the other;
//! 4. [`Device::rank`] and [`rank::TopK`]: top-k over a streamed catalogue.
//!
//! `no_std`, no `alloc`: every buffer has a compile-time capacity and running out of room is
//! an [`Error`], never a panic. Generic over [`Scalar`] so fixed point drops in. The same
//! inputs and seed give the same update, bit for bit, on every target.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dataset;
pub mod device;
pub mod error;
pub mod fixed;
pub mod implicit;
pub mod model;
pub mod rank;
pub mod ridge;
pub mod rng;
pub mod rows;
pub mod scalar;
pub mod split;
pub mod wire;

pub use dataset::ClientData;
pub use device::{Device, Update};
pub use error::{Error, Phase, Result};
pub use fixed::{Q12, Q16};
pub use model::{Metrics, ModelConfig, Reconstruction, RoundConfig, Weighting};
pub use rows::{DenseRows, ItemRows};
pub use scalar::{Scalar, ScalarKind};
pub use split::{Schedule, SplitConfig};
