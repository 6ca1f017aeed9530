//! Communication of a round (issue 8): what the server sends each device (the downlink), what
//! each device sends back (the uplink), and the bytes of both, counted from the real encoded
//! messages of `fedrecon_core::wire` (WIRE.md) in the framing of the link that carried them:
//! length-prefixed packets in process ([`transport::VIRTUAL_LINK`]), COBS + CRC-32 frames on a
//! board's serial link. The messages' own bytes ([`LinkBytes::payload`]) are reported beside
//! the totals, so a reader can price any other link.
//!
//! # Downlink (`--downlink`)
//!
//! A device's round starts with a `RoundStart` frame followed by `ItemRows` chunks:
//!
//! | mode | rows sent | values | reveals the client's items to the server |
//! |---|---|---|---|
//! | `full` (default, TFF) | the whole matrix | f32 | no |
//! | `full-i16`, `full-i8` | the whole matrix | i16 / i8, per-row scale | no |
//! | `needed`, `needed-i16`, `needed-i8` | the distinct items the client rated | f32 / i16 / i8 | **yes**: the request names them |
//!
//! The full matrix's `ItemRows` frames are identical for every client of a round, so they are
//! encoded once per round ([`DownlinkRound::prepare`]) and their length counted for every
//! client; the `RoundStart` (which carries the client's seed and row count) and the rows of a
//! `needed` request are encoded per client. With a quantized downlink the devices must train on
//! what they decode: the full matrix is encoded, the frames are decoded again exactly as a device
//! decodes them ([`wire::RowStream`]), and those dequantized rows are lent to every device of the
//! round and to evaluation. Quantization is per row, so the rows of a `needed-i*` request
//! decode to the same values as the same rows of the full matrix.
//!
//! # Uplink (`--update-mode`, `--uplink`, `--stochastic-rounding`)
//!
//! The device's update holds the rows it trained (docs/SEMANTICS.md: the delta of an untouched row is
//! zero). What goes on the wire:
//!
//! * `sparse` (default): the touched rows only; the server learns which items the client rated
//!   in its training half.
//! * `dense` (TFF parity): every row of the matrix, zero deltas included. The server learns
//!   nothing from the row set; the cost is the whole matrix.
//! * `padded`: the touched rows plus decoy rows with zero delta, drawn uniformly without
//!   replacement from the untouched items with a per-client seed, up to exactly `--pad-rows R`
//!   rows (sorted, so the position of a row says nothing). A client with more than `R` touched
//!   rows sends all of them (and so reveals that it is a heavy rater); the round's metrics count
//!   such clients (`padded_overflow`). The decoys hide *which* rows are real only up to their
//!   distribution: decoys are uniform over the catalogue while real rows follow item popularity,
//!   so the row set still carries statistical information; only `dense` hides it completely.
//!   Neither hides the real rows from a server that reads an individual update's values (the
//!   decoys and untouched rows are exactly zero): that needs secure aggregation, which is not
//!   simulated. Padding and dense hide the row set and the message length.
//!
//! Zero rows change neither the weighted mean (the weights are the clients', not the rows') nor
//! a client's L2 norm under DP clipping, so `dense`, `padded` and `sparse` train the same model
//! (tests check it bit for bit).
//!
//! Values travel as `--uplink f32|i16|i8` (per-row scale `max|x| / Q`, deterministic
//! round-half-away-from-zero in core's wire quantizer). `--stochastic-rounding` makes the
//! quantization unbiased: before encoding, the host moves every value onto the row's grid
//! `scale · {−Q..Q}` by rounding up with probability equal to the fractional part (per-client
//! seeded), so the wire quantizer's deterministic rounding then reproduces that grid point
//! exactly. It lives here rather than in core's quantizer so that the firmware's deterministic
//! encoder stays byte-identical. The server decodes the frames and aggregates the dequantized
//! values.

pub mod transport;

use std::str::FromStr;

use anyhow::{Result, anyhow, ensure};
use fedrecon_core::rng::DeviceRng;
use fedrecon_core::wire::{
    self, Kind, Message, PACKET_LEN_BYTES, RoundMode, RoundStart, RowEncoding, RowStream,
    next_packet,
};
use fedrecon_core::{RoundConfig, Scalar, Update};
use serde::{Deserialize, Serialize};

use crate::seeds::derive;

/// Which rows the server sends each device, and how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Downlink {
    /// The whole matrix in f32 (TFF).
    #[default]
    Full,
    /// Only the rows of the items the client rated, f32 (reveals them to the server).
    Needed,
    /// The whole matrix, i16 with a per-row scale.
    FullI16,
    /// The whole matrix, i8 with a per-row scale.
    FullI8,
    /// The needed rows, i16 (reveals the client's items).
    NeededI16,
    /// The needed rows, i8 (reveals the client's items).
    NeededI8,
}

impl Downlink {
    /// All modes, in the order of the docs.
    pub const ALL: [Downlink; 6] = [
        Downlink::Full,
        Downlink::Needed,
        Downlink::FullI16,
        Downlink::FullI8,
        Downlink::NeededI16,
        Downlink::NeededI8,
    ];

    /// The flag spelling.
    pub fn name(self) -> &'static str {
        match self {
            Downlink::Full => "full",
            Downlink::Needed => "needed",
            Downlink::FullI16 => "full-i16",
            Downlink::FullI8 => "full-i8",
            Downlink::NeededI16 => "needed-i16",
            Downlink::NeededI8 => "needed-i8",
        }
    }

    /// Whether the whole matrix is sent (otherwise only the client's rows).
    pub fn full(self) -> bool {
        matches!(self, Downlink::Full | Downlink::FullI16 | Downlink::FullI8)
    }

    /// The row encoding on the wire.
    pub fn encoding(self) -> RowEncoding {
        match self {
            Downlink::Full | Downlink::Needed => RowEncoding::F32,
            Downlink::FullI16 | Downlink::NeededI16 => RowEncoding::I16,
            Downlink::FullI8 | Downlink::NeededI8 => RowEncoding::I8,
        }
    }
}

impl FromStr for Downlink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Downlink::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown downlink '{s}' (expected full, needed, full-i16, full-i8, \
                     needed-i16 or needed-i8)"
                )
            })
    }
}

/// Which rows a device's update carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    /// Every row of the matrix, zero deltas included (TFF).
    Dense,
    /// The touched rows only.
    #[default]
    Sparse,
    /// The touched rows plus seeded zero-delta decoys up to `pad_rows`.
    Padded,
}

impl FromStr for UpdateMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(UpdateMode::Dense),
            "sparse" => Ok(UpdateMode::Sparse),
            "padded" => Ok(UpdateMode::Padded),
            other => Err(format!(
                "unknown update mode '{other}' (expected dense, sparse or padded)"
            )),
        }
    }
}

/// Value encoding of uploaded rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Uplink {
    /// Exact f32.
    #[default]
    F32,
    /// i16 with a per-row scale.
    I16,
    /// i8 with a per-row scale.
    I8,
}

impl Uplink {
    /// The row encoding on the wire.
    pub fn encoding(self) -> RowEncoding {
        match self {
            Uplink::F32 => RowEncoding::F32,
            Uplink::I16 => RowEncoding::I16,
            Uplink::I8 => RowEncoding::I8,
        }
    }
}

impl FromStr for Uplink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Uplink::F32),
            "i16" => Ok(Uplink::I16),
            "i8" => Ok(Uplink::I8),
            other => Err(format!(
                "unknown uplink '{other}' (expected f32, i16 or i8)"
            )),
        }
    }
}

/// The `[comm]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommConfig {
    /// Rows and encoding of the downlink.
    pub downlink: Downlink,
    /// Rows of the uplink.
    pub update_mode: UpdateMode,
    /// Rows of a padded update (clients with more touched rows send all of them).
    pub pad_rows: usize,
    /// Value encoding of the uplink.
    pub uplink: Uplink,
    /// Unbiased stochastic rounding of i16/i8 uplink values (per-client seeded).
    pub stochastic_rounding: bool,
}

impl Default for CommConfig {
    fn default() -> Self {
        Self {
            downlink: Downlink::Full,
            update_mode: UpdateMode::Sparse,
            // Both presets keep 300 ratings and train on half of them: at most 150 rows.
            pad_rows: 150,
            uplink: Uplink::F32,
            stochastic_rounding: false,
        }
    }
}

impl CommConfig {
    /// Checks the values (an error names the field).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.update_mode != UpdateMode::Padded || self.pad_rows > 0,
            "comm.pad_rows = 0: padded updates need at least one row"
        );
        ensure!(
            !self.stochastic_rounding || self.uplink != Uplink::F32,
            "comm.stochastic_rounding needs a quantized uplink (i16 or i8)"
        );
        Ok(())
    }
}

/// Seed tag of the uplink randomness (decoys, stochastic rounding); distinct from
/// [`crate::seeds::Purpose`]'s values.
const UPLINK_TAG: u64 = 0xC0_4D_17;

/// The per-client seed of the uplink's randomness (decoy rows and stochastic rounding): a
/// device-side secret in a deployment, derived from the experiment seed here.
pub fn uplink_seed(seed: u64, round: u32, user: u32) -> u64 {
    derive(&[seed, UPLINK_TAG, u64::from(round), u64::from(user)])
}

/// What is identical for every device of one round's downlink.
#[derive(Debug, Default)]
pub struct DownlinkRound {
    /// Bytes of the full matrix's `ItemRows` messages (0 unless the mode sends the full
    /// matrix), framed as in-process devices receive them ([`transport::VIRTUAL_LINK`]).
    pub full_rows_bytes: usize,
    /// Of which framing (the packets' length prefixes).
    pub full_rows_framing: usize,
    /// The rows the devices decode when the downlink is quantized (`items × K` then biases),
    /// `None` when they receive the server's f32 values exactly.
    pub dequantized: Option<Vec<f32>>,
}

impl DownlinkRound {
    /// Encodes the server's `params` (`num_items × K` row-major, then the item biases when
    /// `with_bias`) as this round's downlink would, and decodes them again when quantized.
    /// `buf` is frame scratch ([`crate::comm::transport::frame_buffer`]).
    pub fn prepare<const K: usize>(
        mode: Downlink,
        round: u32,
        params: &[f32],
        num_items: usize,
        with_bias: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Self> {
        let enc = mode.encoding();
        if !mode.full() && enc == RowEncoding::F32 {
            return Ok(Self::default());
        }
        let rows = params[..num_items * K].as_chunks::<K>().0;
        let biases = &params[num_items * K..];
        let mut bytes = Vec::new();
        let mut messages = 0;
        encode_rows(round, enc, with_bias, rows, biases, None, buf, |f| {
            bytes.extend_from_slice(f);
            messages += 1;
        })?;
        let dequantized = if enc == RowEncoding::F32 {
            None
        } else {
            let mut out = vec![0.0f32; params.len()];
            decode_rows::<K>(
                &bytes,
                round,
                enc,
                with_bias,
                num_items,
                buf,
                |item, r, b| {
                    let i = item as usize;
                    out[i * K..(i + 1) * K].copy_from_slice(r);
                    if let Some(b) = b {
                        out[num_items * K + i] = b;
                    }
                },
            )?;
            Some(out)
        };
        let full = mode.full();
        Ok(Self {
            full_rows_bytes: if full { bytes.len() } else { 0 },
            full_rows_framing: if full { messages * PACKET_LEN_BYTES } else { 0 },
            dequantized,
        })
    }
}

/// Encodes `rows` (all items, or those listed in `subset`, ascending) as `ItemRows` frames.
#[allow(clippy::too_many_arguments)]
fn encode_rows<const K: usize>(
    round: u32,
    enc: RowEncoding,
    with_bias: bool,
    rows: &[[f32; K]],
    biases: &[f32],
    subset: Option<&[u32]>,
    buf: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8]),
) -> Result<usize> {
    if buf.len() < wire::update_buf_len(K) {
        *buf = vec![0; wire::update_buf_len(K)];
    }
    let n = subset.map_or(rows.len(), <[u32]>::len);
    wire::encode_item_rows_in(
        transport::VIRTUAL_LINK,
        round,
        enc,
        with_bias,
        n,
        |i| {
            let item = subset.map_or(i as u32, |s| s[i]);
            let j = item as usize;
            (item, &rows[j], with_bias.then(|| biases[j]))
        },
        buf,
        |f: &[u8]| {
            sink(f);
            Ok::<(), std::convert::Infallible>(())
        },
    )
    .map_err(|e| anyhow!("encoding the item rows: {e}"))
}

/// Decodes `total` rows of `ItemRows` packets ([`transport::VIRTUAL_LINK`]) as a device does
/// (sequence, round, encoding, ascending items) and visits every row.
pub fn decode_rows<const K: usize>(
    bytes: &[u8],
    round: u32,
    enc: RowEncoding,
    with_bias: bool,
    total: usize,
    buf: &mut Vec<u8>,
    mut visit: impl FnMut(u32, &[f32; K], Option<f32>),
) -> Result<()> {
    if buf.len() < wire::update_buf_len(K) {
        *buf = vec![0; wire::update_buf_len(K)];
    }
    let mut stream = RowStream::new(round, 0, enc, with_bias, total as u32);
    let mut pos = 0;
    while pos < bytes.len() {
        let (used, res) = next_packet(&bytes[pos..], buf.len());
        pos += used;
        let frame = res.map_err(|e| anyhow!("downlink frame: {e}"))?;
        let Message::ItemRows(chunk) =
            Message::decode::<K>(&frame).map_err(|e| anyhow!("downlink frame: {e}"))?
        else {
            return Err(anyhow!("downlink frame is not ItemRows"));
        };
        stream
            .accept::<K>(&chunk, &mut visit)
            .map_err(|e| anyhow!("downlink rows: {e}"))?;
    }
    ensure!(stream.is_complete(), "downlink stream is truncated");
    Ok(())
}

/// Bytes a client's link carried: the messages plus the link's framing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkBytes {
    /// Every byte, framing included.
    pub total: u64,
    /// Of which framing: packet length prefixes in process; COBS, CRC and delimiters on a
    /// serial link.
    pub framing: u64,
}

impl LinkBytes {
    /// The messages' own bytes (what any link must carry).
    pub fn payload(self) -> u64 {
        self.total - self.framing
    }
}

/// Bytes one device downloads in a round, as in-process packets ([`transport::VIRTUAL_LINK`]):
/// its `RoundStart` message, then the full matrix's rows (counted from `down`) or the rows of
/// `needed` (encoded here). `needed` is the client's distinct rated items, ascending.
#[allow(clippy::too_many_arguments)]
pub fn client_downlink_bytes<const K: usize>(
    mode: Downlink,
    down: &DownlinkRound,
    start: RoundStart,
    params: &[f32],
    num_items: usize,
    needed: &[u32],
    buf: &mut Vec<u8>,
) -> Result<LinkBytes> {
    if buf.len() < wire::max_frame_buf_len(K) {
        *buf = vec![0; wire::max_frame_buf_len(K)];
    }
    let with_bias = start.config.model.item_bias;
    let start = RoundStart {
        rows: if mode.full() {
            num_items as u32
        } else {
            needed.len() as u32
        },
        down: mode.encoding(),
        ..start
    };
    let mut total = wire::encode_frame_in(transport::VIRTUAL_LINK, Kind::RoundStart, &start, buf)
        .map_err(|e| anyhow!("encoding RoundStart: {e}"))?;
    let mut framing = PACKET_LEN_BYTES;
    if mode.full() {
        total += down.full_rows_bytes;
        framing += down.full_rows_framing;
    } else {
        let rows = params[..num_items * K].as_chunks::<K>().0;
        encode_rows(
            start.round,
            mode.encoding(),
            with_bias,
            rows,
            &params[num_items * K..],
            Some(needed),
            buf,
            |f| {
                total += f.len();
                framing += PACKET_LEN_BYTES;
            },
        )?;
    }
    Ok(LinkBytes {
        total: total as u64,
        framing: framing as u64,
    })
}

/// The `RoundStart` a training device receives (row count and downlink encoding are filled in
/// by [`client_downlink_bytes`]).
pub fn round_start(
    round: u32,
    seed: u64,
    config: &RoundConfig,
    num_items: usize,
    up: Uplink,
) -> RoundStart {
    RoundStart {
        round,
        seed,
        mode: RoundMode::Train,
        config: *config,
        num_items: num_items as u32,
        rows: 0,
        down: RowEncoding::F32,
        up: up.encoding(),
    }
}

/// The rows a client's device reads besides its rated items' (with implicit feedback: their
/// implicit rows and the mean row), appended to the ascending `rated` list.
pub fn extra_rows(cfg: &fedrecon_core::RoundConfig, rated: &mut Vec<u32>) {
    if let fedrecon_core::Reconstruction::ExactImplicit { items, .. } = cfg.reconstruction {
        let imp = fedrecon_core::implicit::Implicit {
            items,
            lr: 0.0,
            both_halves: false,
        };
        let n = rated.len();
        for j in 0..n {
            rated.push(imp.implicit_row(rated[j]));
        }
        rated.push(imp.mean_row());
    }
}

/// Sorted distinct items of `items` into `out`.
pub fn distinct_sorted(items: &[u32], out: &mut Vec<u32>) {
    out.clear();
    out.extend_from_slice(items);
    out.sort_unstable();
    out.dedup();
}

/// The uplink rows of one client, built from its device update (see the module docs).
#[derive(Debug, Default)]
pub struct UplinkScratch {
    /// Row ids, ascending.
    pub items: Vec<u32>,
    /// Row values, `items.len() × K`.
    pub rows: Vec<f32>,
    /// Bias deltas parallel to `items` (empty without biases).
    pub biases: Vec<f32>,
    /// Touched rows of the device update.
    pub touched: usize,
    mark: Vec<bool>,
}

impl UplinkScratch {
    /// Fills the scratch with the rows `cfg` says the client sends for `update` (values in
    /// f32, stochastically rounded onto the uplink grid when asked) and returns them as an
    /// update to encode with `cfg.uplink`.
    pub fn shape<'s, S: Scalar, const K: usize>(
        &'s mut self,
        update: &Update<'_, S, K>,
        cfg: &CommConfig,
        num_items: usize,
        seed: u64,
    ) -> Update<'s, f32, K> {
        let with_bias = update.bias_deltas.is_some();
        self.items.clear();
        self.rows.clear();
        self.biases.clear();
        self.touched = update.items.len();
        let mut rng = DeviceRng::new(seed);
        let push_touched = |s: &mut Self, i: usize| {
            s.items.push(update.items[i]);
            s.rows.extend(update.deltas[i].iter().map(|x| x.to_f32()));
            if let Some(b) = update.bias_deltas {
                s.biases.push(b[i].to_f32());
            }
        };
        match cfg.update_mode {
            UpdateMode::Sparse => (0..update.items.len()).for_each(|i| push_touched(self, i)),
            UpdateMode::Dense | UpdateMode::Padded => {
                let target = match cfg.update_mode {
                    UpdateMode::Dense => num_items,
                    _ => cfg.pad_rows.min(num_items),
                };
                self.mark.clear();
                self.mark.resize(num_items, false);
                for &i in update.items {
                    self.mark[i as usize] = true;
                }
                let mut have = update.items.len();
                if target == num_items {
                    self.mark.fill(true);
                } else {
                    while have < target {
                        let j = rng.below(num_items as u32) as usize;
                        if !self.mark[j] {
                            self.mark[j] = true;
                            have += 1;
                        }
                    }
                }
                let mut t = 0;
                for j in 0..num_items {
                    if !self.mark[j] {
                        continue;
                    }
                    if update.items.get(t) == Some(&(j as u32)) {
                        push_touched(self, t);
                        t += 1;
                    } else {
                        self.items.push(j as u32);
                        self.rows.extend(std::iter::repeat_n(0.0, K));
                        if with_bias {
                            self.biases.push(0.0);
                        }
                    }
                }
            }
        }
        if cfg.stochastic_rounding {
            let q = qmax(cfg.uplink.encoding());
            for row in self.rows.as_chunks_mut::<K>().0 {
                stochastic_round(row, q, &mut rng);
            }
        }
        Update {
            items: &self.items,
            deltas: self.rows.as_chunks::<K>().0,
            bias_deltas: with_bias.then_some(self.biases.as_slice()),
            weight: update.weight,
            metrics: update.metrics,
        }
    }
}

// The quantizer's largest code and unbiased rounding live in core, so a board rounds as the
// simulator's devices do.
pub use fedrecon_core::wire::{qmax, stochastic_round};

/// The per-row scale core's wire quantizer uses: `max|x| / q` in f32.
pub fn row_scale(row: &[f32], q: f32) -> f32 {
    row.iter().fold(0.0f32, |m, x| m.max(x.abs())) / q
}

/// Bytes and rows of one round's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrafficStats {
    /// Mean bytes a participating client downloaded.
    pub bytes_down_mean: f64,
    /// Largest download.
    pub bytes_down_max: u64,
    /// Mean bytes a participating client uploaded.
    pub bytes_up_mean: f64,
    /// Largest upload.
    pub bytes_up_max: u64,
    /// Mean rows per upload.
    pub rows_up_mean: f64,
    /// Padded mode: clients with more touched rows than `pad_rows` (they sent all).
    pub padded_overflow: u32,
    /// Median L2 norm of the decoded updates (to choose a DP clip norm).
    pub update_norm_median: f64,
}

/// One participating client's traffic in a round.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClientTraffic {
    /// Bytes it downloaded.
    pub bytes_down: u64,
    /// Bytes of its encoded update.
    pub bytes_up: u64,
    /// Rows its update carried.
    pub rows: u32,
    /// Padded mode: it touched more rows than `pad_rows` (and sent them all).
    pub padded_overflow: bool,
    /// L2 norm of its decoded update.
    pub norm: f64,
}

impl TrafficStats {
    /// Summarises the participating clients' traffic.
    pub fn from_clients(clients: &[ClientTraffic]) -> Self {
        let n = clients.len().max(1) as f64;
        let mut norms: Vec<f64> = clients.iter().map(|c| c.norm).collect();
        norms.sort_by(f64::total_cmp);
        Self {
            bytes_down_mean: clients.iter().map(|c| c.bytes_down as f64).sum::<f64>() / n,
            bytes_down_max: clients.iter().map(|c| c.bytes_down).max().unwrap_or(0),
            bytes_up_mean: clients.iter().map(|c| c.bytes_up as f64).sum::<f64>() / n,
            bytes_up_max: clients.iter().map(|c| c.bytes_up).max().unwrap_or(0),
            rows_up_mean: clients.iter().map(|c| f64::from(c.rows)).sum::<f64>() / n,
            padded_overflow: clients.iter().filter(|c| c.padded_overflow).count() as u32,
            update_norm_median: if norms.is_empty() {
                0.0
            } else {
                norms[norms.len() / 2]
            },
        }
    }
}

/// L2 norm of an update's values (rows and biases), in f64.
pub fn l2_norm(rows: &[f32], biases: &[f32]) -> f64 {
    rows.iter()
        .chain(biases)
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}
