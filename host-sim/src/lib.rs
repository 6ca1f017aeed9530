//! fedrecon-host-sim: the simulator of Federated Reconstruction (Singhal et al. 2021) over
//! thousands of virtual `fedrecon-core` devices and real boards (see docs/SEMANTICS.md).
//!
//! The modules (each depends only on modules above it; `tests/it/module_deps.rs` checks there
//! is no import cycle):
//! - [`seeds`]: every random draw derived from the experiment seed.
//! - [`comm`]: downlink and uplink modes and the wire encoding of updates.
//! - [`config`]: presets, the TOML sections and their validation.
//! - [`data`]: MovieLens files, the user partition, numpy's RNG, synthetic MovieLens-shaped data.
//! - [`server`]: aggregation, server optimizers, update validation, differential privacy.
//! - [`board`]: boards on a link (QEMU or serial), the fault-injecting link, assignment.
//! - [`cluster`]: one experiment over several processes (MPI), bit-identical to one.
//! - [`round`]: one round as its phases (sample, configure, run clients, collect, validate,
//!   select, aggregate, apply) with where a client runs behind one trait; evaluation.
//! - [`output`]: metrics, `items.npy`, the model bundle `model.npz`, plots, checkpoints,
//!   atomic writes.
//! - [`run`]: an experiment from configuration to outputs.
//! - [`session`]: an experiment that owns its data, stepped one call at a time on its own
//!   thread (notebooks, the Python binding).
//! - [`baselines`]: the centralized upper bound and the speed benchmark.
//! - [`sweep`]: a configuration × seeds grid of runs in parallel and its table of figures.
//!
//! The command line (`fedrecon`, `src/main.rs` and `src/cli/`) is the binary's; the library
//! takes typed options. The usual entry points are re-exported here:
//!
//! ```no_run
//! use fedrecon_host_sim::{Config, Preset, RunOptions, load, run};
//! let ratings = load("ml-1m".as_ref())?;
//! let result = run(&Config::preset(Preset::Tutorial), &ratings, &RunOptions::default())?;
//! println!("test accuracy {}", result.test.rating_accuracy);
//! # Ok::<(), anyhow::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod attack;
pub mod baselines;
pub mod board;
pub mod cluster;
pub mod comm;
pub mod config;
pub mod data;
pub mod output;
pub mod round;
pub mod run;
pub mod seeds;
pub mod server;
pub mod session;
pub mod sweep;

pub use board::BoardOptions;
pub use config::{Config, Preset};
pub use data::movielens::{Ratings, load};
pub use round::Simulation;
pub use run::{RunOptions, RunResult, run, run_with_boards};
pub use session::Session;
