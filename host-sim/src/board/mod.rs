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

pub mod enrol;
pub mod link_faults;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fedrecon_core::wire::{
    FirmwareVersion, Hello, Message, PROTOCOL_MAJOR, PROTOCOL_MINOR, RoundMode, RoundStart,
    RowEncoding, Version, WireError, decode_update, encode_item_rows, encode_ratings, encoding_bit,
    next_frame, update_buf_len,
};
use fedrecon_core::{Phase, RoundConfig, ScalarKind};

use crate::board::link_faults::{FaultCounts, FaultyLink, Reconnect};

/// The client id a board puts in its updates (`BoardInfo.client` of the firmware images); the
/// engine decodes board updates expecting it.
pub(crate) const BOARD_CLIENT: u32 = 0;

/// How long to wait for a board's answer before giving up on it.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

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
    /// The read timeout of a faulty link (default [`FAULTY_READ_TIMEOUT`]); shorter suits
    /// boards that only get small clients.
    pub link_timeout: Option<Duration>,
}

impl BoardOptions {
    /// Whether any board is asked for.
    pub fn any(&self) -> bool {
        self.qemu_devices > 0 || !self.devices.is_empty()
    }
}

/// The firmware image for QEMU boards: `explicit`, else the `cargo build-fw` output
/// (`firmware/target/images/mps2-an386/qemu` in this checkout, or below the current
/// directory).
pub fn find_firmware(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        ensure!(
            p.is_file(),
            "firmware image {}: no such file (build the images with `cargo build-fw`)",
            p.display()
        );
        return Ok(p.to_path_buf());
    }
    let rel = Path::new("firmware/target/images/mps2-an386/qemu");
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    for p in [checkout, rel.to_path_buf()] {
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "the QEMU firmware image {} is missing: run `cargo build-fw` in the repository \
         (or give the image's path)",
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
    /// Faults injected on its link (`--link-faults`).
    pub faults: FaultCounts,
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
    _qemu: Option<Qemu>,
}

/// What became of one client sent to a board.
#[derive(Debug)]
pub struct BoardReport {
    /// The update's frames; `Ok(None)`: the exchange failed twice on the link, the client is
    /// dropped for the round; `Err`: the board is lost (no resync) or the job is invalid.
    pub update: Result<Option<Vec<u8>>>,
    /// Failed exchanges (0, 1 or 2).
    pub link_errors: u32,
    /// Whether the client was retried.
    pub retried: bool,
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
#[derive(Clone, Debug)]
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

/// Starts QEMU `mps2-an386` with `elf` and connects to its UART0, a socket server that waits
/// for the host (firmware/README.md, "Talking to the QEMU board"). `-icount shift=0` with the
/// image's WFI-based UART waits makes the link fastest. QEMU's stderr goes to the debug log.
fn spawn_qemu(elf: &Path, name: &str) -> Result<(Qemu, TcpStream)> {
    let port = fedrecon_qemu::Qemu::free_port().context("finding a free TCP port")?;
    let mut qemu = fedrecon_qemu::Qemu::new(fedrecon_qemu::Machine::Mps2An386, elf)
        .icount(0)
        .serial_socket(port)
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
        Board::boot_qemu_with_faults(elf, n, k, 0.0, 0, FAULTY_READ_TIMEOUT)
    }

    /// [`Board::boot_qemu`] with `rate` faults per frame on each link (none at 0), seeded by
    /// `seed` and the board's index, reads timing out after `timeout`; a board reset restarts
    /// its QEMU process.
    pub fn boot_qemu_with_faults(
        elf: &Path,
        n: usize,
        k: usize,
        rate: f64,
        seed: u64,
        timeout: Duration,
    ) -> Result<Vec<Board>> {
        let mut boards = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("qemu{i}");
            let (qemu, s) = spawn_qemu(elf, &name)?;
            let mut b = if rate > 0.0 {
                s.set_read_timeout(Some(timeout))?;
                s.set_nodelay(true)?;
                let reconnect = qemu_reconnect(elf.to_path_buf(), name.clone(), qemu, timeout);
                let link = FaultyLink::new(
                    Box::new(s),
                    rate,
                    crate::seeds::derive(&[seed, 0x4c49_4e4b, i as u64]),
                    Some(reconnect),
                );
                let counts = link.counts();
                let mut b = Board::over_link(name, Box::new(link));
                b.faults = Some(counts);
                b
            } else {
                let mut b = Board::over_tcp(name, s)?;
                b._qemu = Some(qemu);
                b
            };
            b.greet(k)?;
            boards.push(b);
        }
        Ok(boards)
    }

    /// Connects to a real board (`tcp:HOST:PORT` or a serial port path) and greets it.
    pub fn open(spec: &str, k: usize) -> Result<Board> {
        let mut b = if let Some(addr) = spec.strip_prefix("tcp:") {
            let s = connect_retry(addr, Duration::from_secs(5))
                .with_context(|| format!("board {spec}"))?;
            Board::over_tcp(spec.to_string(), s)?
        } else {
            let port = serialport::new(spec, 115_200)
                .timeout(READ_TIMEOUT)
                .open()
                .with_context(|| format!("board {spec}: cannot open the serial port"))?;
            Board::over_link(spec.to_string(), Box::new(port))
        };
        b.greet(k).with_context(|| format!("board {spec}"))?;
        Ok(b)
    }

    fn over_tcp(name: String, s: TcpStream) -> Result<Board> {
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(Board::over_link(name, Box::new(s)))
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
            let mut out = vec![0u8];
            let n = Message::Hello(host_hello(k))
                .encode(&mut self.buf)
                .map_err(|e| anyhow!("encoding Hello: {e}"))?;
            out.extend_from_slice(&self.buf[..n]);
            if let Err(e) = self.link.write_all(&out).and_then(|()| self.link.flush()) {
                last = anyhow!("sending Hello: {e}");
                continue;
            }
            loop {
                match self.read_frame() {
                    Ok(raw) => match self.decode(&raw) {
                        Ok(Message::Hello(h)) => return Ok(h),
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
                        last = e;
                        break;
                    }
                }
            }
        }
        Err(last.context(format!(
            "board {}: no Hello after {RESYNC_ATTEMPTS} attempts",
            self.name
        )))
    }

    /// Brings the board back to a known state after a failed exchange (a fresh `Hello`: the
    /// board drops any stream in progress, a reset board leaves `AwaitHello`).
    pub fn resync(&mut self) -> Result<()> {
        self.stats.resyncs += 1;
        let hello = self.exchange_hello(self.k)?;
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
        rows: &[(u32, [f32; K])],
        job: &BoardJob,
    ) -> BoardReport {
        let mut report = BoardReport {
            update: Ok(None),
            link_errors: 0,
            retried: false,
        };
        for attempt in 0..2 {
            if attempt == 1 {
                report.retried = true;
                self.stats.retries += 1;
            }
            match self.train::<K>(cfg, num_items, rows, job) {
                Ok(u) => {
                    report.update = Ok(Some(u));
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
                    if let Err(e) = self.resync() {
                        report.update = Err(e.context(format!("board {} is lost", self.name)));
                        return report;
                    }
                }
            }
        }
        self.stats.link_failures += 1;
        tracing::warn!(
            board = %self.name,
            round = job.round,
            ratings = job.items.len(),
            "link failure: client dropped for the round"
        );
        report
    }

    /// Whether a client of `len` ratings (all on distinct items) fits this board.
    pub fn fits(&self, len: usize) -> bool {
        len <= self.hello.max_examples as usize && len <= self.hello.max_rows as usize
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

    /// The next frame from the link, delimiter included.
    fn read_frame(&mut self) -> Result<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(z) = self.pending.iter().position(|&b| b == 0) {
                let frame: Vec<u8> = self.pending.drain(..=z).collect();
                if frame.len() > 1 {
                    return Ok(frame);
                }
                continue;
            }
            let n = self
                .link
                .read(&mut chunk)
                .with_context(|| format!("board {}: reading", self.name))?;
            ensure!(n > 0, "board {}: the link closed", self.name);
            self.pending.extend_from_slice(&chunk[..n]);
        }
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
        rows: &[(u32, [f32; K])],
        job: &BoardJob,
    ) -> Result<Vec<u8>> {
        let t0 = Instant::now();
        let name = self.name.clone();
        ensure!(
            !cfg.model.item_bias,
            "board {name}: the firmware images cache no item biases"
        );
        let start = RoundStart {
            round: job.round,
            seed: job.seed,
            mode: RoundMode::Train,
            config: *cfg,
            num_items,
            rows: rows.len() as u32,
            down: RowEncoding::F32,
            up: RowEncoding::F32,
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
        encode_ratings(&job.items, &job.ratings, buf, &mut sink)
            .map_err(|e| anyhow!("board {name}: encoding ratings: {e:?}"))?;
        let n = Message::RoundStart(start)
            .encode(buf)
            .map_err(|e| anyhow!("board {name}: encoding RoundStart: {e}"))?;
        sink(&buf[..n]).expect("infallible");
        encode_item_rows::<f32, K, _>(
            job.round,
            RowEncoding::F32,
            false,
            rows.len(),
            |i| (rows[i].0, &rows[i].1, None),
            buf,
            &mut sink,
        )
        .map_err(|e| anyhow!("board {name}: encoding item rows: {e:?}"))?;
        self.out.push(0);
        self.link
            .write_all(&self.out)
            .with_context(|| format!("board {name}: sending the round"))?;
        self.link.flush()?;
        self.stats.bytes_down += self.out.len() as u64;

        let mut update = self.read_frame()?;
        // A late answer to a resync's repeated `Hello` precedes this exchange at the board
        // (which handled it before the round's frames): skip it.
        while matches!(self.decode(&update), Ok(Message::Hello(_))) {
            update = self.read_frame()?;
        }
        let chunks = match self.decode(&update)? {
            Message::UpdateBegin(b) => {
                ensure!(
                    b.round == job.round && b.k as usize == K,
                    "board {name}: update for round {} at K = {}, expected round {} K = {K}",
                    b.round,
                    b.k,
                    job.round
                );
                (b.rows as usize).div_ceil(fedrecon_core::wire::ROWS_PER_CHUNK)
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
        self.stats.bytes_up += update.len() as u64;
        self.stats.clients += 1;
        self.stats.seconds += t0.elapsed().as_secs_f64();
        Ok(update)
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
}

impl Boards {
    /// Boots and connects what `opts` asks for, at width `k`, for devices computing in
    /// `scalar` (a board must compute in the same scalar to be bit-identical).
    /// `seed` (the run's) seeds the link faults (`opts.link_faults`).
    pub fn open(opts: &BoardOptions, k: usize, scalar: ScalarKind, seed: u64) -> Result<Boards> {
        ensure!(
            (0.0..1.0).contains(&opts.link_faults),
            "link fault rate {}: must be in [0, 1)",
            opts.link_faults
        );
        let mut boards = Vec::new();
        if opts.qemu_devices > 0 {
            let elf = find_firmware(opts.firmware.as_deref())?;
            tracing::info!(n = opts.qemu_devices, image = %elf.display(), "booting QEMU boards");
            boards.extend(Board::boot_qemu_with_faults(
                &elf,
                opts.qemu_devices,
                k,
                opts.link_faults,
                seed,
                opts.link_timeout.unwrap_or(FAULTY_READ_TIMEOUT),
            )?);
        }
        for spec in &opts.devices {
            ensure!(
                opts.link_faults == 0.0,
                "link faults apply to QEMU boards only (BoardOptions::qemu_devices)"
            );
            boards.push(Board::open(spec, k)?);
        }
        for b in &boards {
            ensure!(
                b.hello.scalar == scalar,
                "board {} computes in {:?}, the simulated devices in {scalar:?} \
                 (use --scalar to match the board)",
                b.name,
                b.hello.scalar
            );
        }
        Ok(Boards { boards })
    }

    /// Wraps connected boards.
    pub fn from_boards(boards: Vec<Board>) -> Boards {
        Boards { boards }
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
    pub fn assign(&self, round: u32, cfg: &RoundConfig, lens: &[usize]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut next = 0;
        for (board, b) in self.boards.iter().enumerate() {
            while next < lens.len() {
                let i = next;
                next += 1;
                if !trains(cfg, lens[i]) {
                    continue;
                }
                if b.fits(lens[i]) {
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
    /// global `f32` item matrix), so the caller runs the virtual devices meanwhile;
    /// [`Boards::finish`] collects the updates.
    pub fn start<const K: usize>(
        &mut self,
        rows: &[[f32; K]],
        jobs: Vec<(usize, BoardJob)>,
    ) -> Pending {
        let num_items = rows.len() as u32;
        let mut running = Vec::with_capacity(jobs.len());
        for (board, job) in jobs {
            let mut rated = job.items.clone();
            rated.sort_unstable();
            rated.dedup();
            let client_rows: Vec<(u32, [f32; K])> = rated
                .iter()
                .filter_map(|&i| rows.get(i as usize).map(|r| (i, *r)))
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
fn qemu_reconnect(elf: PathBuf, name: String, qemu: Qemu, timeout: Duration) -> Reconnect {
    let mut qemu = Some(qemu);
    let io = |e: anyhow::Error| std::io::Error::other(format!("{e:#}"));
    Box::new(move || {
        drop(qemu.take());
        let (q, s) = spawn_qemu(&elf, &name).map_err(io)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        qemu = Some(q);
        tracing::info!(board = %name, "board restarted (injected reset)");
        Ok(Box::new(s) as Box<dyn Link>)
    })
}
