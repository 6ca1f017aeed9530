//! Boards with their own user (`--board-users`): each such board is one fixed user, as a
//! real device is. Its ratings are provisioned once (`Ratings` + `StoreRatings`, WIRE.md kind
//! 13), kept in the board's flash with a checksum, and announced by the board when asked
//! (`StoredData`, kind 12): a board that already holds them (a rebooted QEMU board whose
//! emulated flash is a host file, a real board after a power loss) is not sent them again.
//! The board then takes part only in rounds that sample its user, and the server sends only
//! the round's `RoundStart` and rows.

use anyhow::{Result, anyhow, bail, ensure};
use fedrecon_core::wire::{Message, RatingsDigest, StoreRatings, StoredData, encode_ratings};

use super::Board;

impl Board {
    /// Asks the board what it holds of its own (`StoredData` query, kind 12).
    pub fn stored(&mut self) -> Result<StoredData> {
        let name = self.name.clone();
        let n = Message::StoredData(StoredData {
            ratings: 0,
            digest: 0,
        })
        .encode(&mut self.buf)
        .map_err(|e| anyhow!("board {name}: encoding StoredData: {e}"))?;
        let frame = self.buf[..n].to_vec();
        self.transmit(&frame)?;
        self.reply(0, |m| match m {
            Message::StoredData(d) => Ok(d),
            m => bail!("board {name}: expected StoredData, got {m:?}"),
        })
    }

    /// Makes `user`'s ratings (dense ids) the board's own: provisions them unless the board
    /// already holds exactly them (same count and digest). Returns whether they were sent.
    pub fn provision(&mut self, user: u32, items: &[u32], ratings: &[f32]) -> Result<bool> {
        let name = self.name.clone();
        let want = RatingsDigest::of(items, ratings);
        let held = self.stored()?;
        self.owner = Some(user);
        if held == want {
            tracing::info!(board = %name, user, ratings = want.ratings, "board holds its user's ratings");
            return Ok(false);
        }
        ensure!(
            items.len() <= self.hello.max_examples as usize,
            "board {name}: user {user} has {} ratings, the board holds at most {}",
            items.len(),
            self.hello.max_examples
        );
        self.out.clear();
        let (buf, out) = (&mut self.buf, &mut self.out);
        let mut sink = |f: &[u8]| {
            out.extend_from_slice(f);
            Ok::<(), std::convert::Infallible>(())
        };
        encode_ratings(items, ratings, buf, &mut sink)
            .map_err(|e| anyhow!("board {name}: encoding ratings: {e:?}"))?;
        let n = Message::StoreRatings(StoreRatings {
            ratings: want.ratings,
            digest: want.digest,
        })
        .encode(buf)
        .map_err(|e| anyhow!("board {name}: encoding StoreRatings: {e}"))?;
        sink(&buf[..n]).expect("infallible");
        let out = std::mem::take(&mut self.out);
        let sent = self.transmit(&out);
        self.out = out;
        self.stats.bytes_down += sent? as u64;
        let got = self.reply(0, |m| match m {
            Message::StoredData(d) => Ok(d),
            m => bail!("board {name}: expected StoredData, got {m:?}"),
        })?;
        ensure!(
            got == want,
            "board {name} stored {got:?}, the server sent {want:?}"
        );
        self.stats.provisioned += 1;
        tracing::info!(board = %name, user, ratings = want.ratings, "board provisioned with its user's ratings");
        Ok(true)
    }

    /// The dense user this board is (`--board-users`), if any.
    pub fn owner(&self) -> Option<u32> {
        self.owner
    }
}

impl super::Boards {
    /// Gives board `i` the training user `users[i]` (dense ids) and provisions its ratings
    /// where the board does not hold them yet ([`Board::provision`]).
    pub fn provision(
        &mut self,
        users: &[u32],
        train: &crate::data::partition::ClientSet,
    ) -> Result<()> {
        ensure!(
            users.len() <= self.boards.len(),
            "--board-users names {} users for {} boards",
            users.len(),
            self.boards.len()
        );
        for (b, &user) in self.boards.iter_mut().zip(users) {
            let client = train.iter().find(|c| c.user == user).ok_or_else(|| {
                anyhow!(
                    "board {}: user {user} is not a training user (held out for \
                         evaluation, or filtered out)",
                    b.name
                )
            })?;
            b.provision(user, client.items, client.ratings)?;
        }
        Ok(())
    }
}
