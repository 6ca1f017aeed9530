//! `fedrecon bench`: rounds of any data and configuration, timed per phase (device training,
//! encode, decode + validate, aggregate, server step, evaluation), with the peak RSS, compared
//! with a plain single-thread SGD loop over the same clients without any federated machinery.
//! Without --preset / --config: one round over the whole paper training population (all
//! ratings uncapped, batch 5, one epoch per phase, no step caps).

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Result, ensure};

use crate::comm::transport;
use crate::config::{Config, Preset};
use crate::data::partition::{Client, Partition};
use crate::dispatch;
use crate::on_device;
use crate::round::{SimScalar, Simulation, Split, load_client, new_workspace, thread_pool};
use crate::seeds::{Purpose, sample_without_replacement, seed_for};
use rayon::prelude::*;

/// Figures of one benchmark.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Worker threads.
    pub threads: usize,
    /// Training clients per round.
    pub clients: usize,
    /// Rating-steps per round (examples visited by both phases).
    pub steps: u64,
    /// Median round seconds.
    pub round_seconds: f64,
    /// Median seconds of the parallel device section (train, encode, decode, validate).
    pub device_seconds: f64,
    /// Median seconds of selection + aggregation + server step.
    pub server_seconds: f64,
    /// Median seconds of the aggregation.
    pub aggregate_seconds: f64,
    /// Median seconds of the server optimizer's step.
    pub step_seconds: f64,
    /// Bytes of encoded updates per round, framing included.
    pub bytes_up: u64,
    /// Of `bytes_up`, the messages alone.
    pub payload_up: u64,
    /// Seconds of the evaluation of the validation users.
    pub eval_seconds: f64,
    /// Validation users evaluated.
    pub eval_users: u32,
    /// Median seconds of the single-thread baseline over the same clients.
    pub baseline_seconds: f64,
    /// Rating-steps of the baseline (one epoch per phase, whatever the configuration).
    pub baseline_steps: u64,
    /// Median seconds of the same clients' `Device::train` alone (no encoding), same threads.
    pub train_only_seconds: f64,
    /// Median seconds of `Device::train` plus encoding (no decoding), same threads.
    pub train_encode_seconds: f64,
    /// Peak resident memory of the process so far (bytes; `None` off Linux).
    pub peak_rss: Option<u64>,
}

impl BenchReport {
    /// Simulator rating-steps per second (whole round).
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.round_seconds
    }
    /// Baseline rating-steps per second (one thread).
    pub fn baseline_steps_per_second(&self) -> f64 {
        self.baseline_steps as f64 / self.baseline_seconds
    }
    /// Simulator per-core speed over baseline speed.
    pub fn ratio_per_core(&self) -> f64 {
        self.steps_per_second() / self.threads as f64 / self.baseline_steps_per_second()
    }
}

/// The benchmark's default configuration: the paper preset, uncapped, one epoch per phase,
/// every training client in the round, every validation user in the evaluation.
pub fn bench_config(threads: Option<usize>) -> Config {
    let mut cfg = Config::preset(Preset::Paper);
    cfg.data.max_ratings_per_user = None;
    cfg.client.recon_epochs = 1;
    cfg.client.recon_steps_max = None;
    cfg.client.post_epochs = 1;
    cfg.client.post_steps_max = None;
    cfg.client.batch_size = 5;
    cfg.run.eval_clients = None;
    cfg.run.threads = threads;
    cfg
}

/// Peak resident set size of this process (`VmHWM`), where the system reports it.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Times `rounds` rounds (after a warm-up), an evaluation and the baseline.
pub fn run_bench(
    cfg: &Config,
    part: &Partition,
    num_items: usize,
    rounds: u32,
) -> Result<BenchReport> {
    dispatch!(
        cfg.run.scalar,
        cfg.model.k,
        bench_k(cfg, part, num_items, rounds)
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_k<S: SimScalar, const K: usize>(
    cfg: &Config,
    part: &Partition,
    num_items: usize,
    rounds: u32,
) -> Result<BenchReport> {
    let mut sim = Simulation::<S, K>::new(cfg, part, num_items)?;
    let warm = sim.train_round()?;
    ensure!(warm.skipped == 0, "{} clients were skipped", warm.skipped);
    let mut stats = Vec::new();
    let mut last = warm;
    for _ in 0..rounds {
        last = sim.train_round()?;
        stats.push(last.clone());
    }
    let of = |f: fn(&crate::round::RoundStats) -> f64| median(stats.iter().map(f).collect());
    let t = Instant::now();
    let eval = sim.evaluate(Split::Val)?;
    let eval_seconds = t.elapsed().as_secs_f64();

    // The last round's clients, for the baseline and the device-section breakdown.
    let sample = sample_without_replacement(
        part.train.len(),
        cfg.run.clients_per_round,
        seed_for(cfg.run.seed, Purpose::SampleTrain, u64::from(rounds + 1), 0),
    );
    // The baseline runs on one thread of a pool like the simulator's (same stack, same CPU).
    let pool = thread_pool(1)?;
    let init = sim.items().to_vec();
    let split = cfg.client.split_dataset;
    let batch = cfg.client.batch_size;
    let (lr_u, lr_v) = (cfg.client.recon_lr, cfg.client.client_lr);
    let mut base = Vec::new();
    let mut baseline_steps = 0;
    for _ in 0..rounds.min(3) {
        let mut items = init.clone();
        let (s, n) = pool.install(|| {
            let t = Instant::now();
            let clients = sample.iter().map(|&c| part.train.client(c));
            let n = baseline::<K>(clients, &mut items, batch, split, lr_u, lr_v);
            (t.elapsed().as_secs_f64(), n)
        });
        black_box(&items);
        base.push(s);
        baseline_steps = n;
    }
    // The device section broken down: train only, then train + encode, on the same pool size.
    let pool = thread_pool(sim.threads())?;
    let (mut train_only, mut train_encode) = (Vec::new(), Vec::new());
    let rc = *sim.train_config();
    let mut scratch = Vec::new();
    let rows_flat = S::lend(sim.items().as_flattened(), &mut scratch);
    let rows = fedrecon_core::DenseRows::new(rows_flat.as_chunks::<K>().0);
    for encode in [false, true] {
        for _ in 0..rounds {
            let t = Instant::now();
            let r: Result<()> = pool.install(|| {
                sample.par_iter().try_for_each_init(
                    || (new_workspace::<S, K>(), Vec::new(), Vec::new()),
                    |(dev, buf, out), &c| {
                        let client = part.train.client(c);
                        let loaded = load_client(dev, &client, num_items as u32)?;
                        let u = on_device!(loaded, |dev| dev.train(&rows, &rc, c as u64))
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        if encode {
                            transport::encode_update(
                                transport::VIRTUAL_LINK,
                                1,
                                client.user,
                                &u,
                                buf,
                                out,
                            )?;
                        }
                        black_box(&u);
                        Ok(())
                    },
                )
            });
            r?;
            if encode {
                train_encode.push(t.elapsed().as_secs_f64());
            } else {
                train_only.push(t.elapsed().as_secs_f64());
            }
        }
    }
    Ok(BenchReport {
        threads: sim.threads(),
        clients: last.clients as usize,
        steps: last.examples,
        round_seconds: of(|s| s.seconds),
        device_seconds: of(|s| s.device_seconds),
        server_seconds: of(|s| s.server_seconds),
        aggregate_seconds: of(|s| s.aggregate_seconds),
        step_seconds: of(|s| s.step_seconds),
        bytes_up: last.bytes_up,
        payload_up: last.payload_up,
        eval_seconds,
        eval_users: eval.users,
        baseline_seconds: median(base),
        baseline_steps,
        train_only_seconds: median(train_only),
        train_encode_seconds: median(train_encode),
        peak_rss: peak_rss(),
    })
}

/// The plain loop: per user, `u` = fresh uniform init, minibatch SGD on `u` over the even
/// batches, then minibatch SGD directly on the global item rows over the odd batches (all
/// batches for both phases without `split`). No copies, no deltas, no encoding. Returns the
/// rating-steps done.
pub fn baseline<'a, const K: usize>(
    clients: impl IntoIterator<Item = Client<'a>>,
    items: &mut [[f32; K]],
    batch: usize,
    split: bool,
    lr_u: f32,
    lr_v: f32,
) -> u64 {
    let mut steps = 0u64;
    let mut err = vec![0f32; batch];
    let mut rng = fedrecon_core::rng::DeviceRng::new(1);
    for c in clients {
        let mut u = [0f32; K];
        for x in &mut u {
            *x = -0.05 + 0.1 * rng.unit_f32();
        }
        let n = c.len();
        let batches = n.div_ceil(batch);
        let (recon_stride, post_first) = if split { (2, 1) } else { (1, 0) };
        for b in (0..batches).step_by(recon_stride) {
            let (lo, hi) = (b * batch, (b * batch + batch).min(n));
            let mut g = [0f32; K];
            for j in lo..hi {
                let v = &items[c.items[j] as usize];
                let e = dot(&u, v) - c.ratings[j];
                for (g, v) in g.iter_mut().zip(v) {
                    *g += e * v;
                }
            }
            let step = 2.0 * lr_u / (hi - lo) as f32;
            for (u, g) in u.iter_mut().zip(&g) {
                *u -= step * g;
            }
            steps += (hi - lo) as u64;
        }
        for b in (post_first..batches).step_by(recon_stride) {
            let (lo, hi) = (b * batch, (b * batch + batch).min(n));
            for j in lo..hi {
                err[j - lo] = dot(&u, &items[c.items[j] as usize]) - c.ratings[j];
            }
            let step = 2.0 * lr_v / (hi - lo) as f32;
            for j in lo..hi {
                let s = step * err[j - lo];
                for (v, u) in items[c.items[j] as usize].iter_mut().zip(&u) {
                    *v -= s * u;
                }
            }
            steps += (hi - lo) as u64;
        }
    }
    steps
}

#[inline]
fn dot<const K: usize>(a: &[f32; K], b: &[f32; K]) -> f32 {
    // Eight partial sums so the compiler can vectorise (as the device's kernel does).
    let mut acc = [0f32; 8];
    let chunks = K / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..K {
        s += a[i] * b[i];
    }
    s
}
