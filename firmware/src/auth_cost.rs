//! The cost of authenticated frames (core/WIRE.md section 7) on the device, for the footprint
//! round (`footprint.rs`: K = 50, f32, 300 rated rows received, 150 trained rows sent): the
//! device opens the round's downlink (`RoundStart`, then the 300 rows as 38 `ItemRows`
//! chunks) and seals its uplink (`UpdateBegin`, then 150 rows as 19 `UpdateRows` chunks).
//! Every frame is counted twice, sealed and plain (open vs. the layer-one check, seal vs. the
//! plain encoder, same payload), so the difference is what authentication adds per round.
//! Run by `cargo footprint` (the `auth-cost` image).

use crate::counter::{Counter, INSN_PER_TICK};
use fedrecon_core::wire::auth::{DeviceKey, Role, SEAL_LEN, Session};
use fedrecon_core::wire::{
    Frame, Kind, ROWS_PER_CHUNK, encode_frame_with, max_payload, next_raw_frame,
};

/// Embedding width (as the footprint round).
const K: usize = 50;
/// Rows the device receives (every rated item's row) and sends (the trained rows).
const DOWN_ROWS: usize = 300;
const UP_ROWS: usize = 150;
/// Bytes of the largest frame buffer: an f32 `RowChunk` at K = 50, sealed.
const BUF: usize = fedrecon_core::wire::auth::sealed_frame_buf_len(1700);

/// Payload bytes of an f32 row chunk of `rows` rows (the full chunk's size less the missing
/// rows' stride; within a byte of postcard's for a partial chunk).
fn chunk_payload(rows: usize) -> usize {
    let full = max_payload(Kind::ItemRows, K);
    let stride = (full - 27) / ROWS_PER_CHUNK;
    full - (ROWS_PER_CHUNK - rows) * stride
}

/// The frames of one direction of the round: (kind, payload length).
fn frames(begin: (Kind, usize), chunk: Kind, rows: usize, out: &mut [(Kind, usize); 40]) -> usize {
    out[0] = begin;
    let mut n = 1;
    let mut left = rows;
    while left > 0 {
        let c = left.min(ROWS_PER_CHUNK);
        out[n] = (chunk, chunk_payload(c));
        n += 1;
        left -= c;
    }
    n
}

/// Fills a payload with bytes that look like row data (no zero runs matter to the cost).
fn fill(p: &mut [u8], len: usize, salt: u8) -> usize {
    for (i, b) in p[..len].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(salt) | 1;
    }
    len
}

/// Counts, prints one `auth ...` line and exits QEMU (0, or 1 if a frame failed to open).
pub fn run() -> ! {
    #[cfg(target_arch = "arm")]
    let Some(mut p) = cortex_m::Peripherals::take() else {
        fail("peripherals already taken")
    };
    let key = DeviceKey([0x5a; 32]);
    let mut server = Session::new(&key, Role::Server, 1, 0x1234_5678_9abc_def0, 7);
    let mut device = Session::new(&key, Role::Device, 1, 0x1234_5678_9abc_def0, 7);
    let mut down = [(Kind::Hello, 0usize); 40];
    let mut up = [(Kind::Hello, 0usize); 40];
    let nd = frames(
        (Kind::RoundStart, max_payload(Kind::RoundStart, K)),
        Kind::ItemRows,
        DOWN_ROWS,
        &mut down,
    );
    let nu = frames(
        (Kind::UpdateBegin, max_payload(Kind::UpdateBegin, K)),
        Kind::UpdateRows,
        UP_ROWS,
        &mut up,
    );
    let mut buf = [0u8; BUF];
    let mut raw = [0u8; BUF];
    let (mut open_ticks, mut check_ticks, mut seal_ticks, mut plain_ticks) = (0u64, 0, 0, 0);
    let (mut bytes_down, mut bytes_up) = (0usize, 0usize);
    macro_rules! count {
        ($acc:ident, $e:expr) => {{
            #[cfg(target_arch = "arm")]
            let c = Counter::start(&mut p.SYST);
            #[cfg(target_arch = "riscv32")]
            let c = Counter::start();
            let r = $e;
            $acc += c.ticks();
            r
        }};
    }
    // Downlink: the server seals (not counted), the device opens; the plain frame of the same
    // payload is checked for comparison.
    for (i, &(kind, len)) in down[..nd].iter().enumerate() {
        let n = match server.seal_frame_with(kind, &mut buf, |p| Ok(fill(p, len, i as u8))) {
            Ok(n) => n,
            Err(_) => fail("seal"),
        };
        bytes_down += n;
        let (_, r) = next_raw_frame(&buf[..n], &mut raw);
        let Ok(Some(r)) = r else { fail("cobs") };
        let opened = count!(open_ticks, device.open(r).map(|f| f.payload.len()));
        if opened != Ok(len) {
            fail("open")
        }
        let n = match encode_frame_with(kind, &mut buf, |p| Ok(fill(p, len, i as u8))) {
            Ok(n) => n,
            Err(_) => fail("encode"),
        };
        let (_, r) = next_raw_frame(&buf[..n], &mut raw);
        let Ok(Some(r)) = r else { fail("cobs") };
        let checked = count!(check_ticks, Frame::check(r).map(|f| f.payload.len()));
        if checked != Ok(len) {
            fail("check")
        }
    }
    // Uplink: the device seals; the plain encoder of the same payload for comparison.
    for (i, &(kind, len)) in up[..nu].iter().enumerate() {
        let n = count!(
            seal_ticks,
            device.seal_frame_with(kind, &mut buf, |p| Ok(fill(p, len, i as u8)))
        );
        let Ok(n) = n else { fail("seal") };
        bytes_up += n;
        let sealed_raw = match next_raw_frame(&buf[..n], &mut raw) {
            (_, Ok(Some(r))) => r.len(),
            _ => fail("cobs"),
        };
        let m = count!(
            plain_ticks,
            encode_frame_with(kind, &mut buf, |p| Ok(fill(p, len, i as u8)))
        );
        let Ok(m) = m else { fail("encode") };
        let plain_raw = match next_raw_frame(&buf[..m], &mut raw) {
            (_, Ok(Some(r))) => r.len(),
            _ => fail("cobs"),
        };
        if sealed_raw != plain_raw + SEAL_LEN {
            fail("sealed length")
        }
    }
    semihosting::println!(
        "auth k={} frames_down={} frames_up={} bytes_down={} bytes_up={} open_ticks={} \
         check_ticks={} seal_ticks={} plain_ticks={} insn_per_tick={}",
        K,
        nd,
        nu,
        bytes_down,
        bytes_up,
        open_ticks,
        check_ticks,
        seal_ticks,
        plain_ticks,
        INSN_PER_TICK,
    );
    semihosting::process::exit(0)
}

fn fail(what: &str) -> ! {
    semihosting::eprintln!("auth-cost error: {}", what);
    semihosting::process::exit(1)
}
