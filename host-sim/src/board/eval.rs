//! Boards evaluating held-out users and recommending: the `Evaluate` and `Reconstruct` rounds
//! of the protocol, then a `TopKRequest` with the whole catalogue streamed through the board
//! (`firmware/README.md`, exchange 4), so the board ranks with its own reconstruction.
//!
//! The host sends the same values a virtual device decodes (the server's rows in the
//! downlink's encoding), so a board's metric sums and top-k are the virtual device's bits.

use anyhow::{Result, anyhow, bail, ensure};
use fedrecon_core::wire::{Message, RoundMode, TOP_K_MAX, TopKRequest, encode_item_rows};
use fedrecon_core::{Metrics, RoundConfig};

use super::{BOARD_CLIENT, Board, BoardJob};

/// A board's top-k: `(item, score)`, best first.
pub type Ranked = Vec<(u32, f32)>;

/// The catalogue a board ranks: every row of the model (`num_items × K`: the items, then any
/// implicit rows and the mean row, which a device never ranks) and the item biases (empty
/// without item biases), the server's `f32` values.
#[derive(Clone, Copy, Debug)]
pub struct Catalogue<'a, const K: usize> {
    /// Item rows, item `i` at index `i`.
    pub rows: &'a [[f32; K]],
    /// Item biases, empty when the model has none.
    pub biases: &'a [f32],
}

impl<const K: usize> Catalogue<'_, K> {
    /// The rows of `items` (sorted, distinct) with their biases, as a round sends them.
    pub fn rows_of(&self, items: &[u32]) -> Result<Vec<(u32, [f32; K], f32)>> {
        items
            .iter()
            .map(|&i| {
                let row = self
                    .rows
                    .get(i as usize)
                    .ok_or_else(|| anyhow!("item {i} is not in the catalogue"))?;
                Ok((i, *row, self.biases.get(i as usize).copied().unwrap_or(0.0)))
            })
            .collect()
    }
}

impl Board {
    /// Runs `exchange` once and, after a failed one, resynchronises the board and runs it
    /// again; the second failure (or a lost board) is the error.
    fn retried<T>(&mut self, mut exchange: impl FnMut(&mut Board) -> Result<T>) -> Result<T> {
        match exchange(self) {
            Ok(t) => Ok(t),
            Err(e) => {
                self.stats.link_errors += 1;
                self.stats.retries += 1;
                tracing::warn!(board = %self.name, "board exchange failed, retrying: {e:#}");
                if let Err(e) = self.resync() {
                    self.lost = true;
                    return Err(e);
                }
                exchange(self)
            }
        }
    }

    /// The next message that is not a late `Hello` (a resync's repeated one), decoded by
    /// `read`; the board's `Error` is an error naming its code.
    pub(crate) fn reply<T>(
        &mut self,
        round: u32,
        read: impl Fn(Message<'_>) -> Result<T>,
    ) -> Result<T> {
        loop {
            let raw = self.read_frame()?;
            let name = self.name.clone();
            match self.decode(&raw)? {
                Message::Hello(_) => {}
                Message::Error(e) => bail!(
                    "board {name} refused round {round}: {:?} (detail {:?})",
                    e.code,
                    e.detail
                ),
                m => return read(m),
            }
        }
    }

    /// Asks for the top `k` of the round's reconstruction and streams `catalogue` through the
    /// board (in `job.down`); the answer's `(item, score)`, best first.
    fn top_k<const K: usize>(
        &mut self,
        job: &BoardJob,
        with_bias: bool,
        catalogue: &Catalogue<'_, K>,
        k: usize,
    ) -> Result<Vec<(u32, f32)>> {
        ensure!(
            (1..=TOP_K_MAX).contains(&k),
            "a board ranks at most {TOP_K_MAX} items (asked for {k})"
        );
        let name = self.name.clone();
        self.out.clear();
        let (buf, out) = (&mut self.buf, &mut self.out);
        let n = Message::TopKRequest(TopKRequest {
            round: job.round,
            k: k as u16,
        })
        .encode(buf)
        .map_err(|e| anyhow!("board {name}: encoding TopKRequest: {e}"))?;
        out.extend_from_slice(&buf[..n]);
        let rows = catalogue.rows;
        encode_item_rows::<f32, K, _>(
            job.round,
            job.down,
            with_bias,
            rows.len(),
            |i| {
                let bias = with_bias.then(|| catalogue.biases[i]);
                (i as u32, &rows[i], bias)
            },
            buf,
            |f: &[u8]| {
                out.extend_from_slice(f);
                Ok::<(), std::convert::Infallible>(())
            },
        )
        .map_err(|e| anyhow!("board {name}: encoding the catalogue: {e:?}"))?;
        let out = std::mem::take(&mut self.out);
        let sent = self.transmit(&out);
        self.out = out;
        self.stats.bytes_down += sent? as u64;
        let round = job.round;
        self.reply(round, |m| match m {
            Message::TopKAnswer(a) if a.round == round => {
                Ok(a.items.iter().map(|s| (s.item, s.score)).collect())
            }
            m => bail!("board {name}: expected TopKAnswer of round {round}, got {m:?}"),
        })
    }

    /// Evaluates a held-out user on the board: an `Evaluate` round with the rows of the
    /// user's items (`catalogue.rows_of`), answered by the metric sums over the held-out half;
    /// then, when `rank` is given, the top `rank` items of the board's reconstruction over
    /// the whole catalogue (its rated first half excluded). Retried once after a failure.
    pub fn evaluate_user<const K: usize>(
        &mut self,
        cfg: &RoundConfig,
        job: &BoardJob,
        catalogue: &Catalogue<'_, K>,
        rank: Option<usize>,
    ) -> Result<(Metrics, Option<Ranked>)> {
        let mut rated = job.items.clone();
        rated.sort_unstable();
        rated.dedup();
        crate::comm::extra_rows(cfg, &mut rated);
        let rows = catalogue.rows_of(&rated)?;
        let num_items = catalogue.rows.len() as u32;
        self.retried(|b| {
            b.send_round::<K>(RoundMode::Evaluate, cfg, num_items, &rows, job)?;
            let (round, name) = (job.round, b.name.clone());
            let metrics = b.reply(round, |m| match m {
                Message::EvalReport(r) if r.round == round && r.client == BOARD_CLIENT => {
                    Ok(r.metrics)
                }
                m => bail!("board {name}: expected the EvalReport of round {round}, got {m:?}"),
            })?;
            let top = match rank {
                Some(k) => Some(b.top_k::<K>(job, cfg.model.item_bias, catalogue, k)?),
                None => None,
            };
            b.stats.evaluations += 1;
            Ok((metrics, top))
        })
    }

    /// A user's top `k` unrated items, computed on the board: a `Reconstruct` round from
    /// every rating in `job` (its `cfg` decides the split), then the catalogue streamed
    /// through the board's top-k. Retried once after a failure.
    pub fn recommend<const K: usize>(
        &mut self,
        cfg: &RoundConfig,
        job: &BoardJob,
        catalogue: &Catalogue<'_, K>,
        k: usize,
    ) -> Result<Vec<(u32, f32)>> {
        let mut rated = job.items.clone();
        rated.sort_unstable();
        rated.dedup();
        crate::comm::extra_rows(cfg, &mut rated);
        let rows = catalogue.rows_of(&rated)?;
        let num_items = catalogue.rows.len() as u32;
        self.retried(|b| {
            b.send_round::<K>(RoundMode::Reconstruct, cfg, num_items, &rows, job)?;
            b.top_k::<K>(job, cfg.model.item_bias, catalogue, k)
        })
    }
}
