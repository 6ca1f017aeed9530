//! Ranks as threads of one process, joined by channels: the cluster without MPI, for tests
//! and for checking the protocol on any machine. A rank whose thread ends (or panics) drops its
//! channels, so its peers' next receive fails naming it instead of waiting forever.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::{Result, anyhow};

use super::{Link, Traffic, Transport};

/// The receiving end of one rank's messages from one peer.
type Inbox = Mutex<Receiver<Vec<u8>>>;

/// One rank's end of an in-process cluster.
#[derive(Debug)]
pub struct LocalTransport {
    rank: usize,
    size: usize,
    /// `to[j]`: the channel into rank `j`'s `from[self.rank]`.
    to: Vec<Option<Sender<Vec<u8>>>>,
    from: Vec<Option<Inbox>>,
    sent: AtomicU64,
    received: AtomicU64,
}

/// `size` connected ranks; hand each to its own thread.
pub fn cluster(size: usize) -> Vec<Link> {
    assert!(size > 0, "a cluster has at least one rank");
    let mut to: Vec<Vec<Option<Sender<Vec<u8>>>>> = (0..size)
        .map(|_| (0..size).map(|_| None).collect())
        .collect();
    let mut from: Vec<Vec<Option<Inbox>>> = (0..size)
        .map(|_| (0..size).map(|_| None).collect())
        .collect();
    for a in 0..size {
        for b in 0..size {
            if a != b {
                let (tx, rx) = channel();
                to[a][b] = Some(tx);
                from[b][a] = Some(Mutex::new(rx));
            }
        }
    }
    to.into_iter()
        .zip(from)
        .enumerate()
        .map(|(rank, (to, from))| {
            std::sync::Arc::new(LocalTransport {
                rank,
                size,
                to,
                from,
                sent: AtomicU64::new(0),
                received: AtomicU64::new(0),
            }) as Link
        })
        .collect()
}

impl Transport for LocalTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&self, to: usize, bytes: &[u8]) -> Result<()> {
        let tx = self
            .to
            .get(to)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow!("no rank {to} to send to"))?;
        tx.send(bytes.to_vec())
            .map_err(|_| anyhow!("rank {to} has ended"))?;
        self.sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn recv(&self, from: usize) -> Result<Vec<u8>> {
        let rx = self
            .from
            .get(from)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow!("no rank {from} to receive from"))?;
        let bytes = rx
            .lock()
            .map_err(|_| anyhow!("receiver of rank {from} poisoned"))?
            .recv()
            .map_err(|_| anyhow!("rank {from} has ended"))?;
        self.received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<()> {
        if self.rank == 0 {
            for r in 1..self.size {
                self.send(r, bytes)?;
            }
        } else {
            *bytes = self.recv(0)?;
        }
        Ok(())
    }

    fn exchange(&self, mut out: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        anyhow::ensure!(
            out.len() == self.size,
            "an exchange needs a message per rank"
        );
        // The channels never block a sender, so all sends can go first.
        for (r, bytes) in out.iter().enumerate().filter(|&(r, _)| r != self.rank) {
            self.send(r, bytes)?;
        }
        for (r, slot) in out.iter_mut().enumerate().filter(|&(r, _)| r != self.rank) {
            *slot = self.recv(r)?;
        }
        Ok(out)
    }

    fn traffic(&self) -> Traffic {
        Traffic {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }

    fn abort(&self, _: i32) {}
}

#[cfg(test)]
mod tests {
    use anyhow::ensure;

    use super::*;

    #[test]
    fn messages_arrive_in_order_and_a_finished_rank_is_named() {
        let mut ranks = cluster(3);
        let r2 = ranks.pop().unwrap();
        let r1 = ranks.pop().unwrap();
        let r0 = ranks.pop().unwrap();
        r0.send(1, b"a").unwrap();
        r0.send(1, b"bc").unwrap();
        let mut hello = b"hello".to_vec();
        r0.broadcast(&mut hello).unwrap();
        assert_eq!(r1.recv(0).unwrap(), b"a");
        assert_eq!(r1.recv(0).unwrap(), b"bc");
        let mut got = Vec::new();
        r1.broadcast(&mut got).unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(r0.traffic().sent, 1 + 2 + 5 + 5);
        assert_eq!(r1.traffic().received, 1 + 2 + 5);
        let mut got = Vec::new();
        r2.broadcast(&mut got).unwrap();
        assert_eq!(got, b"hello");
        // Every rank's message to every other one, in a single exchange each.
        let done: Vec<_> = [r0.clone(), r1.clone(), r2.clone()]
            .into_iter()
            .map(|l| {
                std::thread::spawn(move || {
                    let me = l.rank() as u8;
                    l.exchange((0..3u8).map(|to| vec![me, to]).collect())
                })
            })
            .collect();
        for (me, d) in done.into_iter().enumerate() {
            let got = d.join().unwrap().unwrap();
            let want: Vec<Vec<u8>> = (0..3u8).map(|from| vec![from, me as u8]).collect();
            assert_eq!(got, want);
        }
        drop(r2);
        let err = r0.recv(2).unwrap_err().to_string();
        assert!(err.contains("rank 2"), "{err}");
        ensure_size(&*r0).unwrap();
    }

    fn ensure_size(t: &dyn Transport) -> Result<()> {
        ensure!(t.size() == 3 && t.rank() == 0, "wrong shape");
        Ok(())
    }
}
