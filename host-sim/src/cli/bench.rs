//! `fedrecon bench`: flags and the printed report of the speed benchmark.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use fedrecon_host_sim::baselines::bench::{bench_config, run_bench};
use fedrecon_host_sim::config::{Config, Overrides};
use fedrecon_host_sim::data::partition::partition;

use crate::cli::{ConfigSource, MaybeNum, load_data};

/// `fedrecon bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// MovieLens folder (any layout; `fedrecon synth` writes one of any size).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    #[allow(missing_docs)] // preset and config file
    #[command(flatten)]
    pub source: ConfigSource,
    /// Worker threads (`none` = one per core).
    #[arg(long)]
    pub threads: Option<MaybeNum>,
    /// Timed rounds (after one warm-up round); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Device arithmetic: f32, q16 or q12.
    #[arg(long)]
    pub scalar: Option<fedrecon_host_sim::config::Scalar>,
    /// Clients per round (`all` = the whole training population; the default without
    /// --preset / --config).
    #[arg(long)]
    pub clients_per_round: Option<MaybeNum>,
    /// Ratings kept per user (`none` = all).
    #[arg(long)]
    pub max_ratings_per_user: Option<MaybeNum>,
    /// Validation users evaluated (`none` = all).
    #[arg(long)]
    pub eval_clients: Option<MaybeNum>,
    /// Embedding width K.
    #[arg(long)]
    pub k: Option<usize>,
    /// Users taken from the dataset (`none` = all).
    #[arg(long)]
    pub max_clients: Option<MaybeNum>,
}

/// The configuration a bench runs: the bench default without --preset / --config, else the
/// preset and file; then the flags.
pub fn resolve_config(a: &BenchArgs) -> Result<Config> {
    let mut cfg = if a.source.preset.is_none() && a.source.config.is_none() {
        bench_config(None)
    } else {
        Config::resolve(
            a.source.preset,
            a.source.config.as_deref(),
            &Overrides::default(),
        )
        .context("building the configuration (--preset / --config)")?
    };
    let o = Overrides {
        threads: a.threads.map(|m| m.0),
        scalar: a.scalar,
        max_ratings_per_user: a.max_ratings_per_user.map(|m| m.0),
        eval_clients: a.eval_clients.map(|m| m.0),
        k: a.k,
        max_clients: a.max_clients.map(|m| m.0),
        ..Overrides::default()
    };
    cfg.apply(&o);
    cfg.validate()
        .context("building the configuration (flags)")?;
    Ok(cfg)
}

/// Runs the benchmark and prints its report.
pub fn bench(a: &BenchArgs) -> Result<()> {
    let ratings = load_data(&a.data)?;
    let mut cfg = resolve_config(a)?;
    let part = partition(&ratings, &cfg.data);
    let whole = a.source.preset.is_none() && a.source.config.is_none();
    cfg.run.clients_per_round = match a.clients_per_round {
        Some(MaybeNum(Some(n))) => n,
        Some(MaybeNum(None)) => part.train.len(),
        None if whole => part.train.len(),
        None => cfg.run.clients_per_round,
    }
    .min(part.train.len());
    let r = run_bench(&cfg, &part, ratings.items(), a.rounds.max(1))?;
    let ms = |s: f64| s * 1e3;
    println!(
        "bench: {} ({} users, {} ratings); {} training users, {} clients per round, \
         {} rating-steps per round, K = {}, {:?}, {} threads",
        a.data.display(),
        ratings.users(),
        ratings.len(),
        part.train.len(),
        r.clients,
        r.steps,
        cfg.model.k,
        cfg.run.scalar,
        r.threads
    );
    println!(
        "round (median of {}): {:.1} ms; {:.2} M rating-steps/s ({:.2} M per core); \
         {:.2} MB up ({:.2} MB messages + {:.3} MB framing)",
        a.rounds.max(1),
        ms(r.round_seconds),
        r.steps_per_second() / 1e6,
        r.steps_per_second() / r.threads as f64 / 1e6,
        r.bytes_up as f64 / 1e6,
        r.payload_up as f64 / 1e6,
        (r.bytes_up - r.payload_up) as f64 / 1e6
    );
    let encode = (r.train_encode_seconds - r.train_only_seconds).max(0.0);
    let decode = (r.device_seconds - r.train_encode_seconds).max(0.0);
    let other = (r.server_seconds - r.aggregate_seconds - r.step_seconds).max(0.0);
    println!("  device training    {:>9.1} ms", ms(r.train_only_seconds));
    println!("  encode             {:>9.1} ms", ms(encode));
    println!("  decode + validate  {:>9.1} ms", ms(decode));
    println!("  aggregate          {:>9.1} ms", ms(r.aggregate_seconds));
    println!("  server step        {:>9.1} ms", ms(r.step_seconds));
    println!("  selection, other   {:>9.1} ms", ms(other));
    println!(
        "  evaluation         {:>9.1} ms ({} validation users, ranking every item)",
        ms(r.eval_seconds),
        r.eval_users
    );
    println!(
        "(device training: Device::train alone over the same clients on the same threads; encode: \
         that plus encoding, minus it; decode + validate: the round's device section minus both)"
    );
    println!(
        "baseline (plain SGD loop, 1 thread, one epoch per phase): {:.1} ms for {} rating-steps, \
         {:.2} M rating-steps/s",
        ms(r.baseline_seconds),
        r.baseline_steps,
        r.baseline_steps_per_second() / 1e6
    );
    println!(
        "per-core speed vs baseline: {:.2} with the wire, {:.2} for Device::train alone",
        r.ratio_per_core(),
        r.steps as f64 / (r.train_only_seconds * r.threads as f64) / r.baseline_steps_per_second()
    );
    match r.peak_rss {
        Some(b) => println!("peak RSS: {:.1} MB", b as f64 / 1e6),
        None => println!("peak RSS: not reported by this system"),
    }
    Ok(())
}
