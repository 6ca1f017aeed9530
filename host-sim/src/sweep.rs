//! A configuration × seeds grid (`fedrecon sweep`): every named configuration of a sweep file
//! run with every seed, the runs spread over a few worker threads, and a table of each
//! configuration's final test figures as mean ± half-range over its seeds, so a README table
//! is one command.
//!
//! A sweep file lists rows, each a preset plus any subset of the configuration's keys (the
//! same keys as `fedrecon config` prints), and optionally the default seeds:
//!
//! ```toml
//! seeds = [1, 2, 3]
//!
//! [[row]]
//! name = "paper"
//! preset = "paper"
//!
//! [[row]]
//! name = "+ biases"
//! preset = "paper"
//! config = { model = { user_bias = true, item_bias = true, global_mean = true } }
//! ```
//!
//! Each run is [`crate::run::run`] with `run.seed` set to the grid's seed and `run.threads` to
//! its share of the workers; a run's results do not depend on its thread count, so every run
//! gives exactly what it gives alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::Deserialize;

use crate::config::{Config, Preset};
use crate::data::movielens::Ratings;
use crate::output::{self, Record};
use crate::run::{RunOptions, run};

/// One named configuration of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    /// The row's label in the tables.
    pub name: String,
    /// Its configuration (`run.seed` and `run.threads` are the sweep's).
    pub config: Config,
}

/// A sweep file: its rows and default seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    /// The configurations, in table order.
    pub rows: Vec<SweepRow>,
    /// Seeds used when none are given on the command line.
    pub seeds: Vec<u64>,
}

/// How to run a sweep besides its rows.
#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    /// Seeds every row runs with.
    pub seeds: Vec<u64>,
    /// Worker threads shared by the runs (at least 1).
    pub threads: usize,
    /// Directory for `sweep.md`, `sweep.csv` and `runs.csv` (claimed like a run's `--out`).
    pub out: Option<PathBuf>,
    /// Allow a non-empty `out` (overwrites the sweep's own files only).
    pub force: bool,
    /// Also keep every run's own outputs in `OUT/runs/ROW-sSEED/` (metrics, `model.npz`).
    pub keep_runs: bool,
    /// Print a line as each run finishes.
    pub progress: bool,
}

/// The final figures of one run of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFigures {
    /// Row name.
    pub row: String,
    /// Seed.
    pub seed: u64,
    /// Training rounds run.
    pub rounds: u32,
    /// Final test loss (mean squared error).
    pub loss: f64,
    /// Final test RMSE.
    pub rmse: f64,
    /// Final test rating accuracy.
    pub accuracy: f64,
    /// Final test recall@10.
    pub recall_at_10: f64,
    /// Final test NDCG@10.
    pub ndcg_at_10: f64,
    /// Wall-clock seconds of the run (data loading excluded).
    pub seconds: f64,
}

/// A figure over a row's seeds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Half the range (max − min) / 2.
    pub half_range: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64> + Clone) -> Spread {
        let n = values.clone().count().max(1) as f64;
        let (lo, hi) = values
            .clone()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        Spread {
            mean: values.sum::<f64>() / n,
            half_range: (hi - lo) / 2.0,
        }
    }
}

/// One row of the table: a configuration's figures over its seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct RowSummary {
    /// Row name.
    pub name: String,
    /// Runs (seeds).
    pub runs: usize,
    /// Rounds.
    pub rounds: Spread,
    /// Test RMSE.
    pub rmse: Spread,
    /// Test rating accuracy.
    pub accuracy: Spread,
    /// Test recall@10.
    pub recall_at_10: Spread,
    /// Test NDCG@10.
    pub ndcg_at_10: Spread,
    /// Wall seconds per run.
    pub seconds: Spread,
}

/// A finished sweep: every run (row-major, seeds in the given order) and the table.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepResult {
    /// The seeds used.
    pub seeds: Vec<u64>,
    /// Every run's figures.
    pub runs: Vec<RunFigures>,
    /// One summary per row, in the file's order.
    pub rows: Vec<RowSummary>,
}

/// A row as the sweep file spells it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowText {
    name: String,
    preset: Option<Preset>,
    #[serde(default)]
    config: toml::Table,
}

/// A sweep file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecText {
    #[serde(default)]
    seeds: Vec<u64>,
    #[serde(default)]
    row: Vec<RowText>,
}

impl SweepSpec {
    /// Parses a sweep file's text; `origin` names it in errors. Every row's configuration is
    /// built and validated here, so a bad key fails before any run starts.
    pub fn parse(text: &str, origin: &str) -> Result<SweepSpec> {
        let spec: SpecText = toml::from_str(text).map_err(|e| anyhow!("{origin}: {e}"))?;
        ensure!(
            !spec.row.is_empty(),
            "{origin}: no [[row]]: a sweep needs at least one configuration"
        );
        let mut rows: Vec<SweepRow> = Vec::with_capacity(spec.row.len());
        for (i, r) in spec.row.into_iter().enumerate() {
            let what = format!("{origin}: row {} ('{}')", i + 1, r.name);
            ensure!(
                !r.name.trim().is_empty(),
                "{origin}: row {}: empty name",
                i + 1
            );
            ensure!(
                rows.iter().all(|x| x.name != r.name),
                "{what}: the name is used by an earlier row"
            );
            if let Some(run) = r.config.get("run").and_then(toml::Value::as_table) {
                for key in ["seed", "threads"] {
                    ensure!(
                        !run.contains_key(key),
                        "{what}: sets run.{key}, which the sweep sets (--seeds, --threads)"
                    );
                }
            }
            let overlay = toml::to_string(&r.config).context("the row's config")?;
            let config = Config::from_toml_str(&overlay, &what, r.preset)?;
            config.validate().with_context(|| what.clone())?;
            rows.push(SweepRow {
                name: r.name,
                config,
            });
        }
        Ok(SweepSpec {
            rows,
            seeds: spec.seeds,
        })
    }

    /// Reads and parses a sweep file.
    pub fn load(path: &Path) -> Result<SweepSpec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        SweepSpec::parse(&text, &path.display().to_string())
    }
}

/// A run's directory name under `OUT/runs/`: the row's name reduced to `[a-z0-9-]`.
fn slug(i: usize, name: &str, seed: u64) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    format!("{:02}-{}-s{seed}", i + 1, s.trim_matches('-'))
}

/// Runs every row of `spec` with every seed of `opts` on `ratings` (see the module docs).
pub fn sweep(spec: &SweepSpec, ratings: &Ratings, opts: &SweepOptions) -> Result<SweepResult> {
    ensure!(!opts.seeds.is_empty(), "a sweep needs at least one seed");
    ensure!(opts.threads > 0, "a sweep needs at least one thread");
    let _claim = match &opts.out {
        Some(dir) => Some(output::RunDir::create(dir, opts.force).with_context(|| {
            format!(
                "--out {} (--force overwrites the sweep's files in it)",
                dir.display()
            )
        })?),
        None => None,
    };
    let jobs: Vec<(usize, u64)> = (0..spec.rows.len())
        .flat_map(|r| opts.seeds.iter().map(move |&s| (r, s)))
        .collect();
    let parallel = opts.threads.min(jobs.len());
    let per_run = (opts.threads / parallel).max(1);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<RunFigures>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let t0 = Instant::now();
    let one = |(r, seed): (usize, u64)| -> Result<RunFigures> {
        let row = &spec.rows[r];
        let mut cfg = row.config.clone();
        cfg.run.seed = seed;
        cfg.run.threads = Some(per_run);
        let out = match (&opts.out, opts.keep_runs) {
            (Some(dir), true) => {
                let d = dir.join("runs").join(slug(r, &row.name, seed));
                std::fs::create_dir_all(&d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                Some(d)
            }
            _ => None,
        };
        let res = run(
            &cfg,
            ratings,
            &RunOptions {
                out,
                ..RunOptions::default()
            },
        )
        .with_context(|| format!("row '{}', seed {seed}", row.name))?;
        let rounds = res
            .records
            .iter()
            .filter(|x| matches!(x, Record::Train { .. }))
            .count() as u32;
        Ok(RunFigures {
            row: row.name.clone(),
            seed,
            rounds,
            loss: res.test.loss,
            rmse: res.test.rmse,
            accuracy: res.test.rating_accuracy,
            recall_at_10: res.test.recall_at_10,
            ndcg_at_10: res.test.ndcg_at_10,
            seconds: res.seconds,
        })
    };
    std::thread::scope(|scope| -> Result<()> {
        let workers = (0..parallel)
            .map(|w| {
                std::thread::Builder::new()
                    .name(format!("fedrecon-sweep-{w}"))
                    .stack_size(crate::round::WORKER_STACK)
                    .spawn_scoped(scope, || {
                        loop {
                            let j = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&job) = jobs.get(j) else { break };
                            let r = one(job);
                            let failed = r.is_err();
                            if opts.progress {
                                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                                match &r {
                                    Ok(f) => eprintln!(
                                        "[{n}/{}] {} seed {}: test RMSE {:.4}, accuracy {:.4} \
                                         ({:.1} s)",
                                        jobs.len(),
                                        f.row,
                                        f.seed,
                                        f.rmse,
                                        f.accuracy,
                                        f.seconds
                                    ),
                                    Err(e) => eprintln!("[{n}/{}] failed: {e:#}", jobs.len()),
                                }
                            }
                            *slots[j].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                            if failed {
                                // Stop handing out runs: the sweep fails with the first error.
                                next.store(jobs.len(), Ordering::Relaxed);
                            }
                        }
                    })
                    .context("cannot start a sweep worker")
            })
            .collect::<Result<Vec<_>>>()?;
        for w in workers {
            w.join()
                .map_err(|_| anyhow!("a sweep worker panicked (see stderr)"))?;
        }
        Ok(())
    })?;
    let mut runs = Vec::with_capacity(jobs.len());
    for (slot, (r, seed)) in slots.into_iter().zip(&jobs) {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(res) => runs.push(res?),
            None => bail!(
                "row '{}', seed {seed}: not run (an earlier run failed)",
                spec.rows[*r].name
            ),
        }
    }
    let rows = spec
        .rows
        .iter()
        .map(|row| {
            let mine: Vec<&RunFigures> = runs.iter().filter(|f| f.row == row.name).collect();
            let of = |f: fn(&RunFigures) -> f64| Spread::of(mine.iter().map(move |x| f(x)));
            RowSummary {
                name: row.name.clone(),
                runs: mine.len(),
                rounds: of(|x| f64::from(x.rounds)),
                rmse: of(|x| x.rmse),
                accuracy: of(|x| x.accuracy),
                recall_at_10: of(|x| x.recall_at_10),
                ndcg_at_10: of(|x| x.ndcg_at_10),
                seconds: of(|x| x.seconds),
            }
        })
        .collect();
    let result = SweepResult {
        seeds: opts.seeds.clone(),
        runs,
        rows,
    };
    tracing::info!(
        runs = jobs.len(),
        seconds = t0.elapsed().as_secs_f64(),
        "sweep done"
    );
    if let Some(dir) = &opts.out {
        result.write(dir)?;
    }
    Ok(result)
}

impl SweepResult {
    /// The table in Markdown, as the README shows it: mean ± half-range over the seeds.
    pub fn markdown(&self) -> String {
        let pm = |s: Spread| format!("{:.3} ± {:.3}", s.mean, s.half_range);
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        let mut t = format!(
            "Seeds {} (mean ± half-range); wall time per run.\n\n\
             | configuration | rounds | test RMSE | accuracy | recall@10 | NDCG@10 | wall |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            seeds.join(", ")
        );
        for r in &self.rows {
            let rounds = if r.rounds.half_range == 0.0 {
                format!("{}", r.rounds.mean)
            } else {
                format!("{:.0} ± {:.0}", r.rounds.mean, r.rounds.half_range)
            };
            let _ = writeln!(
                t,
                "| {} | {rounds} | {} | {} | {} | {} | {:.1} s |",
                r.name,
                pm(r.rmse),
                pm(r.accuracy),
                pm(r.recall_at_10),
                pm(r.ndcg_at_10),
                r.seconds.mean
            );
        }
        t
    }

    /// The table as CSV: each figure's mean and half-range, full precision.
    pub fn csv(&self) -> String {
        let mut t = String::from(
            "configuration,runs,rounds_mean,rounds_half_range,rmse_mean,rmse_half_range,\
             accuracy_mean,accuracy_half_range,recall_at_10_mean,recall_at_10_half_range,\
             ndcg_at_10_mean,ndcg_at_10_half_range,seconds_mean,seconds_half_range\n",
        );
        for r in &self.rows {
            let _ = write!(t, "{},{}", csv_text(&r.name), r.runs);
            for s in [
                r.rounds,
                r.rmse,
                r.accuracy,
                r.recall_at_10,
                r.ndcg_at_10,
                r.seconds,
            ] {
                let _ = write!(t, ",{},{}", s.mean, s.half_range);
            }
            t.push('\n');
        }
        t
    }

    /// Every run's figures as CSV, full precision.
    pub fn runs_csv(&self) -> String {
        let mut t = String::from(
            "configuration,seed,rounds,loss,rmse,accuracy,recall_at_10,ndcg_at_10,seconds\n",
        );
        for f in &self.runs {
            let _ = writeln!(
                t,
                "{},{},{},{},{},{},{},{},{}",
                csv_text(&f.row),
                f.seed,
                f.rounds,
                f.loss,
                f.rmse,
                f.accuracy,
                f.recall_at_10,
                f.ndcg_at_10,
                f.seconds
            );
        }
        t
    }

    /// Writes `sweep.md`, `sweep.csv` and `runs.csv` into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        output::write_atomic(&dir.join("sweep.md"), self.markdown().as_bytes())?;
        output::write_atomic(&dir.join("sweep.csv"), self.csv().as_bytes())?;
        output::write_atomic(&dir.join("runs.csv"), self.runs_csv().as_bytes())
    }
}

/// A CSV field: quoted when it holds a comma, quote or newline.
fn csv_text(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_file_builds_every_row_or_names_the_bad_one() {
        let spec = SweepSpec::parse(
            "seeds = [4, 5]\n[[row]]\nname = \"a\"\npreset = \"paper\"\n\
             [[row]]\nname = \"b, biased\"\npreset = \"paper\"\n\
             config = { model = { item_bias = true }, run = { rounds = 7 } }\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(spec.seeds, [4, 5]);
        assert_eq!(spec.rows[0].config, Config::preset(Preset::Paper));
        assert!(spec.rows[1].config.model.item_bias);
        assert_eq!(spec.rows[1].config.run.rounds, 7);

        for (text, needle) in [
            (
                "[[row]]\nname = \"a\"\nconfig = { run = { roundz = 3 } }\n",
                "roundz",
            ),
            (
                "[[row]]\nname = \"a\"\nconfig = { run = { seed = 3 } }\n",
                "run.seed",
            ),
            (
                "[[row]]\nname = \"a\"\n[[row]]\nname = \"a\"\n",
                "earlier row",
            ),
            ("[[row]]\nname = \"a\"\nprest = \"paper\"\n", "prest"),
            ("seeds = [1]\n", "no [[row]]"),
            (
                "[[row]]\nname = \"x\"\nconfig = { client = { client_lr = -1.0 } }\n",
                "client_lr",
            ),
        ] {
            let e = format!("{:#}", SweepSpec::parse(text, "s.toml").unwrap_err());
            assert!(e.contains(needle) && e.contains("s.toml"), "{text}: {e}");
        }
    }

    #[test]
    fn spread_is_mean_and_half_range() {
        let s = Spread::of([0.5, 0.25, 1.0].into_iter());
        assert_eq!((s.mean, s.half_range), (1.75 / 3.0, 0.375));
        assert_eq!(slug(0, "+ SGD 4.0, cosine", 3), "01-sgd-4-0-cosine-s3");
    }
}
