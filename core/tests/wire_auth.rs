//! Authenticated frames (WIRE.md 7, `wire::auth`): sealed frames open on the peer's session
//! and nowhere else; forged, altered, replayed, reordered, reflected, unsealed and other
//! devices' frames are refused with their typed error, and a refused frame does not disturb
//! the session.

use fedrecon_core::wire::auth::{
    AuthError, DeviceKey, Role, SEAL_LEN, SEALED, SESSION_OPEN, Session, SessionOpen,
    sealed_frame_buf_len,
};
use fedrecon_core::wire::crc::crc32;
use fedrecon_core::wire::{
    CRC_LEN, Kind, Message, TopKRequest, WireError, encode_frame, next_raw_frame,
};

const KEY: DeviceKey = DeviceKey([7; 32]);
const DEVICE: u32 = 42;
const SERVER_NONCE: u64 = 0x0123_4567_89ab_cdef;
const DEVICE_NONCE: u64 = 5;

fn pair(key: &DeviceKey, server_nonce: u64) -> (Session, Session) {
    (
        Session::new(key, Role::Server, DEVICE, server_nonce, DEVICE_NONCE),
        Session::new(key, Role::Device, DEVICE, server_nonce, DEVICE_NONCE),
    )
}

fn seal(s: &mut Session, round: u32) -> Vec<u8> {
    let mut buf = [0u8; sealed_frame_buf_len(16)];
    let n = s
        .seal_frame(Kind::TopKRequest, &TopKRequest { round, k: 5 }, &mut buf)
        .unwrap();
    buf[..n].to_vec()
}

/// COBS-decodes one encoded frame.
fn raw(frame: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let (used, r) = next_raw_frame(frame, &mut buf);
    assert_eq!(used, frame.len());
    r.unwrap().unwrap().to_vec()
}

fn open(s: &mut Session, frame: &[u8]) -> Result<TopKRequest, AuthError> {
    let r = raw(frame);
    let f = s.open(&r)?;
    assert_eq!(f.kind, Kind::TopKRequest);
    match Message::decode::<8>(&f)? {
        Message::TopKRequest(t) => Ok(t),
        m => panic!("unexpected {m:?}"),
    }
}

/// Recomputes the CRC after tampering, as an attacker on the link would.
fn recrc(raw: &mut [u8]) {
    let n = raw.len() - CRC_LEN;
    let crc = crc32(&raw[..n]);
    raw[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn sealed_frames_open_in_order_both_ways() {
    let (mut server, mut device) = pair(&KEY, SERVER_NONCE);
    for round in 1..=3 {
        let f = seal(&mut server, round);
        let t = open(&mut device, &f).unwrap();
        assert_eq!((t.round, t.k), (round, 5));
        let back = seal(&mut device, round + 100);
        let t = open(&mut server, &back).unwrap();
        assert_eq!(t.round, round + 100);
    }
}

#[test]
fn the_seal_costs_20_bytes_and_leaves_the_payload_readable() {
    let (mut server, _) = pair(&KEY, SERVER_NONCE);
    let msg = TopKRequest { round: 1, k: 5 };
    let mut buf = [0u8; 64];
    let plain = encode_frame(Kind::TopKRequest, &msg, &mut buf).unwrap();
    let plain_raw = raw(&buf[..plain]);
    let sealed = seal(&mut server, 1);
    let sealed_raw = raw(&sealed);
    assert_eq!(sealed_raw.len(), plain_raw.len() + SEAL_LEN);
    assert_eq!(sealed_raw[2], Kind::TopKRequest as u8 | SEALED);
    assert_eq!(sealed_raw[3..5], plain_raw[3..5]);
}

#[test]
fn altered_frames_fail_the_tag_or_the_crc() {
    let (mut server, mut device) = pair(&KEY, SERVER_NONCE);
    let f = seal(&mut server, 1);
    let good = raw(&f);
    // Every byte of header (but the major; the kind byte too: 0x88 becomes 0x89, a valid
    // kind), payload, sequence and tag, flipped with the CRC fixed up, fails the tag (a
    // cleared sealed bit is an unsealed frame, below).
    for i in 1..good.len() - CRC_LEN {
        let mut r = good.clone();
        r[i] ^= 0x01;
        recrc(&mut r);
        assert_eq!(device.open(&r).unwrap_err(), AuthError::BadTag, "byte {i}");
    }
    let mut r = good.clone();
    r[2] &= !SEALED;
    recrc(&mut r);
    assert_eq!(
        device.open(&r).unwrap_err(),
        AuthError::Unsealed {
            kind: Kind::TopKRequest as u8
        }
    );
    // Without the CRC fixed up it is link corruption.
    let mut r = good.clone();
    r[4] ^= 0x80;
    assert!(matches!(
        device.open(&r),
        Err(AuthError::Wire(WireError::Crc { .. }))
    ));
    // None of it disturbed the session: the genuine frame still opens.
    assert!(open(&mut device, &f).is_ok());
}

#[test]
fn replayed_and_reordered_frames_are_refused() {
    let (mut server, mut device) = pair(&KEY, SERVER_NONCE);
    let f0 = seal(&mut server, 1);
    let f1 = seal(&mut server, 2);
    let f2 = seal(&mut server, 3);
    assert_eq!(
        open(&mut device, &f1).unwrap_err(),
        AuthError::Gap {
            seq: 1,
            expected: 0
        }
    );
    open(&mut device, &f0).unwrap();
    assert_eq!(
        open(&mut device, &f0).unwrap_err(),
        AuthError::Replayed {
            seq: 0,
            expected: 1
        }
    );
    open(&mut device, &f1).unwrap();
    open(&mut device, &f2).unwrap();
    assert_eq!(
        open(&mut device, &f1).unwrap_err(),
        AuthError::Replayed {
            seq: 1,
            expected: 3
        }
    );
}

#[test]
fn other_devices_sessions_and_directions_do_not_open() {
    let (mut server, mut device) = pair(&KEY, SERVER_NONCE);
    // Another device's key, same nonces.
    let (mut other_server, _) = pair(&DeviceKey([8; 32]), SERVER_NONCE);
    assert_eq!(
        open(&mut device, &seal(&mut other_server, 1)).unwrap_err(),
        AuthError::BadTag
    );
    // The same device's earlier session (another server nonce): a replayed session.
    let (mut old_server, _) = pair(&KEY, SERVER_NONCE + 1);
    assert_eq!(
        open(&mut device, &seal(&mut old_server, 1)).unwrap_err(),
        AuthError::BadTag
    );
    // The server's own frame reflected back to it.
    let f = seal(&mut server, 1);
    let (mut server2, _) = pair(&KEY, SERVER_NONCE);
    assert_eq!(open(&mut server2, &f).unwrap_err(), AuthError::BadTag);
    // A plain frame on the authenticated link.
    let mut buf = [0u8; 64];
    let n = encode_frame(Kind::TopKRequest, &TopKRequest { round: 1, k: 5 }, &mut buf).unwrap();
    assert_eq!(
        open(&mut device, &buf[..n]).unwrap_err(),
        AuthError::Unsealed {
            kind: Kind::TopKRequest as u8
        }
    );
    open(&mut device, &f).unwrap();
}

#[test]
fn session_open_round_trips_and_other_frames_are_not_one() {
    let open = SessionOpen {
        device: DEVICE,
        nonce: SERVER_NONCE,
    };
    let mut buf = [0u8; sealed_frame_buf_len(15)];
    let n = open.encode(&mut buf).unwrap();
    let r = raw(&buf[..n]);
    assert_eq!(r[2], SESSION_OPEN);
    assert_eq!(SessionOpen::check(&r), Ok(Some(open)));
    let (mut server, _) = pair(&KEY, SERVER_NONCE);
    assert_eq!(SessionOpen::check(&raw(&seal(&mut server, 1))), Ok(None));
    let mut bad = r.clone();
    bad[0] = 9;
    recrc(&mut bad);
    assert_eq!(
        SessionOpen::check(&bad),
        Err(AuthError::Wire(WireError::UnsupportedVersion {
            got: 9,
            supported: 3
        }))
    );
}

/// The example of WIRE.md 7.4, computed independently with Python's `cryptography`
/// (ChaCha20Poly1305, RFC 8439; the script is in WIRE.md): device key 32 × 0x07, server nonce 0x0123456789abcdef,
/// device nonce 5; the server's first sealed frame, `TopKRequest { round: 1, k: 5 }`.
#[test]
fn golden_sealed_frame_for_wire_md() {
    let (mut server, _) = pair(&KEY, SERVER_NONCE);
    let f = seal(&mut server, 1);
    let hex: String = raw(&f).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_RAW);
}

const GOLDEN_RAW: &str = "0301880105000000007655dba1b02092390a97c2f51bcb0c67a7b96e6f";

proptest::proptest! {
    /// Arbitrary bytes (and a genuine frame with arbitrary bytes spliced in) never panic the
    /// authentication layer and never open.
    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), at in 0usize..64) {
        let (mut server, mut device) = pair(&KEY, SERVER_NONCE);
        let junk = bytes.clone();
        proptest::prop_assert!(device.open(&junk).is_err());
        let _ = SessionOpen::check(&bytes);
        let r = raw(&seal(&mut server, 1));
        let at = at.min(r.len());
        let mut spliced: Vec<u8> = r[..at].to_vec();
        spliced.extend(&bytes);
        if spliced != r {
            proptest::prop_assert!(device.open(&spliced).is_err());
        }
        proptest::prop_assert!(device.open(&r).is_ok());
    }
}

/// A `Session` is a `FrameWriter`: an update streamed through it is, frame for frame, the
/// plain encoder's messages sealed in sequence (the device's uplink, WIRE.md 7.3), and the
/// refusal codes map to `Error` code 16 with the reason's number.
#[test]
fn streaming_encoders_seal_frame_for_frame() {
    use fedrecon_core::Device;
    use fedrecon_core::wire::{
        ErrorCode, ErrorMsg, Frame, RowEncoding, UpdateInfo, encode_update, encode_update_with,
        update_buf_len,
    };
    const K: usize = 4;
    let mut dev = Device::<f32, 16, K>::new();
    for i in 0..8u32 {
        dev.data_mut()
            .push(i * 3, 1.0 + (i % 5) as f32, 40)
            .unwrap();
    }
    let rows: Vec<[f32; K]> = (0..40)
        .map(|i| core::array::from_fn(|j| ((i * 7 + j) % 11) as f32 / 11.0 - 0.5))
        .collect();
    let cfg = fedrecon_core::RoundConfig::default();
    let update = dev
        .train(&fedrecon_core::DenseRows::new(&rows), &cfg, 3)
        .unwrap();
    let info = UpdateInfo {
        round: 2,
        client: 9,
    };
    let mut buf = vec![0u8; sealed_frame_buf_len(update_buf_len(K))];
    let mut plain = Vec::new();
    encode_update(info, &update, RowEncoding::F32, &mut buf, |f: &[u8]| {
        plain.push(f.to_vec());
        Ok::<(), ()>(())
    })
    .unwrap();
    let (mut server, mut device) = pair(&KEY, SERVER_NONCE);
    let mut sealed = Vec::new();
    encode_update_with(
        &mut device,
        info,
        &update,
        RowEncoding::F32,
        &mut buf,
        |f: &[u8]| {
            sealed.push(f.to_vec());
            Ok::<(), ()>(())
        },
    )
    .unwrap();
    assert_eq!(sealed.len(), plain.len());
    assert!(plain.len() >= 2, "an UpdateBegin and at least one chunk");
    for (s, p) in sealed.iter().zip(&plain) {
        let s_raw = raw(s);
        let opened = server.open(&s_raw).unwrap();
        let p_raw = raw(p);
        let want = Frame::check(&p_raw).unwrap();
        assert_eq!((opened.kind, opened.payload), (want.kind, want.payload));
        assert_eq!(s_raw.len(), p_raw.len() + SEAL_LEN);
    }
    let msg = ErrorMsg::from_auth(
        4,
        &AuthError::Replayed {
            seq: 1,
            expected: 2,
        },
    );
    assert_eq!(
        (msg.round, msg.code, msg.detail),
        (4, ErrorCode::Unauthenticated, Some(3))
    );
    let wire = ErrorMsg::from_auth(4, &AuthError::Wire(WireError::Truncated));
    assert_eq!(wire.code, ErrorCode::Truncated);
}
