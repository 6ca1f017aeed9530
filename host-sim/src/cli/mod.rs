//! The `fedrecon` command line: `train`, `config`, `stats`, `recommend`, `bench`,
//! `centralized`.

pub mod resume;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides, Preset};
use crate::data::movielens::{self, Ratings};
use crate::data::partition::{Client, partition};
use crate::dispatch_k;
use crate::output;
use crate::round::{self, WORKER_STACK, load_client, new_workspace};
use crate::run::RunOptions;

/// Federated Reconstruction (Singhal et al. 2021) for matrix factorization: a simulator of
/// thousands of virtual fedrecon devices on MovieLens.
#[derive(Debug, Parser)]
#[command(name = "fedrecon", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only complicate clap
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a federated training experiment and evaluate it on held-out users.
    Train(Box<TrainArgs>),
    /// Print a preset's (or a file's) full configuration as TOML.
    Config(ConfigArgs),
    /// Print statistics of a MovieLens folder and the presets' user splits.
    Stats(StatsArgs),
    /// Reconstruct one user's embedding from all their ratings and print their top titles.
    Recommend(RecommendArgs),
    /// Time one round over the whole paper training population against a plain SGD loop.
    Bench(crate::baselines::bench::BenchArgs),
    /// Train the same model centrally on the training users (the upper bound) and evaluate it
    /// on the held-out users exactly as `train` does.
    Centralized(crate::baselines::centralized::CentralizedArgs),
}

/// A number or `none` (unset / all / automatic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaybeNum(pub Option<usize>);

impl FromStr for MaybeNum {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "all" | "auto" => Ok(MaybeNum(None)),
            _ => s
                .parse()
                .map(|n| MaybeNum(Some(n)))
                .map_err(|_| format!("expected a number or 'none', got '{s}'")),
        }
    }
}

/// Where the configuration comes from: preset, then file, then flags.
#[derive(Debug, Args)]
pub struct ConfigSource {
    /// Preset to start from (`tutorial`, `paper` or `best`; default: the file's, else tutorial).
    #[arg(long)]
    pub preset: Option<Preset>,
    /// TOML file overriding any subset of the preset's keys (see `fedrecon config`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `fedrecon train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// MovieLens folder (ml-1m: ratings.dat, movies.dat); with --resume, defaults to the
    /// checkpointed run's.
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    #[allow(missing_docs)] // preset and config file
    #[command(flatten)]
    pub source: ConfigSource,
    #[allow(missing_docs)] // checkpoints, dropouts, validation limits
    #[command(flatten)]
    pub reliability: crate::cli::resume::ReliabilityArgs,
    /// Training rounds.
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Clients sampled per round.
    #[arg(long)]
    pub clients_per_round: Option<usize>,
    /// Seed of client sampling and initialisation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (`none` = one per core).
    #[arg(long)]
    pub threads: Option<MaybeNum>,
    /// Evaluate on validation users every N rounds (0 = only at the end).
    #[arg(long)]
    pub eval_every: Option<u32>,
    /// Users per evaluation (`none` = all of the split).
    #[arg(long)]
    pub eval_clients: Option<MaybeNum>,
    /// Embedding width K.
    #[arg(long)]
    pub k: Option<usize>,
    /// Device arithmetic: f32, q16 (Q16.16 fixed point; `fixed` also works) or q12 (Q3.12).
    #[arg(long)]
    pub scalar: Option<crate::config::Scalar>,
    /// Server learning rate.
    #[arg(long)]
    pub server_lr: Option<f32>,
    /// Client (post-reconstruction) learning rate.
    #[arg(long)]
    pub client_lr: Option<f32>,
    /// Reconstruction learning rate in training.
    #[arg(long)]
    pub recon_lr: Option<f32>,
    /// Reconstruction learning rate in evaluation.
    #[arg(long)]
    pub eval_recon_lr: Option<f32>,
    /// Users taken from the dataset (`none` = all).
    #[arg(long)]
    pub max_clients: Option<MaybeNum>,
    /// Ratings kept per user (`none` = all).
    #[arg(long)]
    pub max_ratings_per_user: Option<MaybeNum>,
    /// Output directory: metrics.jsonl, metrics.csv, train.png, eval.png, items.npy, config.toml.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Allow writing into a non-empty --out directory (overwrites fedrecon's files only).
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// No PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    #[allow(missing_docs)] // downlink / uplink flags
    #[command(flatten)]
    pub comm: crate::comm::CommArgs,
    #[allow(missing_docs)] // differential-privacy flags
    #[command(flatten)]
    pub dp: crate::server::privacy::DpArgs,
    #[allow(missing_docs)] // robust aggregation flags
    #[command(flatten)]
    pub robust: crate::server::robust::RobustArgs,
    #[allow(missing_docs)] // attack bench flags
    #[command(flatten)]
    pub attack: crate::attack::AttackArgs,
    /// Boot N QEMU boards (the firmware's `qemu` image) that train the first clients of each
    /// round that fit them, bit-identically (needs `cargo build-fw` and qemu-system-arm).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub qemu_devices: usize,
    /// The QEMU board image (default: firmware/target/images/mps2-an386/qemu).
    #[arg(long, value_name = "PATH")]
    pub firmware: Option<PathBuf>,
    /// A real board running the firmware: `tcp:HOST:PORT` or a serial port (`/dev/ttyACM0`).
    /// Repeat for several.
    #[arg(long = "device", value_name = "SPEC")]
    pub devices: Vec<String>,
    /// Inject faults into the QEMU boards' links at RATE per frame and direction (bit flips,
    /// dropped / duplicated bytes, truncated frames, board resets; seeded by --seed): failed
    /// exchanges are retried once, then the client is dropped (host-sim/RELIABILITY.md).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub link_faults: f64,
}

/// `fedrecon config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[allow(missing_docs)] // preset and config file
    #[command(flatten)]
    pub source: ConfigSource,
}

/// `fedrecon stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// MovieLens folder.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
}

/// `fedrecon recommend`.
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// MovieLens folder the model was trained on.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Trained item matrix (`items.npy` of a `train --out` directory).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// MovieLens user id (as in ratings.dat).
    #[arg(long)]
    pub user: u32,
    /// Number of titles.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Configuration (default: `config.toml` beside the model, else the tutorial preset).
    #[allow(missing_docs)] // preset and config file
    #[command(flatten)]
    pub source: ConfigSource,
}

/// Parses arguments, sets up logging, runs the command.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Train(a) => train(*a),
        Command::Config(a) => {
            let cfg = Config::resolve(
                a.source.preset,
                a.source.config.as_deref(),
                &Overrides::default(),
            )
            .context("--config / --preset")?;
            print!("{}", cfg.to_toml_string());
            Ok(())
        }
        Command::Stats(a) => stats(&a.data),
        Command::Recommend(a) => recommend(a),
        Command::Bench(a) => crate::baselines::bench::bench(&a),
        Command::Centralized(a) => crate::baselines::centralized::centralized(&a),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Loads a MovieLens folder, naming the flag in errors.
pub fn load_data(dir: &Path) -> Result<Ratings> {
    let t = std::time::Instant::now();
    let r = movielens::load(dir).with_context(|| format!("--data {}", dir.display()))?;
    tracing::info!(
        ratings = r.len(),
        users = r.users(),
        items = r.items(),
        ms = t.elapsed().as_millis() as u64,
        "loaded {}",
        dir.display()
    );
    Ok(r)
}

fn train(a: TrainArgs) -> Result<()> {
    if a.reliability.resume.is_some() {
        return crate::cli::resume::resume(a);
    }
    let o = overrides(&a);
    let mut cfg = Config::resolve(a.source.preset, a.source.config.as_deref(), &o)
        .context("building the configuration (--preset / --config / flags)")?;
    a.reliability.apply(&mut cfg)?;
    a.comm.apply(&mut cfg.comm);
    a.dp.apply(&mut cfg.privacy);
    a.robust.apply(&mut cfg.robust);
    a.attack.apply(&mut cfg.attack);
    cfg.validate()
        .context("building the configuration (--downlink / --uplink / --dp-* / --aggregator / --attack* flags)")?;
    if let Some(dir) = &a.out {
        output::prepare_out_dir(dir, a.force)?;
    }
    let data = a.data.clone().context("--data is required")?;
    let ratings = load_data(&data)?;
    let opts = RunOptions {
        out: a.out.clone(),
        progress: !a.no_progress,
        plots: !a.no_plots,
    };
    let ck = crate::run::Checkpointing {
        data_dir: std::path::absolute(&data).unwrap_or(data),
        resume: None,
    };
    let boards = crate::board::BoardOptions {
        qemu_devices: a.qemu_devices,
        firmware: a.firmware.clone(),
        devices: a.devices.clone(),
        link_faults: a.link_faults,
        link_timeout: None,
    };
    let res = crate::run::run_checkpointed(&cfg, &ratings, &opts, &ck, &boards)?;
    println!("{}", output::summary_table(&res.records, res.seconds));
    if let Some(dir) = &a.out {
        println!("outputs in {}", dir.display());
    }
    Ok(())
}

/// The configuration flags of `train` as overrides of the preset and file.
pub fn overrides(a: &TrainArgs) -> Overrides {
    Overrides {
        rounds: a.rounds,
        clients_per_round: a.clients_per_round,
        seed: a.seed,
        threads: a.threads.map(|m| m.0),
        eval_every: a.eval_every,
        eval_clients: a.eval_clients.map(|m| m.0),
        k: a.k,
        scalar: a.scalar,
        server_lr: a.server_lr,
        client_lr: a.client_lr,
        recon_lr: a.recon_lr,
        eval_recon_lr: a.eval_recon_lr,
        max_clients: a.max_clients.map(|m| m.0),
        max_ratings_per_user: a.max_ratings_per_user.map(|m| m.0),
        ..Overrides::default()
    }
}

fn stats(dir: &Path) -> Result<()> {
    let r = load_data(dir)?;
    println!("{}", r.stats());
    for preset in [Preset::Tutorial, Preset::Paper] {
        let cfg = Config::preset(preset);
        let p = partition(&r, &cfg.data);
        println!(
            "preset {preset}: {} train / {} val / {} test users, {} / {} / {} ratings",
            p.train.len(),
            p.val.len(),
            p.test.len(),
            p.train.examples(),
            p.val.examples(),
            p.test.examples()
        );
    }
    Ok(())
}

fn recommend(a: RecommendArgs) -> Result<()> {
    ensure!((1..=100).contains(&a.k), "-k {} must be in 1..=100", a.k);
    let (data, rows, cols) = output::read_npy(&a.model).context("--model")?;
    let beside = a.model.with_file_name("config.toml");
    let file = match (&a.source.config, beside.is_file()) {
        (Some(f), _) => Some(f.clone()),
        (None, true) => Some(beside),
        (None, false) => None,
    };
    let mut cfg = Config::resolve(a.source.preset, file.as_deref(), &Overrides::default())
        .context("building the configuration (--preset / --config)")?;
    cfg.model.k = cols;
    let ratings = load_data(&a.data)?;
    ensure!(
        rows == ratings.items(),
        "--model {} has {rows} rows but --data has {} items",
        a.model.display(),
        ratings.items()
    );
    let user = ratings
        .user_raw_ids()
        .iter()
        .position(|&u| u == a.user)
        .ok_or_else(|| anyhow!("--user {}: no such user in --data", a.user))?;
    let mine = ratings.user(user);
    let client = Client {
        user: user as u32,
        items: mine.items,
        ratings: mine.values,
    };
    let k = a.k;
    let top: Vec<(u32, f32)> = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(WORKER_STACK)
            .spawn_scoped(scope, || -> Result<Vec<(u32, f32)>> {
                dispatch_k!(cols, recommend_k(&cfg, &data, &client, k))
            })
            .context("cannot start a worker thread")?
            .join()
            .map_err(|_| anyhow!("the recommendation thread panicked"))?
    })?;
    println!(
        "user {} ({} ratings): top {} unrated titles",
        a.user,
        mine.items.len(),
        top.len()
    );
    for (rank, (item, score)) in top.iter().enumerate() {
        let title = ratings
            .title(*item as usize)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("movie {}", ratings.item_raw_ids()[*item as usize]));
        println!("{:>3}. {score:>6.3}  {title}", rank + 1);
    }
    Ok(())
}

fn recommend_k<const K: usize>(
    cfg: &Config,
    data: &[f32],
    client: &Client<'_>,
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    let rows = fedrecon_core::DenseRows::new(data.as_chunks::<K>().0);
    let mut rc = round::round_config(cfg, true, 0.0)?;
    if cfg.model.item_bias || cfg.model.global_mean {
        bail!("recommend supports models without biases only (items.npy holds no biases)");
    }
    // Learn from every rating: no split, no cap.
    rc.split.split_dataset = false;
    let mut dev = new_workspace::<f32, K>();
    load_client(&mut dev, client, (data.len() / K) as u32)?;
    dev.reconstruct(
        &rows,
        &rc,
        crate::seeds::derive(&[cfg.run.seed, 6, client.user.into()]),
    )
    .map_err(|e| anyhow!("reconstructing the user: {e}"))?;
    let mut top =
        fedrecon_core::rank::TopK::<f32, 100>::new(k).map_err(|e| anyhow!("-k {k}: {e}"))?;
    dev.rank(&rows, &rc, &mut top)
        .map_err(|e| anyhow!("ranking: {e}"))?;
    Ok(top.into_sorted().to_vec())
}
