//! Crash-safe checkpoints of a training run (issue 9): `OUT/checkpoint.bin`, written every
//! `reliability.checkpoint_every` rounds and read by `fedrecon train --resume OUT`.
//!
//! # What is saved, and why that is the whole state
//!
//! The server's parameters (item rows, then item biases), the optimizer's state (step count
//! and moment/accumulator/velocity vectors, for every server optimizer), the number of rounds
//! completed, the run's configuration (TOML text, every value), a fingerprint of the data
//! partition and a digest of its contents, and the `metrics.jsonl` / `metrics.csv`
//! text written up to and including the checkpointed round. There is no RNG state to save:
//! every random draw of a round (client sample, dropouts, device seeds, evaluation sample) is
//! derived from `(run.seed, purpose, round, user)` ([`crate::seeds`]), and the item matrix is
//! drawn only once before round 1, so the round number is the sampling state. (A future
//! component with a stateful generator, such as server-side DP noise, must add its state here
//! and bump [`VERSION`].)
//!
//! # File format (all integers little-endian)
//!
//! ```text
//! magic     8 bytes  "FRCKPT\r\n"
//! version   u32      2
//! body_len  u64      bytes of body
//! crc32     u32      CRC-32 (IEEE) of body
//! body:
//!   round u32 · config str · data_dir str · fingerprint 7 × u64 · data digest u64
//!   params vec · optimizer tag u8 (0 sgd, 1 adam, 2 adagrad, 3 yogi, 4 momentum) · t u32
//!   · n u32 · n × vec
//!   metrics.jsonl str · metrics.csv str
//! str = u64 length + UTF-8 bytes; vec = u64 length + f32 values
//! ```
//!
//! Writing is atomic: a temporary file in the same directory is written and fsynced, renamed
//! over `checkpoint.bin`, and the directory is fsynced, so a crash leaves either the previous
//! checkpoint or the new one, never a torn file; a corrupted one fails its checksum.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use fedrecon_core::wire::crc::crc32;

use crate::data::partition::Partition;
use crate::output::Record;
use crate::server::ServerOptimizer;

/// File name of the checkpoint inside the output directory.
pub const FILE: &str = "checkpoint.bin";
/// Magic bytes at the start of a checkpoint (public for the fuzz target).
pub const MAGIC: [u8; 8] = *b"FRCKPT\r\n";
/// Format version written (and the only one read); public for the fuzz target, which wraps
/// its input in a valid header.
pub const VERSION: u32 = 2;
const HEADER: usize = 8 + 4 + 8 + 4;

/// One checkpoint (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Rounds completed.
    pub round: u32,
    /// The run's configuration as TOML (`config.toml`).
    pub config_toml: String,
    /// The `--data` directory of the run (empty when unknown).
    pub data_dir: PathBuf,
    /// Users and examples of train/val/test, and the catalogue size.
    pub fingerprint: [u64; 7],
    /// [`data_digest`] of the partition: the same shape with other ratings is other data.
    pub data_digest: u64,
    /// Server parameters.
    pub params: Vec<f32>,
    /// Optimizer kind: 0 SGD, 1 Adam, 2 Adagrad, 3 Yogi, 4 momentum.
    pub opt_tag: u8,
    /// Optimizer step count (Adam, Yogi).
    pub opt_t: u32,
    /// Optimizer vectors: Adam/Yogi `[m, v]`, Adagrad `[acc]`, momentum `[velocity]`, SGD none.
    pub opt_vecs: Vec<Vec<f32>>,
    /// `metrics.jsonl` up to the checkpoint.
    pub metrics_jsonl: String,
    /// `metrics.csv` up to the checkpoint.
    pub metrics_csv: String,
}

/// The fingerprint of a partition: users and examples per split, and items.
pub(crate) fn fingerprint(part: &Partition, num_items: usize) -> [u64; 7] {
    [
        part.train.len() as u64,
        part.train.examples() as u64,
        part.val.len() as u64,
        part.val.examples() as u64,
        part.test.len() as u64,
        part.test.examples() as u64,
        num_items as u64,
    ]
}

/// A 64-bit FNV-1a digest of what a run trains and evaluates on: every client of every split
/// (user, items, rating bits) and the catalogue size. Not cryptographic: it tells a resume
/// that the data changed (e.g. every rating r replaced by 6 − r), which counts cannot.
pub(crate) fn data_digest(part: &Partition, num_items: usize) -> u64 {
    let mut h = Fnv::new();
    h.eat(num_items as u32);
    for set in [&part.train, &part.val, &part.test] {
        h.eat(set.len() as u32);
        for c in set.iter() {
            h.eat(c.user);
            h.eat(c.items.len() as u32);
            c.items.iter().for_each(|&i| h.eat(i));
            c.ratings.iter().for_each(|r| h.eat(r.to_bits()));
        }
    }
    h.finish()
}

/// 64-bit FNV-1a over little-endian `u32` words: [`data_digest`]'s hash, shared with the
/// digests of data that is not a user partition (the centralized seen-user split).
pub(crate) struct Fnv(u64);

impl Fnv {
    const PRIME: u64 = 0x0000_0100_0000_01B3;

    /// The empty digest.
    pub(crate) fn new() -> Self {
        Fnv(0xCBF2_9CE4_8422_2325)
    }

    /// Adds one word.
    pub(crate) fn eat(&mut self, w: u32) {
        for b in w.to_le_bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    /// The digest so far.
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// The optimizer's state as `(tag, t, vectors)`.
pub(crate) fn optimizer_state(opt: &ServerOptimizer) -> (u8, u32, Vec<Vec<f32>>) {
    match opt {
        ServerOptimizer::Sgd { .. } => (0, 0, Vec::new()),
        ServerOptimizer::Adam { t, m, v, .. } => (1, *t, vec![m.clone(), v.clone()]),
        ServerOptimizer::Adagrad { acc, .. } => (2, 0, vec![acc.clone()]),
        ServerOptimizer::Yogi { t, m, v, .. } => (3, *t, vec![m.clone(), v.clone()]),
        ServerOptimizer::Momentum { v, .. } => (4, 0, vec![v.clone()]),
    }
}

impl Checkpoint {
    /// Puts the saved optimizer state into `opt` (freshly built from the same configuration).
    pub fn restore_optimizer(&self, opt: &mut ServerOptimizer) -> Result<()> {
        let (tag, _, fresh) = optimizer_state(opt);
        ensure!(
            tag == self.opt_tag,
            "the checkpoint's server optimizer (kind {}) differs from the configuration's (kind {tag})",
            self.opt_tag
        );
        ensure!(
            fresh.len() == self.opt_vecs.len()
                && fresh
                    .iter()
                    .zip(&self.opt_vecs)
                    .all(|(a, b)| a.len() == b.len()),
            "the checkpoint's optimizer state has the wrong shape"
        );
        match opt {
            ServerOptimizer::Sgd { .. } => {}
            ServerOptimizer::Adam { t, m, v, .. } | ServerOptimizer::Yogi { t, m, v, .. } => {
                *t = self.opt_t;
                m.clone_from(&self.opt_vecs[0]);
                v.clone_from(&self.opt_vecs[1]);
            }
            ServerOptimizer::Adagrad { acc, .. } => acc.clone_from(&self.opt_vecs[0]),
            ServerOptimizer::Momentum { v, .. } => v.clone_from(&self.opt_vecs[0]),
        }
        Ok(())
    }

    /// The metric records saved with the checkpoint.
    pub fn records(&self) -> Result<Vec<Record>> {
        self.metrics_jsonl
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("checkpoint metrics line {}", i + 1))
            })
            .collect()
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.params.len() * 4);
        b.extend_from_slice(&self.round.to_le_bytes());
        put_str(&mut b, &self.config_toml);
        put_str(&mut b, &self.data_dir.to_string_lossy());
        for x in self.fingerprint {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.extend_from_slice(&self.data_digest.to_le_bytes());
        put_vec(&mut b, &self.params);
        b.push(self.opt_tag);
        b.extend_from_slice(&self.opt_t.to_le_bytes());
        b.extend_from_slice(&(self.opt_vecs.len() as u32).to_le_bytes());
        for v in &self.opt_vecs {
            put_vec(&mut b, v);
        }
        put_str(&mut b, &self.metrics_jsonl);
        put_str(&mut b, &self.metrics_csv);
        let mut out = Vec::with_capacity(HEADER + b.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32(&b).to_le_bytes());
        out.extend_from_slice(&b);
        out
    }

    /// Parses and verifies a checkpoint file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint> {
        ensure!(
            bytes.len() >= HEADER && bytes[..8] == MAGIC,
            "not a fedrecon checkpoint (bad magic or shorter than its header)"
        );
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        ensure!(
            version == VERSION,
            "checkpoint format version {version} is not supported (this build reads version \
             {VERSION}; version 1 lacks the data digest and momentum state, so such a run must be \
             started again)"
        );
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        let body = &bytes[HEADER..];
        ensure!(
            body.len() as u64 == len,
            "checkpoint is truncated or padded: header says {len} body bytes, file has {}",
            body.len()
        );
        let actual = crc32(body);
        ensure!(
            actual == stored,
            "checkpoint checksum mismatch (stored CRC-32 {stored:08x}, computed {actual:08x}): \
             the file is corrupted"
        );
        let mut r = Reader { b: body, pos: 0 };
        let round = r.u32()?;
        let config_toml = r.str()?;
        let data_dir = PathBuf::from(r.str()?);
        let mut fingerprint = [0u64; 7];
        for x in &mut fingerprint {
            *x = r.u64()?;
        }
        let data_digest = r.u64()?;
        let params = r.vec()?;
        let opt_tag = r.take(1)?[0];
        ensure!(opt_tag <= 4, "unknown optimizer kind {opt_tag}");
        let opt_t = r.u32()?;
        let n = r.u32()?;
        ensure!(n <= 2, "{n} optimizer vectors (at most 2)");
        let opt_vecs = (0..n).map(|_| r.vec()).collect::<Result<_>>()?;
        let metrics_jsonl = r.str()?;
        let metrics_csv = r.str()?;
        ensure!(
            r.pos == body.len(),
            "trailing bytes after the checkpoint body"
        );
        Ok(Checkpoint {
            round,
            config_toml,
            data_dir,
            fingerprint,
            data_digest,
            params,
            opt_tag,
            opt_t,
            opt_vecs,
            metrics_jsonl,
            metrics_csv,
        })
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_vec(b: &mut Vec<u8>, v: &[f32]) {
    b.extend_from_slice(&(v.len() as u64).to_le_bytes());
    for x in v {
        b.extend_from_slice(&x.to_le_bytes());
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(
            self.b.len() - self.pos >= n,
            "checkpoint body ends early (at byte {})",
            self.pos
        );
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn len(&mut self, unit: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.b.len() - self.pos) as u64;
        ensure!(
            n.checked_mul(unit as u64).is_some_and(|x| x <= left),
            "checkpoint length field {n} exceeds the {left} bytes left"
        );
        Ok(n as usize)
    }
    fn str(&mut self) -> Result<String> {
        let n = self.len(1)?;
        String::from_utf8(self.take(n)?.to_vec()).context("checkpoint text is not UTF-8")
    }
    fn vec(&mut self) -> Result<Vec<f32>> {
        let n = self.len(4)?;
        Ok(self
            .take(n * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect())
    }
}

/// Saves a checkpoint into `dir`, with the metric files as they are now on disk.
pub(crate) fn save(dir: &Path, mut ck: Checkpoint) -> Result<()> {
    let read = |name: &str| {
        let p = dir.join(name);
        fs::read_to_string(&p).with_context(|| format!("checkpoint: cannot read {}", p.display()))
    };
    ck.metrics_jsonl = read("metrics.jsonl")?;
    ck.metrics_csv = read("metrics.csv")?;
    crate::output::write_atomic(&dir.join(FILE), &ck.encode())
        .with_context(|| format!("writing the checkpoint of round {}", ck.round))
}

/// Reads and verifies `dir/checkpoint.bin`, with errors naming the file.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join(FILE);
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{}: no checkpoint ({} does not exist; the run was started without \
             --checkpoint-every or stopped before its first checkpoint)",
            dir.display(),
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Checkpoint::decode(&bytes).with_context(|| format!("{}", path.display()))
}

/// Rewrites `metrics.jsonl` and `metrics.csv` in `dir` to what they were at the checkpoint
/// (dropping rows of rounds after it), each atomically.
pub(crate) fn rewind_metrics(dir: &Path, ck: &Checkpoint) -> Result<()> {
    crate::output::write_atomic(&dir.join("metrics.jsonl"), ck.metrics_jsonl.as_bytes())?;
    crate::output::write_atomic(&dir.join("metrics.csv"), ck.metrics_csv.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            round: 7,
            config_toml: "preset = \"tutorial\"\n".into(),
            data_dir: "/data/ml-1m".into(),
            fingerprint: [1, 2, 3, 4, 5, 6, 7],
            data_digest: 0x0123_4567_89AB_CDEF,
            params: vec![0.5, -1.25, f32::MIN_POSITIVE],
            opt_tag: 1,
            opt_t: 7,
            opt_vecs: vec![vec![1.0; 3], vec![2.0; 3]],
            metrics_jsonl: "{\"kind\":\"train\"}\n".into(),
            metrics_csv: "kind\n".into(),
        }
    }

    /// Metrics read back from a checkpoint are the bits that were written: a resumed run's
    /// records equal the uninterrupted run's (serde_json's default float parser was off by one
    /// ulp on 3.6023056267773286, caught by Python's resume test).
    #[test]
    fn metrics_floats_read_back_exactly() {
        let x = 3.602_305_626_777_328_6_f64;
        let line = format!(
            "{{\"kind\":\"eval\",\"split\":\"val\",\"round\":0,\"loss\":{x},\
             \"rating_accuracy\":0.0,\"rmse\":{x},\"mae\":0.1,\"recall_at_10\":0.09243036103330221,\
             \"ndcg_at_10\":0.1,\"users\":30,\"ranked_users\":30,\"examples\":586}}\n"
        );
        let ck = Checkpoint {
            metrics_jsonl: line,
            ..sample()
        };
        let records = ck.records().unwrap();
        let Record::Eval(e) = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!(e.rmse.to_bits(), x.to_bits());
        assert_eq!(
            e.recall_at_10.to_bits(),
            0.092_430_361_033_302_21_f64.to_bits()
        );
        assert_eq!(
            serde_json::to_string(&records[0]).unwrap() + "\n",
            ck.metrics_jsonl
        );
    }

    /// Every server optimizer's state survives a checkpoint (momentum used to be written as
    /// kind 4 and refused on reading: "unknown optimizer kind 4").
    #[test]
    fn every_optimizer_state_roundtrips() {
        use crate::config::ServerConfig;
        let configs = [
            ServerConfig::Sgd { lr: 1.0 },
            ServerConfig::Momentum {
                lr: 1.0,
                momentum: 0.9,
                nesterov: true,
            },
            ServerConfig::Adam {
                lr: 0.1,
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-7,
            },
            ServerConfig::Adagrad {
                lr: 0.1,
                initial_accumulator: 0.1,
                epsilon: 1e-7,
            },
            ServerConfig::Yogi {
                lr: 0.1,
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-3,
                initial_accumulator: 1e-6,
            },
        ];
        for cfg in configs {
            let mut trained = ServerOptimizer::new(&cfg, 3);
            let mut params = vec![0.25f32, -0.5, 1.0];
            for g in [[0.5f32, -1.0, 0.25], [0.125, 0.5, -2.0]] {
                trained.step(&mut params, &g);
            }
            let (opt_tag, opt_t, opt_vecs) = optimizer_state(&trained);
            let ck = Checkpoint {
                opt_tag,
                opt_t,
                opt_vecs,
                ..sample()
            };
            let back =
                Checkpoint::decode(&ck.encode()).unwrap_or_else(|e| panic!("{cfg:?}: {e:#}"));
            let mut fresh = ServerOptimizer::new(&cfg, 3);
            back.restore_optimizer(&mut fresh).unwrap();
            assert_eq!(
                optimizer_state(&fresh),
                optimizer_state(&trained),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn roundtrip_and_every_corruption_is_detected() {
        let ck = sample();
        let bytes = ck.encode();
        assert_eq!(Checkpoint::decode(&bytes).unwrap(), ck);
        // Any single flipped bit anywhere is an error, never a different checkpoint.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1 << (i % 8);
            assert!(Checkpoint::decode(&b).is_err(), "bit flip at byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        let mut b = bytes.clone();
        *b.last_mut().unwrap() ^= 0xFF;
        let e = format!("{:#}", Checkpoint::decode(&b).unwrap_err());
        assert!(e.contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn durable_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(FILE);
        crate::output::write_atomic(&p, b"one").unwrap();
        crate::output::write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
