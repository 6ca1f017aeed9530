//! Experiment configuration: presets, TOML files, command-line overrides, validation.
//!
//! A run's configuration is layered: a preset (`tutorial` or `paper`, with the values of docs/SEMANTICS.md,
//! or `best`), then a TOML file that may set any subset of keys, then command-line
//! [`Overrides`]. The result is validated once, with errors naming the offending field.
//! Optional numbers (caps, seeds, thread counts) are written `"none"` in TOML when unset,
//! because TOML has no null and a user editing a printed config must be able to see and clear
//! every knob.

pub mod attack;
pub mod privacy;
pub mod reliability;
pub mod robust;
pub mod schedule;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The two reference setups of docs/SEMANTICS.md, and the best configuration measured (issue 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The TFF "Federated Reconstruction for Matrix Factorization" notebook.
    Tutorial,
    /// The paper's code (google-research/federated, `reconstruction/`).
    Paper,
    /// The paper's setup plus the levers that measured best on the validation users (issue 10;
    /// figures in README.md): biases, 1000 rounds, server SGD 4.0 with a cosine decay.
    Best,
}

impl FromStr for Preset {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tutorial" => Ok(Preset::Tutorial),
            "paper" => Ok(Preset::Paper),
            "best" => Ok(Preset::Best),
            other => Err(ConfigError::UnknownPreset(other.to_owned())),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Tutorial => "tutorial",
            Preset::Paper => "paper",
            Preset::Best => "best",
        })
    }
}

/// How each user's ratings are cut to `max_ratings_per_user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExampleOrder {
    /// Keep the first ratings in file order (tutorial: `take(300)`; the device shuffles later).
    FileOrder,
    /// Shuffle with numpy `RandomState(example_shuffle_seed)` per user, then keep the first
    /// ratings (paper: shuffle happens before truncation).
    ShuffleThenCap,
}

/// How client updates are weighted in the server's mean: the device's own type, written
/// `examples` (TFF's default) or `uniform` (the paper's DP runs) in a config file.
pub use fedrecon_core::Weighting;

/// How a device reconstructs the user embedding (and user bias) with the item rows frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconstruction {
    /// Minibatch SGD from a random start (TFF's; both reference presets).
    #[default]
    Sgd,
    /// The exact ridge solve with regulariser `client.user_l2` (> 0), on the device.
    Exact,
}

/// Arithmetic type of the virtual devices (the server always keeps f32 rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scalar {
    /// IEEE single precision, as TFF uses.
    F32,
    /// Q16.16 fixed point (`i32`), for boards without an FPU (`fixed` is accepted too).
    #[serde(alias = "fixed")]
    Q16,
    /// Q3.12 fixed point (`i16`): half the row memory on a board.
    Q12,
}

impl Scalar {
    /// The config-file spelling.
    pub fn name(self) -> &'static str {
        match self {
            Scalar::F32 => "f32",
            Scalar::Q16 => "q16",
            Scalar::Q12 => "q12",
        }
    }
}

impl std::str::FromStr for Scalar {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Scalar::F32),
            "q16" | "fixed" => Ok(Scalar::Q16),
            "q12" => Ok(Scalar::Q12),
            other => Err(format!(
                "unknown scalar '{other}' (expected f32, q16 or q12)"
            )),
        }
    }
}

/// Most worker threads a run may ask for: far more than any machine's cores, yet creating
/// them stays cheap (20,000 took 75 s and then aborted).
pub const MAX_THREADS: usize = 1024;

/// Embedding sizes the device kernels are built for.
pub const SUPPORTED_K: [usize; 8] = [8, 16, 20, 32, 50, 64, 100, 128];

/// Data preparation: which users and ratings become clients, and the user split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Use only dense users `0..max_clients` (tutorial 2000); `"none"` = all users.
    #[serde(with = "none_or")]
    pub max_clients: Option<usize>,
    /// Keep at most this many ratings per user (300 in both presets); `"none"` = all.
    #[serde(with = "none_or")]
    pub max_ratings_per_user: Option<usize>,
    /// Whether ratings are cut in file order or shuffled first.
    pub order: ExampleOrder,
    /// numpy seed of the user shuffle before the train/val/test split (42).
    pub user_split_seed: u32,
    /// numpy seed of the per-user shuffle for `shuffle_then_cap` (42, re-seeded per user).
    pub example_shuffle_seed: u32,
    /// Fraction of users for training: train = floor(n * train_fraction) (0.8).
    pub train_fraction: f64,
    /// Fraction for validation: val ends at floor(n * (train + val)) (0.1); the rest is test.
    pub val_fraction: f64,
}

/// The matrix-factorization model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Embedding dimension K (50); one of [`SUPPORTED_K`].
    pub k: usize,
    /// Add a local per-user bias (paper's `add_biases`); off in both presets.
    pub user_bias: bool,
    /// Add a global per-item bias; off in both presets.
    pub item_bias: bool,
    /// Add a global mean term; off in both presets.
    pub global_mean: bool,
}

/// One client's round: batching, the two SGD phases and their budgets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Examples per batch (5); the last batch may be short.
    pub batch_size: usize,
    /// SGD learning rate on item rows in post-reconstruction (0.5).
    pub client_lr: f32,
    /// SGD learning rate on the user embedding in training reconstruction (0.1).
    pub recon_lr: f32,
    /// SGD learning rate on the user embedding in evaluation reconstruction (0.1).
    pub eval_recon_lr: f32,
    /// L2 penalty `lambda * |u|^2` on the user embedding in reconstruction, training and
    /// evaluation alike (0 = off, as in both presets).
    #[serde(default)]
    pub user_l2: f32,
    /// `"sgd"` (both reference presets) or `"exact"`: the minimiser of the reconstruction
    /// half's mean squared error plus `user_l2 * |u|^2`, solved on the device (`user_l2 > 0`);
    /// then `recon_lr`, `eval_recon_lr`, `recon_epochs` and `recon_steps_max` do not apply.
    #[serde(default)]
    pub reconstruction: Reconstruction,
    /// Exact reconstruction only: a prior of this strength on `|u|^2`, divided by the user's
    /// number of reconstruction examples `n`, on top of `user_l2` (0 = off): users who rated
    /// little are pulled harder towards zero.
    #[serde(default)]
    pub user_prior: f32,
    /// Exact reconstruction only: penalty `user_bias_l2 * b_u^2` on the user bias (0 = the
    /// bias is unregularised).
    #[serde(default)]
    pub user_bias_l2: f32,
    /// Exact reconstruction only: a prior of this strength on `b_u^2`, divided by `n`.
    #[serde(default)]
    pub user_bias_prior: f32,
    /// Exact reconstruction only: implicit feedback (SVD++-style). The embedding's prior mean
    /// is learned, `m + n^(-1/2) sum_j y_j` over the items a user reconstructs from, with a
    /// global row `m` and an implicit row `y_j` per item trained like item rows
    /// (`fedrecon_core::implicit`): which items a user rated informs its embedding.
    #[serde(default)]
    pub implicit: bool,
    /// With `implicit`: the step of an implicit row relative to the mean row's.
    #[serde(default = "default_implicit_lr")]
    pub implicit_lr: f32,
    /// With `implicit`: every training round also learns from its reconstruction half (a
    /// second pass reconstructs on the other half and trains the first half's rows), so every
    /// rating trains the model; each reconstruction still sees half a client's data.
    #[serde(default)]
    pub both_halves: bool,
    /// Passes over the reconstruction batches (tutorial 1, paper 5).
    pub recon_epochs: u32,
    /// Cap on reconstruction steps across epochs (paper 50); `"none"` = no cap.
    #[serde(with = "none_or")]
    pub recon_steps_max: Option<u32>,
    /// Passes over the post-reconstruction batches (1).
    pub post_epochs: u32,
    /// Cap on post-reconstruction steps across epochs (paper 50); `"none"` = no cap.
    #[serde(with = "none_or")]
    pub post_steps_max: Option<u32>,
    /// Even batches reconstruct, odd batches train; false = both phases see all batches.
    pub split_dataset: bool,
    /// How the server weights this client's update.
    pub weighting: Weighting,
    /// A prediction is correct when |y - y_hat| <= this (0.5).
    pub accuracy_threshold: f32,
    /// Seed of the device's own shuffle of its examples (tutorial 42, as `shuffle(seed=42)`);
    /// `"none"` = keep the partition's order (paper: already shuffled in data preparation).
    /// At most 2^63 - 1 (TOML's integer limit).
    #[serde(with = "none_or")]
    pub shuffle_seed: Option<u64>,
    /// Draw a new shuffle for every round (and every evaluation) from `shuffle_seed`, the
    /// round and the user, as TFF's `shuffle(seed=42)` reshuffles on every iteration; the two
    /// halves stay disjoint within a round. `false` shuffles once with `shuffle_seed`.
    pub reshuffle_each_round: bool,
}

/// Server optimizer; it takes the negated mean client delta as its gradient (docs/SEMANTICS.md, "Server").
/// Unlisted parameters take their Keras defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "optimizer", rename_all = "lowercase", deny_unknown_fields)]
pub enum ServerConfig {
    /// Plain SGD: rows += lr * mean delta.
    Sgd {
        /// Learning rate (1.0 in both presets).
        lr: f32,
    },
    /// Keras SGD with (heavy-ball or Nesterov) momentum: server momentum (FedAvgM).
    Momentum {
        /// Learning rate.
        lr: f32,
        /// Momentum coefficient (0.9).
        #[serde(default = "default_beta_1")]
        momentum: f32,
        /// Nesterov momentum instead of heavy ball.
        #[serde(default)]
        nesterov: bool,
    },
    /// Keras Adam.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay (Keras 0.9).
        #[serde(default = "default_beta_1")]
        beta_1: f32,
        /// Second-moment decay (Keras 0.999).
        #[serde(default = "default_beta_2")]
        beta_2: f32,
        /// Denominator fuzz (Keras 1e-7).
        #[serde(default = "default_epsilon")]
        epsilon: f32,
    },
    /// Keras Adagrad.
    Adagrad {
        /// Learning rate.
        lr: f32,
        /// Starting value of the squared-gradient accumulator (Keras 0.1).
        #[serde(default = "default_adagrad_accumulator")]
        initial_accumulator: f32,
        /// Denominator fuzz (Keras 1e-7).
        #[serde(default = "default_epsilon")]
        epsilon: f32,
    },
    /// Yogi (TensorFlow Addons, as TFF uses).
    Yogi {
        /// Learning rate.
        lr: f32,
        /// First-moment decay (0.9).
        #[serde(default = "default_beta_1")]
        beta_1: f32,
        /// Second-moment decay (0.999).
        #[serde(default = "default_beta_2")]
        beta_2: f32,
        /// Denominator fuzz (TFA 1e-3).
        #[serde(default = "default_yogi_epsilon")]
        epsilon: f32,
        /// Starting second moment (TFA 1e-6).
        #[serde(default = "default_yogi_accumulator")]
        initial_accumulator: f32,
    },
}

/// The implicit rows' relative step that measured best (README.md, "Learning quality").
fn default_implicit_lr() -> f32 {
    0.2
}

fn default_beta_1() -> f32 {
    0.9
}
fn default_beta_2() -> f32 {
    0.999
}
fn default_epsilon() -> f32 {
    1e-7
}
fn default_adagrad_accumulator() -> f32 {
    0.1
}
fn default_yogi_epsilon() -> f32 {
    1e-3
}
fn default_yogi_accumulator() -> f32 {
    1e-6
}

impl ServerConfig {
    /// The optimizer's learning rate.
    pub fn lr(&self) -> f32 {
        match *self {
            ServerConfig::Sgd { lr }
            | ServerConfig::Momentum { lr, .. }
            | ServerConfig::Adam { lr, .. }
            | ServerConfig::Adagrad { lr, .. }
            | ServerConfig::Yogi { lr, .. } => lr,
        }
    }

    /// Sets the learning rate, keeping the optimizer and its other parameters.
    pub fn set_lr(&mut self, new: f32) {
        match self {
            ServerConfig::Sgd { lr }
            | ServerConfig::Momentum { lr, .. }
            | ServerConfig::Adam { lr, .. }
            | ServerConfig::Adagrad { lr, .. }
            | ServerConfig::Yogi { lr, .. } => *lr = new,
        }
    }
}

/// The round loop: how long, how many clients, when to evaluate, randomness and threads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Training rounds (tutorial 20, paper 500); 0 = evaluate the untrained model only.
    pub rounds: u32,
    /// Clients sampled uniformly without replacement per round (tutorial 50, paper 100).
    pub clients_per_round: usize,
    /// Evaluate on validation users every this many rounds (paper 5); 0 = only at the end.
    pub eval_every: u32,
    /// Validation/test users sampled per evaluation (paper 100); `"none"` = all of them.
    #[serde(with = "none_or")]
    pub eval_clients: Option<usize>,
    /// Seed of client sampling and model initialization (at most 2^63 - 1, TOML's limit).
    pub seed: u64,
    /// Worker threads; `"none"` = one per available core.
    #[serde(with = "none_or")]
    pub threads: Option<usize>,
    /// Arithmetic type.
    pub scalar: Scalar,
    /// Server learning-rate schedule over the rounds (`constant` in both presets).
    #[serde(default)]
    pub server_lr_decay: crate::config::schedule::LrDecay,
    /// Fraction of `server.lr` the decay reaches at the last round.
    #[serde(default = "default_lr_final")]
    pub server_lr_final: f32,
    /// L2 penalty `item_l2 * |V|^2` on the item rows, applied by the server as decoupled
    /// weight decay after each step: rows scale by `1 - lr_t * item_l2` (0 = off, as in every
    /// preset). Item biases are not decayed.
    #[serde(default)]
    pub item_l2: f32,
}

fn default_lr_final() -> f32 {
    1.0
}

/// A whole experiment; see the module docs for how it is assembled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The preset the values started from (recorded for provenance).
    pub preset: Preset,
    /// Data preparation.
    pub data: DataConfig,
    /// Model.
    pub model: ModelConfig,
    /// Client round.
    pub client: ClientConfig,
    /// Server optimizer.
    pub server: ServerConfig,
    /// Round loop.
    pub run: RunConfig,
    /// Dropouts, over-selection, update validation limits, checkpoints (issue 9).
    #[serde(default)]
    pub reliability: crate::config::reliability::ReliabilityConfig,
    /// Downlink and uplink encodings (issue 8; see `comm`).
    #[serde(default)]
    pub comm: crate::comm::CommConfig,
    /// Differential privacy (issue 8; see `privacy::session`).
    #[serde(default)]
    pub privacy: crate::config::privacy::DpConfig,
    /// Norm bounding and robust aggregation rules (issue 19; see `server::robust`).
    #[serde(default)]
    pub robust: crate::config::robust::RobustConfig,
    /// The attack bench's malicious clients (issue 19; see `attack`).
    #[serde(default)]
    pub attack: crate::config::attack::AttackConfig,
}

/// Command-line overrides: `None` leaves a field alone; for optional fields `Some(None)` unsets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Sets `data.max_clients`.
    pub max_clients: Option<Option<usize>>,
    /// Sets `data.max_ratings_per_user`.
    pub max_ratings_per_user: Option<Option<usize>>,
    /// Sets `model.k`.
    pub k: Option<usize>,
    /// Sets `client.batch_size`.
    pub batch_size: Option<usize>,
    /// Sets `client.client_lr`.
    pub client_lr: Option<f32>,
    /// Sets `client.recon_lr`.
    pub recon_lr: Option<f32>,
    /// Sets `client.eval_recon_lr`.
    pub eval_recon_lr: Option<f32>,
    /// Sets `client.recon_epochs`.
    pub recon_epochs: Option<u32>,
    /// Sets `client.recon_steps_max`.
    pub recon_steps_max: Option<Option<u32>>,
    /// Sets `client.post_epochs`.
    pub post_epochs: Option<u32>,
    /// Sets `client.post_steps_max`.
    pub post_steps_max: Option<Option<u32>>,
    /// Sets `client.split_dataset`.
    pub split_dataset: Option<bool>,
    /// Sets `client.weighting`.
    pub weighting: Option<Weighting>,
    /// Sets `client.shuffle_seed`.
    pub shuffle_seed: Option<Option<u64>>,
    /// Sets `server.lr` (keeping the optimizer).
    pub server_lr: Option<f32>,
    /// Sets `run.rounds`.
    pub rounds: Option<u32>,
    /// Sets `run.clients_per_round`.
    pub clients_per_round: Option<usize>,
    /// Sets `run.eval_every`.
    pub eval_every: Option<u32>,
    /// Sets `run.eval_clients`.
    pub eval_clients: Option<Option<usize>>,
    /// Sets `run.seed`.
    pub seed: Option<u64>,
    /// Sets `run.threads`.
    pub threads: Option<Option<usize>>,
    /// Sets `run.scalar`.
    pub scalar: Option<Scalar>,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A preset name other than `tutorial`, `paper` or `best`.
    #[error("unknown preset '{0}' (expected 'tutorial', 'paper' or 'best')")]
    UnknownPreset(String),
    /// The config file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or a key/value is wrong; `message` is toml's, naming key and line.
    #[error("{origin}: {message}")]
    Parse {
        /// File name (or other origin) of the text.
        origin: String,
        /// What is wrong, with its position.
        message: String,
    },
    /// The file's `preset` disagrees with the one asked for on the command line.
    #[error("{origin}: preset = \"{file}\" conflicts with the requested preset '{requested}'")]
    PresetConflict {
        /// File name of the config.
        origin: String,
        /// Preset in the file.
        file: Preset,
        /// Preset requested.
        requested: Preset,
    },
    /// A value of the `[comm]` or `[privacy]` section is invalid (the message names it).
    #[error("invalid config: {0}")]
    Section(String),
    /// A value is outside what the simulator supports.
    #[error("invalid config: {field} = {value}: {reason}")]
    Invalid {
        /// Dotted field name, e.g. `client.client_lr`.
        field: &'static str,
        /// The value, as text.
        value: String,
        /// What it must be.
        reason: &'static str,
    },
}

impl Config {
    /// The preset's values: `tutorial` and `paper` exactly as listed in docs/SEMANTICS.md; `best` is
    /// `paper` with the levers of issue 10.
    pub fn preset(preset: Preset) -> Config {
        match preset {
            Preset::Tutorial => Config {
                preset,
                data: DataConfig {
                    max_clients: Some(2000),
                    max_ratings_per_user: Some(300),
                    order: ExampleOrder::FileOrder,
                    user_split_seed: 42,
                    example_shuffle_seed: 42,
                    train_fraction: 0.8,
                    val_fraction: 0.1,
                },
                model: ModelConfig {
                    k: 50,
                    user_bias: false,
                    item_bias: false,
                    global_mean: false,
                },
                client: ClientConfig {
                    batch_size: 5,
                    client_lr: 0.5,
                    recon_lr: 0.1,
                    eval_recon_lr: 0.1,
                    user_l2: 0.0,
                    reconstruction: Reconstruction::Sgd,
                    user_prior: 0.0,
                    user_bias_l2: 0.0,
                    user_bias_prior: 0.0,
                    implicit: false,
                    implicit_lr: default_implicit_lr(),
                    both_halves: false,
                    recon_epochs: 1,
                    recon_steps_max: None,
                    post_epochs: 1,
                    post_steps_max: None,
                    split_dataset: true,
                    weighting: Weighting::Examples,
                    accuracy_threshold: 0.5,
                    shuffle_seed: Some(42),
                    reshuffle_each_round: true,
                },
                server: ServerConfig::Sgd { lr: 1.0 },
                run: RunConfig {
                    rounds: 20,
                    clients_per_round: 50,
                    eval_every: 0,
                    eval_clients: None,
                    seed: 42,
                    threads: None,
                    scalar: Scalar::F32,
                    server_lr_decay: crate::config::schedule::LrDecay::Constant,
                    server_lr_final: 1.0,
                    item_l2: 0.0,
                },
                reliability: Default::default(),
                comm: Default::default(),
                privacy: Default::default(),
                robust: Default::default(),
                attack: Default::default(),
            },
            Preset::Paper => {
                let mut c = Config::preset(Preset::Tutorial);
                c.preset = preset;
                c.data.max_clients = None;
                c.data.order = ExampleOrder::ShuffleThenCap;
                c.client.recon_epochs = 5;
                c.client.recon_steps_max = Some(50);
                c.client.post_steps_max = Some(50);
                c.client.shuffle_seed = None;
                c.run.rounds = 500;
                c.run.clients_per_round = 100;
                c.run.eval_every = 5;
                c.run.eval_clients = Some(100);
                c
            }
            Preset::Best => {
                // The paper's data, split, model width, client pipeline and budget per round;
                // what changes is measured in README.md ("Learning quality").
                let mut c = Config::preset(Preset::Paper);
                c.preset = preset;
                c.model.user_bias = true;
                c.model.item_bias = true;
                c.model.global_mean = true;
                // Half of issue 10's 4.0: both halves (below) double each round's step.
                c.server = ServerConfig::Sgd { lr: 2.0 };
                // Exact reconstruction (the device's ridge solve) with the regularisers that
                // measured best (README.md, "Learning quality"): a small per-example penalty
                // plus priors that pull users who rated little towards a learned prior mean
                // (implicit feedback), and training rounds that learn from both halves.
                c.client.reconstruction = Reconstruction::Exact;
                c.client.user_l2 = 0.04;
                c.client.user_prior = 4.0;
                c.client.user_bias_prior = 2.0;
                c.client.implicit = true;
                c.client.both_halves = true;
                c.run.rounds = 1000;
                c.run.server_lr_decay = crate::config::schedule::LrDecay::Cosine;
                c.run.server_lr_final = 0.05;
                // Every held-out user: 100 sampled users move the RMSE by ±0.02.
                c.run.eval_every = 50;
                c.run.eval_clients = None;
                c
            }
        }
    }

    /// Layers `text` (TOML, any subset of keys) over a preset. The base preset is `requested`, or
    /// the file's `preset` key, or `tutorial`; a file preset contradicting `requested` is an error.
    /// `origin` names the text in errors (usually the file path). Does not validate.
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        requested: Option<Preset>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            origin: origin.to_owned(),
            message: message.trim_end().to_owned(),
        };
        let file: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        let file_preset = match file.get("preset") {
            None => None,
            Some(toml::Value::String(s)) => Some(
                s.parse::<Preset>()
                    .map_err(|e| parse_err(format!("key `preset`: {e}")))?,
            ),
            Some(other) => {
                return Err(parse_err(format!(
                    "key `preset`: expected a string, found {}",
                    other.type_str()
                )));
            }
        };
        let preset = match (requested, file_preset) {
            (Some(r), Some(f)) if r != f => {
                return Err(ConfigError::PresetConflict {
                    origin: origin.to_owned(),
                    file: f,
                    requested: r,
                });
            }
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => Preset::Tutorial,
        };
        let mut merged = toml::Table::try_from(Config::preset(preset))
            .expect("a Config always serializes to a TOML table");
        merge(&mut merged, file);
        // Re-parse from text so toml's error names the key and where it is in the merged table.
        let merged_text = toml::to_string(&merged).expect("a TOML table always serializes");
        toml::from_str(&merged_text)
            .map_err(|e: toml::de::Error| parse_err(describe(&e, &merged_text)))
    }

    /// Reads a TOML file and layers it over a preset (see [`Config::from_toml_str`]).
    pub fn load(path: &Path, requested: Option<Preset>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string(), requested)
    }

    /// Preset, then optional file, then overrides, then validation: what a run should use.
    pub fn resolve(
        preset: Option<Preset>,
        file: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Config::load(path, preset)?,
            None => Config::preset(preset.unwrap_or(Preset::Tutorial)),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Applies command-line overrides on top of this config.
    pub fn apply(&mut self, o: &Overrides) {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *slot = v.clone();
            }
        }
        set(&mut self.data.max_clients, &o.max_clients);
        set(&mut self.data.max_ratings_per_user, &o.max_ratings_per_user);
        set(&mut self.model.k, &o.k);
        set(&mut self.client.batch_size, &o.batch_size);
        set(&mut self.client.client_lr, &o.client_lr);
        set(&mut self.client.recon_lr, &o.recon_lr);
        set(&mut self.client.eval_recon_lr, &o.eval_recon_lr);
        set(&mut self.client.recon_epochs, &o.recon_epochs);
        set(&mut self.client.recon_steps_max, &o.recon_steps_max);
        set(&mut self.client.post_epochs, &o.post_epochs);
        set(&mut self.client.post_steps_max, &o.post_steps_max);
        set(&mut self.client.split_dataset, &o.split_dataset);
        set(&mut self.client.weighting, &o.weighting);
        set(&mut self.client.shuffle_seed, &o.shuffle_seed);
        if let Some(lr) = o.server_lr {
            self.server.set_lr(lr);
        }
        set(&mut self.run.rounds, &o.rounds);
        set(&mut self.run.clients_per_round, &o.clients_per_round);
        set(&mut self.run.eval_every, &o.eval_every);
        set(&mut self.run.eval_clients, &o.eval_clients);
        set(&mut self.run.seed, &o.seed);
        set(&mut self.run.threads, &o.threads);
        set(&mut self.run.scalar, &o.scalar);
    }

    /// Checks every value the simulator relies on; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid<T: fmt::Debug>(
            field: &'static str,
            value: T,
            reason: &'static str,
        ) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                field,
                value: format!("{value:?}"),
                reason,
            })
        }
        fn positive(field: &'static str, v: f32) -> Result<(), ConfigError> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                invalid(field, v, "must be a finite number > 0")
            }
        }
        fn at_least_one<T: Into<u64> + Copy + fmt::Debug>(
            field: &'static str,
            v: Option<T>,
        ) -> Result<(), ConfigError> {
            match v {
                Some(x) if x.into() == 0 => invalid(field, x, "must be >= 1 (or \"none\")"),
                _ => Ok(()),
            }
        }
        fn decay(field: &'static str, v: f32) -> Result<(), ConfigError> {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                invalid(field, v, "must be in [0, 1)")
            }
        }
        fn non_negative(field: &'static str, v: f32) -> Result<(), ConfigError> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                invalid(field, v, "must be a finite number >= 0")
            }
        }
        let as_u64 = |v: Option<usize>| v.map(|x| x as u64);

        let d = &self.data;
        at_least_one("data.max_clients", as_u64(d.max_clients))?;
        at_least_one("data.max_ratings_per_user", as_u64(d.max_ratings_per_user))?;
        if !(d.train_fraction.is_finite() && d.train_fraction > 0.0 && d.train_fraction < 1.0) {
            invalid("data.train_fraction", d.train_fraction, "must be in (0, 1)")?;
        }
        if !(d.val_fraction.is_finite()
            && d.val_fraction >= 0.0
            && d.train_fraction + d.val_fraction <= 1.0)
        {
            invalid(
                "data.val_fraction",
                d.val_fraction,
                "must be >= 0 with train_fraction + val_fraction <= 1",
            )?;
        }

        if !SUPPORTED_K.contains(&self.model.k) {
            invalid(
                "model.k",
                self.model.k,
                "must be one of 8, 16, 20, 32, 50, 64, 100, 128",
            )?;
        }

        let c = &self.client;
        if c.batch_size == 0 {
            invalid("client.batch_size", c.batch_size, "must be >= 1")?;
        }
        positive("client.client_lr", c.client_lr)?;
        positive("client.recon_lr", c.recon_lr)?;
        positive("client.eval_recon_lr", c.eval_recon_lr)?;
        non_negative("client.user_l2", c.user_l2)?;
        non_negative("client.user_prior", c.user_prior)?;
        non_negative("client.user_bias_l2", c.user_bias_l2)?;
        non_negative("client.user_bias_prior", c.user_bias_prior)?;
        if c.reconstruction == Reconstruction::Sgd {
            for (field, v) in [
                ("client.user_prior", c.user_prior),
                ("client.user_bias_l2", c.user_bias_l2),
                ("client.user_bias_prior", c.user_bias_prior),
            ] {
                if v != 0.0 {
                    invalid(
                        field,
                        v,
                        "applies to client.reconstruction = \"exact\" only (set it, or this to 0)",
                    )?;
                }
            }
        }
        non_negative("client.implicit_lr", c.implicit_lr)?;
        if c.implicit && c.reconstruction == Reconstruction::Sgd {
            invalid(
                "client.implicit",
                c.implicit,
                "needs client.reconstruction = \"exact\" (the prior mean it learns is the solve's)",
            )?;
        }
        if c.both_halves && !(c.implicit && c.split_dataset) {
            invalid(
                "client.both_halves",
                c.both_halves,
                "needs client.implicit = true and client.split_dataset = true",
            )?;
        }
        if c.reconstruction == Reconstruction::Exact && c.user_l2 <= 0.0 {
            invalid(
                "client.user_l2",
                c.user_l2,
                "must be > 0 with client.reconstruction = \"exact\" (the regulariser keeps the solve well posed)",
            )?;
        }
        if c.recon_epochs == 0 {
            invalid("client.recon_epochs", c.recon_epochs, "must be >= 1")?;
        }
        if c.post_epochs == 0 {
            invalid("client.post_epochs", c.post_epochs, "must be >= 1")?;
        }
        at_least_one("client.recon_steps_max", c.recon_steps_max)?;
        at_least_one("client.post_steps_max", c.post_steps_max)?;
        non_negative("client.accuracy_threshold", c.accuracy_threshold)?;

        match self.server {
            ServerConfig::Sgd { lr } => positive("server.lr", lr)?,
            ServerConfig::Momentum { lr, momentum, .. } => {
                positive("server.lr", lr)?;
                decay("server.momentum", momentum)?;
            }
            ServerConfig::Adam {
                lr,
                beta_1,
                beta_2,
                epsilon,
            } => {
                positive("server.lr", lr)?;
                decay("server.beta_1", beta_1)?;
                decay("server.beta_2", beta_2)?;
                positive("server.epsilon", epsilon)?;
            }
            ServerConfig::Adagrad {
                lr,
                initial_accumulator,
                epsilon,
            } => {
                positive("server.lr", lr)?;
                non_negative("server.initial_accumulator", initial_accumulator)?;
                positive("server.epsilon", epsilon)?;
            }
            ServerConfig::Yogi {
                lr,
                beta_1,
                beta_2,
                epsilon,
                initial_accumulator,
            } => {
                positive("server.lr", lr)?;
                decay("server.beta_1", beta_1)?;
                decay("server.beta_2", beta_2)?;
                positive("server.epsilon", epsilon)?;
                non_negative("server.initial_accumulator", initial_accumulator)?;
            }
        }

        let r = &self.run;
        if r.clients_per_round == 0 {
            invalid("run.clients_per_round", r.clients_per_round, "must be >= 1")?;
        }
        at_least_one("run.eval_clients", as_u64(r.eval_clients))?;
        // TOML integers are signed 64-bit: larger seeds could not be written back to a file.
        const TOML_MAX: u64 = i64::MAX as u64;
        if r.seed > TOML_MAX {
            invalid("run.seed", r.seed, "must be <= 2^63 - 1")?;
        }
        if let Some(seed) = self.client.shuffle_seed.filter(|&s| s > TOML_MAX) {
            invalid("client.shuffle_seed", seed, "must be <= 2^63 - 1")?;
        }
        at_least_one("run.threads", as_u64(r.threads))?;
        if let Some(t) = r.threads.filter(|&t| t > MAX_THREADS) {
            invalid(
                "run.threads",
                t,
                "must be <= 1024 (\"none\" = one per core); each thread holds a device workspace",
            )?;
        }
        non_negative("run.server_lr_final", r.server_lr_final)?;
        non_negative("run.item_l2", r.item_l2)?;
        self.reliability.validate()?;
        if self.privacy.enabled && self.reliability.checkpoint_every > 0 {
            // The accountant's state is not in a checkpoint, so a resumed run would
            // under-report ε: refuse before any round runs.
            invalid(
                "reliability.checkpoint_every",
                self.reliability.checkpoint_every,
                "checkpoints of differentially private runs are not supported (the privacy \
                 accountant is not checkpointed)",
            )?;
        }
        self.robust.validate(self.privacy.enabled)?;
        self.attack.validate()?;
        for check in [self.comm.validate(), self.privacy.validate()] {
            check.map_err(|e| ConfigError::Section(format!("{e:#}")))?;
        }
        Ok(())
    }

    /// The full configuration as TOML, every key present, loadable again with
    /// [`Config::from_toml_str`].
    pub fn to_toml_string(&self) -> String {
        let body = toml::to_string(self).expect("a Config always serializes to TOML");
        format!(
            "# fedrecon experiment configuration (preset, then this file, then command-line flags).\n\
             # Optional numbers take \"none\" to mean unset (no cap, all users, automatic).\n{body}"
        )
    }
}

/// Deep-merges `over` into `base`: tables merge key by key, other values replace. A `[server]`
/// table that switches optimizer replaces the base's, so the old optimizer's parameters do not
/// leak into the new one.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if o.get("optimizer")
                    .is_none_or(|k| Some(k) == b.get("optimizer")) =>
            {
                merge(b, o)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// toml's message, plus the offending line of the merged text when its span points at one.
fn describe(e: &toml::de::Error, text: &str) -> String {
    let mut msg = e.message().to_owned();
    if let Some(span) = e.span() {
        let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
        let section = text[..line_start]
            .lines()
            .rev()
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']'))
            .unwrap_or("");
        let line = text[line_start..].lines().next().unwrap_or("").trim();
        if line.starts_with('[') {
            // The span covers a whole table (as for `[server]`, whose optimizer tag makes serde
            // read the table whole): name the key whose value the message quotes, if one does.
            let table = line.trim_matches(|c| c == '[' || c == ']').trim();
            if let Some((key, value)) = quoted_key(text, table, &msg) {
                return format!("key `{table}.{key}`: {msg} (in `{key} = {value}`)");
            }
            return format!("section {line}: {msg}");
        }
        let key = line.split('=').next().unwrap_or("").trim();
        if !key.is_empty() {
            let dotted = if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            msg = format!("key `{dotted}`: {msg} (in `{line}`)");
        } else if !section.is_empty() {
            msg = format!("section [{section}]: {msg}");
        }
    }
    msg
}

/// The one key of `[table]` whose value serde's message shows (`string "abc"`, ``integer `-1` ``,
/// ...), with the value as written.
fn quoted_key(text: &str, table: &str, msg: &str) -> Option<(String, toml::Value)> {
    let root: toml::Table = text.parse().ok()?;
    let mut hits = root.get(table)?.as_table()?.iter().filter(|(_, v)| {
        let shown = match v {
            toml::Value::String(s) => format!("string {s:?}"),
            toml::Value::Integer(i) => format!("integer `{i}`"),
            toml::Value::Float(f) => format!("floating point `{f}`"),
            toml::Value::Boolean(b) => format!("boolean `{b}`"),
            _ => return false,
        };
        msg.contains(&shown)
    });
    let (key, value) = hits.next()?;
    hits.next().is_none().then(|| (key.clone(), value.clone()))
}

/// serde helper: an optional integer written as the number or the string `"none"`.
pub(crate) mod none_or {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str("none"),
        }
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        struct V<T>(PhantomData<T>);
        impl<T: TryFrom<u64>> Visitor<'_> for V<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or \"none\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::try_from(v)
                    .map(Some)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "none" {
                    Ok(None)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Preset `tutorial` of docs/SEMANTICS.md: 2000 users, first 300 ratings (then the device shuffles
    /// with seed 42), split 80/10/10 with numpy seed 42, K = 50, server SGD 1.0, client SGD 0.5,
    /// reconstruction SGD 0.1 (eval 0.1), batch 5, 50 clients per round, 20 rounds.
    #[test]
    fn tutorial_preset_matches_spec() {
        let c = Config::preset(Preset::Tutorial);
        assert_eq!(c.preset, Preset::Tutorial);
        assert_eq!(c.data.max_clients, Some(2000));
        assert_eq!(c.data.max_ratings_per_user, Some(300));
        assert_eq!(c.data.order, ExampleOrder::FileOrder);
        assert_eq!(
            (c.data.user_split_seed, c.data.example_shuffle_seed),
            (42, 42)
        );
        assert_eq!((c.data.train_fraction, c.data.val_fraction), (0.8, 0.1));
        assert_eq!(
            c.model,
            ModelConfig {
                k: 50,
                user_bias: false,
                item_bias: false,
                global_mean: false
            }
        );
        let cl = &c.client;
        assert_eq!(cl.batch_size, 5);
        assert_eq!(
            (cl.client_lr, cl.recon_lr, cl.eval_recon_lr),
            (0.5, 0.1, 0.1)
        );
        assert_eq!((cl.recon_epochs, cl.recon_steps_max), (1, None));
        assert_eq!((cl.post_epochs, cl.post_steps_max), (1, None));
        assert!(cl.split_dataset);
        assert_eq!(cl.weighting, Weighting::Examples);
        assert_eq!(cl.accuracy_threshold, 0.5);
        assert_eq!(cl.shuffle_seed, Some(42));
        // TFF's dataset.shuffle(seed=42) reshuffles on every iteration (docs/SEMANTICS.md, "Known quirk").
        assert!(cl.reshuffle_each_round);
        assert_eq!(c.server, ServerConfig::Sgd { lr: 1.0 });
        assert_eq!((c.run.rounds, c.run.clients_per_round), (20, 50));
        assert_eq!(c.run.eval_clients, None);
        assert_eq!(c.run.scalar, Scalar::F32);
        c.validate().unwrap();
    }

    /// Preset `paper` of docs/SEMANTICS.md: all users, per-user shuffle (seed 42) before keeping 300,
    /// K = 50, no biases, threshold 0.5, client 0.5 / server 1.0 / reconstruction 0.1, batch 5,
    /// 100 clients per round, 500 rounds, eval every 5, reconstruction 5 epochs capped at 50
    /// steps, post-reconstruction capped at 50 steps, split_dataset, 100 eval users.
    #[test]
    fn paper_preset_matches_spec() {
        let c = Config::preset(Preset::Paper);
        assert_eq!(c.preset, Preset::Paper);
        assert_eq!(c.data.max_clients, None);
        assert_eq!(c.data.max_ratings_per_user, Some(300));
        assert_eq!(c.data.order, ExampleOrder::ShuffleThenCap);
        assert_eq!(
            (c.data.user_split_seed, c.data.example_shuffle_seed),
            (42, 42)
        );
        assert_eq!((c.data.train_fraction, c.data.val_fraction), (0.8, 0.1));
        assert_eq!(c.model.k, 50);
        assert!(!c.model.user_bias && !c.model.item_bias && !c.model.global_mean);
        let cl = &c.client;
        assert_eq!(cl.batch_size, 5);
        assert_eq!(
            (cl.client_lr, cl.recon_lr, cl.eval_recon_lr),
            (0.5, 0.1, 0.1)
        );
        assert_eq!((cl.recon_epochs, cl.recon_steps_max), (5, Some(50)));
        assert_eq!((cl.post_epochs, cl.post_steps_max), (1, Some(50)));
        assert!(cl.split_dataset);
        assert_eq!(cl.accuracy_threshold, 0.5);
        assert_eq!(cl.shuffle_seed, None);
        assert_eq!(c.server, ServerConfig::Sgd { lr: 1.0 });
        assert_eq!((c.run.rounds, c.run.clients_per_round), (500, 100));
        assert_eq!(c.run.eval_every, 5);
        assert_eq!(c.run.eval_clients, Some(100));
        c.validate().unwrap();
    }

    #[test]
    fn toml_round_trip() {
        let mut custom = Config::preset(Preset::Paper);
        custom.server = ServerConfig::Yogi {
            lr: 0.01,
            beta_1: 0.8,
            beta_2: 0.99,
            epsilon: 1e-4,
            initial_accumulator: 1e-5,
        };
        custom.run.threads = Some(3);
        custom.client.shuffle_seed = Some(i64::MAX as u64);
        for config in [
            Config::preset(Preset::Tutorial),
            Config::preset(Preset::Paper),
            custom,
        ] {
            let text = config.to_toml_string();
            let back = Config::from_toml_str(&text, "printed", None).unwrap();
            assert_eq!(back, config, "{text}");
        }
    }

    #[test]
    fn file_layers_over_preset() {
        let text = "[client]\nrecon_epochs = 3\npost_steps_max = \"none\"\n[server]\noptimizer = \"adam\"\nlr = 0.01\n";
        let c = Config::from_toml_str(text, "f.toml", Some(Preset::Paper)).unwrap();
        let mut expected = Config::preset(Preset::Paper);
        expected.client.recon_epochs = 3;
        expected.client.post_steps_max = None;
        expected.server = ServerConfig::Adam {
            lr: 0.01,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        };
        assert_eq!(c, expected);
        // The file's preset key picks the base when none is requested.
        let c = Config::from_toml_str("preset = \"paper\"\n", "f.toml", None).unwrap();
        assert_eq!(c, Config::preset(Preset::Paper));
        let c = Config::from_toml_str("", "f.toml", None).unwrap();
        assert_eq!(c, Config::preset(Preset::Tutorial));
    }

    fn parse_err(text: &str) -> String {
        Config::from_toml_str(text, "exp.toml", Some(Preset::Tutorial))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn toml_errors_name_file_and_key() {
        assert_eq!(
            parse_err("[client]\nclient_lr = \"fast\"\n"),
            "exp.toml: key `client.client_lr`: invalid type: string \"fast\", expected f32 (in `client_lr = \"fast\"`)"
        );
        assert!(
            parse_err("[model]\nkk = 50\n")
                .starts_with("exp.toml: key `model.kk`: unknown field `kk`, expected one of")
        );
        assert_eq!(
            parse_err("[run]\neval_clients = -3\n"),
            "exp.toml: key `run.eval_clients`: invalid value: integer `-3`, expected a non-negative integer or \"none\" (in `eval_clients = -3`)"
        );
        assert_eq!(
            parse_err("[server]\nbeta_1 = 0.5\n"),
            "exp.toml: section [server]: unknown field `beta_1`, expected `lr`"
        );
        assert!(parse_err("[client\n").starts_with("exp.toml: TOML parse error at line 1"));
        assert_eq!(
            parse_err("preset = \"paper\"\n"),
            "exp.toml: preset = \"paper\" conflicts with the requested preset 'tutorial'"
        );
        assert_eq!(
            parse_err("preset = \"big\"\n"),
            "exp.toml: key `preset`: unknown preset 'big' (expected 'tutorial', 'paper' or 'best')"
        );
    }

    #[test]
    fn load_names_missing_file() {
        let err = Config::load(Path::new("/nonexistent/exp.toml"), None).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/exp.toml: "),
            "{err}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let check = |edit: &dyn Fn(&mut Config), expected: &str| {
            let mut c = Config::preset(Preset::Tutorial);
            edit(&mut c);
            assert_eq!(c.validate().unwrap_err().to_string(), expected);
        };
        check(
            &|c| c.client.client_lr = -0.5,
            "invalid config: client.client_lr = -0.5: must be a finite number > 0",
        );
        check(
            &|c| c.client.recon_lr = f32::NAN,
            "invalid config: client.recon_lr = NaN: must be a finite number > 0",
        );
        check(
            &|c| c.model.k = 49,
            "invalid config: model.k = 49: must be one of 8, 16, 20, 32, 50, 64, 100, 128",
        );
        check(
            &|c| c.client.batch_size = 0,
            "invalid config: client.batch_size = 0: must be >= 1",
        );
        check(
            &|c| c.run.clients_per_round = 0,
            "invalid config: run.clients_per_round = 0: must be >= 1",
        );
        check(
            &|c| c.client.post_steps_max = Some(0),
            "invalid config: client.post_steps_max = 0: must be >= 1 (or \"none\")",
        );
        check(
            &|c| c.server.set_lr(f32::INFINITY),
            "invalid config: server.lr = inf: must be a finite number > 0",
        );
        check(
            &|c| {
                c.server = ServerConfig::Adam {
                    lr: 0.1,
                    beta_1: 1.0,
                    beta_2: 0.999,
                    epsilon: 1e-7,
                }
            },
            "invalid config: server.beta_1 = 1.0: must be in [0, 1)",
        );
        check(
            &|c| c.data.val_fraction = 0.3,
            "invalid config: data.val_fraction = 0.3: must be >= 0 with train_fraction + val_fraction <= 1",
        );
        check(
            &|c| c.run.seed = u64::MAX,
            "invalid config: run.seed = 18446744073709551615: must be <= 2^63 - 1",
        );
        check(
            &|c| c.client.reconstruction = Reconstruction::Exact,
            "invalid config: client.user_l2 = 0.0: must be > 0 with client.reconstruction = \"exact\" (the regulariser keeps the solve well posed)",
        );
        check(
            &|c| c.client.user_prior = 1.0,
            "invalid config: client.user_prior = 1.0: applies to client.reconstruction = \"exact\" only (set it, or this to 0)",
        );
        check(
            &|c| {
                c.client.reconstruction = Reconstruction::Exact;
                c.client.user_l2 = 0.1;
                c.client.user_bias_prior = -2.0;
            },
            "invalid config: client.user_bias_prior = -2.0: must be a finite number >= 0",
        );
        check(
            &|c| c.run.item_l2 = -1.0,
            "invalid config: run.item_l2 = -1.0: must be a finite number >= 0",
        );
    }

    /// `best` solves the reconstruction exactly with the measured regulariser; the reference
    /// presets keep TFF's SGD, and a TOML file selects either.
    #[test]
    fn reconstruction_key() {
        let best = Config::preset(Preset::Best);
        assert_eq!(best.client.reconstruction, Reconstruction::Exact);
        assert_eq!(best.client.user_l2, 0.04);
        assert_eq!(
            (best.client.user_prior, best.client.user_bias_prior),
            (4.0, 2.0)
        );
        assert!(best.client.implicit && best.client.both_halves);
        best.validate().unwrap();
        for p in [Preset::Tutorial, Preset::Paper] {
            assert_eq!(Config::preset(p).client.reconstruction, Reconstruction::Sgd);
        }
        let c = Config::from_toml_str(
            "[client]\nreconstruction = \"exact\"\nuser_l2 = 0.25\n",
            "f.toml",
            Some(Preset::Paper),
        )
        .unwrap();
        assert_eq!(
            (c.client.reconstruction, c.client.user_l2),
            (Reconstruction::Exact, 0.25)
        );
    }

    #[test]
    fn overrides_apply_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, "[run]\nrounds = 7\nclients_per_round = 9\n").unwrap();
        let overrides = Overrides {
            rounds: Some(3),
            eval_clients: Some(None),
            server_lr: Some(0.5),
            ..Overrides::default()
        };
        let c = Config::resolve(Some(Preset::Paper), Some(&path), &overrides).unwrap();
        assert_eq!(c.run.rounds, 3);
        assert_eq!(c.run.clients_per_round, 9);
        assert_eq!(c.run.eval_clients, None);
        assert_eq!(c.server.lr(), 0.5);
        assert_eq!(c.client.recon_epochs, 5);
        let bad = Overrides {
            k: Some(7),
            ..Overrides::default()
        };
        assert!(Config::resolve(None, None, &bad).is_err());
        assert_eq!("paper".parse::<Preset>().unwrap(), Preset::Paper);
        assert!("Paper".parse::<Preset>().is_err());
    }
}
