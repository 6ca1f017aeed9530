//! A fault-injecting proxy on a board's byte link (issue 9, the serial link):
//! `fedrecon train --qemu-devices N --link-faults RATE`.
//!
//! [`FaultyLink`] wraps the link ([`crate::board::Link`], a TCP socket to QEMU's UART0 or a
//! serial port) and, independently for each frame (a run of bytes ending in the `0x00`
//! delimiter, in both directions), injects with probability `rate` one fault:
//!
//! - a **bit flip** (one bit of one byte of the frame, delimiter included),
//! - a **dropped byte**, a **duplicated byte**,
//! - a **truncated frame** (a prefix of at least one byte, then the delimiter),
//! - a **board reset** (only when the link can reconnect, e.g. a QEMU board: a prefix of the
//!   frame passes, then the board restarts — a fresh QEMU process, in `AwaitHello` — and the
//!   link reports `ConnectionReset` once, as a USB serial port does when its board resets).
//!
//! The draws come from one splitmix64 stream per direction seeded from the run seed and the
//! board's index, so a run's faults depend only on (seed, board, frame number, direction):
//! deterministic, whatever the timing. Frames are whole when faulted (bytes are held until
//! their delimiter), so the proxy adds no partial-read behaviour of its own.
//!
//! On an authenticated link (core/WIRE.md 7; every QEMU board's) the proxy can also **attack**
//! (`--link-attacks RATE`, [`FaultyLink::with_attacks`], a stream of its own so the faults
//! above do not change): with probability `rate` per frame and direction, a sealed frame is
//! **forged** (its tag replaced), **altered** (a payload or sequence bit flipped, the CRC fixed
//! up, so only the tag can tell), or **replayed** (the previous sealed frame of that direction
//! sent again before it), and a `SessionOpen` names **another device**. The receiver refuses
//! each (`bad_tag`, `replayed`, `wrong_device`: the round's `auth_refused`); the client of the
//! exchange is dropped for the round, never aggregated, and the link gets a new session.
//!
//! The host detects every corruption (CRC, COBS, chunk sequence, unexpected message, the
//! board's `Error` replies, read timeouts, the reset), resynchronises the board with a fresh
//! `Hello`, retries the client once and otherwise drops it for the round
//! ([`crate::board::Board::train_client`]); a corrupted update is never aggregated.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use crate::board::Link;
use crate::seeds::splitmix64;
use fedrecon_core::wire::auth::{SEALED, SESSION_OPEN, SessionOpen, TAG_LEN};
use fedrecon_core::wire::{CRC_LEN, HEADER_LEN, encode_frame_raw, next_raw_frame};

/// The kinds of injected faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// One bit of one byte flipped.
    BitFlip,
    /// One byte removed.
    DropByte,
    /// One byte sent twice.
    DupByte,
    /// The frame cut short (a prefix, then the delimiter).
    Truncate,
    /// The board restarted after a prefix of the frame.
    Reset,
}

/// Injected faults so far (both directions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    /// Sealed frames forged (tag replaced).
    #[serde(skip_serializing_if = "is_zero")]
    pub forged: u64,
    /// Sealed frames altered (a bit of payload or sequence, CRC fixed up).
    #[serde(skip_serializing_if = "is_zero")]
    pub altered: u64,
    /// Sealed frames replayed.
    #[serde(skip_serializing_if = "is_zero")]
    pub replayed: u64,
    /// `SessionOpen` frames naming another device.
    #[serde(skip_serializing_if = "is_zero")]
    pub wrong_device: u64,
    /// Frames that went through the proxy.
    pub frames: u64,
    /// Bits flipped.
    pub bit_flips: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
    /// Bytes duplicated.
    pub duplicated_bytes: u64,
    /// Frames truncated.
    pub truncated: u64,
    /// Board resets.
    pub resets: u64,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

impl FaultCounts {
    /// All injected faults (attacks not included: [`FaultCounts::attacks`]).
    pub fn total(&self) -> u64 {
        self.bit_flips + self.dropped_bytes + self.duplicated_bytes + self.truncated + self.resets
    }

    /// All injected attacks.
    pub fn attacks(&self) -> u64 {
        self.forged + self.altered + self.replayed + self.wrong_device
    }

    fn count_attack(&mut self, a: Attack) {
        match a {
            Attack::Forge => self.forged += 1,
            Attack::Alter => self.altered += 1,
            Attack::Replay => self.replayed += 1,
            Attack::WrongDevice => self.wrong_device += 1,
        }
    }

    fn count(&mut self, f: Fault) {
        match f {
            Fault::BitFlip => self.bit_flips += 1,
            Fault::DropByte => self.dropped_bytes += 1,
            Fault::DupByte => self.duplicated_bytes += 1,
            Fault::Truncate => self.truncated += 1,
            Fault::Reset => self.resets += 1,
        }
    }
}

/// A seeded per-frame fault generator (one per direction).
#[derive(Clone, Debug)]
pub struct FaultStream {
    state: u64,
    rate: f64,
    resets: bool,
}

impl FaultStream {
    /// Faults at `rate` per frame; `resets`: whether [`Fault::Reset`] may be drawn.
    pub fn new(rate: f64, seed: u64, resets: bool) -> FaultStream {
        FaultStream {
            state: splitmix64(seed),
            rate,
            resets,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = splitmix64(self.state);
        self.state
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Applies at most one fault to `frame` (its bytes, ending with the `0x00` delimiter).
    /// Returns the fault and, for [`Fault::Reset`], how many bytes of the (unchanged) frame
    /// pass before the reset.
    pub fn corrupt(&mut self, frame: &mut Vec<u8>) -> Option<(Fault, usize)> {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        if u >= self.rate || frame.is_empty() {
            return None;
        }
        let kinds = if self.resets { 5 } else { 4 };
        let n = frame.len();
        let fault = match self.below(kinds) {
            0 => {
                let (pos, bit) = (self.below(n), self.below(8));
                frame[pos] ^= 1 << bit;
                Fault::BitFlip
            }
            1 => {
                frame.remove(self.below(n));
                Fault::DropByte
            }
            2 => {
                let pos = self.below(n);
                frame.insert(pos, frame[pos]);
                Fault::DupByte
            }
            3 if n > 2 => {
                // Keep 1 ..= n - 2 bytes of the n - 1 before the delimiter.
                let keep = 1 + self.below(n - 2);
                frame.truncate(keep);
                frame.push(0);
                Fault::Truncate
            }
            3 => {
                frame[0] ^= 1;
                Fault::BitFlip
            }
            _ => return Some((Fault::Reset, self.below(n))),
        };
        Some((fault, 0))
    }
}

/// The attacks on an authenticated link (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// A sealed frame's tag replaced by other bytes.
    Forge,
    /// One bit of a sealed frame's payload or sequence flipped, the CRC fixed up.
    Alter,
    /// The previous sealed frame of the direction sent again first.
    Replay,
    /// A `SessionOpen` naming another device.
    WrongDevice,
}

/// A seeded per-frame attacker (one per direction): it remembers the last sealed frame it
/// saw, to replay it.
#[derive(Clone, Debug)]
pub struct AttackStream {
    state: u64,
    rate: f64,
    last_sealed: Option<Vec<u8>>,
}

impl AttackStream {
    /// Attacks at `rate` per frame, drawn from `seed`.
    pub fn new(rate: f64, seed: u64) -> AttackStream {
        AttackStream {
            state: splitmix64(seed ^ 0x4154_5441_434b),
            rate,
            last_sealed: None,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = splitmix64(self.state);
        self.state
    }

    /// Applies at most one attack to `frame` (its encoded bytes, ending with the delimiter);
    /// frames that are neither sealed nor a `SessionOpen` pass untouched.
    pub fn attack(&mut self, frame: &mut Vec<u8>) -> Option<Attack> {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let pick = self.next();
        let mut raw = vec![0u8; frame.len() + 8];
        let (_, r) = next_raw_frame(frame, &mut raw);
        let body = r.ok()??.to_vec();
        if body.len() < HEADER_LEN + CRC_LEN {
            return None;
        }
        let kind = body[2];
        let sealed = kind & SEALED != 0;
        let previous = if sealed {
            self.last_sealed.replace(frame.clone())
        } else {
            None
        };
        if u >= self.rate {
            return None;
        }
        let (header, payload) = (
            [body[0], body[1], body[2]],
            body[HEADER_LEN..body.len() - CRC_LEN].to_vec(),
        );
        let reencode = |payload: &[u8]| {
            let mut buf = vec![0u8; payload.len() * 2 + 64];
            let n = encode_frame_raw(header, &mut buf, |p| {
                p[..payload.len()].copy_from_slice(payload);
                Ok(payload.len())
            })
            .expect("the buffer fits the frame");
            buf.truncate(n);
            buf
        };
        if kind == SESSION_OPEN {
            let Ok(Some(mut open)) = SessionOpen::check(&body) else {
                return None;
            };
            open.device ^= 0x0100_0000;
            let mut buf = vec![0u8; 64];
            let n = open.encode(&mut buf).ok()?;
            buf.truncate(n);
            *frame = buf;
            return Some(Attack::WrongDevice);
        }
        if !sealed || payload.len() < TAG_LEN + 4 {
            return None;
        }
        let choices = if previous.is_some() { 3 } else { 2 };
        match pick % choices {
            0 => {
                let mut p = payload;
                let at = p.len() - TAG_LEN;
                for (i, b) in p[at..].iter_mut().enumerate() {
                    *b = (pick >> (i % 8 * 8)) as u8 ^ 0x5a;
                }
                *frame = reencode(&p);
                Some(Attack::Forge)
            }
            1 => {
                let mut p = payload;
                // A bit of the payload or the sequence (everything before the tag).
                let span = p.len() - TAG_LEN;
                let pos = ((pick >> 8) % span as u64) as usize;
                p[pos] ^= 1 << ((pick >> 40) % 8);
                *frame = reencode(&p);
                Some(Attack::Alter)
            }
            _ => {
                let mut replay = previous.expect("checked");
                replay.extend_from_slice(frame);
                *frame = replay;
                Some(Attack::Replay)
            }
        }
    }
}

/// Reopens a board's link after a reset (e.g. restarts its QEMU process and connects).
pub type Reconnect = Box<dyn FnMut() -> io::Result<Box<dyn Link>> + Send>;

/// A [`Link`] that injects faults into the frames passing through it (module docs).
pub struct FaultyLink {
    inner: Box<dyn Link>,
    reconnect: Option<Reconnect>,
    down: FaultStream,
    up: FaultStream,
    /// Attacks per direction (`--link-attacks`), after the faults.
    attacks: Option<(AttackStream, AttackStream)>,
    /// Outgoing bytes of a frame not yet complete.
    tx: Vec<u8>,
    /// Incoming bytes of a frame not yet complete.
    rx_raw: Vec<u8>,
    /// Incoming bytes ready for the reader, from `rx_pos`.
    rx: Vec<u8>,
    rx_pos: usize,
    /// A reset happened: the next read or write reports it.
    reset_pending: bool,
    counts: Arc<Mutex<FaultCounts>>,
}

impl FaultyLink {
    /// Wraps `inner` with faults at `rate` per frame and direction, drawn from `seed`;
    /// `reconnect` makes board resets possible.
    pub fn new(
        inner: Box<dyn Link>,
        rate: f64,
        seed: u64,
        reconnect: Option<Reconnect>,
    ) -> FaultyLink {
        let resets = reconnect.is_some();
        FaultyLink {
            inner,
            reconnect,
            down: FaultStream::new(rate, seed ^ 0x646f_776e, resets),
            up: FaultStream::new(rate, seed ^ 0x7570, resets),
            attacks: None,
            tx: Vec::new(),
            rx_raw: Vec::new(),
            rx: Vec::new(),
            rx_pos: 0,
            reset_pending: false,
            counts: Arc::new(Mutex::new(FaultCounts::default())),
        }
    }

    /// Also attacks the authenticated link at `rate` per frame and direction, drawn from
    /// `seed` (module docs).
    pub fn with_attacks(mut self, rate: f64, seed: u64) -> FaultyLink {
        if rate > 0.0 {
            self.attacks = Some((
                AttackStream::new(rate, seed ^ 0x646f_776e),
                AttackStream::new(rate, seed ^ 0x7570),
            ));
        }
        self
    }

    /// Attacks a frame going down (`up == false`) or up, counting it.
    fn attack(&mut self, frame: &mut Vec<u8>, up: bool) {
        let Some((down_s, up_s)) = self.attacks.as_mut() else {
            return;
        };
        let s = if up { up_s } else { down_s };
        if let Some(a) = s.attack(frame) {
            tracing::debug!(?a, up, "link attack");
            self.counts.lock().expect("fault counters").count_attack(a);
        }
    }

    /// The shared fault counters.
    pub fn counts(&self) -> Arc<Mutex<FaultCounts>> {
        Arc::clone(&self.counts)
    }

    fn note(&self, f: Option<(Fault, usize)>) {
        let mut c = self.counts.lock().expect("fault counters");
        c.frames += 1;
        if let Some((f, _)) = f {
            c.count(f);
        }
    }

    fn reset(&mut self) -> io::Result<()> {
        let reconnect = self.reconnect.as_mut().expect("resets need a reconnect");
        tracing::debug!("link faults: resetting the board");
        self.inner = reconnect()?;
        self.rx_raw.clear();
        self.reset_pending = true;
        Ok(())
    }

    fn take_reset(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.reset_pending) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the board was reset (injected fault)",
            ));
        }
        Ok(())
    }
}

impl Write for FaultyLink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.take_reset()?;
        let mut rest = bytes;
        while let Some(z) = rest.iter().position(|&b| b == 0) {
            self.tx.extend_from_slice(&rest[..=z]);
            rest = &rest[z + 1..];
            let mut frame = std::mem::take(&mut self.tx);
            let f = self.down.corrupt(&mut frame);
            self.note(f);
            if let Some((Fault::Reset, keep)) = f {
                self.inner.write_all(&frame[..keep])?;
                self.inner.flush()?;
                self.reset()?;
                // The rest of this write is lost with the board.
                return Ok(bytes.len());
            }
            self.attack(&mut frame, false);
            self.inner.write_all(&frame)?;
        }
        self.tx.extend_from_slice(rest);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Read for FaultyLink {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.rx_pos < self.rx.len() {
                let n = out.len().min(self.rx.len() - self.rx_pos);
                out[..n].copy_from_slice(&self.rx[self.rx_pos..self.rx_pos + n]);
                self.rx_pos += n;
                return Ok(n);
            }
            self.rx.clear();
            self.rx_pos = 0;
            self.take_reset()?;
            let mut chunk = [0u8; 4096];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            self.rx_raw.extend_from_slice(&chunk[..n]);
            while let Some(z) = self.rx_raw.iter().position(|&b| b == 0) {
                let mut frame: Vec<u8> = self.rx_raw.drain(..=z).collect();
                let f = self.up.corrupt(&mut frame);
                self.note(f);
                if let Some((Fault::Reset, keep)) = f {
                    self.rx.extend_from_slice(&frame[..keep]);
                    self.reset()?;
                    break;
                }
                self.attack(&mut frame, true);
                self.rx.extend_from_slice(&frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut f: Vec<u8> = (0..20 + i % 30)
                    .map(|j| 1 + ((i + j) % 250) as u8)
                    .collect();
                f.push(0);
                f
            })
            .collect()
    }

    #[test]
    fn faults_are_deterministic_and_at_the_rate() {
        let run = |seed: u64| {
            let mut s = FaultStream::new(0.1, seed, true);
            let mut counts = FaultCounts::default();
            let out: Vec<Vec<u8>> = frames(20_000)
                .into_iter()
                .map(|mut f| {
                    let orig = f.clone();
                    let r = s.corrupt(&mut f);
                    counts.frames += 1;
                    match r {
                        None => assert_eq!(f, orig),
                        Some((k, keep)) => {
                            counts.count(k);
                            if k == Fault::Reset {
                                assert!(keep < orig.len());
                            } else {
                                assert_ne!(f, orig, "{k:?} left the frame intact");
                            }
                        }
                    }
                    f
                })
                .collect();
            (out, counts)
        };
        let (a, ca) = run(7);
        let (b, cb) = run(7);
        assert_eq!(a, b);
        assert_eq!(ca, cb);
        let (c, _) = run(8);
        assert_ne!(a, c);
        let rate = ca.total() as f64 / ca.frames as f64;
        assert!((rate - 0.1).abs() < 0.01, "{rate} {ca:?}");
        for k in [
            ca.bit_flips,
            ca.dropped_bytes,
            ca.duplicated_bytes,
            ca.truncated,
            ca.resets,
        ] {
            let share = k as f64 / ca.total() as f64;
            assert!((share - 0.2).abs() < 0.04, "{ca:?}");
        }
        let mut none = FaultStream::new(0.0, 7, true);
        for mut f in frames(1000) {
            assert!(none.corrupt(&mut f).is_none());
        }
    }

    /// A loopback pair: what is written comes back on read.
    struct Loop(std::collections::VecDeque<u8>);
    impl Read for Loop {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.0.read(out)
        }
    }
    impl Write for Loop {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_wrapper_faults_whole_frames_in_both_directions() {
        let input: Vec<u8> = frames(2000).concat();
        let go = |rate: f64| {
            let mut l = FaultyLink::new(
                Box::new(Loop(Default::default())),
                rate,
                3,
                Some(Box::new(|| {
                    Ok(Box::new(Loop(Default::default())) as Box<dyn Link>)
                })),
            );
            // Written in odd pieces: faults do not depend on how writes are split.
            let mut resets = 0;
            for piece in input.chunks(37) {
                if l.write_all(piece).is_err() {
                    resets += 1;
                }
            }
            let mut back = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                match l.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => back.extend_from_slice(&buf[..n]),
                    Err(_) => resets += 1,
                }
            }
            let c = *l.counts().lock().unwrap();
            (back, c, resets)
        };
        let (clean, c0, r0) = go(0.0);
        assert_eq!(clean, input);
        assert_eq!((c0.total(), c0.frames, r0), (0, 4000, 0));
        let (a, ca, ra) = go(0.05);
        let (b, cb, rb) = go(0.05);
        assert_eq!((&a, ca, ra), (&b, cb, rb));
        assert_ne!(a, input);
        assert!(ca.total() > 50 && ca.resets > 0, "{ca:?}");
    }

    /// Each attack does what it says: forged and altered frames fail the tag, a replay is the
    /// previous frame again (refused as replayed) before the genuine one, a `SessionOpen`
    /// names another device; frames that are neither sealed nor `SessionOpen` pass.
    #[test]
    fn attacks_are_refused_for_what_they_are() {
        use fedrecon_core::wire::auth::{AuthError, DeviceKey, Role, Session};
        use fedrecon_core::wire::{Kind, Message, TopKRequest};
        let key = DeviceKey([1; 32]);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64u64 {
            let mut tx = Session::new(&key, Role::Server, 3, 9, 4);
            let mut rx = Session::new(&key, Role::Device, 3, 9, 4);
            let mut a = AttackStream::new(1.0, seed);
            let mut buf = vec![0u8; 128];
            let mut raw = vec![0u8; 256];
            let mut frames = Vec::new();
            for round in 0..2 {
                let n = tx
                    .seal_frame(Kind::TopKRequest, &TopKRequest { round, k: 2 }, &mut buf)
                    .unwrap();
                frames.push(buf[..n].to_vec());
            }
            // The first frame goes through untouched for the replay to have something.
            let mut first = frames[0].clone();
            let mut quiet = AttackStream::new(0.0, seed);
            assert_eq!(quiet.attack(&mut first), None);
            a.last_sealed = Some(frames[0].clone());
            let (_, r) = next_raw_frame(&frames[0], &mut raw);
            rx.open(r.unwrap().unwrap()).unwrap();
            let mut f = frames[1].clone();
            let kind = a.attack(&mut f).expect("rate 1 attacks a sealed frame");
            seen.insert(format!("{kind:?}"));
            let (used, r) = next_raw_frame(&f, &mut raw);
            let got = r.unwrap().map(|r| rx.open(r).map(|_| ()));
            match kind {
                Attack::Forge | Attack::Alter => {
                    assert!(
                        matches!(got, Some(Err(AuthError::BadTag))),
                        "{kind:?} {got:?}"
                    )
                }
                Attack::Replay => {
                    assert_eq!(
                        got,
                        Some(Err(AuthError::Replayed {
                            seq: 0,
                            expected: 1
                        }))
                    );
                    let (_, r) = next_raw_frame(&f[used..], &mut raw);
                    assert!(
                        rx.open(r.unwrap().unwrap()).is_ok(),
                        "the genuine frame after it"
                    );
                }
                Attack::WrongDevice => panic!("a sealed frame is not a SessionOpen"),
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        let mut open = vec![0u8; 64];
        let n = SessionOpen {
            device: 3,
            nonce: 1,
        }
        .encode(&mut open)
        .unwrap();
        let mut f = open[..n].to_vec();
        assert_eq!(
            AttackStream::new(1.0, 1).attack(&mut f),
            Some(Attack::WrongDevice)
        );
        let mut raw = vec![0u8; 64];
        let (_, r) = next_raw_frame(&f, &mut raw);
        let named = SessionOpen::check(r.unwrap().unwrap()).unwrap().unwrap();
        assert_ne!(named.device, 3);
        let mut plain = vec![0u8; 64];
        let n = Message::TopKRequest(TopKRequest { round: 1, k: 2 })
            .encode(&mut plain)
            .unwrap();
        let mut p = plain[..n].to_vec();
        assert_eq!(AttackStream::new(1.0, 1).attack(&mut p), None);
        assert_eq!(p, plain[..n]);
    }
}
