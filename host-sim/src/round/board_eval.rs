//! Held-out users evaluated on boards (`BoardOptions::evaluate`): like training, each board
//! takes the first users of the evaluation sample that fit it, one per board, runs the
//! `Evaluate` round and, when the user has relevant held-out items, ranks the whole catalogue
//! with its own reconstruction ([`crate::board::eval`]). The server turns the board's metric
//! sums and top-10 into the same [`UserEval`] a virtual device's evaluation gives, so the
//! figures are identical; a board that fails twice leaves its user to a virtual device.

use fedrecon_core::wire::RowEncoding;
use fedrecon_core::{Phase, RoundConfig, Scalar};

use crate::board::eval::Catalogue;
use crate::board::{BoardJob, Boards, trains};
use crate::data::partition::Client;
use crate::round::evaluate::{RELEVANT_RATING, TOP_K, UserEval, ranking_metrics};

/// One held-out user given to a board.
#[derive(Debug)]
pub(crate) struct BoardEval {
    /// Position of the user in the evaluation sample.
    pub(crate) pos: usize,
    /// The board.
    pub(crate) board: usize,
    /// What the board is sent.
    pub(crate) job: BoardJob,
    /// The user's relevant held-out items (sorted), known to the server as the labels.
    relevant: Vec<u32>,
}

/// The distinct items of the held-out half of `client` (split by `rc` exactly as the device
/// splits it) rated at least [`RELEVANT_RATING`] in scalar `S`, sorted.
pub(crate) fn relevant_items<S: Scalar>(rc: &RoundConfig, client: &Client<'_>) -> Vec<u32> {
    let mut order = vec![0u16; client.len()];
    let kept = rc.split.order(client.len(), &mut order);
    let mut out: Vec<u32> = rc
        .split
        .schedule(Phase::PostReconstruction, kept)
        .flatten()
        .map(|pos| usize::from(order[pos]))
        .filter(|&e| S::from_f32(client.ratings[e]).to_f32() >= RELEVANT_RATING)
        .map(|e| client.items[e])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Picks, for each board in turn, the first user of `users` (in order) it can evaluate:
/// `user(pos)` gives the user's data, round configuration and seed. Users whose split leaves
/// a phase empty stay virtual (the device skips them either way).
pub(crate) fn assign<'c, S: Scalar>(
    boards: &Boards,
    users: usize,
    round: u32,
    down: RowEncoding,
    user: impl Fn(usize) -> (Client<'c>, RoundConfig, u64),
) -> Vec<BoardEval> {
    let mut out = Vec::new();
    let mut next = 0;
    for (board, b) in boards.boards().iter().enumerate() {
        // A board with its own user keeps that user's data: it evaluates nobody else.
        if b.owner().is_some() {
            continue;
        }
        while next < users {
            let pos = next;
            next += 1;
            let (client, rc, seed) = user(pos);
            if !trains(&rc, client.len()) || !b.fits(client.len(), None) {
                continue;
            }
            out.push(BoardEval {
                pos,
                board,
                relevant: relevant_items::<S>(&rc, &client),
                job: BoardJob {
                    round,
                    items: client.items.to_vec(),
                    ratings: client.ratings.to_vec(),
                    seed,
                    cfg: rc,
                    down,
                    up: RowEncoding::F32,
                    shape: None,
                    provisioned: false,
                },
            });
            break;
        }
    }
    out
}

/// Runs `jobs` on their boards, each on its own thread; `(pos, result)` per job, `None` when
/// the board failed (the caller evaluates that user virtually).
pub(crate) fn run<const K: usize>(
    boards: &mut Boards,
    jobs: &[BoardEval],
    catalogue: &Catalogue<'_, K>,
) -> Vec<(usize, Option<UserEval>)> {
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (board, b) in boards.boards_mut().iter_mut().enumerate() {
            let Some(j) = jobs.iter().find(|j| j.board == board) else {
                continue;
            };
            handles.push(scope.spawn(move || {
                let rank = (!j.relevant.is_empty()).then_some(TOP_K);
                let res = b.evaluate_user::<K>(&j.job.cfg, &j.job, catalogue, rank);
                let eval = match res {
                    Ok((metrics, top)) => Some(UserEval {
                        metrics,
                        ranking: top.map(|top| {
                            ranking_metrics(top.iter().map(|&(item, _)| item), &j.relevant)
                        }),
                        // Boards evaluate only runs without an attack target (round/mod.rs).
                        target_hit: None,
                    }),
                    Err(e) => {
                        tracing::warn!(
                            board = %b.name(),
                            "evaluation on the board failed, evaluated virtually: {e:#}"
                        );
                        None
                    }
                };
                (j.pos, eval)
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((usize::MAX, None)))
            .collect()
    })
}
