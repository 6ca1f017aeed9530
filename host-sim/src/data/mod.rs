//! The data a run trains on: MovieLens files (and their download), the user partition, numpy's
//! RNG (for the paper's split), and MovieLens-shaped synthetic data.

#[cfg(feature = "fetch")]
pub mod fetch;
pub mod movielens;
pub mod numpy_rng;
pub mod partition;
pub mod synth;
