//! Run outputs: `metrics.jsonl` and `metrics.csv` (one record per round and per evaluation),
//! `items.npy` (the trained item matrix), `model.npz` (the model bundle every command reads:
//! [`bundle`]), `config.toml` (the configuration used), and the end-of-run summary table.
//!
//! Output policy: a run writes into its `--out` directory, creating it if needed. An existing
//! non-empty directory is refused (so a previous run is never clobbered) unless `--force` is
//! given; even then only fedrecon's own file names are overwritten, each atomically (written
//! beside the target, then renamed), and other files in the directory are left alone.

pub mod bundle;
pub mod checkpoint;
#[cfg(feature = "plots")]
pub mod plot;
pub mod run_dir;

pub use run_dir::{LOCK_FILE, RunDir};

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::comm::TrafficStats;
use crate::round::RoundStats;
use crate::round::evaluate::EvalReport;
use crate::server::privacy::PrivacySpent;

/// File names a run writes (`--force` overwrites only these).
pub const OUTPUT_FILES: [&str; 7] = [
    "metrics.jsonl",
    "metrics.csv",
    "items.npy",
    bundle::FILE,
    "config.toml",
    "train.png",
    "eval.png",
];

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A training round.
    Train {
        /// 1-based round.
        round: u32,
        /// Training loss (post-reconstruction batches, before each step); `null` for a skipped
        /// round, which trained nothing (a 0.0 there read as a perfect round).
        loss: Option<f64>,
        /// Training rating accuracy; `null` for a skipped round.
        rating_accuracy: Option<f64>,
        /// Wall-clock seconds of the round.
        seconds: f64,
        /// Bytes sent to devices, framing included.
        bytes_down: u64,
        /// Bytes of encoded updates received, framing included.
        bytes_up: u64,
        /// Of `bytes_down`, the messages alone (framing is the difference).
        #[serde(default)]
        payload_down: u64,
        /// Of `bytes_up`, the messages alone.
        #[serde(default)]
        payload_up: u64,
        /// Dropouts, rejected updates, a skipped round (fields present only when non-empty).
        #[serde(flatten)]
        faults: crate::round::faults::RoundFaults,
        /// Per-client bytes (mean, max) down and up, rows per update, update norms.
        #[serde(flatten)]
        traffic: TrafficStats,
        /// DP runs: privacy spent so far and the round's clipping.
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        privacy: Option<PrivacySpent>,
        /// Attack bench and robust aggregation figures (when either is on).
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        security: Option<crate::attack::RoundSecurity>,
    },
    /// An evaluation on held-out users.
    Eval(EvalReport),
}

impl From<&RoundStats> for Record {
    fn from(s: &RoundStats) -> Self {
        Record::Train {
            round: s.round,
            loss: (!s.faults.skipped).then_some(s.loss),
            rating_accuracy: (!s.faults.skipped).then_some(s.rating_accuracy),
            seconds: s.seconds,
            bytes_down: s.bytes_down,
            bytes_up: s.bytes_up,
            payload_down: s.payload_down,
            payload_up: s.payload_up,
            faults: s.faults.clone(),
            traffic: s.traffic,
            privacy: s.privacy,
            security: s.security,
        }
    }
}

/// CSV header of `metrics.csv` (empty cells where a record has no such field).
pub(crate) const CSV_HEADER: &str = "kind,round,split,loss,rating_accuracy,rmse,mae,recall_at_10,\
                              ndcg_at_10,seconds,bytes_down,bytes_up,bytes_down_mean,\
                              bytes_down_max,bytes_up_mean,bytes_up_max,rows_up_mean,\
                              update_norm_median,epsilon,delta";

/// A CSV cell of an optional number (empty when absent; `inf` when infinite).
fn cell(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl Record {
    /// The record as one CSV line (no newline).
    pub fn csv_line(&self) -> String {
        match self {
            Record::Train {
                round,
                loss,
                rating_accuracy,
                seconds,
                bytes_down,
                bytes_up,
                traffic: t,
                privacy,
                ..
            } => format!(
                "train,{round},,{},{},,,,,{seconds},{bytes_down},{bytes_up},\
                 {},{},{},{},{},{},{},{}",
                cell(*loss),
                cell(*rating_accuracy),
                t.bytes_down_mean,
                t.bytes_down_max,
                t.bytes_up_mean,
                t.bytes_up_max,
                t.rows_up_mean,
                t.update_norm_median,
                cell(privacy.map(|p| p.epsilon)),
                cell(privacy.map(|p| p.delta)),
            ),
            Record::Eval(e) => format!(
                "eval,{},{},{},{},{},{},{},{},,,,,,,,,,{},{}",
                e.round,
                e.split,
                e.loss,
                e.rating_accuracy,
                e.rmse,
                e.mae,
                e.recall_at_10,
                e.ndcg_at_10,
                cell(e.epsilon),
                cell(e.delta),
            ),
        }
    }
}

/// Creates `dir` or checks it may be written (see the module docs for the policy); the check
/// runs under the directory's lock ([`RunDir::create`]), released on return. A run holds a
/// [`RunDir`] instead, for its whole life.
pub fn prepare_out_dir(dir: &Path, force: bool) -> Result<()> {
    RunDir::create(dir, force).map(drop)
}

/// The one way fedrecon replaces a file: writes `bytes` to `path` crash-safely (a reader sees
/// the old or the new file, never a mix): a temporary file in the same directory, fsynced,
/// renamed over `path`, then the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tmp_path(path);
    let res = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| {
            fs::rename(&tmp, path)
                .with_context(|| format!("cannot move {} into place", path.display()))
        });
    if res.is_err() {
        // A full disk or a directory in the way leaves the old file, and no temporary.
        let _ = fs::remove_file(&tmp);
        return res;
    }
    // Persist the rename itself (directories can be opened and fsynced on Unix).
    if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Streams the metric records of a run into `metrics.jsonl` and `metrics.csv` (flushed after
/// every record, so a crashed or interrupted run keeps its history) and keeps them for plots.
pub struct MetricsLog {
    dir: PathBuf,
    jsonl: BufWriter<File>,
    csv: BufWriter<File>,
    records: Vec<Record>,
}

impl MetricsLog {
    /// Creates both files in `dir` (truncating fedrecon's own files of an earlier run).
    pub fn create(dir: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<BufWriter<File>> {
            let p = dir.join(name);
            Ok(BufWriter::new(File::create(&p).with_context(|| {
                format!("cannot create {}", p.display())
            })?))
        };
        let mut csv = open("metrics.csv")?;
        writeln!(csv, "{CSV_HEADER}").context("cannot write metrics.csv")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            jsonl: open("metrics.jsonl")?,
            csv,
            records: Vec::new(),
        })
    }

    /// Continues the files already in `dir` (a resumed run): opens both for appending and
    /// takes `records` as what they hold.
    pub fn append(dir: &Path, records: Vec<Record>) -> Result<Self> {
        let open = |name: &str| -> Result<BufWriter<File>> {
            let p = dir.join(name);
            let f = fs::OpenOptions::new()
                .append(true)
                .open(&p)
                .with_context(|| format!("cannot open {} to append", p.display()))?;
            Ok(BufWriter::new(f))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            jsonl: open("metrics.jsonl")?,
            csv: open("metrics.csv")?,
            records,
        })
    }

    /// Appends one record to both files.
    pub fn push(&mut self, r: Record) -> Result<()> {
        let line = serde_json::to_string(&r).context("cannot serialise a metrics record")?;
        let ctx = || format!("cannot write metrics in {}", self.dir.display());
        writeln!(self.jsonl, "{line}").with_context(ctx)?;
        writeln!(self.csv, "{}", r.csv_line()).with_context(ctx)?;
        self.jsonl.flush().with_context(ctx)?;
        self.csv.flush().with_context(ctx)?;
        self.records.push(r);
        Ok(())
    }

    /// The records written so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

/// The NPY v1.0 header for a C-order little-endian `f32` array of `shape` (public for the
/// fuzz seed generator, which writes valid and oversized headers).
pub fn npy_header(shape: &[usize]) -> Vec<u8> {
    npy_header_of("<f4", shape)
}

/// The NPY v1.0 header of a C-order array of numpy dtype `descr` (`<f4`, `<u4`, `<U12`, ...)
/// and `shape` (empty: a 0-d scalar).
pub(crate) fn npy_header_of(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + length (2) + dict + '\n' must be a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes a `rows × cols` `f32` matrix (row-major `data`) as an NPY v1.0 file, atomically.
pub fn write_npy(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    ensure!(data.len() == rows * cols, "npy data has the wrong length");
    let mut bytes = npy_header(&[rows, cols]);
    bytes.reserve(data.len() * 4);
    for x in data {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

/// Reads a 2-D little-endian `f32` C-order NPY file (v1.0 or v2.0): `(data, rows, cols)`.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_npy(&bytes).with_context(|| format!("{}: not a 2-D '<f4' NPY file", path.display()))
}

/// Parses the bytes of a 2-D `<f4` C-order NPY file: `(data, rows, cols)` (public for the
/// `npy` fuzz target: the bytes are untrusted).
pub fn parse_npy(bytes: &[u8]) -> Result<(Vec<f32>, usize, usize)> {
    let (descr, dims, body) = parse_npy_parts(bytes)?;
    ensure!(descr == "<f4", "dtype is not '<f4'");
    ensure!(dims.len() == 2, "shape {dims:?} is not 2-D");
    let (rows, cols) = (dims[0], dims[1]);
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((data, rows, cols))
}

/// Splits the bytes of a C-order NPY file (v1.0 to v3.0) into its dtype, its shape and its
/// data, checked to be exactly the shape's size for dtypes of a known width; the bytes are
/// untrusted (the `npy` fuzz target, model bundles).
pub(crate) fn parse_npy_parts(bytes: &[u8]) -> Result<(String, Vec<usize>, &[u8])> {
    ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        "bad magic"
    );
    let (hlen, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated header");
            let l = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (l as usize, 12)
        }
        v => bail!("unsupported NPY version {v}"),
    };
    ensure!(bytes.len() >= start + hlen, "truncated header");
    let header = std::str::from_utf8(&bytes[start..start + hlen]).context("header is not text")?;
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.trim_start().strip_prefix('\''))
        .and_then(|s| s.split('\'').next())
        .context("no dtype")?
        .to_owned();
    ensure!(
        header.contains("'fortran_order': False"),
        "array is in Fortran order"
    );
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.trim().trim_start_matches('('))
        .context("no shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().context("bad shape"))
        .collect::<Result<_>>()?;
    let body = &bytes[start + hlen..];
    let width = match descr.as_str() {
        "<f4" | "<u4" | "<i4" => Some(4),
        "<f8" | "<u8" | "<i8" => Some(8),
        d => d
            .strip_prefix("<U")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_mul(4)),
    };
    if let Some(width) = width {
        // The shape is untrusted: its byte count may not fit a usize.
        let need = dims
            .iter()
            .try_fold(width, |n, &d| n.checked_mul(d))
            .with_context(|| format!("shape {dims:?} is too large"))?;
        ensure!(
            body.len() == need,
            "data has {} bytes, shape {dims:?} of '{descr}' needs {need}",
            body.len()
        );
    }
    Ok((descr, dims, body))
}

/// The end-of-run table: last training round, and every validation/test evaluation's figures.
pub fn summary_table(records: &[Record], total_seconds: f64) -> String {
    let mut s = String::new();
    // The last round that trained (skipped rounds have no loss).
    let last_train = records.iter().rev().find_map(|r| match r {
        Record::Train {
            round,
            loss: Some(loss),
            rating_accuracy: Some(acc),
            ..
        } => Some((*round, *loss, *acc)),
        _ => None,
    });
    let (rounds, secs, up, down) = records.iter().fold((0, 0.0, 0u64, 0u64), |acc, r| match r {
        Record::Train {
            seconds,
            bytes_up,
            bytes_down,
            ..
        } => (
            acc.0 + 1,
            acc.1 + seconds,
            acc.2 + bytes_up,
            acc.3 + bytes_down,
        ),
        _ => acc,
    });
    let _ = writeln!(
        s,
        "{:<12} {:>6} {:>8} {:>9} {:>8} {:>8} {:>10} {:>9}",
        "", "round", "loss", "accuracy", "rmse", "mae", "recall@10", "ndcg@10"
    );
    if let Some((round, loss, acc)) = last_train {
        let _ = writeln!(
            s,
            "{:<12} {:>6} {:>8.4} {:>9.4} {:>8.4} {:>8} {:>10} {:>9}",
            "train (last)",
            round,
            loss,
            acc,
            loss.sqrt(),
            "-",
            "-",
            "-"
        );
    }
    let evals: Vec<&EvalReport> = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval(e) => Some(e),
            _ => None,
        })
        .collect();
    let vals: Vec<&EvalReport> = evals.iter().copied().filter(|e| e.split == "val").collect();
    let mut shown: Vec<(&str, &EvalReport)> = Vec::new();
    let picks = [
        ("val (first)", vals.first().copied()),
        (
            "val (best)",
            vals.iter()
                .copied()
                .min_by(|a, b| a.loss.total_cmp(&b.loss)),
        ),
        ("val (last)", vals.last().copied()),
    ];
    for (label, pick) in picks {
        // Rows for the same evaluation are shown once.
        if let Some(e) = pick.filter(|e| !shown.iter().any(|(_, s)| std::ptr::eq(*s, *e))) {
            shown.push((label, e));
        }
    }
    if let Some(test) = evals.iter().rev().find(|e| e.split == "test") {
        shown.push(("test (final)", test));
    }
    for (label, e) in shown {
        let _ = writeln!(
            s,
            "{:<12} {:>6} {:>8.4} {:>9.4} {:>8.4} {:>8.4} {:>10.4} {:>9.4}",
            label, e.round, e.loss, e.rating_accuracy, e.rmse, e.mae, e.recall_at_10, e.ndcg_at_10
        );
    }
    let (mut down_mean, mut up_mean, mut privacy) = (0.0, 0.0, None);
    for r in records {
        if let Record::Train {
            traffic,
            privacy: p,
            ..
        } = r
        {
            down_mean += traffic.bytes_down_mean / f64::from(rounds.max(1));
            up_mean += traffic.bytes_up_mean / f64::from(rounds.max(1));
            privacy = p.or(privacy);
        }
    }
    let _ = writeln!(
        s,
        "per client per round: {down_mean:.0} B down, {up_mean:.0} B up (mean over rounds)"
    );
    if let Some(p) = privacy {
        let _ = writeln!(
            s,
            "differential privacy: epsilon = {:.4} at delta = {:.3e} after {rounds} rounds \
             (RDP accountant, Poisson sampling assumed; the simulator samples a fixed number \
             of clients)",
            p.epsilon, p.delta
        );
    }
    let _ = writeln!(
        s,
        "{rounds} rounds in {secs:.2} s of rounds ({:.1} ms/round), {total_seconds:.2} s total; \
         {:.1} MB up, {:.1} MB down",
        if rounds > 0 {
            secs * 1e3 / rounds as f64
        } else {
            0.0
        },
        up as f64 / 1e6,
        down as f64 / 1e6
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header whose dimensions multiply past `usize` is refused, never wrapped (a wrapped
    /// product once matched a short body).
    #[test]
    fn npy_shape_overflow_is_an_error() {
        for (rows, cols) in [(1usize << 62, 4usize), (usize::MAX, 1), (1 << 40, 1 << 40)] {
            let bytes = npy_header(&[rows, cols]);
            let e = format!("{:#}", parse_npy(&bytes).unwrap_err());
            assert!(e.contains("too large"), "{rows}x{cols}: {e}");
        }
        // (2^62 + 1) x 4 floats wraps to 16 bytes: four floats must not pass as that shape.
        let mut bytes = npy_header(&[(1 << 62) + 1, 4]);
        bytes.extend_from_slice(&[0u8; 16]);
        assert!(parse_npy(&bytes).is_err());
    }

    #[test]
    fn npy_header_is_aligned_and_roundtrips() {
        let h = npy_header(&[3706, 50]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(*h.last().unwrap(), b'\n');
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let mut bytes = npy_header(&[2, 3]);
        for x in &data {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(parse_npy(&bytes).unwrap(), (data, 2, 3));
    }
}
