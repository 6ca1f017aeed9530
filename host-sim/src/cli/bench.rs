//! `fedrecon bench`: flags and the printed report of the speed benchmark.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use fedrecon_host_sim::baselines::bench::{bench_config, run_bench};
use fedrecon_host_sim::data::partition::partition;

use crate::cli::{MaybeNum, load_data};

/// `fedrecon bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// MovieLens folder (ml-1m).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Worker threads (`none` = one per core).
    #[arg(long)]
    pub threads: Option<MaybeNum>,
    /// Timed rounds (after one warm-up round); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Device arithmetic: f32, q16 or q12.
    #[arg(long, default_value = "f32")]
    pub scalar: fedrecon_host_sim::config::Scalar,
}

/// Runs the benchmark and prints its report.
pub fn bench(a: &BenchArgs) -> Result<()> {
    let ratings = load_data(&a.data)?;
    let mut cfg = bench_config(a.threads.and_then(|m| m.0));
    cfg.run.scalar = a.scalar;
    let part = partition(&ratings, &cfg.data);
    cfg.run.clients_per_round = part.train.len();
    let r = run_bench(&cfg, &part, ratings.items(), a.rounds.max(1))?;
    println!(
        "bench: {} train clients, {} rating-steps per round, K = {}, {} threads",
        r.clients, r.steps, cfg.model.k, r.threads
    );
    println!(
        "round (median of {}): {:.1} ms = devices+encode {:.1} ms + decode/aggregate/server {:.1} ms; {:.2} MB up",
        a.rounds.max(1),
        r.round_seconds * 1e3,
        r.device_seconds * 1e3,
        r.server_seconds * 1e3,
        r.bytes_up as f64 / 1e6
    );
    println!(
        "device section alone: Device::train {:.1} ms, + encode {:.1} ms, + decode {:.1} ms (round's)",
        r.train_only_seconds * 1e3,
        r.train_encode_seconds * 1e3,
        r.device_seconds * 1e3
    );
    println!(
        "simulator: {:.2} M rating-steps/s ({:.2} M per core)",
        r.steps_per_second() / 1e6,
        r.steps_per_second() / r.threads as f64 / 1e6
    );
    println!(
        "baseline (plain SGD loop, 1 thread): {:.1} ms, {:.2} M rating-steps/s",
        r.baseline_seconds * 1e3,
        r.baseline_steps_per_second() / 1e6
    );
    println!(
        "per-core speed vs baseline: {:.2} (goal >= 0.7); round {:.1} ms (goal < 50 ms on 2 cores)",
        r.ratio_per_core(),
        r.round_seconds * 1e3
    );
    println!(
        "per-core speed of Device::train alone (no wire) vs baseline: {:.2}",
        r.baseline_seconds / (r.train_only_seconds * r.threads as f64)
    );
    println!(
        "evaluation of {} val users (incl. ranking of all items): {:.1} ms",
        r.eval_users,
        r.eval_seconds * 1e3
    );
    Ok(())
}
