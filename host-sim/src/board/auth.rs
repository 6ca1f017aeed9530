//! The host's end of an authenticated board link (core/WIRE.md 7): the session it opens with
//! a board's `SessionOpen` ([`Enrolment::accept`]), the sealing of every frame it sends and
//! the opening of every frame it receives.
//!
//! The rest of the board code speaks plain frames: [`LinkAuth::seal`] reseals a run of plain
//! frames before they go on the link, [`LinkAuth::open`] turns a received sealed frame back
//! into the plain frame it carries (same kind and payload), so the update decoder the engine
//! shares with virtual devices reads a board's update unchanged. Refusals are counted by name
//! ([`AuthCounts`]) and reported as a [`Refused`] error.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use fedrecon_core::wire::auth::{AuthError, SEAL_LEN, Session, SessionOpen, sealed_frame_buf_len};
use fedrecon_core::wire::{ErrorCode, ErrorMsg, Frame, encode_frame_with, next_raw_frame};

use crate::board::enrol::{AuthCounts, Enrolment};
use fedrecon_core::wire::auth::DeviceKey;

/// The QEMU board images' key file in their working directory
/// (`firmware/src/qemu_board.rs`): device id (`u32` LE), key (32 bytes), first session
/// nonce (`u64` LE).
pub const KEY_FILE: &str = "fedrecon-key.bin";

/// Provisions a QEMU board that will run in `dir`: draws a fresh random key (and first
/// device nonce) from the OS, writes the board's key file (owner-only permissions) and
/// returns the enrolment holding only that device, which the simulator keeps in memory.
pub fn provision_key_file(dir: &std::path::Path, device: u32) -> Result<Enrolment> {
    let mut secret = [0u8; 40];
    getrandom::fill(&mut secret).map_err(|e| anyhow!("drawing a device key: {e}"))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&secret[..32]);
    let mut file = Vec::with_capacity(44);
    file.extend_from_slice(&device.to_le_bytes());
    file.extend_from_slice(&secret);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(KEY_FILE);
    write_private(&path, &file).with_context(|| format!("writing {}", path.display()))?;
    let mut enrolment = Enrolment::default();
    enrolment.enrol(device, DeviceKey(key))?;
    Ok(enrolment)
}

/// Writes a file only its owner can read (on Unix).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

/// A frame (or a session) the authentication layer refused: the board's client is dropped
/// for the round and the link gets a new session. `name` is [`AuthError::name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The refusal's stable name (for metrics).
    pub name: &'static str,
    /// What was refused, and by whom.
    pub detail: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused by authentication ({}): {}",
            self.name, self.detail
        )
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The host refused a board's frame.
    pub(crate) fn by_host(e: &AuthError) -> Refused {
        Refused {
            name: e.name(),
            detail: e.to_string(),
        }
    }

    /// The board refused one of the host's frames (its `Error` of code `Unauthenticated`).
    pub(crate) fn by_board(e: &ErrorMsg) -> Option<Refused> {
        if e.code != ErrorCode::Unauthenticated {
            return None;
        }
        let name = match e.detail {
            Some(1) => "unsealed",
            Some(2) => "bad_tag",
            Some(3) => "replayed",
            Some(4) => "sequence_gap",
            Some(5) => "sequence_exhausted",
            Some(6) => "not_enrolled",
            Some(7) => "wrong_device",
            _ => "unauthenticated",
        };
        Some(Refused {
            name,
            detail: format!("the board refused a frame of round {} ({name})", e.round),
        })
    }
}

/// The host's side of one board's authenticated link.
#[derive(Debug)]
pub(crate) struct LinkAuth {
    enrolment: Arc<Enrolment>,
    /// The device this link belongs to: known for a QEMU board the simulator provisioned,
    /// learnt from the first session of a real board (a later session naming another device
    /// is refused as `WrongDevice`).
    pub(crate) device: Option<u32>,
    session: Option<Session>,
}

impl LinkAuth {
    pub(crate) fn new(enrolment: Arc<Enrolment>, device: Option<u32>) -> LinkAuth {
        LinkAuth {
            enrolment,
            device,
            session: None,
        }
    }

    /// Forgets the session (a resync opens a new one).
    pub(crate) fn close(&mut self) {
        self.session = None;
    }

    /// Whether a session is open.
    pub(crate) fn is_open(&self) -> bool {
        self.session.is_some()
    }

    /// Answers a board's `SessionOpen`: a new session, and the encoded answer to send; a
    /// refusal (not enrolled, another device than the link's) is counted in `refused`.
    pub(crate) fn accept(
        &mut self,
        open: &SessionOpen,
        refused: &mut AuthCounts,
    ) -> Result<Vec<u8>, AuthError> {
        let (session, answer) = self.enrolment.accept(open, self.device, refused)?;
        let mut buf = vec![0u8; sealed_frame_buf_len(32)];
        let n = answer.encode(&mut buf)?;
        buf.truncate(n);
        self.device = Some(open.device);
        self.session = Some(session);
        Ok(buf)
    }

    /// Seals a run of plain frames (each ending in `0x00`; empty frames, e.g. a leading
    /// delimiter, are kept as they are) with the open session.
    pub(crate) fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>> {
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| anyhow!("no authenticated session to seal frames with"))?;
        let mut out = Vec::with_capacity(plain.len() + plain.len() / 64 * SEAL_LEN + 64);
        let mut raw = Vec::new();
        let mut sealed = Vec::new();
        let mut parts = plain.split(|&b| b == 0).peekable();
        while let Some(part) = parts.next() {
            if !part.is_empty() {
                let mut encoded = part.to_vec();
                encoded.push(0);
                raw.resize(encoded.len() + 8, 0);
                let (_, r) = next_raw_frame(&encoded, &mut raw);
                let r = r
                    .context("sealing a plain frame")?
                    .context("sealing an empty frame")?;
                let frame = Frame::check(r).context("sealing a plain frame")?;
                sealed.resize(sealed_frame_buf_len(frame.payload.len()), 0);
                let n = session
                    .seal_frame_with(frame.kind, &mut sealed, |p| {
                        p[..frame.payload.len()].copy_from_slice(frame.payload);
                        Ok(frame.payload.len())
                    })
                    .map_err(|e| anyhow!("sealing a {:?} frame: {e}", frame.kind))?;
                // Without its delimiter: the split's join puts it back.
                out.extend_from_slice(&sealed[..n - 1]);
            }
            if parts.peek().is_some() {
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Opens one received frame (its encoded bytes, delimiter included) with the session and
    /// returns the plain frame it carries, encoded. The session is unchanged by a refusal.
    pub(crate) fn open(&mut self, encoded: &[u8]) -> Result<Vec<u8>, AuthError> {
        let session = self.session.as_mut().ok_or(AuthError::BadTag)?;
        let mut raw = vec![0u8; encoded.len() + 8];
        let (_, r) = next_raw_frame(encoded, &mut raw);
        let r = r?.ok_or(AuthError::Wire(fedrecon_core::wire::WireError::Truncated))?;
        let frame = session.open(r)?;
        let mut plain = vec![0u8; sealed_frame_buf_len(frame.payload.len())];
        let n = encode_frame_with(frame.kind, &mut plain, |p| {
            p[..frame.payload.len()].copy_from_slice(frame.payload);
            Ok(frame.payload.len())
        })?;
        plain.truncate(n);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedrecon_core::wire::auth::Role;
    use fedrecon_core::wire::{Kind, Message, TopKRequest, next_frame};

    fn linked() -> (LinkAuth, Session) {
        let mut e = Enrolment::default();
        e.enrol(5, DeviceKey([3; 32])).unwrap();
        let mut host = LinkAuth::new(Arc::new(e), Some(5));
        let mut counts = AuthCounts::default();
        let answer = host
            .accept(
                &SessionOpen {
                    device: 5,
                    nonce: 77,
                },
                &mut counts,
            )
            .unwrap();
        let mut raw = vec![0u8; 64];
        let (_, r) = next_raw_frame(&answer, &mut raw);
        let server = SessionOpen::check(r.unwrap().unwrap()).unwrap().unwrap();
        let device = Session::new(&DeviceKey([3; 32]), Role::Device, 5, server.nonce, 77);
        (host, device)
    }

    fn plain(round: u32) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        let n = Message::TopKRequest(TopKRequest { round, k: 4 })
            .encode(&mut buf)
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// Sealed runs keep their empty frames, open at the device with the same payloads, and a
    /// device's sealed frame opens back to the plain frame; a tampered one is refused and
    /// the next genuine one still opens.
    #[test]
    fn seals_and_opens_frame_for_frame() {
        let (mut host, mut device) = linked();
        let run: Vec<u8> = [vec![0], plain(1), plain(2), vec![0]].concat();
        let sealed = host.seal(&run).unwrap();
        assert_eq!((sealed[0], sealed[sealed.len() - 1]), (0, 0));
        let frames: Vec<&[u8]> = sealed
            .split_inclusive(|&b| b == 0)
            .filter(|f| f.len() > 1)
            .collect();
        assert_eq!(frames.len(), 2);
        for (f, round) in frames.iter().zip([1, 2]) {
            let mut raw = vec![0u8; 128];
            let (_, r) = next_raw_frame(f, &mut raw);
            let frame = device.open(r.unwrap().unwrap()).unwrap();
            assert_eq!(frame.kind, Kind::TopKRequest);
            let mut want = vec![0u8; 64];
            let (_, w) = next_frame(&plain(round), &mut want);
            assert_eq!(frame.payload, w.unwrap().unwrap().payload);
        }
        let mut buf = vec![0u8; 128];
        let n = device
            .seal_frame(Kind::TopKRequest, &TopKRequest { round: 9, k: 4 }, &mut buf)
            .unwrap();
        let mut forged = buf[..n].to_vec();
        // A bit of the tag (COBS leaves non-zero bytes where they are, after the first).
        let at = n - 8;
        forged[at] ^= if forged[at] == 1 { 2 } else { 1 };
        let e = host.open(&forged).unwrap_err();
        assert!(matches!(e, AuthError::BadTag | AuthError::Wire(_)), "{e:?}");
        assert_eq!(host.open(&buf[..n]).unwrap(), plain(9));
        assert_eq!(
            host.open(&buf[..n]).unwrap_err(),
            AuthError::Replayed {
                seq: 0,
                expected: 1
            }
        );
    }

    /// The key file is what the QEMU images read (id, key, nonce: 44 bytes, owner-only), and
    /// every board gets a key of its own.
    #[test]
    fn provisioned_key_files_are_private_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        provision_key_file(&dir.path().join("a"), 1).unwrap();
        provision_key_file(&dir.path().join("b"), 2).unwrap();
        let a = std::fs::read(dir.path().join("a").join(KEY_FILE)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(KEY_FILE)).unwrap();
        assert_eq!((a.len(), &a[..4]), (44, &1u32.to_le_bytes()[..]));
        assert_eq!(&b[..4], &2u32.to_le_bytes()[..]);
        assert_ne!(a[4..36], b[4..36], "keys must be drawn per board");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("a").join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }

    /// A real board without an enrolment file is refused before anything is opened.
    #[test]
    fn real_boards_need_an_enrolment() {
        let opts = crate::board::BoardOptions {
            devices: vec!["tcp:127.0.0.1:1".into()],
            ..Default::default()
        };
        let e = crate::board::Boards::open(&opts, 8, fedrecon_core::ScalarKind::F32, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--enrolment FILE"), "{e}");
    }
}
