//! The reliability flags of `fedrecon train` and `fedrecon train --resume OUT` (issue 9).
//!
//! A resumed run takes its configuration from the checkpoint (which must equal
//! `OUT/config.toml`); any configuration flag given with `--resume` must agree with it, or the
//! command fails naming the differing keys before anything is written. Only `--threads` may
//! differ (results are bit-identical for any thread count).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

use crate::cli::{TrainArgs, load_data, overrides};
use fedrecon_host_sim::config::{Config, Overrides};
use fedrecon_host_sim::output::checkpoint;
use fedrecon_host_sim::output::{self, RunDir};
use fedrecon_host_sim::run::{Checkpointing, Interrupts, RunOptions, run_checkpointed};

/// Checkpoint, dropout and update-validation flags of `train`.
#[derive(Debug, Args, Default)]
pub struct ReliabilityArgs {
    /// Write OUT/checkpoint.bin every N rounds (atomically, with a checksum).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u32>,
    /// Continue the run in DIR from its checkpoint (configuration from DIR/config.toml).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Probability that a sampled client drops out of a round (seeded per client and round).
    #[arg(long, value_name = "P")]
    pub dropout: Option<f64>,
    /// Over-selection: sample ceil(clients_per_round * (1 + F)), aggregate the first
    /// clients_per_round valid reports in sample order.
    #[arg(long, value_name = "F")]
    pub over_select: Option<f64>,
    /// Skip (never half-apply) a round with fewer valid reports than this.
    #[arg(long, value_name = "M")]
    pub min_clients: Option<usize>,
    /// Reject updates whose deltas have a larger L2 norm.
    #[arg(long, value_name = "X")]
    pub max_update_norm: Option<f64>,
    /// Reject updates claiming a larger weight (`none` = only the client's own data bound).
    #[arg(long, value_name = "W")]
    pub max_weight: Option<crate::cli::MaybeNum>,
}

impl ReliabilityArgs {
    /// Sets the flags given into `cfg.reliability` and validates the result.
    pub fn apply(&self, cfg: &mut Config) -> Result<()> {
        let r = &mut cfg.reliability;
        if let Some(v) = self.checkpoint_every {
            r.checkpoint_every = v;
        }
        if let Some(v) = self.dropout {
            r.dropout = v;
        }
        if let Some(v) = self.over_select {
            r.over_select = v;
        }
        if let Some(v) = self.min_clients {
            r.min_clients = v;
        }
        if let Some(v) = self.max_update_norm {
            r.max_update_norm = v;
        }
        if let Some(v) = self.max_weight {
            r.max_weight = match v.0 {
                None => None,
                Some(w) => Some(
                    u32::try_from(w)
                        .map_err(|_| anyhow::anyhow!("--max-weight {w} is too large"))?,
                ),
            };
        }
        cfg.validate()
            .context("building the configuration (reliability flags)")
    }
}

/// `key = value` of every leaf of a config, dotted.
fn flatten(cfg: &Config) -> BTreeMap<String, String> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                v => {
                    out.insert(key, v.to_string());
                }
            }
        }
    }
    let t = toml::Table::try_from(cfg).expect("a Config always serializes to a TOML table");
    let mut out = BTreeMap::new();
    walk("", &t, &mut out);
    out
}

/// The keys where `a` and `b` differ, as `key = a (b in <b_name>)`.
pub fn differences(a: &Config, b: &Config, b_name: &str) -> Vec<String> {
    let (fa, fb) = (flatten(a), flatten(b));
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| {
            let show = |m: &BTreeMap<String, String>| {
                m.get(k).cloned().unwrap_or_else(|| "(unset)".into())
            };
            format!("{k} = {} ({} in {b_name})", show(&fa), show(&fb))
        })
        .collect()
}

/// `fedrecon train --resume DIR [flags]`.
pub fn resume(a: TrainArgs, link: Option<fedrecon_host_sim::cluster::Link>) -> Result<()> {
    let dir = a.reliability.resume.clone().expect("called with --resume");
    // Claimed before the checkpoint is read, and held to the end: no other process writes
    // into the directory while this one checks and continues it.
    let claim = RunDir::open(&dir).with_context(|| format!("--resume {}", dir.display()))?;
    for (given, flag) in [
        (a.qemu_devices > 0, "--qemu-devices"),
        (!a.devices.is_empty(), "--device"),
        (a.firmware.is_some(), "--firmware"),
        (a.link_faults != 0.0, "--link-faults"),
        (a.link_attacks != 0.0, "--link-attacks"),
        (a.board_eval, "--board-eval"),
        (!a.board_users.is_empty(), "--board-users"),
        (a.board_flash.is_some(), "--board-flash"),
        (a.enrolment.is_some(), "--enrolment"),
    ] {
        ensure!(
            !given,
            "--resume {}: {flag} cannot be given with --resume (boards are not recorded in a \
             checkpoint; start a new run to use them)",
            dir.display()
        );
    }
    let ck = checkpoint::load(&dir).with_context(|| format!("--resume {}", dir.display()))?;
    let ck_name = format!("the checkpoint {}", dir.join(checkpoint::FILE).display());
    let stored = Config::from_toml_str(&ck.config_toml, &ck_name, None)
        .map_err(anyhow::Error::from)
        .and_then(|c| c.validate().map(|()| c).map_err(Into::into))
        .with_context(|| format!("--resume: {ck_name}: its configuration"))?;
    let cfg_path = dir.join("config.toml");
    let on_disk = Config::load(&cfg_path, None)
        .with_context(|| format!("--resume {}: reading config.toml", dir.display()))?;
    let diff = differences(&on_disk, &stored, "the checkpoint");
    ensure!(
        diff.is_empty(),
        "--resume {}: config.toml does not match the checkpoint's configuration: {}",
        dir.display(),
        diff.join("; ")
    );

    // Flags given now must agree with the stored configuration (threads excepted).
    let mut o: Overrides = overrides(&a);
    let threads = o.threads.take();
    let mut requested = match (&a.source.config, a.source.preset) {
        (Some(file), p) => Config::resolve(p.or(Some(stored.preset)), Some(file), &o)
            .context("building the configuration (--preset / --config / flags)")?,
        (None, p) => {
            let mut c = stored.clone();
            if let Some(p) = p.filter(|&p| p != stored.preset) {
                bail!(
                    "--resume {}: --preset {p} conflicts with the run's preset {}",
                    dir.display(),
                    stored.preset
                );
            }
            c.apply(&o);
            c
        }
    };
    requested.run.threads = stored.run.threads;
    a.comm.apply(&mut requested.comm);
    a.dp.apply(&mut requested.privacy);
    a.reliability.apply(&mut requested)?;
    let diff = differences(&requested, &stored, &cfg_path.display().to_string());
    ensure!(
        diff.is_empty(),
        "--resume {}: the configuration asked for differs from the run's, refusing to mix \
         them: {} (give only --resume, or matching values)",
        dir.display(),
        diff.join("; ")
    );
    let mut cfg = stored;
    if let Some(t) = threads {
        cfg.run.threads = t;
        cfg.validate().context("--threads")?;
    }

    let data = match (&a.data, ck.data_dir.as_os_str().is_empty()) {
        (Some(d), _) => d.clone(),
        (None, false) => ck.data_dir.clone(),
        (None, true) => bail!(
            "--resume {}: the checkpoint does not record the data directory; pass --data",
            dir.display()
        ),
    };
    let ratings = load_data(&data)?;
    tracing::info!(
        round = ck.round,
        rounds = cfg.run.rounds,
        "resuming {}",
        dir.display()
    );
    let opts = RunOptions {
        out: Some(claim.path().to_path_buf()),
        progress: !a.no_progress,
        plots: !a.no_plots,
        interrupts: Some(Interrupts::install().context("installing signal handlers")?),
        cluster: link,
    };
    let ckpt = Checkpointing {
        data_dir: data,
        resume: Some(ck),
    };
    let res = run_checkpointed(&cfg, &ratings, &opts, &ckpt, &Default::default())?;
    println!("{}", output::summary_table(&res.records, res.seconds));
    println!("outputs in {}", dir.display());
    drop(claim);
    Ok(())
}
