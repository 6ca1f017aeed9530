//! The virtual device as the round uses it: the workspace type and its capacity, the device
//! scalars, the macros that turn the runtime K and scalar into const generics, and the mapping
//! of the configuration onto core's `RoundConfig`.

use std::sync::Mutex;

use anyhow::{Context, Result, anyhow};
use fedrecon_core::{DenseRows, ModelConfig, Q12, Q16, RoundConfig, Scalar, SplitConfig};

use crate::config::Config;
use crate::data::partition::{Client, ClientSet};

pub use super::workspace::{LARGE_N, Loaded, N, Workspace};

/// A device scalar the simulator can run. The server keeps its rows in f32; each round it lends
/// them to the devices in the device scalar: zero-copy for f32, converted once for fixed point
/// (as the server would quantise the rows it sends to a fixed-point board).
pub trait SimScalar: Scalar + Send + Sync {
    /// `params` in this scalar, using `scratch` when a conversion is needed.
    fn lend<'a>(params: &'a [f32], scratch: &'a mut Vec<Self>) -> &'a [Self];
}

impl SimScalar for f32 {
    fn lend<'a>(params: &'a [f32], _: &'a mut Vec<Self>) -> &'a [Self] {
        params
    }
}

macro_rules! convert_lend {
    ($($t:ty),*) => {$(
        impl SimScalar for $t {
            fn lend<'a>(params: &'a [f32], scratch: &'a mut Vec<Self>) -> &'a [Self] {
                scratch.clear();
                scratch.extend(params.iter().map(|&x| <$t>::from_f32(x)));
                scratch
            }
        }
    )*};
}
convert_lend!(Q16, Q12);

/// Stack size of worker threads: a workspace is built on the stack before it is boxed in
/// unoptimised builds, and is over a megabyte for large `K`.
pub const WORKER_STACK: usize = 64 << 20;

/// Calls `$f::<K>($args)` with the const `K` equal to the runtime value `$k`, for every width in
/// [`crate::config::SUPPORTED_K`]; an unsupported width is an error.
#[macro_export]
macro_rules! dispatch_k {
    ($k:expr, $f:ident $(< $s:ty >)? ( $($arg:expr),* $(,)? )) => {
        match $k {
            8 => $f::<$($s,)? 8>($($arg),*),
            16 => $f::<$($s,)? 16>($($arg),*),
            20 => $f::<$($s,)? 20>($($arg),*),
            32 => $f::<$($s,)? 32>($($arg),*),
            50 => $f::<$($s,)? 50>($($arg),*),
            64 => $f::<$($s,)? 64>($($arg),*),
            100 => $f::<$($s,)? 100>($($arg),*),
            128 => $f::<$($s,)? 128>($($arg),*),
            other => Err(::anyhow::anyhow!(
                "embedding size K = {other} is not built in (supported: {:?})",
                $crate::config::SUPPORTED_K
            )),
        }
    };
}

/// Calls `$f::<S, K>($args)` with `S` the device scalar named by the runtime `$scalar`
/// ([`crate::config::Scalar`]) and `K` as in [`dispatch_k!`].
#[macro_export]
macro_rules! dispatch {
    ($scalar:expr, $k:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $scalar {
            $crate::config::Scalar::F32 => $crate::dispatch_k!($k, $f<f32>($($arg),*)),
            $crate::config::Scalar::Q16 => {
                $crate::dispatch_k!($k, $f<::fedrecon_core::Q16>($($arg),*))
            }
            $crate::config::Scalar::Q12 => {
                $crate::dispatch_k!($k, $f<::fedrecon_core::Q12>($($arg),*))
            }
        }
    };
}

/// A fresh workspace (call on a thread with a [`WORKER_STACK`]-sized stack).
pub fn new_workspace<S: Scalar, const K: usize>() -> Workspace<S, K> {
    Workspace::new()
}

/// A rayon pool of `threads` workers (0 = one per core) with large stacks.
pub(crate) fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(WORKER_STACK)
        .thread_name(|i| format!("fedrecon-worker-{i}"))
        .build()
        .context("cannot start the worker thread pool")
}

/// The device configuration of training rounds (`eval = false`) or evaluation (`eval = true`,
/// reconstruction SGD at `eval_recon_lr`). `global_mean` is the training mean rating, used when
/// the model asks for a global-mean term; `catalogue` the number of items (implicit feedback's
/// rows follow them).
pub fn round_config(
    cfg: &Config,
    eval: bool,
    global_mean: f32,
    catalogue: usize,
) -> Result<RoundConfig> {
    let c = &cfg.client;
    let u16_of = |what: &str, v: u64| -> Result<u16> {
        u16::try_from(v).map_err(|_| anyhow!("client.{what} = {v} is too large (max 65535)"))
    };
    let rc = RoundConfig {
        split: SplitConfig {
            batch_size: u16_of("batch_size", c.batch_size as u64)?,
            // The partition already applied `max_ratings_per_user`.
            max_examples: None,
            shuffle_seed: c.shuffle_seed,
            split_dataset: c.split_dataset,
            recon_epochs: u16_of("recon_epochs", u64::from(c.recon_epochs))?,
            recon_steps_max: c
                .recon_steps_max
                .map(|v| u16_of("recon_steps_max", u64::from(v)))
                .transpose()?,
            post_epochs: u16_of("post_epochs", u64::from(c.post_epochs))?,
            post_steps_max: c
                .post_steps_max
                .map(|v| u16_of("post_steps_max", u64::from(v)))
                .transpose()?,
        },
        recon_lr: if eval { c.eval_recon_lr } else { c.recon_lr },
        post_lr: c.client_lr,
        user_l2: c.user_l2,
        init_scale: 0.05,
        weighting: c.weighting,
        accuracy_threshold: c.accuracy_threshold,
        model: ModelConfig {
            user_bias: cfg.model.user_bias,
            item_bias: cfg.model.item_bias,
            global_mean: cfg.model.global_mean.then_some(global_mean),
        },
        reconstruction: match c.reconstruction {
            crate::config::Reconstruction::Sgd => fedrecon_core::Reconstruction::Sgd,
            crate::config::Reconstruction::Exact if c.implicit => {
                fedrecon_core::Reconstruction::ExactImplicit {
                    user_prior: c.user_prior,
                    bias_l2: c.user_bias_l2,
                    bias_prior: c.user_bias_prior,
                    items: u32::try_from(catalogue)
                        .ok()
                        .filter(|&n| n <= fedrecon_core::implicit::MAX_ITEMS)
                        .ok_or_else(|| {
                            anyhow!("{catalogue} items are too many for implicit feedback")
                        })?,
                    implicit_lr: c.implicit_lr,
                    both_halves: c.both_halves,
                }
            }
            crate::config::Reconstruction::Exact
                if c.user_prior == 0.0 && c.user_bias_l2 == 0.0 && c.user_bias_prior == 0.0 =>
            {
                fedrecon_core::Reconstruction::Exact
            }
            crate::config::Reconstruction::Exact => fedrecon_core::Reconstruction::ExactPrior {
                user_prior: c.user_prior,
                bias_l2: c.user_bias_l2,
                bias_prior: c.user_bias_prior,
            },
        },
    };
    rc.validate()
        .map_err(|e| anyhow!("client configuration rejected by the device: {e}"))?;
    Ok(rc)
}

/// Rows of the model `cfg` trains over a catalogue of `catalogue` items: the items, and with
/// implicit feedback (`client.implicit`) their implicit rows and the mean row.
pub fn model_rows(cfg: &Config, catalogue: usize) -> usize {
    if cfg.client.implicit {
        2 * catalogue + 1
    } else {
        catalogue
    }
}

/// Copies a client's examples into the workspace's smallest device that holds them.
pub fn load_client<'w, S: Scalar, const K: usize>(
    dev: &'w mut Workspace<S, K>,
    client: &Client<'_>,
    num_items: u32,
) -> Result<Loaded<'w, S, K>> {
    dev.load(client, num_items)
}

/// The device configuration of one client in one round: with `reshuffle`, its shuffle seed is
/// derived from the configured seed, the round and the user, so each round sees a new order
/// (TFF reshuffles on every iteration); otherwise `cfg` as is.
pub fn client_round_config(
    cfg: &RoundConfig,
    reshuffle: bool,
    round: u32,
    user: u32,
) -> RoundConfig {
    let mut rc = *cfg;
    if reshuffle {
        rc.split.shuffle_seed = rc
            .split
            .shuffle_seed
            .map(|s| crate::seeds::derive(&[s, u64::from(round), u64::from(user)]));
    }
    rc
}

/// The dense view of the flat parameter vector.
pub(crate) fn rows_view<S: Scalar, const K: usize>(
    params: &[S],
    num_items: usize,
    bias: bool,
) -> DenseRows<'_, S, K> {
    let rows = params[..num_items * K].as_chunks::<K>().0;
    if bias {
        DenseRows::with_biases(rows, &params[num_items * K..])
            .expect("one bias per item row by construction")
    } else {
        DenseRows::new(rows)
    }
}

/// The workspace of the current worker thread (uncontended: one per worker).
pub(crate) fn worker_workspace<S: Scalar, const K: usize>(
    workspaces: &[Mutex<Workspace<S, K>>],
) -> std::sync::MutexGuard<'_, Workspace<S, K>> {
    let i = rayon::current_thread_index().unwrap_or(0) % workspaces.len();
    workspaces[i].lock().unwrap_or_else(|p| p.into_inner())
}

/// Examples the reconstruction phase of `cfg` visits for `client` (for throughput figures).
pub(crate) fn recon_examples(cfg: &RoundConfig, client: &Client<'_>) -> u64 {
    let kept = cfg.split.kept(client.len());
    cfg.split
        .schedule(fedrecon_core::Phase::Reconstruction, kept)
        .examples() as u64
}

/// Mean training rating (the global-mean term when the model uses one).
pub fn mean_rating(set: &ClientSet) -> f32 {
    let (mut sum, mut n) = (0f64, 0u64);
    for c in set.iter() {
        sum += c.ratings.iter().map(|&r| f64::from(r)).sum::<f64>();
        n += c.len() as u64;
    }
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    /// `client.reconstruction` and `client.user_l2` reach the device's round configuration
    /// (here, not in `config`'s tests: `config` must not import `round`).
    #[test]
    fn reconstruction_reaches_the_device_config() {
        let c = Config::from_toml_str(
            "[client]\nreconstruction = \"exact\"\nuser_l2 = 0.25\n",
            "f.toml",
            Some(Preset::Paper),
        )
        .unwrap();
        let rc = round_config(&c, true, 3.5, 100).unwrap();
        assert_eq!(rc.reconstruction, fedrecon_core::Reconstruction::Exact);
        assert_eq!(rc.user_l2, 0.25);
        let sgd = round_config(&Config::preset(Preset::Paper), false, 3.5, 100).unwrap();
        assert_eq!(sgd.reconstruction, fedrecon_core::Reconstruction::Sgd);
        // Any per-user prior selects the device's `ExactPrior` solve; none keeps `Exact`
        // (whose wire bytes and results predate the priors).
        let c = Config::from_toml_str(
            "[client]\nreconstruction = \"exact\"\nuser_l2 = 0.04\nuser_prior = 4.0\n\
             user_bias_prior = 2.0\nimplicit = false\nboth_halves = false\n",
            "f.toml",
            Some(Preset::Best),
        )
        .unwrap();
        let rc = round_config(&c, false, 3.5, 100).unwrap();
        assert_eq!(
            rc.reconstruction,
            fedrecon_core::Reconstruction::ExactPrior {
                user_prior: 4.0,
                bias_l2: 0.0,
                bias_prior: 2.0
            }
        );
        // `best` learns the prior mean over the catalogue it is given, on both halves.
        let rc = round_config(&Config::preset(Preset::Best), false, 3.5, 100).unwrap();
        assert_eq!(
            rc.reconstruction,
            fedrecon_core::Reconstruction::ExactImplicit {
                user_prior: 4.0,
                bias_l2: 0.0,
                bias_prior: 2.0,
                items: 100,
                implicit_lr: 0.2,
                both_halves: true,
            }
        );
    }
}
