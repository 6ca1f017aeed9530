//! The `[comm]`, `[privacy]`, `[robust]` and `[attack]` flags of `fedrecon train`, and the
//! flags of `fedrecon sweep`.

use fedrecon_host_sim::comm::{CommConfig, Downlink, UpdateMode, Uplink};
use fedrecon_host_sim::config::attack::{AttackConfig, AttackKind};
use fedrecon_host_sim::config::robust::{RobustConfig, Rule};
use fedrecon_host_sim::server::privacy::DpConfig;

/// Command-line flags of the `[comm]` section (each overrides the config when given).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CommArgs {
    /// Downlink: full (f32 matrix, TFF), needed (only the client's rows; reveals its items),
    /// full-i16, full-i8 (quantized matrix, per-row scale), needed-i16, needed-i8.
    #[arg(long)]
    pub downlink: Option<Downlink>,
    /// Update rows: dense (every row, TFF), sparse (touched rows) or padded (touched rows plus
    /// zero-delta decoys up to --pad-rows).
    #[arg(long)]
    pub update_mode: Option<UpdateMode>,
    /// Rows of a padded update.
    #[arg(long)]
    pub pad_rows: Option<usize>,
    /// Uplink values: f32, i16 or i8 (per-row scale).
    #[arg(long)]
    pub uplink: Option<Uplink>,
    /// Unbiased stochastic rounding of quantized uplink values.
    #[arg(long)]
    pub stochastic_rounding: bool,
}

impl CommArgs {
    /// Applies the given flags to `c`.
    pub fn apply(&self, c: &mut CommConfig) {
        if let Some(d) = self.downlink {
            c.downlink = d;
        }
        if let Some(m) = self.update_mode {
            c.update_mode = m;
        }
        if let Some(r) = self.pad_rows {
            c.pad_rows = r;
        }
        if let Some(u) = self.uplink {
            c.uplink = u;
        }
        if self.stochastic_rounding {
            c.stochastic_rounding = true;
        }
    }
}

/// Command-line flags of the `[privacy]` section; any of them turns DP on.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DpArgs {
    /// Central DP: Gaussian noise multiplier z (noise stddev = z × clip on the sum of clipped
    /// updates, uniform client weights). 0 clips without noise.
    #[arg(long)]
    pub dp_noise_multiplier: Option<f64>,
    /// Central DP: L2 clip norm of a client's update (initial norm with --dp-adaptive-clip;
    /// default 0.1).
    #[arg(long)]
    pub dp_clip: Option<f64>,
    /// Central DP: adapt the clip norm to a quantile of the update norms.
    #[arg(long)]
    pub dp_adaptive_clip: bool,
    /// Central DP: target quantile of adaptive clipping (default 0.5).
    #[arg(long)]
    pub dp_target_quantile: Option<f64>,
    /// δ of the reported ε (default 1 / training users).
    #[arg(long)]
    pub dp_delta: Option<f64>,
}

impl DpArgs {
    /// Applies the given flags to `c` (any DP flag enables DP).
    pub fn apply(&self, c: &mut DpConfig) {
        let mut on = false;
        if let Some(z) = self.dp_noise_multiplier {
            c.noise_multiplier = z;
            on = true;
        }
        if let Some(clip) = self.dp_clip {
            c.clip = clip;
            on = true;
        }
        if self.dp_adaptive_clip {
            c.adaptive_clip = true;
            on = true;
        }
        if let Some(q) = self.dp_target_quantile {
            c.target_quantile = q;
            on = true;
        }
        if let Some(d) = self.dp_delta {
            c.delta = Some(d);
            on = true;
        }
        c.enabled |= on;
    }
}

/// Command-line flags of `[robust]`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RobustArgs {
    /// How the server combines updates: mean (default), median, trimmed_mean,
    /// trimmed_mean_all or krum.
    #[arg(long, value_name = "RULE")]
    pub aggregator: Option<Rule>,
    /// Bound every client's update to this L2 norm before aggregating (0 = none).
    #[arg(long, value_name = "NORM")]
    pub norm_bound: Option<f64>,
    /// Fraction trimmed from each end by trimmed_mean.
    #[arg(long, value_name = "FRACTION")]
    pub trim: Option<f64>,
    /// Byzantine clients Krum assumes (f).
    #[arg(long, value_name = "F")]
    pub krum_byzantine: Option<usize>,
    /// Clients multi-Krum keeps.
    #[arg(long, value_name = "M")]
    pub krum_select: Option<usize>,
    /// Leave out updates whose row deltas are not aligned (|cos| below this) with one
    /// direction (0 = no check).
    #[arg(long, value_name = "COS")]
    pub row_alignment: Option<f64>,
    /// The defense for untrusted deployments (RobustConfig::untrusted), before the other flags.
    #[arg(long)]
    pub untrusted: bool,
}

impl RobustArgs {
    /// Writes the given flags into `cfg`.
    pub fn apply(&self, cfg: &mut RobustConfig) {
        if self.untrusted {
            *cfg = RobustConfig::untrusted();
        }
        if let Some(v) = self.row_alignment {
            cfg.row_alignment = v;
        }
        if let Some(v) = self.aggregator {
            cfg.aggregator = v;
        }
        if let Some(v) = self.norm_bound {
            cfg.norm_bound = v;
        }
        if let Some(v) = self.trim {
            cfg.trim = v;
        }
        if let Some(v) = self.krum_byzantine {
            cfg.krum_byzantine = v;
        }
        if let Some(v) = self.krum_select {
            cfg.krum_select = v;
        }
    }
}

/// Command-line flags of `[attack]`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AttackArgs {
    /// Attack run by malicious clients: none, promote, promote_aligned, boost or sign_flip.
    #[arg(long = "attack", value_name = "KIND")]
    pub kind: Option<AttackKind>,
    /// Fraction of the training users that are malicious.
    #[arg(long = "attack-fraction", value_name = "FRACTION")]
    pub fraction: Option<f64>,
    /// Dense id of the promoted item (its hit ratio@10 is reported).
    #[arg(long = "attack-target", value_name = "ITEM")]
    pub target: Option<u32>,
    /// Strength of the attack.
    #[arg(long = "attack-scale", value_name = "SCALE")]
    pub scale: Option<f32>,
}

impl AttackArgs {
    /// Writes the given flags into `cfg`.
    pub fn apply(&self, cfg: &mut AttackConfig) {
        if let Some(v) = self.kind {
            cfg.kind = v;
        }
        if let Some(v) = self.fraction {
            cfg.fraction = v;
        }
        if let Some(v) = self.target {
            cfg.target = Some(v);
        }
        if let Some(v) = self.scale {
            cfg.scale = v;
        }
    }
}

/// `fedrecon sweep`: a sweep file's configurations × seeds (see `fedrecon_host_sim::sweep`).
#[derive(Clone, Debug, clap::Args)]
pub struct SweepArgs {
    /// MovieLens folder every run trains on.
    #[arg(long, value_name = "DIR")]
    pub data: std::path::PathBuf,
    /// Sweep file: `[[row]]` tables, each `name`, `preset` and a `config` overlay, and
    /// optionally `seeds = [...]`.
    #[arg(long, value_name = "FILE")]
    pub sweep: std::path::PathBuf,
    /// Seeds every row runs with, comma-separated (default: the file's `seeds`).
    #[arg(long, value_name = "S,...", value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Worker threads shared by the runs (`none` = one per core).
    #[arg(long)]
    pub threads: Option<super::MaybeNum>,
    /// Directory for sweep.md, sweep.csv (mean and half-range) and runs.csv (every run).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Allow a non-empty --out directory (overwrites the sweep's files only).
    #[arg(long)]
    pub force: bool,
    /// Also keep every run's outputs (metrics, model.npz) in OUT/runs/.
    #[arg(long, requires = "out")]
    pub keep_runs: bool,
    /// No line per finished run.
    #[arg(long)]
    pub no_progress: bool,
}

impl SweepArgs {
    /// The sweep's options, checked; `file_seeds` are the sweep file's.
    pub fn options(
        &self,
        file_seeds: &[u64],
    ) -> anyhow::Result<fedrecon_host_sim::sweep::SweepOptions> {
        let seeds = if self.seeds.is_empty() {
            file_seeds.to_vec()
        } else {
            self.seeds.clone()
        };
        anyhow::ensure!(
            !seeds.is_empty(),
            "--seeds: none given, and {} has no `seeds = [...]`",
            self.sweep.display()
        );
        for (i, s) in seeds.iter().enumerate() {
            anyhow::ensure!(!seeds[..i].contains(s), "--seeds: seed {s} is listed twice");
        }
        let threads = match self.threads.and_then(|m| m.0) {
            Some(0) => anyhow::bail!("--threads 0: give at least 1 (or none for one per core)"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(fedrecon_host_sim::sweep::SweepOptions {
            seeds,
            threads,
            out: self.out.clone(),
            force: self.force,
            keep_runs: self.keep_runs,
            progress: !self.no_progress,
        })
    }
}
