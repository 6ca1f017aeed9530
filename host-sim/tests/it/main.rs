//! The simulator's integration tests, one binary (one link on a 2-core machine instead of one
//! per file): each module is a former `tests/*.rs` file. QEMU-board tests skip with a printed
//! reason unless the firmware image and qemu-system-arm are present (`FEDRECON_REQUIRE_QEMU=1`
//! turns the skip into a failure, as scripts/check.sh's QEMU step does).

mod common;

mod attack;
mod board_eval;
mod board_matrix;
mod board_owned;
mod board_reconnect;
mod boards;
mod cli;
mod cli_errors;
mod cluster;
mod comm_privacy;
mod data_fetch;
mod engine;
mod goldens;
mod hostile_inputs;
mod link_faults;
mod ml1m;
mod model_bundle;
mod module_deps;
mod movielens_formats;
mod quality;
mod reliability;
mod run_dir;
mod session;
mod streaming;
mod sweep;
mod synth;
