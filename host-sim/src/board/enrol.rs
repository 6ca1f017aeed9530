//! Enrolment (core/WIRE.md 7.1): the file of device ids and keys the server reads, and the
//! server's side of opening a device's authenticated session (7.2), with the refusals counted
//! by name for the metrics.
//!
//! The file has one device per line, `ID KEY`: a decimal `u32` id and the 32-byte key as 64
//! hex digits, separated by spaces or tabs; blank lines and lines starting with `#` are
//! ignored. Every error names the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fedrecon_core::wire::auth::{AuthError, DeviceKey, Role, Session, SessionOpen};
use serde::{Deserialize, Serialize};

/// The enrolled devices.
#[derive(Clone, Debug, Default)]
pub struct Enrolment {
    keys: BTreeMap<u32, DeviceKey>,
    source: Option<PathBuf>,
}

impl Enrolment {
    /// Reads an enrolment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the enrolment file {}", path.display()))?;
        let mut e = Self::parse(&text).with_context(|| format!("{}", path.display()))?;
        e.source = Some(path.to_owned());
        Ok(e)
    }

    /// Parses the file's text (errors name the line).
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, key] = fields[..] else {
                bail!(
                    "line {line_no}: expected `ID KEY` (decimal device id, 64 hex digits), \
                     got {} fields",
                    fields.len()
                );
            };
            let id: u32 = id
                .parse()
                .with_context(|| format!("line {line_no}: device id {id:?} is not a u32"))?;
            let key = parse_key(key).with_context(|| format!("line {line_no}: device {id}"))?;
            if keys.insert(id, key).is_some() {
                bail!("line {line_no}: device {id} is enrolled twice");
            }
        }
        Ok(Self { keys, source: None })
    }

    /// Enrols `device` with `key` (the simulator's QEMU boards: a fresh key per board, held
    /// in memory only); a device enrolled twice is an error.
    pub fn enrol(&mut self, device: u32, key: DeviceKey) -> Result<()> {
        if self.keys.insert(device, key).is_some() {
            bail!("device {device} is enrolled twice");
        }
        Ok(())
    }

    /// Writes the enrolment file (`ID KEY` lines, owner-only permissions on Unix): what
    /// [`Enrolment::load`] reads back.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut text = String::from("# fedrecon enrolment: device id, key (secret)\n");
        for (id, key) in &self.keys {
            let hex: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
            text.push_str(&format!("{id} {hex}\n"));
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("writing the enrolment file {}", path.display()))
    }

    /// Devices enrolled.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no device is enrolled.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The server's side of 7.2: checks the device's [`SessionOpen`] (enrolled, and the link's
    /// device when the link belongs to one) and returns the session with a fresh server nonce
    /// and the answer to send. A refusal is counted in `counts`.
    pub fn accept(
        &self,
        open: &SessionOpen,
        link_device: Option<u32>,
        counts: &mut AuthCounts,
    ) -> Result<(Session, SessionOpen), AuthError> {
        let checked = (|| {
            if let Some(expected) = link_device
                && expected != open.device
            {
                return Err(AuthError::WrongDevice {
                    expected,
                    got: open.device,
                });
            }
            let key = self.keys.get(&open.device).ok_or(AuthError::NotEnrolled {
                device: open.device,
            })?;
            let nonce = fresh_nonce().map_err(|_| AuthError::Exhausted)?;
            let session = Session::new(key, Role::Server, open.device, nonce, open.nonce);
            Ok((
                session,
                SessionOpen {
                    device: open.device,
                    nonce,
                },
            ))
        })();
        if let Err(e) = &checked {
            counts.count(e);
        }
        checked
    }
}

/// A fresh random server nonce (7.2: every session's must differ).
fn fresh_nonce() -> Result<u64, getrandom::Error> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// 64 hex digits.
fn parse_key(s: &str) -> Result<DeviceKey> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "the key must be 64 hex digits (32 bytes), got {} characters",
            s.len()
        );
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("checked hex digits");
    }
    Ok(DeviceKey(key))
}

/// Frames and sessions the authentication layer refused, by [`AuthError::name`] (for
/// `metrics.jsonl`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCounts(pub BTreeMap<String, u64>);

impl AuthCounts {
    /// Counts one refusal.
    pub fn count(&mut self, e: &AuthError) {
        *self.0.entry(e.name().to_owned()).or_default() += 1;
    }

    /// Refusals counted.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Counts one refusal by name (a board's own refusal, reported in its `Error`).
    pub fn count_name(&mut self, name: &str) {
        *self.0.entry(name.to_owned()).or_default() += 1;
    }

    /// The refusals counted since `before` (an earlier copy of these counts).
    pub fn since(&self, before: &AuthCounts) -> AuthCounts {
        AuthCounts(
            self.0
                .iter()
                .map(|(k, &v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0)))
                .filter(|&(_, v)| v > 0)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedrecon_core::wire::Kind;
    use fedrecon_core::wire::TopKRequest;
    use fedrecon_core::wire::auth::sealed_frame_buf_len;

    const KEY7: &str = "0707070707070707070707070707070707070707070707070707070707070707";

    #[test]
    fn parses_ids_and_keys_and_names_bad_lines() {
        let e =
            Enrolment::parse(&format!("# devices\n\n1 {KEY7}\n2\t{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(e.len(), 2);
        let bad = |text: &str| format!("{:#}", Enrolment::parse(text).unwrap_err());
        assert!(
            bad("1\n").contains("line 1: expected `ID KEY`"),
            "{}",
            bad("1\n")
        );
        let e = bad(&format!("\nx {KEY7}\n"));
        assert!(e.contains("line 2") && e.contains("\"x\""), "{e}");
        let e = bad("3 0707\n");
        assert!(
            e.contains("line 1: device 3") && e.contains("64 hex digits"),
            "{e}"
        );
        let e = bad(&format!("3 {KEY7}\n3 {KEY7}\n"));
        assert!(e.contains("line 2: device 3 is enrolled twice"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("devices.txt");
        std::fs::write(&p, "1 zz\n").unwrap();
        let e = format!("{:#}", Enrolment::load(&p).unwrap_err());
        assert!(e.contains("devices.txt") && e.contains("line 1"), "{e}");
        let e = format!(
            "{:#}",
            Enrolment::load(&dir.path().join("none")).unwrap_err()
        );
        assert!(e.contains("reading the enrolment file"), "{e}");
    }

    /// An enrolled device opens a session whose frames the server opens; unknown and
    /// wrong devices are refused and counted; two sessions get different nonces.
    #[test]
    fn accepts_enrolled_devices_only() {
        let e = Enrolment::parse(&format!("42 {KEY7}\n")).unwrap();
        let mut counts = AuthCounts::default();
        let hello = SessionOpen {
            device: 42,
            nonce: 9,
        };
        let (mut server, answer) = e.accept(&hello, Some(42), &mut counts).unwrap();
        assert_eq!(answer.device, 42);
        let key = DeviceKey([7; 32]);
        let mut device = Session::new(&key, Role::Device, 42, answer.nonce, 9);
        let mut buf = [0u8; sealed_frame_buf_len(16)];
        let n = device
            .seal_frame(Kind::TopKRequest, &TopKRequest { round: 3, k: 1 }, &mut buf)
            .unwrap();
        let mut raw = [0u8; 64];
        let (_, r) = fedrecon_core::wire::next_raw_frame(&buf[..n], &mut raw);
        assert!(server.open(r.unwrap().unwrap()).is_ok());
        // A device with the right id but not the enrolled key fails the tag.
        let mut impostor = Session::new(&DeviceKey([8; 32]), Role::Device, 42, answer.nonce, 9);
        let n = impostor
            .seal_frame(Kind::TopKRequest, &TopKRequest { round: 3, k: 1 }, &mut buf)
            .unwrap();
        let (_, r) = fedrecon_core::wire::next_raw_frame(&buf[..n], &mut raw);
        let err = server.open(r.unwrap().unwrap()).unwrap_err();
        assert_eq!(err, AuthError::BadTag);
        counts.count(&err);

        let stranger = SessionOpen {
            device: 7,
            nonce: 1,
        };
        assert_eq!(
            e.accept(&stranger, None, &mut counts).unwrap_err(),
            AuthError::NotEnrolled { device: 7 }
        );
        assert_eq!(
            e.accept(&hello, Some(43), &mut counts).unwrap_err(),
            AuthError::WrongDevice {
                expected: 43,
                got: 42
            }
        );
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.0["bad_tag"], 1);
        assert_eq!(counts.0["not_enrolled"], 1);
        assert_eq!(counts.0["wrong_device"], 1);
        let (_, again) = e.accept(&hello, None, &mut counts).unwrap();
        assert_ne!(again.nonce, answer.nonce, "server nonces must be fresh");
    }
}
