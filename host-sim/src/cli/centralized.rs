//! `fedrecon centralized`: the centralized baseline's flags and report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use clap::{Args, ValueEnum};
use fedrecon_host_sim::baselines::centralized::{
    CentralConfig, CentralFit, CentralOptimizer, run_partition,
};
use fedrecon_host_sim::baselines::seen::{SeenSplit, run_seen};
use fedrecon_host_sim::config::{Config, Overrides};
use fedrecon_host_sim::data::movielens::Ratings;
use fedrecon_host_sim::data::partition::partition;
use fedrecon_host_sim::output::{self, Record};

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
    /// Which users are evaluated: `unseen` (the configuration's held-out users, reconstructed
    /// as the federated model's are) or `seen` (held-out ratings of users trained on, for
    /// context; not comparable to unseen-user figures).
    #[arg(long, value_enum, default_value_t = SplitKind::Unseen)]
    pub split: SplitKind,
    /// With `--split seen`: fraction of all ratings held out, drawn from the seed (default 0.2,
    /// one fold of 5-fold cross-validation).
    #[arg(long, value_name = "FRACTION")]
    pub holdout: Option<f64>,
    /// Write the run into this new (or empty) directory: `model.npz` (what `recommend
    /// --model` reads), `items.npy`, `config.toml` and `metrics.jsonl`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Allow writing into a non-empty --out directory (overwrites fedrecon's files only).
    #[arg(long)]
    pub force: bool,
}

/// The users `fedrecon centralized` evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitKind {
    /// The configuration's validation and test users, unseen in training.
    Unseen,
    /// Held-out ratings of users the model trained on.
    Seen,
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
    let seen = match a.split {
        SplitKind::Seen => {
            ensure!(
                a.eval_clients.is_none() && a.eval_recon_lr.is_none(),
                "--eval-clients and --eval-recon-lr are for unseen users; --split seen \
                 reconstructs nothing"
            );
            let s = SeenSplit {
                holdout: a.holdout.unwrap_or(SeenSplit::default().holdout),
            };
            ensure!(
                s.holdout.is_finite() && s.holdout > 0.0 && s.holdout < 1.0,
                "--holdout {} must be in (0, 1)",
                s.holdout
            );
            Some(s)
        }
        SplitKind::Unseen => {
            ensure!(
                a.holdout.is_none(),
                "--holdout is for --split seen (unseen users are the configuration's user split)"
            );
            None
        }
    };
    // Claimed before the data is read and held until the end, as `train --out` does.
    let _claim = match &a.out {
        Some(dir) => Some(output::RunDir::create(dir, a.force).with_context(|| {
            format!(
                "--out {} (--force overwrites fedrecon's files in it)",
                dir.display()
            )
        })?),
        None => None,
    };
    let ratings = load_data(&a.data)?;
    let header = format!(
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
    if let Some(split) = seen {
        let res = run_seen(&cfg, &central, &ratings, &split, a.eval_every)?;
        let r = res.heldout.last().expect("a final held-out evaluation");
        println!("{header}");
        println!(
            "seen users: {} of {} ratings held out at random (seed {}), {} trained on",
            r.examples,
            ratings.len(),
            central.seed,
            res.train_examples
        );
        println!("                    accuracy     rmse  rmse[clipped]      mae");
        println!(
            "train (last)               - {:>8.4}              -        -",
            res.train_rmse.last().copied().unwrap_or(f64::NAN)
        );
        println!(
            "held out (seen)    {:>8.4} {:>8.4} {:>14.4} {:>8.4}",
            r.rating_accuracy, r.rmse, r.rmse_clipped, r.mae
        );
        println!("{:.2} s", res.seconds);
        if let Some(dir) = &a.out {
            let lines = res
                .heldout
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()?;
            write_run(dir, &res.fit, &ratings, &lines)?;
        }
        return Ok(());
    }
    let part = partition(&ratings, &cfg.data);
    let res = run_partition(&cfg, &central, &part, ratings.items(), a.eval_every)?;
    let val = res.val.last().expect("a final validation");
    println!("{header}");
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
    if let Some(dir) = &a.out {
        let lines = res
            .val
            .iter()
            .chain([&res.test])
            .map(|e| serde_json::to_string(&Record::Eval(e.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        write_run(dir, &res.fit, &ratings, &lines)?;
    }
    Ok(())
}

/// Writes a centralized run's outputs into the claimed directory `dir`: the bundle and
/// `items.npy` as `train` writes them, the configuration, and the figures' JSON `lines`.
fn write_run(dir: &Path, fit: &CentralFit, ratings: &Ratings, lines: &[String]) -> Result<()> {
    let k = fit.config.model.k;
    let npy = dir.join("items.npy");
    output::write_npy(&npy, &fit.items, ratings.items(), k)
        .with_context(|| format!("writing {}", npy.display()))?;
    fit.bundle(ratings.item_raw_ids())?
        .write(&dir.join(output::bundle::FILE))?;
    output::write_atomic(
        &dir.join("config.toml"),
        fit.config.to_toml_string().as_bytes(),
    )?;
    let mut text = lines.join("\n");
    text.push('\n');
    output::write_atomic(&dir.join("metrics.jsonl"), text.as_bytes())?;
    Ok(())
}
