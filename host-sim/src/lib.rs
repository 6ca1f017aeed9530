//! fedrecon-host-sim: MovieLens loading, client partitioning and experiment configuration for the
//! host simulator of Federated Reconstruction (see docs/SEMANTICS.md).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod attack;
pub mod baselines;
pub mod board;
pub mod cli;
pub mod comm;
pub mod config;
pub mod data;
pub mod output;
pub mod round;
pub mod run;
pub mod seeds;
pub mod server;
