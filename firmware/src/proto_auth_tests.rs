//! Host tests of a keyed board (core/WIRE.md 7): the session it opens on a plain `Hello`,
//! its sealed answers (the same messages as an unkeyed board's), and the frames it refuses
//! (forged, altered, replayed, another device's, plain) without acting on them or losing
//! its session.

extern crate std;

use crate::test_link::{Pipe, client, host_hello, matrix};
use crate::{Board, BoardInfo, BoardKey, CachedRows, FIRMWARE_VERSION, sealed_buf_len};
use fedrecon_core::wire::auth::{DeviceKey, Role, SESSION_OPEN, Session, SessionOpen};
use fedrecon_core::wire::{
    ErrorCode, Frame, Message, RoundMode, RoundStart, RowEncoding, UpdateInfo, encode_frame_raw,
    encode_item_rows, encode_ratings, encode_update, next_raw_frame, update_buf_len,
};
use fedrecon_core::{DenseRows, Device, RoundConfig, SplitConfig};
use std::boxed::Box;
use std::vec;
use std::vec::Vec;

const K: usize = 8;
const N: usize = 40;
const FB: usize = sealed_buf_len(K);
const ITEMS: u32 = 60;
const CLIENT: u32 = 7;
const DEVICE: u32 = 42;
const KEY: [u8; 32] = [0x24; 32];
const BOARD_NONCE: u64 = 1000;
const SERVER_NONCE: u64 = 0x0123_4567_89ab_cdef;

/// Runs a board keyed with `KEY` over `input`; returns what it wrote.
fn run(input: &[u8]) -> Vec<u8> {
    let mut device: Box<Device<f32, N, K>> = Box::new(Device::new());
    let mut rows: Box<CachedRows<f32, N, K>> = Box::new(CachedRows::new());
    let info = BoardInfo {
        client: CLIENT,
        firmware: FIRMWARE_VERSION,
    };
    let mut board: Board<'_, f32, N, K, FB> = Board::new(&mut device, &mut rows, info);
    board.set_key(BoardKey {
        device: DEVICE,
        key: DeviceKey(KEY),
        nonce: BOARD_NONCE,
    });
    let mut pipe = Pipe::new(input, 11);
    board.serve(&mut pipe).unwrap();
    pipe.output
}

fn hello() -> Message<'static> {
    host_hello(K as u32)
}

fn plain(m: &Message<'_>) -> Vec<u8> {
    let mut buf = [0u8; FB];
    let n = m.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

/// The encoded frames of `bytes`, delimiters included.
fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == 0)
        .filter(|f| f.len() > 1)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Seals every plain frame of `bytes` with `s` (the server's end).
fn seal_all(s: &mut Session, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in split(bytes) {
        let mut raw = vec![0u8; FB];
        let (_, r) = next_raw_frame(&f, &mut raw);
        let frame = Frame::check(r.unwrap().unwrap()).unwrap();
        let mut buf = vec![0u8; FB];
        let n = s
            .seal_frame_with(frame.kind, &mut buf, |p| {
                p[..frame.payload.len()].copy_from_slice(frame.payload);
                Ok(frame.payload.len())
            })
            .unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// The server's session for the board's first session, and the frames that open it (plain
/// `Hello`, then the server's `SessionOpen`).
fn open_session() -> (Session, Vec<u8>) {
    let mut input = plain(&hello());
    let mut buf = [0u8; 64];
    let n = SessionOpen {
        device: DEVICE,
        nonce: SERVER_NONCE,
    }
    .encode(&mut buf)
    .unwrap();
    input.extend_from_slice(&buf[..n]);
    let s = Session::new(
        &DeviceKey(KEY),
        Role::Server,
        DEVICE,
        SERVER_NONCE,
        BOARD_NONCE,
    );
    (s, input)
}

fn config() -> RoundConfig {
    RoundConfig {
        split: SplitConfig {
            shuffle_seed: Some(42),
            ..SplitConfig::default()
        },
        ..RoundConfig::default()
    }
}

/// A training round's plain frames (ratings, `RoundStart`, rows) and the plain update core
/// encodes for it.
fn round(r: u32) -> (Vec<u8>, Vec<u8>) {
    let m = matrix::<K>(ITEMS);
    let (items, ratings) = client(ITEMS);
    let mut rated = items.clone();
    rated.sort_unstable();
    let mut out = Vec::new();
    let mut buf = [0u8; FB];
    let mut sink = |f: &[u8]| {
        out.extend_from_slice(f);
        Ok::<(), ()>(())
    };
    encode_ratings(&items, &ratings, &mut buf, &mut sink).unwrap();
    let start = RoundStart {
        round: r,
        seed: 99,
        mode: RoundMode::Train,
        config: config(),
        num_items: ITEMS,
        rows: rated.len() as u32,
        down: RowEncoding::F32,
        up: RowEncoding::F32,
    };
    let n = Message::RoundStart(start).encode(&mut buf).unwrap();
    sink(&buf[..n]).unwrap();
    encode_item_rows::<f32, K, ()>(
        r,
        RowEncoding::F32,
        false,
        rated.len(),
        |i| (rated[i], &m[rated[i] as usize], None),
        &mut buf,
        &mut sink,
    )
    .unwrap();

    let mut dev = Box::new(Device::<f32, N, K>::new());
    for (&i, &x) in items.iter().zip(&ratings) {
        dev.data_mut().push(i, x, ITEMS).unwrap();
    }
    let update = dev.train(&DenseRows::new(&m), &config(), 99).unwrap();
    let mut want = Vec::new();
    let mut ubuf = [0u8; update_buf_len(K)];
    encode_update(
        UpdateInfo {
            round: r,
            client: CLIENT,
        },
        &update,
        RowEncoding::F32,
        &mut ubuf,
        |f: &[u8]| {
            want.extend_from_slice(f);
            Ok::<(), ()>(())
        },
    )
    .unwrap();
    (out, want)
}

/// Opens every frame of the board's output after its `SessionOpen` with the server's session
/// and returns them re-encoded plain (the first must be the board's `SessionOpen`).
fn open_output(s: &mut Session, out: &[u8]) -> Vec<Vec<u8>> {
    let frames = split(out);
    let mut raw = vec![0u8; FB];
    let (_, r) = next_raw_frame(&frames[0], &mut raw);
    let first = SessionOpen::check(r.unwrap().unwrap()).unwrap();
    assert_eq!(
        first,
        Some(SessionOpen {
            device: DEVICE,
            nonce: BOARD_NONCE
        })
    );
    frames[1..]
        .iter()
        .map(|f| {
            let (_, r) = next_raw_frame(f, &mut raw);
            let frame = s
                .open(r.unwrap().unwrap())
                .expect("the board's frame opens");
            let mut buf = vec![0u8; FB];
            let n = fedrecon_core::wire::encode_frame_with(frame.kind, &mut buf, |p| {
                p[..frame.payload.len()].copy_from_slice(frame.payload);
                Ok(frame.payload.len())
            })
            .unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

fn decode(frame: &[u8]) -> Message<'static> {
    let buf: &'static mut [u8; FB] = Box::leak(Box::new([0u8; FB]));
    let (_, res) = fedrecon_core::wire::next_frame(frame, buf);
    Message::decode::<K>(&res.unwrap().unwrap()).unwrap()
}

fn unauthenticated(frame: &[u8]) -> u32 {
    match decode(frame) {
        Message::Error(e) => {
            assert_eq!(e.code, ErrorCode::Unauthenticated, "{e:?}");
            e.detail.unwrap()
        }
        m => panic!("expected an Error, got {m:?}"),
    }
}

/// A keyed board answers a plain `Hello` with its `SessionOpen`, then speaks only sealed
/// frames: its update is, frame for frame, what core encodes (and an unkeyed board sends).
#[test]
fn keyed_board_trains_in_a_sealed_session() {
    let (mut server, mut input) = open_session();
    let (round_frames, want) = round(3);
    let mut sealed = plain(&hello());
    sealed.extend_from_slice(&round_frames);
    input.extend_from_slice(&seal_all(&mut server, &sealed));
    let out = run(&input);
    let got = open_output(&mut server, &out);
    assert!(matches!(decode(&got[0]), Message::Hello(_)));
    assert_eq!(got[1..].concat(), want);
    // Sealed: 20 bytes per frame more than the plain update on the link (COBS aside).
    let sealed_update: usize = split(&out)[2..].iter().map(Vec::len).sum();
    assert!(sealed_update >= want.len() + 20 * (got.len() - 1));
}

/// Forged, altered, replayed, other-device and plain frames are answered with an
/// `Unauthenticated` error (sealed), never acted on, and the session survives: the next
/// genuine round trains as if they had not been sent.
#[test]
fn refused_frames_leave_the_session_intact() {
    let (mut server, mut input) = open_session();
    let hello_sealed = seal_all(&mut server, &plain(&hello()));
    input.extend_from_slice(&hello_sealed);

    // Altered: a payload byte of a genuine sealed frame flipped, CRC fixed up.
    let (round1, _) = round(1);
    let mut other = Session::new(
        &DeviceKey([9; 32]),
        Role::Server,
        DEVICE,
        SERVER_NONCE,
        BOARD_NONCE,
    );
    let first = split(&round1)[0].clone();
    // The server's twin seals what the server's next frame (sequence 1) would be.
    let mut twin = Session::new(
        &DeviceKey(KEY),
        Role::Server,
        DEVICE,
        SERVER_NONCE,
        BOARD_NONCE,
    );
    seal_all(&mut twin, &plain(&hello()));
    let genuine = seal_all(&mut twin, &first);
    let mut raw = vec![0u8; FB];
    let (_, r) = next_raw_frame(&genuine, &mut raw);
    let body = r.unwrap().unwrap().to_vec();
    let mut altered = body[..body.len() - 4].to_vec();
    altered[4] ^= 0x01;
    // Forged: a made-up tag.
    let mut forged = body[..body.len() - 4].to_vec();
    let tag_at = forged.len() - 16;
    forged[tag_at..].copy_from_slice(&[0xAB; 16]);
    for bad in [altered, forged] {
        let mut buf = vec![0u8; FB];
        let n = encode_frame_raw([bad[0], bad[1], bad[2]], &mut buf, |p| {
            p[..bad.len() - 3].copy_from_slice(&bad[3..]);
            Ok(bad.len() - 3)
        })
        .unwrap();
        input.extend_from_slice(&buf[..n]);
    }
    // Another device's key, the right sequence number.
    input.extend_from_slice(&seal_all(&mut other, &first));
    // Replayed: the sealed Hello again.
    input.extend_from_slice(&hello_sealed);
    // Plain: a genuine message without a seal.
    input.extend_from_slice(&first);
    // Then the genuine round.
    let (round2, want) = round(2);
    input.extend_from_slice(&seal_all(&mut server, &round2));

    let out = run(&input);
    let got = open_output(&mut server, &out);
    assert!(matches!(decode(&got[0]), Message::Hello(_)));
    let reasons: Vec<u32> = got[1..6].iter().map(|f| unauthenticated(f)).collect();
    // bad tag ×3 (altered, forged, other key), replayed, unsealed.
    assert_eq!(reasons, [2, 2, 2, 3, 1]);
    assert_eq!(
        got[6..].concat(),
        want,
        "the genuine round after the refusals"
    );
}

/// A `SessionOpen` naming another device is refused (`WrongDevice`) and opens nothing: the
/// sealed frames that follow are refused too.
#[test]
fn a_session_for_another_device_is_refused() {
    let mut input = plain(&hello());
    let mut buf = [0u8; 64];
    let n = SessionOpen {
        device: DEVICE + 1,
        nonce: SERVER_NONCE,
    }
    .encode(&mut buf)
    .unwrap();
    input.extend_from_slice(&buf[..n]);
    let mut s = Session::new(
        &DeviceKey(KEY),
        Role::Server,
        DEVICE + 1,
        SERVER_NONCE,
        BOARD_NONCE,
    );
    input.extend_from_slice(&seal_all(&mut s, &plain(&hello())));
    let out = run(&input);
    let frames = split(&out);
    assert_eq!(frames.len(), 3, "SessionOpen, then two plain refusals");
    let mut raw = vec![0u8; FB];
    let (_, r) = next_raw_frame(&frames[0], &mut raw);
    assert_eq!(r.unwrap().unwrap()[2], SESSION_OPEN);
    assert_eq!(unauthenticated(&frames[1]), 7, "wrong device");
    assert_eq!(
        unauthenticated(&frames[2]),
        2,
        "no session: the tag cannot verify"
    );
}
