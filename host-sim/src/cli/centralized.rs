//! `fedrecon centralized`: the centralized baseline's flags and report.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::Args;
use fedrecon_host_sim::baselines::centralized::{CentralConfig, CentralOptimizer, run_partition};
use fedrecon_host_sim::config::{Config, Overrides};
use fedrecon_host_sim::data::partition::partition;
use fedrecon_host_sim::output;

use crate::cli::{ConfigSource, MaybeNum, load_data};

/// `fedrecon centralized` arguments.
#[derive(Debug, Args)]
pub struct CentralizedArgs {
    /// MovieLens folder (ml-1m).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    #[allow(missing_docs)] // preset and config file
    #[command(flatten)]
    pub source: ConfigSource,
    /// Passes over the training ratings.
    #[arg(long, default_value_t = CentralConfig::default().epochs)]
    pub epochs: u32,
    /// Ratings per minibatch.
    #[arg(long, default_value_t = CentralConfig::default().batch_size)]
    pub batch_size: usize,
    /// Optimizer.
    #[arg(long, default_value = "adam")]
    pub optimizer: CentralOptimizer,
    /// Learning rate.
    #[arg(long, default_value_t = CentralConfig::default().lr)]
    pub lr: f32,
    /// L2 on the user embeddings (per rating).
    #[arg(long, default_value_t = CentralConfig::default().user_l2)]
    pub user_l2: f32,
    /// L2 on the item rows (per rating).
    #[arg(long, default_value_t = CentralConfig::default().item_l2)]
    pub item_l2: f32,
    /// Seed of the initialisation, shuffles and evaluation (default: the config's run.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validate every N epochs (0 = only at the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u32,
    /// Users per evaluation (`none` = all of the split; default: the config's).
    #[arg(long)]
    pub eval_clients: Option<MaybeNum>,
    /// Evaluation reconstruction learning rate (default: the config's).
    #[arg(long)]
    pub eval_recon_lr: Option<f32>,
    /// Write the figures as JSON lines into this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `fedrecon centralized`.
pub fn centralized(a: &CentralizedArgs) -> Result<()> {
    let o = Overrides {
        seed: a.seed,
        eval_clients: a.eval_clients.map(|m| m.0),
        eval_recon_lr: a.eval_recon_lr,
        ..Overrides::default()
    };
    let cfg = Config::resolve(a.source.preset, a.source.config.as_deref(), &o)
        .context("building the configuration (--preset / --config / flags)")?;
    let central = CentralConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        optimizer: a.optimizer,
        lr: a.lr,
        user_l2: a.user_l2,
        item_l2: a.item_l2,
        seed: cfg.run.seed,
    };
    ensure!(
        central.lr.is_finite() && central.lr > 0.0,
        "--lr must be > 0"
    );
    ensure!(
        central.user_l2 >= 0.0 && central.item_l2 >= 0.0,
        "--user-l2 and --item-l2 must be >= 0"
    );
    let ratings = load_data(&a.data)?;
    let part = partition(&ratings, &cfg.data);
    let res = run_partition(&cfg, &central, &part, ratings.items(), a.eval_every)?;
    let val = res.val.last().expect("a final validation");
    println!(
        "centralized MF ({:?}, {} epochs, lr {}, L2 user {} item {}), model K = {} \
         user_bias {} item_bias {} global_mean {}",
        central.optimizer,
        central.epochs,
        central.lr,
        central.user_l2,
        central.item_l2,
        cfg.model.k,
        cfg.model.user_bias,
        cfg.model.item_bias,
        cfg.model.global_mean
    );
    println!("               loss  accuracy     rmse      mae  recall@10   ndcg@10");
    println!(
        "train (last)      -         - {:>8.4}        -          -         -",
        res.train_rmse.last().copied().unwrap_or(f64::NAN)
    );
    for (name, e) in [("val (final) ", val), ("test (final)", &res.test)] {
        println!(
            "{name} {:>8.4} {:>9.4} {:>8.4} {:>8.4} {:>10.4} {:>9.4}",
            e.loss, e.rating_accuracy, e.rmse, e.mae, e.recall_at_10, e.ndcg_at_10
        );
    }
    println!("{:.2} s", res.seconds);
    if let Some(path) = &a.out {
        let mut text = String::new();
        for e in res.val.iter().chain([&res.test]) {
            text += &serde_json::to_string(e)?;
            text.push('\n');
        }
        output::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}
