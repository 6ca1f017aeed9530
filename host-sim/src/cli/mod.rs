//! The `fedrecon` command line: `train`, `config`, `stats`, `recommend`, `bench`,
//! `centralized`, `sweep`, `synth`, `data fetch`.

mod bench;
mod centralized;
mod cluster;
mod flags;
mod resume;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, ensure};
use clap::{Args, Parser, Subcommand};

use fedrecon_host_sim::config::{Config, Overrides, Preset};
use fedrecon_host_sim::data::movielens::{self, Ratings};
use fedrecon_host_sim::data::partition::{Client, partition};
use fedrecon_host_sim::output;
use fedrecon_host_sim::round;
use fedrecon_host_sim::run::{Interrupts, RunOptions};

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
    // Negative numbers are values (`--client-lr -1` is then refused by validation, naming the
    // key), not unknown flags.
    #[command(allow_negative_numbers = true)]
    Train(Box<TrainArgs>),
    /// Print a preset's (or a file's) full configuration as TOML.
    Config(ConfigArgs),
    /// Print statistics of a MovieLens folder and the presets' user splits.
    Stats(StatsArgs),
    /// Reconstruct one user's embedding from all their ratings and print their top titles.
    Recommend(RecommendArgs),
    /// Time one round over the whole paper training population against a plain SGD loop.
    Bench(bench::BenchArgs),
    /// Train the same model centrally on the training users (the upper bound) and evaluate it
    /// on the held-out users exactly as `train` does.
    #[command(allow_negative_numbers = true)]
    Centralized(centralized::CentralizedArgs),
    /// Run a sweep file's configurations with several seeds, in parallel, and print the table
    /// of final test figures (mean ± half-range over the seeds).
    Sweep(flags::SweepArgs),
    /// Write a MovieLens-shaped synthetic dataset (ratings.csv, movies.csv) from a planted
    /// low-rank model, streamed, deterministic by seed.
    Synth(SynthArgs),
    /// Download MovieLens: `fedrecon data fetch ml-1m`.
    Data(DataArgs),
}

/// `fedrecon data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// What to do with data.
    #[command(subcommand)]
    pub command: DataCommand,
}

/// Subcommands of `fedrecon data`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a MovieLens release from GroupLens (ml-100k, ml-1m, ml-10m, ml-25m, ml-32m),
    /// verify its published MD5, unzip it, and print the folder to pass as --data.
    Fetch(FetchArgs),
}

/// `fedrecon data fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Release: ml-100k, ml-1m, ml-10m, ml-25m or ml-32m.
    pub name: String,
    /// Folder to unzip into.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub dest: PathBuf,
    /// Server folder holding the zips (default GroupLens's, or FEDRECON_DATA_URL).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Expected MD5 of the zip (default: the published one).
    #[arg(long, value_name = "HEX")]
    pub md5: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
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
    pub scalar: Option<fedrecon_host_sim::config::Scalar>,
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
    /// Output directory: metrics.jsonl, metrics.csv, train.png, eval.png, items.npy, model.npz
    /// (the model bundle `recommend` reads), config.toml.
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
    pub comm: flags::CommArgs,
    #[allow(missing_docs)] // differential-privacy flags
    #[command(flatten)]
    pub dp: flags::DpArgs,
    #[allow(missing_docs)] // robust aggregation flags
    #[command(flatten)]
    pub robust: flags::RobustArgs,
    #[allow(missing_docs)] // attack bench flags
    #[command(flatten)]
    pub attack: flags::AttackArgs,
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
    /// The enrolment file of the --device boards (`ID KEY` lines, host-sim/SECURITY.md):
    /// every real board's link is authenticated, so --device needs it.
    #[arg(long, value_name = "FILE")]
    pub enrolment: Option<PathBuf>,
    /// Inject faults into the QEMU boards' links at RATE per frame and direction (bit flips,
    /// dropped / duplicated bytes, truncated frames, board resets; seeded by --seed): failed
    /// exchanges are retried once, then the client is dropped (host-sim/RELIABILITY.md).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub link_faults: f64,
    /// Attack the QEMU boards' authenticated links at RATE per frame and direction (forged,
    /// altered, replayed and wrong-device frames; seeded by --seed): each is refused, counted
    /// in the round's auth_refused, and its client dropped for the round (SECURITY.md).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub link_attacks: f64,
    /// The boards also evaluate held-out users (the first of each evaluation that fit, one per
    /// board; the catalogue is streamed through the board for recall and NDCG): the metrics
    /// are identical to virtual evaluation.
    #[arg(long)]
    pub board_eval: bool,
    /// Each board is one fixed user (MovieLens user ids, comma-separated, one per board in
    /// order: QEMU boards, then --device): its ratings are stored in the board's flash once
    /// and never sent again; the board trains only that user, in the rounds that sample it.
    #[arg(long, value_name = "USER,...", value_delimiter = ',')]
    pub board_users: Vec<u32>,
    /// Where QEMU boards keep their emulated flash (`DIR/qemu0/`, ...), so the next run finds
    /// their users' ratings stored (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub board_flash: Option<PathBuf>,
}

/// `fedrecon config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[allow(missing_docs)] // preset and config file
    #[command(flatten)]
    pub source: ConfigSource,
}

/// `fedrecon synth`: the shape's counts, then any flag overrides them.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (gets ratings.csv and movies.csv; must be empty unless --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Release whose counts and spread to imitate.
    #[arg(long, default_value = "ml-25m")]
    pub shape: fedrecon_host_sim::data::synth::Shape,
    /// Users.
    #[arg(long)]
    pub users: Option<u32>,
    /// Movies.
    #[arg(long)]
    pub items: Option<u32>,
    /// About this many ratings in all (sets the mean per user; conflicts with
    /// --ratings-per-user).
    #[arg(long, conflicts_with = "ratings_per_user")]
    pub ratings: Option<u64>,
    /// Mean ratings per user.
    #[arg(long)]
    pub ratings_per_user: Option<f64>,
    /// Fewest ratings of a user.
    #[arg(long)]
    pub min_ratings_per_user: Option<u32>,
    /// Most ratings of a user (default: the shape's, at most --items).
    #[arg(long)]
    pub max_ratings_per_user: Option<u32>,
    /// Log-normal sigma of ratings per user (heavier tail when larger).
    #[arg(long)]
    pub spread: Option<f64>,
    /// Zipf exponent of movie popularity.
    #[arg(long)]
    pub popularity: Option<f64>,
    /// Rank of the planted model.
    #[arg(long)]
    pub rank: Option<usize>,
    /// Standard deviation of the planted interaction term.
    #[arg(long)]
    pub signal: Option<f64>,
    /// Standard deviation of the rating noise.
    #[arg(long)]
    pub noise: Option<f64>,
    /// Whole stars (1 to 5) instead of the shape's scale.
    #[arg(long)]
    pub whole_stars: bool,
    /// Seed (the output is a function of the options and the seed only).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (`none` = one per core); the output does not depend on it.
    #[arg(long)]
    pub threads: Option<MaybeNum>,
    /// Allow writing into a non-empty --out directory (overwrites ratings.csv and movies.csv).
    #[arg(long)]
    pub force: bool,
}

impl SynthArgs {
    /// The generator options: the shape's, overridden by the flags.
    pub fn options(&self) -> fedrecon_host_sim::data::synth::SynthOptions {
        use fedrecon_host_sim::data::synth::{Overrides, SynthOptions};
        let o = Overrides {
            users: self.users,
            items: self.items,
            ratings: self.ratings,
            ratings_per_user: self.ratings_per_user,
            min_ratings_per_user: self.min_ratings_per_user,
            max_ratings_per_user: self.max_ratings_per_user,
            spread: self.spread,
            popularity: self.popularity,
            rank: self.rank,
            signal: self.signal,
            noise: self.noise,
            whole_stars: self.whole_stars,
            seed: Some(self.seed),
        };
        SynthOptions::shaped_with(self.shape, &o)
    }
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
    /// MovieLens folder holding the user (its movies must be the model's, in any order).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The model bundle (`model.npz` of a `train --out` directory, the directory itself, or
    /// the `items.npy` beside a `model.npz`); it carries the configuration used to
    /// reconstruct the user.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// MovieLens user id (as in ratings.dat).
    #[arg(long)]
    pub user: u32,
    /// Number of titles.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Compute the recommendation on a QEMU board (1): it reconstructs the user and ranks
    /// the catalogue streamed through it; the answer is the host's.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub qemu_devices: usize,
    /// The QEMU board image (default: the f32 image of the model's K from `cargo build-fw`).
    #[arg(long, value_name = "PATH")]
    pub firmware: Option<PathBuf>,
    /// Compute it on a real board: `tcp:HOST:PORT` or a serial port (`/dev/ttyACM0`).
    #[arg(long = "device", value_name = "SPEC")]
    pub devices: Vec<String>,
    /// The enrolment file of the --device boards (`ID KEY` lines, host-sim/SECURITY.md):
    /// every real board's link is authenticated, so --device needs it.
    #[arg(long, value_name = "FILE")]
    pub enrolment: Option<PathBuf>,
}

/// Parses arguments, sets up logging, runs the command.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sweep(_) => init_logging_at("warn"),
        _ => init_logging(),
    }
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
        Command::Bench(a) => bench::bench(&a),
        Command::Centralized(a) => centralized::centralized(&a),
        Command::Synth(a) => synth(&a),
        Command::Sweep(a) => sweep(&a),
        Command::Data(DataArgs {
            command: DataCommand::Fetch(a),
        }) => {
            let opts = fedrecon_host_sim::data::fetch::FetchOptions {
                base_url: a.base_url,
                md5: a.md5,
                progress: !a.no_progress,
            };
            let dir = fedrecon_host_sim::data::fetch::fetch(&a.name, &a.dest, &opts)?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    init_logging_at("info");
}

/// [`init_logging`] with another default level (`RUST_LOG` still wins): a sweep's runs log at
/// `warn`, since their info lines would interleave; it prints a line per finished run instead.
pub fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Loads a MovieLens folder, naming the flag in errors.
pub fn load_data(dir: &Path) -> Result<Ratings> {
    load_data_share(dir, None)
}

/// [`load_data`], keeping only `share`'s users' ratings (a rank of a cluster other than 0).
fn load_data_share(dir: &Path, share: Option<movielens::UserShare>) -> Result<Ratings> {
    let t = std::time::Instant::now();
    let r =
        movielens::load_share(dir, share).with_context(|| format!("--data {}", dir.display()))?;
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
    let Some(job) = cluster::Job::start()? else {
        return train_as(a, None);
    };
    let link = job.link().clone();
    let done = if link.rank() == 0 {
        fedrecon_host_sim::cluster::check_device_ranks(&a.devices, link.size())
            .and_then(|()| train_as(a, Some(link)))
    } else {
        serve_rank(&a, &link)
    };
    let Err(e) = done else {
        return Ok(());
    };
    let interrupted = e.downcast_ref::<fedrecon_host_sim::run::Interrupted>();
    match interrupted.map(fedrecon_host_sim::run::Interrupted::exit_code) {
        // SIGINT or SIGTERM to every rank (Slurm's scancel): rank 0 ended the round, wrote its
        // checkpoint and told every rank to stop. Each rank says so before MPI_Finalize (which
        // waits for every rank: `mpirun` ends the others once one exits with a signal's
        // status), then exits as the signal says.
        Some(code) => {
            eprintln!("fedrecon: {e:#}");
            drop(job);
            std::process::exit(i32::from(code))
        }
        // A failed rank ends every rank (MPI_Abort).
        None => job.fail(&e),
    }
}

/// The configuration `train`'s flags ask for.
fn train_config(a: &TrainArgs) -> Result<Config> {
    let o = overrides(a);
    let mut cfg = Config::resolve(a.source.preset, a.source.config.as_deref(), &o)
        .context("building the configuration (--preset / --config / flags)")?;
    a.reliability.apply(&mut cfg)?;
    a.comm.apply(&mut cfg.comm);
    a.dp.apply(&mut cfg.privacy);
    a.robust.apply(&mut cfg.robust);
    a.attack.apply(&mut cfg.attack);
    cfg.validate()
        .context(
            "building the configuration (--downlink / --uplink / --dp-* / --aggregator / --attack* flags)",
        )?;
    Ok(cfg)
}

/// A rank other than 0: the run's configuration and data (from the flags, or the checkpoint
/// of `--resume`, which rank 0 verifies), this rank's boards, then rank 0's orders.
fn serve_rank(a: &TrainArgs, link: &fedrecon_host_sim::cluster::Link) -> Result<()> {
    // A signal lets rank 0 finish its round and stop every rank; this rank serves until then.
    let interrupts = Interrupts::install().context("installing signal handlers")?;
    let (cfg, data) = match &a.reliability.resume {
        Some(dir) => {
            let ck = fedrecon_host_sim::output::checkpoint::load(dir)
                .with_context(|| format!("--resume {}", dir.display()))?;
            let mut cfg = Config::from_toml_str(&ck.config_toml, "the checkpoint", None)
                .map_err(anyhow::Error::from)
                .context("--resume: the checkpoint's configuration")?;
            if let Some(t) = overrides(a).threads {
                cfg.run.threads = t;
            }
            cfg.validate().context("--threads")?;
            let data = a.data.clone().unwrap_or(ck.data_dir);
            (cfg, data)
        }
        None => (
            train_config(a)?,
            a.data.clone().context("--data is required")?,
        ),
    };
    // This rank runs and evaluates only the users it owns (`cluster::owner`).
    let share = movielens::UserShare {
        rank: link.rank(),
        ranks: link.size(),
    };
    let ratings = load_data_share(&data, Some(share))?;
    ensure!(
        a.board_users.is_empty(),
        "--board-users: boards that keep their own user's data run on rank 0 only (rank {})",
        link.rank()
    );
    let boards = fedrecon_host_sim::board::BoardOptions {
        qemu_devices: 0,
        firmware: a.firmware.clone(),
        devices: fedrecon_host_sim::cluster::devices_for_rank(&a.devices, link.rank())?,
        link_faults: a.link_faults,
        link_attacks: a.link_attacks,
        link_timeout: None,
        evaluate: a.board_eval,
        timeouts: None,
        users: Vec::new(),
        flash_dir: a.board_flash.clone(),
        enrolment: a.enrolment.clone(),
    };
    fedrecon_host_sim::run::serve(&cfg, &ratings, link, &boards)?;
    match interrupts.pending() {
        Some(sig) => Err(anyhow::Error::new(sig).context(format!(
            "rank {} of {}: stopped when rank 0 did",
            link.rank(),
            link.size()
        ))),
        None => Ok(()),
    }
}

/// `train` on one process, or as rank 0 of a cluster (`link`).
fn train_as(a: TrainArgs, link: Option<fedrecon_host_sim::cluster::Link>) -> Result<()> {
    if a.reliability.resume.is_some() {
        return crate::cli::resume::resume(a, link);
    }
    let cfg = train_config(&a)?;
    // Claimed before the data is read and held until the run ends: a second writer or
    // resumer fails at once naming this process.
    let _claim = match &a.out {
        Some(dir) => Some(output::RunDir::create(dir, a.force).with_context(|| {
            format!(
                "--out {} (--force overwrites fedrecon's files in it)",
                dir.display()
            )
        })?),
        None => None,
    };
    let data = a.data.clone().context("--data is required")?;
    let ratings = load_data(&data)?;
    let opts = RunOptions {
        out: a.out.clone(),
        progress: !a.no_progress,
        plots: !a.no_plots,
        interrupts: Some(Interrupts::install().context("installing signal handlers")?),
        cluster: link.clone(),
    };
    let ck = fedrecon_host_sim::run::Checkpointing {
        data_dir: std::path::absolute(&data).unwrap_or(data),
        resume: None,
    };
    let boards = fedrecon_host_sim::board::BoardOptions {
        qemu_devices: a.qemu_devices,
        firmware: a.firmware.clone(),
        devices: match &link {
            Some(_) => fedrecon_host_sim::cluster::devices_for_rank(&a.devices, 0)?,
            None => a.devices.clone(),
        },
        link_faults: a.link_faults,
        link_attacks: a.link_attacks,
        link_timeout: None,
        evaluate: a.board_eval,
        // From the configuration's [reliability] section (run.rs).
        timeouts: None,
        users: a
            .board_users
            .iter()
            .map(|&raw| {
                ratings
                    .user_raw_ids()
                    .iter()
                    .position(|&u| u == raw)
                    .map(|d| d as u32)
                    .ok_or_else(|| anyhow!("--board-users {raw}: no such user in --data"))
            })
            .collect::<Result<_>>()?,
        flash_dir: a.board_flash.clone(),
        enrolment: a.enrolment.clone(),
    };
    let res = fedrecon_host_sim::run::run_checkpointed(&cfg, &ratings, &opts, &ck, &boards)?;
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

fn sweep(a: &flags::SweepArgs) -> Result<()> {
    let spec = fedrecon_host_sim::sweep::SweepSpec::load(&a.sweep).context("--sweep")?;
    let opts = a.options(&spec.seeds)?;
    let ratings = load_data(&a.data)?;
    let res = fedrecon_host_sim::sweep::sweep(&spec, &ratings, &opts)?;
    print!("{}", res.markdown());
    if let Some(dir) = &a.out {
        println!("sweep.md, sweep.csv and runs.csv in {}", dir.display());
    }
    Ok(())
}

fn synth(a: &SynthArgs) -> Result<()> {
    let o = a.options();
    o.validate().context("fedrecon synth")?;
    output::prepare_out_dir(&a.out, a.force)?;
    let threads = a
        .threads
        .and_then(|m| m.0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the worker threads")?;
    let t = std::time::Instant::now();
    let s = pool.install(|| fedrecon_host_sim::data::synth::generate(&o, &a.out))?;
    println!(
        "wrote {} users, {} movies, {} ratings ({} to {} per user, {:.1} MB) to {} in {:.1} s",
        s.users,
        s.items,
        s.ratings,
        s.min_per_user,
        s.max_per_user,
        s.ratings_bytes as f64 / 1e6,
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
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
    let path = output::bundle::locate(&a.model).context("--model")?;
    let bundle = output::bundle::ModelBundle::read(&path).context("--model")?;
    let ratings = load_data(&a.data)?;
    let data_file = match ratings.format() {
        Some(f) => a.data.join(f.ratings_file()),
        None => a.data.clone(),
    };
    let model = bundle.align(&ratings, &path, &data_file)?;
    let cfg = &model.config;
    let user = ratings
        .user_raw_ids()
        .iter()
        .position(|&u| u == a.user)
        .ok_or_else(|| anyhow!("--user {}: no such user in --data", a.user))?;
    let mine = ratings.user(user);
    // The raw id seeds SGD reconstruction's start: the answer does not depend on file order.
    let client = Client {
        user: a.user,
        items: mine.items,
        ratings: mine.values,
    };
    let view = round::recommend::ModelView {
        items: &model.items,
        cols: cfg.model.k,
        item_biases: &model.item_biases,
        global_mean: model.global_mean,
        implicit: &model.implicit,
    };
    let boards = fedrecon_host_sim::board::BoardOptions {
        qemu_devices: a.qemu_devices,
        firmware: a.firmware.clone(),
        devices: a.devices.clone(),
        enrolment: a.enrolment.clone(),
        ..Default::default()
    };
    let top = if boards.any() {
        round::recommend::recommend_on_board(cfg, &view, &client, a.k, &boards)?
    } else {
        round::recommend::recommend(cfg, &view, &client, a.k)?
    };
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
