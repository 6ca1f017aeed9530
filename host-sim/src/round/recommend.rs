//! A user's top unrated items: reconstruct their embedding from every rating they have (no split,
//! no cap) against frozen item rows, then rank the catalogue with `core`'s streaming top-k, as
//! a device would. `fedrecon recommend` and the Python binding's `recommend` share it.

use anyhow::{Context, Result, anyhow, bail};

use crate::config::Config;
use crate::data::partition::Client;
use crate::dispatch_k;
use crate::round::{WORKER_STACK, load_client, new_workspace, round_config};

/// Largest `k` a recommendation can ask for (the top-k buffer's compile-time capacity).
pub const MAX_K: usize = 100;

/// The `k` best-scored items `client` has not rated, best first, as `(dense item, score)`.
/// `items` is the `rows × cols` item matrix (row-major, no biases); runs on its own thread with
/// a [`WORKER_STACK`] so it works from any caller.
pub fn recommend(
    cfg: &Config,
    items: &[f32],
    cols: usize,
    client: &Client<'_>,
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    if !(1..=MAX_K).contains(&k) {
        bail!("k = {k} must be in 1..={MAX_K}");
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(WORKER_STACK)
            .spawn_scoped(scope, || -> Result<Vec<(u32, f32)>> {
                dispatch_k!(cols, top_k(cfg, items, client, k))
            })
            .context("cannot start a worker thread")?
            .join()
            .map_err(|_| anyhow!("the recommendation thread panicked"))?
    })
}

/// [`recommend`] at a compile-time width, on the calling thread (which needs a large stack).
pub fn top_k<const K: usize>(
    cfg: &Config,
    items: &[f32],
    client: &Client<'_>,
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    let rows = fedrecon_core::DenseRows::new(items.as_chunks::<K>().0);
    let mut rc = round_config(cfg, true, 0.0)?;
    if cfg.model.item_bias || cfg.model.global_mean {
        bail!("recommend supports models without biases only (items.npy holds no biases)");
    }
    // Learn from every rating: no split, no cap.
    rc.split.split_dataset = false;
    let mut dev = new_workspace::<f32, K>();
    let loaded = load_client(&mut dev, client, (items.len() / K) as u32)?;
    let seed = crate::seeds::derive(&[cfg.run.seed, 6, client.user.into()]);
    let mut top =
        fedrecon_core::rank::TopK::<f32, MAX_K>::new(k).map_err(|e| anyhow!("-k {k}: {e}"))?;
    crate::on_device!(loaded, |dev| {
        dev.reconstruct(&rows, &rc, seed)
            .map_err(|e| anyhow!("reconstructing the user: {e}"))?;
        dev.rank(&rows, &rc, &mut top)
            .map_err(|e| anyhow!("ranking: {e}"))
    })?;
    Ok(top.into_sorted().to_vec())
}
