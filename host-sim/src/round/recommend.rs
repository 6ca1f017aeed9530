//! A user's top unrated items: reconstruct their embedding (and bias) from every rating they
//! have (no split, no cap) against frozen item rows with the model's own configuration
//! (`client.reconstruction`, `client.user_l2`), then rank the catalogue with `core`'s streaming
//! top-k, biases and global mean included, as a device would and as evaluation does.
//! `fedrecon recommend` and the Python binding's `recommend` share it.

use anyhow::{Context, Result, anyhow, bail};

use crate::config::Config;
use crate::data::partition::Client;
use crate::dispatch_k;
use crate::round::{WORKER_STACK, load_client, new_workspace, round_config};

/// Largest `k` a recommendation can ask for (the top-k buffer's compile-time capacity).
pub const MAX_K: usize = 100;

/// A trained model as the devices see it, by dense item id.
#[derive(Clone, Copy, Debug)]
pub struct ModelView<'a> {
    /// Item rows, row-major `items × cols`.
    pub items: &'a [f32],
    /// Embedding width.
    pub cols: usize,
    /// One bias per row (read only when the configuration has item biases).
    pub item_biases: &'a [f32],
    /// The global-mean term (used only when the configuration has one).
    pub global_mean: f32,
}

impl ModelView<'_> {
    fn rows<const K: usize>(&self, cfg: &Config) -> Result<fedrecon_core::DenseRows<'_, f32, K>> {
        let rows = self.items.as_chunks::<K>().0;
        if cfg.model.item_bias {
            fedrecon_core::DenseRows::with_biases(rows, self.item_biases).ok_or_else(|| {
                anyhow!(
                    "the model has {} item biases for {} rows",
                    self.item_biases.len(),
                    rows.len()
                )
            })
        } else {
            Ok(fedrecon_core::DenseRows::new(rows))
        }
    }

    fn biases(&self, cfg: &Config) -> &[f32] {
        if cfg.model.item_bias {
            self.item_biases
        } else {
            &[]
        }
    }
}

/// The `k` best-scored items `client` has not rated, best first, as `(dense item, score)`.
/// `client.user` seeds the random start of SGD reconstruction: callers pass the raw MovieLens
/// id, so the answer does not depend on the users' order in the file. Runs on its own thread with a [`WORKER_STACK`] so it works from any caller.
pub fn recommend(
    cfg: &Config,
    model: &ModelView<'_>,
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
                dispatch_k!(model.cols, top_k(cfg, model, client, k))
            })
            .context("cannot start a worker thread")?
            .join()
            .map_err(|_| anyhow!("the recommendation thread panicked"))?
    })
}

/// [`recommend`] at a compile-time width, on the calling thread (which needs a large stack).
pub fn top_k<const K: usize>(
    cfg: &Config,
    model: &ModelView<'_>,
    client: &Client<'_>,
    k: usize,
) -> Result<Vec<(u32, f32)>> {
    let rows = model.rows::<K>(cfg)?;
    let mut rc = round_config(cfg, true, model.global_mean)?;
    // Learn from every rating: no split, no cap.
    rc.split.split_dataset = false;
    let mut dev = new_workspace::<f32, K>();
    let loaded = load_client(&mut dev, client, (model.items.len() / K) as u32)?;
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

/// [`recommend`] computed on a board (`opts`: `--qemu-devices 1` or one `--device`): the
/// board reconstructs the user from every rating (the same configuration and seed as
/// [`top_k`]) and ranks the whole catalogue streamed through it, so its answer is the host's
/// (an f32 image; at most [`fedrecon_core::wire::TOP_K_MAX`] items, and the user's ratings
/// must fit the board).
pub fn recommend_on_board(
    cfg: &Config,
    model: &ModelView<'_>,
    client: &Client<'_>,
    k: usize,
    opts: &crate::board::BoardOptions,
) -> Result<Vec<(u32, f32)>> {
    dispatch_k!(model.cols, top_k_on_board(cfg, model, client, k, opts))
}

/// [`recommend_on_board`] at a compile-time width.
pub fn top_k_on_board<const K: usize>(
    cfg: &Config,
    model: &ModelView<'_>,
    client: &Client<'_>,
    k: usize,
    opts: &crate::board::BoardOptions,
) -> Result<Vec<(u32, f32)>> {
    use crate::board::{BoardJob, Boards, eval::Catalogue};
    use fedrecon_core::wire::{RowEncoding, TOP_K_MAX};
    if !(1..=TOP_K_MAX).contains(&k) {
        bail!("k = {k}: a board ranks at most {TOP_K_MAX} items");
    }
    let n = opts.qemu_devices + opts.devices.len();
    if n != 1 {
        bail!("recommend runs on one board (--qemu-devices 1 or one --device), {n} given");
    }
    let mut rc = round_config(cfg, true, model.global_mean)?;
    rc.split.split_dataset = false;
    let seed = crate::seeds::derive(&[cfg.run.seed, 6, client.user.into()]);
    let mut boards = Boards::open(opts, K, fedrecon_core::ScalarKind::F32, cfg.run.seed)
        .context("opening the board")?;
    let board = &mut boards.boards_mut()[0];
    let cap = board.hello().max_examples as usize;
    if client.len() > cap {
        bail!(
            "the user has {} ratings, board {} holds at most {cap}",
            client.len(),
            board.name()
        );
    }
    let job = BoardJob {
        round: 1,
        items: client.items.to_vec(),
        ratings: client.ratings.to_vec(),
        seed,
        cfg: rc,
        down: RowEncoding::F32,
        up: RowEncoding::F32,
        shape: None,
        provisioned: false,
    };
    let catalogue = Catalogue {
        rows: model.items.as_chunks::<K>().0,
        biases: model.biases(cfg),
    };
    board
        .recommend::<K>(&rc, &job, &catalogue, k)
        .with_context(|| format!("board {}", board.name()))
}
