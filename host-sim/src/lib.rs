//! fedrecon-host-sim: MovieLens loading, client partitioning and experiment configuration for the
//! host simulator of Federated Reconstruction (see docs/SEMANTICS.md).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod board;
pub mod centralized;
pub mod checkpoint;
pub mod cli;
pub mod comm;
pub mod config;
pub mod engine;
pub mod evaluate;
pub mod faults;
pub mod link_faults;
pub mod movielens;
pub mod numpy_rng;
pub mod partition;
pub mod plot;
pub mod privacy;
pub mod report;
pub mod resume;
pub mod run;
pub mod schedule;
pub mod seeds;
pub mod server;
pub mod transport;
pub mod validate;
