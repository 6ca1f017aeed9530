//! A user's top unrated items: reconstruct their embedding (and bias) from every rating they
//! have (no split, no cap) against frozen item rows with the model's own configuration
//! (`client.reconstruction`, `client.user_l2`), then rank the catalogue with `core`'s streaming
//! top-k, biases and global mean included, as a device would and as evaluation does.
//! `fedrecon recommend` and the Python binding's `recommend` share it.

use anyhow::{Context, Result, anyhow, bail, ensure};

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
    /// With implicit feedback (`client.implicit`), the implicit rows by dense item id and then
    /// the mean row, row-major `(items + 1) × cols`; empty without.
    pub implicit: &'a [f32],
}

impl ModelView<'_> {
    /// Items in the catalogue.
    fn catalogue<const K: usize>(&self) -> usize {
        self.items.len() / K
    }

    /// The rows a device reads: the item rows, then any implicit rows and the mean row (with
    /// zero biases), as one matrix in `fedrecon_core::implicit`'s layout.
    fn model_rows<const K: usize>(&self, cfg: &Config) -> Result<(Vec<[f32; K]>, Vec<f32>)> {
        let n = self.catalogue::<K>();
        let want = crate::round::model_rows(cfg, n);
        let rows: Vec<[f32; K]> = self
            .items
            .iter()
            .chain(self.implicit)
            .copied()
            .collect::<Vec<f32>>()
            .as_chunks::<K>()
            .0
            .to_vec();
        ensure!(
            rows.len() == want,
            "the model has {} rows (items and implicit rows) where its configuration needs {want}",
            rows.len()
        );
        let mut biases = Vec::new();
        if cfg.model.item_bias {
            ensure!(
                self.item_biases.len() == n,
                "the model has {} item biases for {n} items",
                self.item_biases.len()
            );
            biases = self.item_biases.to_vec();
            biases.resize(want, 0.0);
        }
        Ok((rows, biases))
    }

    fn biases(&self, cfg: &Config) -> &[f32] {
        if cfg.model.item_bias {
            self.item_biases
        } else {
            &[]
        }
    }
}

/// Reconstruction from every rating: no split (so no second, exchanged pass either, which
/// only training rounds run).
fn learn_from_every_rating(rc: &mut fedrecon_core::RoundConfig) {
    rc.split.split_dataset = false;
    if let fedrecon_core::Reconstruction::ExactImplicit { both_halves, .. } = &mut rc.reconstruction
    {
        *both_halves = false;
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
    let (matrix, biases) = model.model_rows::<K>(cfg)?;
    let rows = if cfg.model.item_bias {
        fedrecon_core::DenseRows::with_biases(&matrix, &biases)
            .ok_or_else(|| anyhow!("internal: one bias per row"))?
    } else {
        fedrecon_core::DenseRows::new(&matrix)
    };
    let mut rc = round_config(cfg, true, model.global_mean, model.catalogue::<K>())?;
    learn_from_every_rating(&mut rc);
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
    if cfg.client.implicit {
        bail!("recommending on a board needs a model without implicit feedback (client.implicit)");
    }
    let mut rc = round_config(cfg, true, model.global_mean, model.catalogue::<K>())?;
    learn_from_every_rating(&mut rc);
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
