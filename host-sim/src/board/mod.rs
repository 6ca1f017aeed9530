//! Boards in a round: the host side of the firmware's serial protocol (`core/WIRE.md`,
//! `firmware/README.md`), so some clients of each training round run on emulated (QEMU) or
//! real boards and the rest on virtual devices.
//!
//! A board is a link (a TCP socket, QEMU's UART0 chardev or a serial port) to
//! `fedrecon-firmware`'s protocol loop. Per client the host sends the client's `Ratings`, a
//! `RoundStart` with the round's configuration and seed, and the `ItemRows` of the client's
//! rated items (exact `f32`), then reads the `UpdateBegin` + `UpdateRows` frames back. The
//! engine decodes those bytes with the same decoder as a virtual device's and aggregates them
//! in the same fixed client order, so a run with boards is bit-identical to the all-virtual
//! run (the board computes with the same `fedrecon-core`; `tests/it/boards.rs` asserts it).
//!
//! Which clients: in each round the first sampled clients (in sample order) that fit a board
//! go to the boards, one per board; a client with more ratings than the board's capacity (its
//! `Hello`'s `max_examples`), or whose split leaves a phase empty (it is skipped either way),
//! stays virtual and is logged. Boards run on their own threads, concurrently with the
//! virtual devices.

pub mod auth;
pub mod enrol;
pub mod eval;
pub mod link_faults;
pub mod links;
pub mod owned;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fedrecon_core::wire::{
    FirmwareVersion, Hello, Message, PROTOCOL_MAJOR, PROTOCOL_MINOR, RoundMode, RoundStart,
    RowEncoding, UpdateShape, UplinkRows, Version, WireError, decode_update, encode_item_rows,
    encode_ratings, encoding_bit, next_frame, update_buf_len,
};
use fedrecon_core::{Phase, RoundConfig, ScalarKind};

use crate::board::auth::{LinkAuth, Refused};
use crate::board::enrol::{AuthCounts, Enrolment};
use crate::board::link_faults::{FaultCounts, FaultyLink, Reconnect};
use crate::board::links::LinkTimeouts;
use fedrecon_core::wire::auth::SessionOpen;

/// The client id a board puts in its updates (`BoardInfo.client` of the firmware images); the
/// engine decodes board updates expecting it.
pub(crate) const BOARD_CLIENT: u32 = 0;

/// The default read timeout of a link with injected faults (a lost delimiter or a lost reply
/// can stall it): above a QEMU board's silence while it trains a client of its full capacity
/// (over 3 s for 300 ratings at K = 50, measured).
pub(crate) const FAULTY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `Hello` exchanges tried when (re)synchronising a board before it counts as lost.
const RESYNC_ATTEMPTS: usize = 8;

/// Which boards join the rounds (`fedrecon train --qemu-devices N --device SPEC`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoardOptions {
    /// QEMU `mps2-an386` boards to boot with the firmware's `qemu` image.
    pub qemu_devices: usize,
    /// The QEMU image (default: `firmware/target/images/mps2-an386/qemu`).
    pub firmware: Option<PathBuf>,
    /// Real boards: `tcp:HOST:PORT` or a serial port path (e.g. `/dev/ttyACM0`).
    pub devices: Vec<String>,
    /// Fault rate per frame and direction injected on every board's link
    /// (`--link-faults RATE`, [`crate::board::link_faults`]); 0 = none.
    pub link_faults: f64,
    /// Attack rate per frame and direction on every QEMU board's authenticated link: forged,
    /// altered, replayed and wrong-device frames (`--link-attacks RATE`,
    /// [`crate::board::link_faults`]); 0 = none.
    pub link_attacks: f64,
    /// The read timeout of a faulty link (default [`FAULTY_READ_TIMEOUT`]); shorter suits
    /// boards that only get small clients.
    pub link_timeout: Option<Duration>,
    /// Boards also evaluate held-out users (`--board-eval`): the first users of each
    /// evaluation that fit, one per board, ranked over the whole catalogue on the board.
    pub evaluate: bool,
    /// Read and connect timeouts of clean links (`[reliability] board_timeout_secs`,
    /// `board_connect_secs`; [`LinkTimeouts::default`] when `None`).
    pub timeouts: Option<LinkTimeouts>,
    /// `--board-users`: the dense training user each board is, in board order (QEMU boards
    /// first, then `devices`); boards beyond the list train any client.
    pub users: Vec<u32>,
    /// Where QEMU boards keep their emulated flash (`--board-flash`; `DIR/qemu{i}/`), so a
    /// later run finds their users' ratings stored; a fresh temporary directory when `None`.
    pub flash_dir: Option<PathBuf>,
    /// The enrolment file of the real boards (`--enrolment FILE`, [`enrol`]): every real
    /// board's link is authenticated (core/WIRE.md 7), so `devices` need it. QEMU boards are
    /// provisioned by the simulator (a fresh key per board, enrolled in memory).
    pub enrolment: Option<PathBuf>,
}

impl BoardOptions {
    /// Whether any board is asked for.
    pub fn any(&self) -> bool {
        self.qemu_devices > 0 || !self.devices.is_empty()
    }
}

/// The QEMU image of `scalar` at width `k` as `cargo build-fw` lays it out:
/// `firmware/target/images/mps2-an386/qemu` (f32), `qemu-q16`, `qemu-q12` at K = 50, and the
/// same names in `mps2-an386-k{k}/` for the other widths (`cargo build-fw --k K`).
pub fn image_path(scalar: ScalarKind, k: usize) -> PathBuf {
    let dir = if k == DEFAULT_IMAGE_K {
        "mps2-an386".to_string()
    } else {
        format!("mps2-an386-k{k}")
    };
    let name = match scalar {
        ScalarKind::F32 => "qemu",
        ScalarKind::Q16_16 => "qemu-q16",
        ScalarKind::Q3_12 => "qemu-q12",
    };
    Path::new("firmware/target/images").join(dir).join(name)
}

/// The width of the images `cargo build-fw` builds without `--k`.
pub const DEFAULT_IMAGE_K: usize = 50;

/// The firmware image for QEMU boards: `explicit`, else the `cargo build-fw` output for f32 at
/// K = 50 (see [`find_image`]).
pub fn find_firmware(explicit: Option<&Path>) -> Result<PathBuf> {
    find_image(explicit, ScalarKind::F32, DEFAULT_IMAGE_K)
}

/// The firmware image for QEMU boards computing in `scalar` at width `k`: `explicit`, else
/// [`image_path`] in this checkout or below the current directory.
pub fn find_image(explicit: Option<&Path>, scalar: ScalarKind, k: usize) -> Result<PathBuf> {
    if let Some(p) = explicit {
        ensure!(
            p.is_file(),
            "firmware image {}: no such file (build the images with `cargo build-fw`)",
            p.display()
        );
        return Ok(p.to_path_buf());
    }
    let rel = image_path(scalar, k);
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&rel);
    for p in [checkout, rel.clone()] {
        if p.is_file() {
            return Ok(p);
        }
    }
    let build = if k == DEFAULT_IMAGE_K {
        "cargo build-fw".to_string()
    } else {
        format!("cargo build-fw --k {k}")
    };
    bail!(
        "the QEMU firmware image {} ({scalar:?}, K = {k}) is missing: run `{build}` in the \
         repository (or give the image's path)",
        rel.display()
    )
}

/// A byte link to a board.
pub trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}

/// A QEMU board process (fedrecon-qemu's `Running`), killed when dropped.
type Qemu = fedrecon_qemu::Running;

/// What a board did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BoardStats {
    /// Clients it trained.
    pub clients: u64,
    /// Held-out users it evaluated (`--board-eval`).
    pub evaluations: u64,
    /// Bytes sent to it (ratings, round starts, rows).
    pub bytes_down: u64,
    /// Bytes of updates received from it.
    pub bytes_up: u64,
    /// Wall-clock seconds spent on its rounds.
    pub seconds: f64,
    /// Exchanges that failed on the link (each followed by a resync).
    pub link_errors: u64,
    /// Clients retried after a failed exchange.
    pub retries: u64,
    /// Clients dropped for their round after a failed retry.
    pub link_failures: u64,
    /// Resynchronisations (fresh `Hello` exchanges) after failures.
    pub resyncs: u64,
    /// Links reopened (QEMU restarted, a real board's port reopened) to resynchronise.
    pub reconnects: u64,
    /// Times its own user's ratings were sent to it (`--board-users`; 0 when its flash
    /// already held them).
    pub provisioned: u64,
    /// Faults injected on its link (`--link-faults`).
    pub faults: FaultCounts,
    /// Frames and sessions refused by the authentication layer, by the host or the board
    /// (core/WIRE.md 7.3); each dropped its client for the round.
    pub auth_refused: u64,
}

/// One connected board after the `Hello` exchange.
pub struct Board {
    name: String,
    link: Box<dyn Link>,
    hello: Hello,
    /// Received bytes not yet split into frames.
    pending: Vec<u8>,
    /// Frame scratch (encoding and decoding).
    buf: Vec<u8>,
    /// Bytes of the next transmission.
    out: Vec<u8>,
    stats: BoardStats,
    /// The model width, for resynchronising.
    k: usize,
    /// The fault proxy's counters when the link has one.
    faults: Option<Arc<Mutex<FaultCounts>>>,
    /// Reopens a dead link (a QEMU board restarted, a real board's port reopened); a faulty
    /// link restarts its board itself.
    reconnect: Option<Reconnect>,
    /// The board could not be brought back: it takes no more clients.
    lost: bool,
    /// The dense user the board is (`--board-users`): it holds that user's ratings and
    /// trains only that user.
    owner: Option<u32>,
    /// The link's authentication (core/WIRE.md 7); `None`: a plain link (tests only: every
    /// board the simulator opens is authenticated).
    auth: Option<LinkAuth>,
    /// Bytes read from the link (sealed frames as they arrived).
    rx_bytes: u64,
    /// Frames and sessions refused by the authentication layer, by the host or the board.
    refused: AuthCounts,
    /// A QEMU board's working directory when no flash directory was asked for (holds its
    /// key file), removed with the board.
    _dir: Option<tempfile::TempDir>,
    _qemu: Option<Qemu>,
}

/// What became of one client sent to a board.
#[derive(Debug)]
pub struct BoardReport {
    /// The update's frames and its row count; `Ok(None)`: the exchange failed twice on the
    /// link, the client is dropped for the round; `Err`: the board is lost (no resync) or the
    /// job is invalid.
    pub update: Result<Option<(Vec<u8>, u32)>>,
    /// Failed exchanges (0, 1 or 2).
    pub link_errors: u32,
    /// Whether the client was retried.
    pub retried: bool,
    /// Refusals by the authentication layer during the exchange, by name (one of them
    /// dropped the client; others may come from the resynchronisations).
    pub auth_refused: AuthCounts,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("name", &self.name)
            .field("hello", &self.hello)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// One client's training job on a board.
#[derive(Clone, Debug, Default)]
pub struct BoardJob {
    /// The round number.
    pub round: u32,
    /// The client's items (dense ids, as the virtual device gets them).
    pub items: Vec<u32>,
    /// The client's ratings.
    pub ratings: Vec<f32>,
    /// The seed of the user-embedding initialisation.
    pub seed: u64,
    /// The client's round configuration (its shuffle seed may be per round and user).
    pub cfg: RoundConfig,
    /// Encoding of the item rows sent to the board (`--downlink`; the board trains on what it
    /// decodes, as a virtual device does).
    pub down: RowEncoding,
    /// Encoding of the board's update rows (`--uplink`).
    pub up: RowEncoding,
    /// Dense or padded rows, stochastic rounding (`--update-mode`, `--stochastic-rounding`):
    /// sent as an `UpdateShape` before the round; `None` for sparse rows rounded to nearest.
    pub shape: Option<UpdateShape>,
    /// The board holds the client's ratings already (its own user): they are not sent.
    pub provisioned: bool,
}

fn host_hello(k: usize) -> Hello {
    Hello {
        protocol: Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
        },
        scalar: ScalarKind::F32,
        k: k as u32,
        max_examples: 0,
        max_rows: 0,
        max_frame: 1 << 16,
        encodings: encoding_bit(RowEncoding::F32),
        firmware: FirmwareVersion::default(),
    }
}

fn connect_retry(addr: &str, patience: Duration) -> Result<TcpStream> {
    let t0 = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(_) if t0.elapsed() < patience => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(anyhow!("cannot connect to {addr}: {e}")),
        }
    }
}

/// Starts QEMU with `elf` on the machine its header names (`mps2-an386` for the Cortex-M4F
/// images, the FPU-less `mps2-an385` for Cortex-M3 builds: the same UARTs) and connects to its
/// UART0, a socket server that waits for the host (firmware/README.md, "Talking to the QEMU
/// board"). `-icount shift=0` with the image's WFI-based UART waits makes the link fastest.
/// QEMU's stderr goes to the debug log.
fn spawn_qemu(elf: &Path, name: &str, flash: Option<&Path>) -> Result<(Qemu, TcpStream)> {
    let port = fedrecon_qemu::Qemu::free_port().context("finding a free TCP port")?;
    let machine = fedrecon_qemu::Machine::for_elf(elf)
        .with_context(|| format!("board {name}: firmware image {}", elf.display()))?;
    ensure!(
        machine != fedrecon_qemu::Machine::Riscv32Virt,
        "board {name}: {} is a RISC-V image; QEMU boards are mps2 (Arm) images",
        elf.display()
    );
    let mut cmd = fedrecon_qemu::Qemu::new(machine, elf)
        .icount(0)
        .serial_socket(port);
    // The emulated flash is a file in QEMU's working directory (firmware/src/qemu_board.rs).
    if let Some(dir) = flash {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("board {name}: flash directory {}", dir.display()))?;
        cmd = cmd.current_dir(dir);
    }
    let mut qemu = cmd
        .spawn(Stdio::null(), Stdio::piped())
        .context("scripts/install-target-tools.sh installs QEMU")?;
    if let Some(err) = qemu.child_mut().stderr.take() {
        let name = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                tracing::debug!(board = %name, "qemu: {line}");
            }
        });
    }
    let link = qemu
        .connect_serial(Duration::from_secs(20))
        .with_context(|| format!("board {name}: QEMU's UART0 socket"))?;
    Ok((qemu, link))
}

/// True when `e` failed on a link that will not recover by itself (closed, reset, broken),
/// unlike a read timeout: the board's link must be reopened.
fn link_is_dead(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| {
            !matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::Interrupted
            )
        })
}

/// A board that answers a session request with a plain `Hello`: it has no key, and every
/// board link is authenticated.
#[derive(Debug)]
struct NoKey;

impl std::fmt::Display for NoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the board does not authenticate its link")
    }
}

impl std::error::Error for NoKey {}

/// True when `encoded` is a board's `SessionOpen` (a keyed board asking for a session).
fn is_session_open(encoded: &[u8]) -> bool {
    let mut raw = vec![0u8; encoded.len() + 8];
    let (_, r) = fedrecon_core::wire::next_raw_frame(encoded, &mut raw);
    matches!(r, Ok(Some(r)) if matches!(SessionOpen::check(r), Ok(Some(_))))
}

/// True when `e` is a frame in a protocol major this build does not speak.
fn speaks_other_major(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<WireError>(),
        Some(WireError::UnsupportedVersion { .. })
    )
}

impl Board {
    /// Boots `n` QEMU boards with `elf` (concurrently) and greets each at width `k`.
    pub fn boot_qemu(elf: &Path, n: usize, k: usize) -> Result<Vec<Board>> {
        Board::boot_qemu_with_faults(elf, n, k, 0.0, 0, LinkTimeouts::default().read)
    }

    /// Whether the board was lost (its link could not be brought back).
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// [`Board::boot_qemu`] with `rate` faults per frame on each link (none at 0), seeded by
    /// `seed` and the board's index, reads timing out after `timeout`; a board reset (or, on
    /// a clean link, a dead one) restarts its QEMU process.
    pub fn boot_qemu_with_faults(
        elf: &Path,
        n: usize,
        k: usize,
        rate: f64,
        seed: u64,
        timeout: Duration,
    ) -> Result<Vec<Board>> {
        Board::boot_qemu_in(elf, n, k, (rate, 0.0), seed, timeout, None)
    }

    /// [`Board::boot_qemu_with_faults`] with each board's emulated flash (its own dataset,
    /// `--board-users`) in `flash/qemu{i}/` when `flash` is given, kept across restarts;
    /// `(rate, attacks)`: the fault and attack rates of its link.
    pub fn boot_qemu_in(
        elf: &Path,
        n: usize,
        k: usize,
        (rate, attacks): (f64, f64),
        seed: u64,
        timeout: Duration,
        flash: Option<&Path>,
    ) -> Result<Vec<Board>> {
        let clean_timeout = timeout;
        let mut boards = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("qemu{i}");
            // The board's key file lives in its working directory: the flash directory when
            // there is one, else a temporary one of its own.
            let temp = match flash {
                Some(_) => None,
                None => Some(
                    tempfile::Builder::new()
                        .prefix("fedrecon-board-")
                        .tempdir()
                        .with_context(|| format!("board {name}: a working directory"))?,
                ),
            };
            let dir = match (&temp, flash) {
                (Some(t), _) => Some(t.path().to_path_buf()),
                (None, f) => f.map(|f| f.join(&name)),
            };
            let device = i as u32 + 1;
            let enrolment = auth::provision_key_file(
                dir.as_deref().expect("a directory for every board"),
                device,
            )
            .with_context(|| format!("board {name}: provisioning its key"))?;
            let (qemu, s) = spawn_qemu(elf, &name, dir.as_deref())?;
            let mut b = if rate > 0.0 || attacks > 0.0 {
                s.set_read_timeout(Some(timeout))?;
                s.set_nodelay(true)?;
                let reconnect =
                    qemu_reconnect(elf.to_path_buf(), name.clone(), qemu, timeout, dir.clone());
                let link = FaultyLink::new(
                    Box::new(s),
                    rate,
                    crate::seeds::derive(&[seed, 0x4c49_4e4b, i as u64]),
                    Some(reconnect),
                )
                .with_attacks(
                    attacks,
                    crate::seeds::derive(&[seed, 0x0041_544b, i as u64]),
                );
                let counts = link.counts();
                let mut b = Board::over_link(name, Box::new(link));
                b.faults = Some(counts);
                b
            } else {
                let read = clean_timeout;
                s.set_read_timeout(Some(read))?;
                s.set_nodelay(true)?;
                let mut b = Board::over_link(name.clone(), Box::new(s));
                b.reconnect = Some(qemu_reconnect(elf.to_path_buf(), name, qemu, read, dir));
                b
            };
            b.auth = Some(LinkAuth::new(Arc::new(enrolment), Some(device)));
            b._dir = temp;
            b.greet(k)?;
            boards.push(b);
        }
        Ok(boards)
    }

    /// Connects to a real board (`tcp:HOST:PORT` or a serial port path) enrolled in
    /// `enrolment` and greets it (an authenticated session: core/WIRE.md 7); a link that dies
    /// later is reopened the same way.
    pub fn open(spec: &str, k: usize, enrolment: Arc<Enrolment>) -> Result<Board> {
        Board::open_with(spec, k, LinkTimeouts::default(), enrolment)
    }

    /// [`Board::open`] with explicit timeouts.
    pub fn open_with(
        spec: &str,
        k: usize,
        timeouts: LinkTimeouts,
        enrolment: Arc<Enrolment>,
    ) -> Result<Board> {
        let link = links::open_device(spec, timeouts)?;
        let mut b = Board::over_link(spec.to_string(), link);
        b.reconnect = Some(links::device_reconnect(spec.to_string(), timeouts));
        b.auth = Some(LinkAuth::new(enrolment, None));
        b.greet(k).with_context(|| format!("board {spec}"))?;
        Ok(b)
    }

    /// Makes this (not yet greeted) board's link authenticated with `enrolment`, the link
    /// belonging to `device` when given ([`Board::greet`] then opens the session).
    pub fn authenticate(&mut self, enrolment: Arc<Enrolment>, device: Option<u32>) {
        self.auth = Some(LinkAuth::new(enrolment, device));
    }

    /// Writes `plain` frames on the link, sealed when a session is open; returns the bytes
    /// written.
    fn transmit(&mut self, plain: &[u8]) -> Result<usize> {
        let sealed;
        let bytes = match self.auth.as_mut() {
            Some(a) if a.is_open() => {
                sealed = a
                    .seal(plain)
                    .with_context(|| format!("board {}", self.name))?;
                &sealed[..]
            }
            _ => plain,
        };
        self.link.write_all(bytes)?;
        self.link.flush()?;
        Ok(bytes.len())
    }

    /// A board on any byte link (not yet greeted; [`Board::greet`] next).
    pub fn over_link(name: String, link: Box<dyn Link>) -> Board {
        Board {
            name,
            link,
            hello: host_hello(0),
            pending: Vec::new(),
            buf: vec![0; update_buf_len(128).max(1 << 12)],
            out: Vec::new(),
            stats: BoardStats::default(),
            k: 0,
            faults: None,
            reconnect: None,
            lost: false,
            owner: None,
            auth: None,
            rx_bytes: 0,
            refused: AuthCounts::default(),
            _dir: None,
            _qemu: None,
        }
    }

    /// Sends a fresh `Hello` (after a `0x00` that ends any partial frame) and reads frames
    /// until the board's `Hello`, discarding everything else (replies to a failed exchange);
    /// resends it after a timeout, a reset or a failed write, [`RESYNC_ATTEMPTS`] times.
    fn exchange_hello(&mut self, k: usize) -> Result<Hello> {
        let mut last = anyhow!("no attempt");
        for _ in 0..RESYNC_ATTEMPTS {
            self.pending.clear();
            // A plain Hello asks a keyed board for a new session (core/WIRE.md 7.2).
            if let Some(a) = self.auth.as_mut() {
                a.close();
            }
            let mut out = vec![0u8];
            let n = Message::Hello(host_hello(k))
                .encode(&mut self.buf)
                .map_err(|e| anyhow!("encoding Hello: {e}"))?;
            out.extend_from_slice(&self.buf[..n]);
            if let Err(e) = self.link.write_all(&out).and_then(|()| self.link.flush()) {
                last = anyhow!("sending Hello: {e}");
                if self.reconnect.is_some() {
                    // A dead link: resync reopens it rather than write into it again.
                    break;
                }
                continue;
            }
            let plain = self.auth.is_none();
            loop {
                match self.read_frame() {
                    Ok(raw) if self.auth.as_ref().is_some_and(|a| !a.is_open()) => {
                        match self.handshake(&raw, k) {
                            Ok(()) => {}
                            Err(e) if e.downcast_ref::<NoKey>().is_some() => return Err(e),
                            // Refused, or the link failed while answering: as a failed
                            // exchange, a new attempt (or a reconnect).
                            Err(e) => {
                                let dead = self.reconnect.is_some() && link_is_dead(&e);
                                last = e;
                                if dead {
                                    return Err(
                                        last.context(format!("board {}: link lost", self.name))
                                    );
                                }
                                break;
                            }
                        }
                    }
                    // A refused frame during the exchange: counted; a new session next.
                    Err(e) if e.downcast_ref::<Refused>().is_some() => {
                        last = e;
                        break;
                    }
                    Ok(raw) => match self.decode(&raw) {
                        Ok(Message::Hello(h)) => return Ok(h),
                        // The board refused a frame of the new session (forged on the way):
                        // no Hello will come; a new session next.
                        Ok(Message::Error(m)) if Refused::by_board(&m).is_some() => {
                            let r = Refused::by_board(&m).expect("checked");
                            self.refused.count_name(r.name);
                            last = anyhow::Error::new(r)
                                .context(format!("board {}: session refused", self.name));
                            break;
                        }
                        Err(e) if plain && is_session_open(&raw) => {
                            return Err(e.context(format!(
                                "board {}: it authenticates its link (core/WIRE.md 7): give \
                                 its enrolment file (--enrolment FILE)",
                                self.name
                            )));
                        }
                        // An image of another wire major answers in frames this build cannot
                        // read: waiting for a Hello would only run into the read timeout.
                        Err(e) if speaks_other_major(&e) => {
                            return Err(e.context(format!(
                                "board {}: its firmware speaks another protocol version \
                                 (rebuild the images: cargo build-fw)",
                                self.name
                            )));
                        }
                        _ => {}
                    },
                    Err(e) => {
                        let dead = self.reconnect.is_some() && link_is_dead(&e);
                        last = e;
                        if dead {
                            return Err(last.context(format!("board {}: link lost", self.name)));
                        }
                        break;
                    }
                }
            }
            if self.reconnect.is_some() && last.to_string().starts_with("sending Hello") {
                break;
            }
        }
        Err(last.context(format!(
            "board {}: no Hello after {RESYNC_ATTEMPTS} attempts",
            self.name
        )))
    }

    /// A keyed link before its session: the board's answer to the plain `Hello` must be its
    /// `SessionOpen`, answered with the host's and then the sealed `Hello`. A plain `Hello`
    /// means the board has no key: refused (every board link is authenticated). Other frames
    /// (replies to a failed exchange) are skipped.
    fn handshake(&mut self, encoded: &[u8], k: usize) -> Result<()> {
        let name = self.name.clone();
        let (_, raw) = fedrecon_core::wire::next_raw_frame(encoded, &mut self.buf);
        let Ok(Some(raw)) = raw else { return Ok(()) };
        match SessionOpen::check(raw) {
            Ok(Some(open)) => {
                let auth = self.auth.as_mut().expect("checked by the caller");
                let answer = match auth.accept(&open, &mut self.refused) {
                    Ok(a) => a,
                    Err(e) => {
                        return Err(anyhow::Error::new(Refused::by_host(&e))
                            .context(format!("board {name}: session refused")));
                    }
                };
                let mut hello = vec![0u8; 128];
                let n = Message::Hello(host_hello(k))
                    .encode(&mut hello)
                    .map_err(|e| anyhow!("encoding Hello: {e}"))?;
                hello.truncate(n);
                self.link.write_all(&answer)?;
                self.transmit(&hello)
                    .with_context(|| format!("board {name}: sending the sealed Hello"))?;
                Ok(())
            }
            Ok(None) => {
                if matches!(self.decode(encoded), Ok(Message::Hello(_))) {
                    return Err(anyhow::Error::new(NoKey).context(format!(
                        "board {name} answered without authenticating: its image has no key \
                         (QEMU: rebuild the images with `cargo build-fw`; a real board: build \
                         it with FEDRECON_DEVICE_ID / FEDRECON_DEVICE_KEY and enrol it)"
                    )));
                }
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    /// Brings the board back to a known state after a failed exchange (a fresh `Hello`: the
    /// board drops any stream in progress, a reset board leaves `AwaitHello`).
    pub fn resync(&mut self) -> Result<()> {
        self.stats.resyncs += 1;
        let hello = match self.exchange_hello(self.k) {
            Ok(h) => h,
            // A dead link: reopen it (restart the QEMU board, reopen the port) and greet again.
            Err(e) => {
                let Some(reconnect) = self.reconnect.as_mut() else {
                    return Err(e);
                };
                tracing::warn!(board = %self.name, "no Hello, reconnecting: {e:#}");
                self.link =
                    reconnect().with_context(|| format!("board {}: reconnecting", self.name))?;
                self.stats.reconnects += 1;
                self.exchange_hello(self.k)?
            }
        };
        ensure!(
            hello.k as usize == self.k,
            "board {}: K = {} after a resync",
            self.name,
            hello.k
        );
        self.hello = hello;
        Ok(())
    }

    /// Sends the host's `Hello` and reads the board's; fails unless the board speaks this
    /// protocol at width `k` with exact `f32` rows.
    pub fn greet(&mut self, k: usize) -> Result<()> {
        self.k = k;
        let hello = self.exchange_hello(k)?;
        ensure!(
            hello.protocol.major == PROTOCOL_MAJOR,
            "board {} speaks protocol {}.{}, the simulator {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
            self.name,
            hello.protocol.major,
            hello.protocol.minor
        );
        ensure!(
            hello.k as usize == k,
            "board {} has K = {}, the model K = {k} (build an image with that K or set model.k = {})",
            self.name,
            hello.k,
            hello.k
        );
        ensure!(
            hello.encodings & encoding_bit(RowEncoding::F32) != 0,
            "board {} does not accept f32 rows",
            self.name
        );
        self.hello = hello;
        tracing::info!(
            board = %self.name,
            k = hello.k,
            scalar = ?hello.scalar,
            max_examples = hello.max_examples,
            max_frame = hello.max_frame,
            "board ready"
        );
        Ok(())
    }

    /// Whether the link is authenticated and its session open (core/WIRE.md 7).
    pub fn authenticated(&self) -> bool {
        self.auth.as_ref().is_some_and(LinkAuth::is_open)
    }

    /// The board's name (`qemu0`, `tcp:...`, a port path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The board's `Hello`.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// What the board did so far.
    pub fn stats(&self) -> BoardStats {
        let mut s = self.stats;
        s.auth_refused = self.refused.total();
        if let Some(c) = &self.faults {
            s.faults = *c.lock().expect("fault counters");
        }
        s
    }

    /// Faults injected on the link so far (0 without `--link-faults`).
    pub fn injected_faults(&self) -> u64 {
        self.faults
            .as_ref()
            .map_or(0, |c| c.lock().expect("fault counters").total())
    }

    /// Trains one client ([`Board::train`]); a failed exchange (any corruption the host
    /// detects: CRC, COBS, chunk sequence, an unexpected message or the board's `Error`, a
    /// timeout, a reset) is logged, the board resynchronised and the client retried once,
    /// then dropped for the round. Only an update that decoded completely is returned.
    pub fn train_client<const K: usize>(
        &mut self,
        cfg: &RoundConfig,
        num_items: u32,
        rows: &[(u32, [f32; K], f32)],
        job: &BoardJob,
    ) -> BoardReport {
        let mut report = BoardReport {
            update: Ok(None),
            link_errors: 0,
            retried: false,
            auth_refused: AuthCounts::default(),
        };
        let refused_before = self.refused.clone();
        for attempt in 0..2 {
            if attempt == 1 {
                report.retried = true;
                self.stats.retries += 1;
            }
            match self.train::<K>(cfg, num_items, rows, job) {
                Ok(u) => {
                    report.update = Ok(Some(u));
                    report.auth_refused = self.refused.since(&refused_before);
                    return report;
                }
                Err(e) => {
                    report.link_errors += 1;
                    self.stats.link_errors += 1;
                    tracing::warn!(
                        board = %self.name,
                        round = job.round,
                        attempt,
                        "board exchange failed: {e:#}"
                    );
                    // A refused frame is not line noise: the client is not retried (nothing
                    // of its exchange is trusted), the link gets a new session.
                    let refused = e.chain().find_map(|c| c.downcast_ref::<Refused>());
                    if refused.is_some() {
                        if let Err(e) = self.resync() {
                            tracing::warn!(board = %self.name, "board lost: {e:#}");
                            self.lost = true;
                        }
                        break;
                    }
                    if let Err(e) = self.resync() {
                        // The client is dropped for the round like any link failure; the
                        // board takes no more clients.
                        tracing::warn!(board = %self.name, "board lost: {e:#}");
                        self.lost = true;
                        break;
                    }
                }
            }
        }
        self.stats.link_failures += 1;
        report.auth_refused = self.refused.since(&refused_before);
        tracing::warn!(
            board = %self.name,
            round = job.round,
            ratings = job.items.len(),
            "link failure: client dropped for the round"
        );
        report
    }

    /// Whether a client of `len` ratings (all on distinct items) fits this board, and its
    /// update shape: a padded update's decoys (at most `pad_rows`) are held like rows.
    pub fn fits(&self, len: usize, shape: Option<&UpdateShape>) -> bool {
        let rows = self.hello.max_rows as usize;
        let decoys_fit =
            shape.is_none_or(|s| s.rows != UplinkRows::Padded || s.pad_rows as usize <= rows);
        !self.lost && len <= self.hello.max_examples as usize && len <= rows && decoys_fit
    }

    /// Decodes one received frame. Only `Hello`, `UpdateBegin` and `Error` are inspected here
    /// (their sizes do not depend on `K`); the engine decodes the update's rows.
    fn decode(&mut self, raw: &[u8]) -> Result<Message<'_>> {
        let name = &self.name;
        let (_, frame) = next_frame(raw, &mut self.buf);
        let frame = frame
            .map_err(|e| anyhow::Error::new(e).context(format!("board {name}: bad frame")))?
            .ok_or_else(|| anyhow!("board {name}: empty frame"))?;
        Message::decode::<1>(&frame).map_err(|e| {
            anyhow::Error::new(e).context(format!("board {name}: undecodable message"))
        })
    }

    /// A received frame as the rest of the board code reads it: opened by the session when
    /// one is open (a refusal is counted and returned as [`Refused`]; a frame whose envelope
    /// fails, line noise, is an ordinary error), else as it came.
    fn open_frame(&mut self, frame: Vec<u8>) -> Result<Vec<u8>> {
        let Some(a) = self.auth.as_mut().filter(|a| a.is_open()) else {
            return Ok(frame);
        };
        match a.open(&frame) {
            Ok(plain) => Ok(plain),
            Err(fedrecon_core::wire::auth::AuthError::Wire(e)) => {
                Err(anyhow::Error::new(e).context(format!("board {}: bad frame", self.name)))
            }
            Err(e @ fedrecon_core::wire::auth::AuthError::Unsealed { .. }) => {
                // A board that refused the session (another device named, no session) can
                // only answer plain: its reason is the one to count.
                let by_board = match self.decode(&frame) {
                    Ok(Message::Error(m)) => Refused::by_board(&m),
                    _ => None,
                };
                let r = by_board.unwrap_or_else(|| Refused::by_host(&e));
                self.refused.count_name(r.name);
                Err(anyhow::Error::new(r).context(format!("board {}: frame refused", self.name)))
            }
            Err(e) => {
                self.refused.count(&e);
                Err(anyhow::Error::new(Refused::by_host(&e))
                    .context(format!("board {}: frame refused", self.name)))
            }
        }
    }

    /// The next frame from the link, delimiter included (opened, on an authenticated link).
    fn read_frame(&mut self) -> Result<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(z) = self.pending.iter().position(|&b| b == 0) {
                let frame: Vec<u8> = self.pending.drain(..=z).collect();
                if frame.len() > 1 {
                    self.rx_bytes += frame.len() as u64;
                    return self.open_frame(frame);
                }
                continue;
            }
            let n = self
                .link
                .read(&mut chunk)
                .with_context(|| format!("board {}: reading", self.name))?;
            if n == 0 {
                return Err(anyhow::Error::new(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the link closed",
                ))
                .context(format!("board {}: reading", self.name)));
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one client's round: its `Ratings`, the `UpdateShape` of a shaped training round,
    /// the `RoundStart` of `mode` and `rows`, the rows of its rated items (strictly ascending
    /// ids, the server's `f32` values encoded in `job.down`) of a catalogue of `num_items`.
    pub(crate) fn send_round<const K: usize>(
        &mut self,
        mode: RoundMode,
        cfg: &RoundConfig,
        num_items: u32,
        rows: &[(u32, [f32; K], f32)],
        job: &BoardJob,
    ) -> Result<()> {
        let name = self.name.clone();
        let with_bias = cfg.model.item_bias;
        for enc in [job.down, job.up] {
            ensure!(
                self.hello.encodings & encoding_bit(enc) != 0,
                "board {name} does not accept {enc:?} rows"
            );
        }
        let start = RoundStart {
            round: job.round,
            seed: job.seed,
            mode,
            config: *cfg,
            num_items,
            rows: rows.len() as u32,
            down: job.down,
            up: job.up,
        };
        self.out.clear();
        // A leading 0x00 ends any partial frame at the board; a trailing one ends the last
        // frame even if its own delimiter was lost on the way.
        self.out.push(0);
        let (buf, out) = (&mut self.buf, &mut self.out);
        let mut sink = |f: &[u8]| {
            out.extend_from_slice(f);
            Ok::<(), std::convert::Infallible>(())
        };
        if !job.provisioned {
            encode_ratings(&job.items, &job.ratings, buf, &mut sink)
                .map_err(|e| anyhow!("board {name}: encoding ratings: {e:?}"))?;
        }
        if let (RoundMode::Train, Some(shape)) = (mode, job.shape) {
            let n = Message::UpdateShape(shape)
                .encode(buf)
                .map_err(|e| anyhow!("board {name}: encoding UpdateShape: {e}"))?;
            sink(&buf[..n]).expect("infallible");
        }
        let n = Message::RoundStart(start)
            .encode(buf)
            .map_err(|e| anyhow!("board {name}: encoding RoundStart: {e}"))?;
        sink(&buf[..n]).expect("infallible");
        encode_item_rows::<f32, K, _>(
            job.round,
            job.down,
            with_bias,
            rows.len(),
            |i| (rows[i].0, &rows[i].1, with_bias.then_some(rows[i].2)),
            buf,
            &mut sink,
        )
        .map_err(|e| anyhow!("board {name}: encoding item rows: {e:?}"))?;
        self.out.push(0);
        let out = std::mem::take(&mut self.out);
        let sent = self
            .transmit(&out)
            .with_context(|| format!("board {name}: sending the round"));
        self.out = out;
        self.stats.bytes_down += sent? as u64;
        Ok(())
    }

    /// Trains one client on the board: provisions its ratings, sends the round and `rows`, the
    /// rows of its rated items (strictly ascending ids, exact `f32`) of a catalogue of
    /// `num_items`, and returns the update's frames as received (`UpdateBegin` +
    /// `UpdateRows`, client id [`BOARD_CLIENT`]). A refusal (`Error`) is an error naming its
    /// code.
    pub fn train<const K: usize>(
        &mut self,
        cfg: &RoundConfig,
        num_items: u32,
        rows: &[(u32, [f32; K], f32)],
        job: &BoardJob,
    ) -> Result<(Vec<u8>, u32)> {
        let t0 = Instant::now();
        let name = self.name.clone();
        self.send_round::<K>(RoundMode::Train, cfg, num_items, rows, job)?;
        let rx0 = self.rx_bytes;
        let mut update = self.read_frame()?;
        // A late answer to a resync's repeated `Hello` precedes this exchange at the board
        // (which handled it before the round's frames): skip it.
        while matches!(self.decode(&update), Ok(Message::Hello(_))) {
            update = self.read_frame()?;
        }
        let chunks = match self.decode(&update)? {
            Message::UpdateBegin(b) => {
                ensure!(
                    b.round == job.round && b.k as usize == K && b.encoding == job.up,
                    "board {name}: update for round {} at K = {} in {:?}, expected round {} \
                     K = {K} in {:?}",
                    b.round,
                    b.k,
                    b.encoding,
                    job.round,
                    job.up
                );
                (b.rows as usize).div_ceil(fedrecon_core::wire::ROWS_PER_CHUNK)
            }
            Message::Error(e) if Refused::by_board(&e).is_some() => {
                let r = Refused::by_board(&e).expect("checked");
                self.refused.count_name(r.name);
                return Err(anyhow::Error::new(r).context(format!("board {name}")));
            }
            Message::Error(e) => bail!(
                "board {name} refused round {} (client of {} ratings): {:?} (detail {:?})",
                job.round,
                job.items.len(),
                e.code,
                e.detail
            ),
            m => bail!("board {name}: expected UpdateBegin, got {m:?}"),
        };
        for _ in 0..chunks {
            let f = self.read_frame()?;
            update.extend_from_slice(&f);
        }
        // Checked whole here, so a corrupted update is retried rather than only rejected.
        let sum = decode_update::<K>(&update, &mut self.buf, |_, _, _| {})
            .map_err(|e| anyhow!("board {name}: corrupted update: {e}"))?;
        ensure!(
            sum.round == job.round && sum.client == BOARD_CLIENT,
            "board {name}: update of round {} client {}, expected round {} client {BOARD_CLIENT}",
            sum.round,
            sum.client,
            job.round
        );
        // What crossed the link (sealed frames), not the plain frames decoded here.
        self.stats.bytes_up += self.rx_bytes - rx0;
        self.stats.clients += 1;
        self.stats.seconds += t0.elapsed().as_secs_f64();
        Ok((update, sum.rows))
    }
}

/// Whether `cfg`'s split gives a client of `len` examples a batch in both phases (otherwise
/// the device skips it: such clients stay virtual).
pub fn trains(cfg: &RoundConfig, len: usize) -> bool {
    let kept = cfg.split.kept(len);
    [Phase::Reconstruction, Phase::PostReconstruction]
        .into_iter()
        .all(|p| cfg.split.schedule(p, kept).steps() > 0)
}

/// The boards of an experiment.
#[derive(Debug, Default)]
pub struct Boards {
    boards: Vec<Board>,
    /// They also evaluate held-out users ([`BoardOptions::evaluate`]).
    evaluate: bool,
}

impl Boards {
    /// Boots and connects what `opts` asks for, at width `k`, for devices computing in
    /// `scalar` (QEMU boards boot the image of that scalar and K; a real board must compute
    /// in the same scalar to be bit-identical). `seed` (the run's) seeds the link faults
    /// (`opts.link_faults`).
    pub fn open(opts: &BoardOptions, k: usize, scalar: ScalarKind, seed: u64) -> Result<Boards> {
        ensure!(
            (0.0..1.0).contains(&opts.link_faults),
            "link fault rate {}: must be in [0, 1)",
            opts.link_faults
        );
        ensure!(
            (0.0..1.0).contains(&opts.link_attacks),
            "link attack rate {}: must be in [0, 1)",
            opts.link_attacks
        );
        let mut boards = Vec::new();
        if opts.qemu_devices > 0 {
            let elf = find_image(opts.firmware.as_deref(), scalar, k)?;
            tracing::info!(n = opts.qemu_devices, image = %elf.display(), "booting QEMU boards");
            let flash = match (&opts.flash_dir, opts.users.is_empty()) {
                (Some(d), _) => Some(d.clone()),
                (None, false) => Some(
                    std::env::temp_dir()
                        .join(format!("fedrecon-board-flash-{}", std::process::id())),
                ),
                (None, true) => None,
            };
            boards.extend(Board::boot_qemu_in(
                &elf,
                opts.qemu_devices,
                k,
                (opts.link_faults, opts.link_attacks),
                seed,
                if opts.link_faults > 0.0 || opts.link_attacks > 0.0 {
                    opts.link_timeout.unwrap_or(FAULTY_READ_TIMEOUT)
                } else {
                    opts.timeouts.unwrap_or_default().read
                },
                flash.as_deref(),
            )?);
        }
        let enrolment = match (&opts.enrolment, opts.devices.is_empty()) {
            (Some(path), _) => Some(Arc::new(Enrolment::load(path)?)),
            (None, false) => bail!(
                "real boards ({}) authenticate their link (core/WIRE.md 7): give their \
                 enrolment file with --enrolment FILE (`cargo build-fw` writes the nRF52840-DK \
                 image's to firmware/target/images/nrf52840-dk/enrolment.txt)",
                opts.devices.join(", ")
            ),
            (None, true) => None,
        };
        for spec in &opts.devices {
            ensure!(
                opts.link_faults == 0.0 && opts.link_attacks == 0.0,
                "link faults and attacks apply to QEMU boards only (BoardOptions::qemu_devices)"
            );
            boards.push(Board::open_with(
                spec,
                k,
                opts.timeouts.unwrap_or_default(),
                enrolment.clone().expect("checked above"),
            )?);
        }
        for b in &boards {
            ensure!(
                b.hello.scalar == scalar,
                "board {} computes in {:?}, the simulated devices in {scalar:?} \
                 (use --scalar to match the board, or flash its image in that scalar)",
                b.name,
                b.hello.scalar
            );
        }
        Ok(Boards {
            boards,
            evaluate: opts.evaluate,
        })
    }

    /// Wraps connected boards (training only).
    pub fn from_boards(boards: Vec<Board>) -> Boards {
        Boards {
            boards,
            evaluate: false,
        }
    }

    /// Whether the boards also evaluate held-out users.
    pub fn evaluates(&self) -> bool {
        self.evaluate && !self.boards.is_empty()
    }

    /// The boards, to run exchanges on.
    pub fn boards_mut(&mut self) -> &mut [Board] {
        &mut self.boards
    }

    /// Number of boards.
    pub fn len(&self) -> usize {
        self.boards.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.boards.is_empty()
    }

    /// The boards.
    pub fn boards(&self) -> &[Board] {
        &self.boards
    }

    /// Faults injected on the boards' links so far.
    pub fn injected_faults(&self) -> u64 {
        self.boards.iter().map(Board::injected_faults).sum()
    }

    /// Assigns clients of a round to boards: `lens[i]` is the size of the `i`-th sampled
    /// client; returns `(board, client index)` pairs, one per board at most, taking the first
    /// clients in sample order that fit. Clients passed over are logged.
    pub fn assign(
        &self,
        round: u32,
        cfg: &RoundConfig,
        shape: Option<&UpdateShape>,
        lens: &[usize],
        users: &[u32],
    ) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        // Boards with their own user take that user when the round sampled it.
        let mut taken = vec![false; lens.len()];
        for (board, b) in self.boards.iter().enumerate() {
            let Some(owner) = b.owner else { continue };
            if let Some(i) = users.iter().position(|&u| u == owner)
                && trains(cfg, lens[i])
                && b.fits(lens[i], shape)
            {
                taken[i] = true;
                out.push((board, i));
            }
        }
        let mut next = 0;
        for (board, b) in self.boards.iter().enumerate() {
            if b.owner.is_some() {
                continue;
            }
            while next < lens.len() {
                let i = next;
                next += 1;
                if taken[i] || !trains(cfg, lens[i]) {
                    continue;
                }
                if b.fits(lens[i], shape) {
                    out.push((board, i));
                    break;
                }
                tracing::info!(
                    round,
                    client = i,
                    ratings = lens[i],
                    board = %b.name,
                    capacity = b.hello.max_examples,
                    "client exceeds the board's capacity: run virtually"
                );
            }
        }
        out
    }

    /// Starts `jobs` (`(board, job)` pairs from [`Boards::assign`]), each board on its own
    /// thread with copies of what it needs (its client's data and rated rows from `rows`, the
    /// global `f32` item matrix, and their `biases`, empty without item biases), so the caller
    /// runs the virtual devices meanwhile; [`Boards::finish`] collects the updates.
    pub fn start<const K: usize>(
        &mut self,
        rows: &[[f32; K]],
        biases: &[f32],
        jobs: Vec<(usize, BoardJob)>,
    ) -> Pending {
        let num_items = rows.len() as u32;
        let mut running = Vec::with_capacity(jobs.len());
        for (board, job) in jobs {
            let mut rated = job.items.clone();
            rated.sort_unstable();
            rated.dedup();
            crate::comm::extra_rows(&job.cfg, &mut rated);
            let client_rows: Vec<(u32, [f32; K], f32)> = rated
                .iter()
                .filter_map(|&i| {
                    let b = biases.get(i as usize).copied().unwrap_or(0.0);
                    rows.get(i as usize).map(|r| (i, *r, b))
                })
                .collect();
            let b = std::mem::replace(
                &mut self.boards[board],
                Board::over_link(String::new(), Box::new(std::io::Cursor::new(Vec::new()))),
            );
            let cfg = job.cfg;
            let handle = std::thread::Builder::new()
                .name(format!("fedrecon-{}", b.name))
                .spawn(move || {
                    let mut b = b;
                    let res = if client_rows.len() == rated.len() {
                        b.train_client::<K>(&cfg, num_items, &client_rows, &job)
                    } else {
                        BoardReport {
                            update: Err(anyhow!("board {}: a rated item is out of range", b.name)),
                            link_errors: 0,
                            retried: false,
                            auth_refused: AuthCounts::default(),
                        }
                    };
                    (b, res)
                })
                .expect("cannot start a board thread");
            running.push((board, handle));
        }
        Pending { running }
    }

    /// Waits for the boards of [`Boards::start`] and puts them back; the updates (or errors)
    /// in the order of its jobs.
    pub fn finish(&mut self, pending: Pending) -> Vec<BoardReport> {
        pending
            .running
            .into_iter()
            .map(|(board, handle)| match handle.join() {
                Ok((b, res)) => {
                    self.boards[board] = b;
                    res
                }
                Err(_) => BoardReport {
                    update: Err(anyhow!("a board thread panicked")),
                    link_errors: 0,
                    retried: false,
                    auth_refused: AuthCounts::default(),
                },
            })
            .collect()
    }
}

/// Boards at work on a round (from [`Boards::start`]).
#[derive(Debug)]
#[must_use = "collect the boards and their updates with Boards::finish"]
pub struct Pending {
    #[allow(clippy::type_complexity)]
    running: Vec<(usize, std::thread::JoinHandle<(Board, BoardReport)>)>,
}

/// Restarts a QEMU board (a fresh process, booted, connected): the reset of a faulty link.
fn qemu_reconnect(
    elf: PathBuf,
    name: String,
    qemu: Qemu,
    timeout: Duration,
    flash: Option<PathBuf>,
) -> Reconnect {
    let mut qemu = Some(qemu);
    let io = |e: anyhow::Error| std::io::Error::other(format!("{e:#}"));
    Box::new(move || {
        drop(qemu.take());
        let (q, s) = spawn_qemu(&elf, &name, flash.as_deref()).map_err(io)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        qemu = Some(q);
        tracing::info!(board = %name, "board restarted (injected reset)");
        Ok(Box::new(s) as Box<dyn Link>)
    })
}
