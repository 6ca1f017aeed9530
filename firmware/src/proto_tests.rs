//! Host tests of the protocol loop: a host side built from core's wire encoders drives a
//! [`Board`] through an in-memory pipe, and every answer is compared with what core computes
//! directly (the same bytes, for updates).

extern crate std;

use crate::test_link::{Pipe, client, host_hello, matrix};
use crate::{Board, BoardInfo, CachedRows, FIRMWARE_VERSION};
use fedrecon_core::rank::TopK;
use fedrecon_core::wire::{
    ErrorCode, Message, RoundMode, RoundStart, RowEncoding, TopKRequest, UpdateInfo,
    encode_item_rows, encode_ratings, encode_update, max_frame_buf_len, next_frame, update_buf_len,
};
use fedrecon_core::{DenseRows, Device, ItemRows, RoundConfig, Scalar, SplitConfig};
use std::boxed::Box;
use std::vec::Vec;

const K: usize = 8;
const N: usize = 40;
const FB: usize = max_frame_buf_len(K);
const ITEMS: u32 = 60;
const CLIENT: u32 = 7;

/// The host's side: frames to send.
#[derive(Default)]
struct Host {
    out: Vec<u8>,
}

impl Host {
    fn msg(&mut self, m: &Message<'_>) -> &mut Self {
        let mut buf = [0u8; FB];
        let n = m.encode(&mut buf).unwrap();
        self.out.extend_from_slice(&buf[..n]);
        self
    }

    fn hello(&mut self, k: u32) -> &mut Self {
        self.msg(&host_hello(k))
    }

    fn ratings(&mut self, items: &[u32], ratings: &[f32]) -> &mut Self {
        let mut buf = [0u8; FB];
        let out = &mut self.out;
        encode_ratings(items, ratings, &mut buf, |f: &[u8]| {
            out.extend_from_slice(f);
            Ok::<(), ()>(())
        })
        .unwrap();
        self
    }

    /// `RoundStart` then the rows of `items` (ascending) from `matrix`.
    fn round(&mut self, start: RoundStart, items: &[u32], matrix: &[[f32; K]]) -> &mut Self {
        self.msg(&Message::RoundStart(start));
        self.rows(start.round, start.down, items, matrix)
    }

    fn rows(&mut self, round: u32, enc: RowEncoding, items: &[u32], m: &[[f32; K]]) -> &mut Self {
        let mut buf = [0u8; FB];
        let out = &mut self.out;
        encode_item_rows::<f32, K, ()>(
            round,
            enc,
            false,
            items.len(),
            |i| (items[i], &m[items[i] as usize], None),
            &mut buf,
            |f: &[u8]| {
                out.extend_from_slice(f);
                Ok(())
            },
        )
        .unwrap();
        self
    }
}

struct Fixture {
    device: Box<Device<f32, N, K>>,
    rows: Box<CachedRows<f32, N, K>>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            device: Box::new(Device::new()),
            rows: Box::new(CachedRows::new()),
        }
    }

    /// Runs the board over `input`, `step` bytes per read; returns what it wrote.
    fn run(&mut self, input: &[u8], step: usize) -> Vec<u8> {
        let info = BoardInfo {
            client: CLIENT,
            firmware: FIRMWARE_VERSION,
        };
        let mut board: Board<'_, f32, N, K, FB> =
            Board::new(&mut self.device, &mut self.rows, info);
        let mut pipe = Pipe::new(input, step);
        board.serve(&mut pipe).unwrap();
        pipe.output
    }
}

/// Frames of `bytes`, each as (kind, raw frame bytes including the delimiter).
fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let mut buf = [0u8; FB];
        let (used, res) = next_frame(&bytes[pos..], &mut buf);
        pos += used;
        if res.unwrap().is_some() {
            out.push(bytes[start..pos].to_vec());
        }
    }
    out
}

fn decode(frame: &[u8]) -> Message<'static> {
    let buf: &'static mut [u8; FB] = Box::leak(Box::new([0u8; FB]));
    let (_, res) = next_frame(frame, buf);
    Message::decode::<K>(&res.unwrap().unwrap()).unwrap()
}

fn error_of(frame: &[u8]) -> (ErrorCode, Option<u32>) {
    match decode(frame) {
        Message::Error(e) => (e.code, e.detail),
        m => panic!("expected an Error, got {m:?}"),
    }
}

fn sorted(items: &[u32]) -> Vec<u32> {
    let mut s = items.to_vec();
    s.sort_unstable();
    s
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

fn start(round: u32, mode: RoundMode, rows: u32) -> RoundStart {
    RoundStart {
        round,
        seed: 99,
        mode,
        config: config(),
        num_items: ITEMS,
        rows,
        down: RowEncoding::F32,
        up: RowEncoding::F32,
    }
}

/// Core's own device over the dense matrix: the reference the board must match.
fn reference(items: &[u32], ratings: &[f32]) -> Box<Device<f32, N, K>> {
    let mut d = Box::new(Device::<f32, N, K>::new());
    for (&i, &r) in items.iter().zip(ratings) {
        d.data_mut().push(i, r, ITEMS).unwrap();
    }
    d
}

#[test]
fn hello_answers_capabilities() {
    let mut host = Host::default();
    host.hello(K as u32);
    let out = Fixture::new().run(&host.out, 64);
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    let Message::Hello(h) = decode(&f[0]) else {
        panic!("not a hello")
    };
    assert_eq!(
        (h.k, h.max_examples, h.max_rows),
        (K as u32, N as u32, N as u32)
    );
    assert_eq!(h.scalar, f32::KIND);
    assert_eq!(h.max_frame as usize, FB);
}

#[test]
fn train_round_sends_the_same_bytes_as_core() {
    let m = matrix::<K>(ITEMS);
    let (items, ratings) = client(ITEMS);
    for (step, up) in [
        (1, RowEncoding::F32),
        (7, RowEncoding::I16),
        (64, RowEncoding::I8),
    ] {
        let mut s = start(3, RoundMode::Train, items.len() as u32);
        s.up = up;
        let mut host = Host::default();
        host.hello(K as u32)
            .ratings(&items, &ratings)
            .round(s, &sorted(&items), &m);
        let out = Fixture::new().run(&host.out, step);

        let mut dev = reference(&items, &ratings);
        let update = dev.train(&DenseRows::new(&m), &config(), 99).unwrap();
        let mut buf = [0u8; update_buf_len(K)];
        let mut want = Vec::new();
        encode_update(
            UpdateInfo {
                round: 3,
                client: CLIENT,
            },
            &update,
            up,
            &mut buf,
            |f: &[u8]| {
                want.extend_from_slice(f);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        let f = frames(&out);
        assert!(matches!(decode(&f[0]), Message::Hello(_)));
        let got: Vec<u8> = f[1..].concat();
        assert_eq!(got, want, "step {step}, {up:?}");
    }
}

#[test]
fn evaluate_and_top_k_match_core() {
    let m = matrix::<K>(ITEMS);
    let (items, ratings) = client(ITEMS);
    let rated = sorted(&items);
    let all: Vec<u32> = (0..ITEMS).collect();
    let mut host = Host::default();
    host.hello(K as u32)
        .ratings(&items, &ratings)
        .round(
            start(4, RoundMode::Evaluate, rated.len() as u32),
            &rated,
            &m,
        )
        .round(
            start(5, RoundMode::Reconstruct, rated.len() as u32),
            &rated,
            &m,
        )
        .msg(&Message::TopKRequest(TopKRequest { round: 5, k: 5 }))
        .rows(5, RowEncoding::F32, &all, &m);
    let out = Fixture::new().run(&host.out, 13);
    let f = frames(&out);
    assert_eq!(f.len(), 3, "hello, eval report, top-k answer");

    let dense = DenseRows::new(&m);
    let mut dev = reference(&items, &ratings);
    let metrics = dev.evaluate(&dense, &config(), 99).unwrap();
    let Message::EvalReport(r) = decode(&f[1]) else {
        panic!("not an eval report")
    };
    assert_eq!((r.round, r.client, r.metrics), (4, CLIENT, metrics));

    dev.reconstruct(&dense, &config(), 99).unwrap();
    let mut top = TopK::<f32, 32>::new(5).unwrap();
    dev.rank(&dense, &config(), &mut top).unwrap();
    let want: Vec<(u32, f32)> = top.into_sorted().into_iter().collect();
    let Message::TopKAnswer(a) = decode(&f[2]) else {
        panic!("not a top-k answer")
    };
    let got: Vec<(u32, f32)> = a.items.iter().map(|s| (s.item, s.score)).collect();
    assert_eq!(a.round, 5);
    assert_eq!(got, want);
    assert!(
        got.iter().all(|(i, _)| !items.contains(i)),
        "rated items excluded"
    );
}

#[test]
fn refusals_are_error_messages_and_the_board_recovers() {
    let m = matrix::<K>(ITEMS);
    let (items, ratings) = client(ITEMS);
    let rated = sorted(&items);
    let too_many: Vec<u32> = (0..N as u32 + 1).collect();
    let ones = std::vec![1.0; too_many.len()];
    let mut host = Host::default();
    // Before Hello: refused.
    host.msg(&Message::RoundStart(start(1, RoundMode::Train, 0)));
    // Wrong K: Hello then DimensionMismatch.
    host.hello(K as u32 + 1);
    host.hello(K as u32);
    // More ratings than fit.
    host.ratings(&too_many, &ones);
    host.ratings(&items, &ratings);
    // More rows than fit.
    host.msg(&Message::RoundStart(start(
        2,
        RoundMode::Train,
        N as u32 + 1,
    )));
    // A corrupted frame (one payload byte flipped): CRC error.
    let mut bad = Host::default();
    bad.msg(&Message::RoundStart(start(3, RoundMode::Train, 1)));
    bad.out[3] ^= 0x40;
    host.out.extend_from_slice(&bad.out);
    // Garbage and an oversized frame.
    host.out.extend_from_slice(&[0xFF; 3 * FB]);
    host.out.push(0);
    host.out.extend_from_slice(&[0x01, 0x02, 0x03, 0x00]);
    // A round missing one rated item's row.
    host.round(
        start(4, RoundMode::Train, rated.len() as u32 - 1),
        &rated[1..],
        &m,
    );
    // Then a good round still works.
    host.round(start(5, RoundMode::Train, rated.len() as u32), &rated, &m);
    let out = Fixture::new().run(&host.out, 5);
    let f = frames(&out);
    let codes: Vec<(ErrorCode, Option<u32>)> = f
        .iter()
        .filter(|fr| matches!(decode(fr), Message::Error(_)))
        .map(|fr| error_of(fr))
        .collect();
    assert_eq!(
        codes,
        std::vec![
            (ErrorCode::UnexpectedKind, Some(2)),
            (ErrorCode::DimensionMismatch, Some(K as u32)),
            (ErrorCode::CapacityExceeded, Some(N as u32)),
            (ErrorCode::CapacityExceeded, Some(N as u32)),
            (ErrorCode::Crc, None),
            (ErrorCode::TooLarge, Some(3 * FB as u32)),
            (ErrorCode::Truncated, None),
            (ErrorCode::RoundFailed, Some(rated[0])),
        ]
    );
    // After the last refusal comes round 5's update: its begin frame, then its chunks.
    let last_err = f
        .iter()
        .rposition(|fr| matches!(decode(fr), Message::Error(_)))
        .unwrap();
    let next = decode(&f[last_err + 1]);
    assert!(
        matches!(next, Message::UpdateBegin(b) if b.round == 5),
        "{next:?}"
    );
    assert!(
        f[last_err + 2..]
            .iter()
            .all(|fr| matches!(decode(fr), Message::UpdateRows(_)))
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = fedrecon_core::rng::DeviceRng::new(11);
    let mut fx = Fixture::new();
    let mut host = Host::default();
    host.hello(K as u32);
    let base = host.out.clone();
    for _ in 0..200 {
        let mut input = base.clone();
        let len = rng.below(600) as usize;
        input.extend((0..len).map(|_| {
            // Frequent delimiters so many short "frames" get checked.
            let b = rng.next_u32() as u8;
            if b < 24 { 0 } else { b }
        }));
        let _ = fx.run(&input, 1 + rng.below(40) as usize);
    }
    // The rows lent to the round are the board's: still a valid view afterwards.
    assert!(fx.rows.num_items() <= u32::MAX);
}

/// An `UpdateShape` makes the next training round's update dense or padded (the bytes of
/// core's shaped encoder) and applies to that round only: the round after it is sparse.
#[test]
fn update_shape_applies_to_the_next_training_round_only() {
    use fedrecon_core::wire::{UpdateShape, UplinkRows, encode_shaped_update};
    let m = matrix::<K>(ITEMS);
    let (items, ratings) = client(ITEMS);
    for (rows, up, stochastic) in [
        (UplinkRows::Dense, RowEncoding::I8, false),
        (UplinkRows::Padded, RowEncoding::I16, true),
        (UplinkRows::Padded, RowEncoding::F32, false),
    ] {
        let shape = UpdateShape {
            rows,
            pad_rows: 35,
            seed: 0xdec0,
            stochastic_rounding: stochastic,
        };
        let mut s = start(3, RoundMode::Train, items.len() as u32);
        s.up = up;
        let mut host = Host::default();
        host.hello(K as u32)
            .ratings(&items, &ratings)
            .msg(&Message::UpdateShape(shape))
            .round(s, &sorted(&items), &m)
            .round(s, &sorted(&items), &m);
        let out = Fixture::new().run(&host.out, 9);

        let mut dev = reference(&items, &ratings);
        let update = dev.train(&DenseRows::new(&m), &config(), 99).unwrap();
        let info = UpdateInfo {
            round: 3,
            client: CLIENT,
        };
        let mut buf = [0u8; update_buf_len(K)];
        let (mut shaped, mut plain) = (Vec::new(), Vec::new());
        let sent = encode_shaped_update::<f32, K, N, ()>(
            info,
            &update,
            up,
            &shape,
            ITEMS,
            &mut buf,
            |f: &[u8]| {
                shaped.extend_from_slice(f);
                Ok(())
            },
        )
        .unwrap();
        let want_rows = if rows == UplinkRows::Dense { ITEMS } else { 35 };
        assert_eq!(sent, want_rows, "{rows:?}");
        encode_update(info, &update, up, &mut buf, |f: &[u8]| {
            plain.extend_from_slice(f);
            Ok::<(), ()>(())
        })
        .unwrap();
        let f = frames(&out);
        let begins: Vec<usize> = (0..f.len())
            .filter(|&i| matches!(decode(&f[i]), Message::UpdateBegin(_)))
            .collect();
        assert_eq!(begins.len(), 2, "two updates");
        assert_eq!(f[begins[0]..begins[1]].concat(), shaped, "{rows:?} {up:?}");
        assert_eq!(f[begins[1]..].concat(), plain, "the shape applies once");
    }
}

/// After an `Evaluate` round the board ranks the catalogue with the reconstruction from the
/// first half, excluding that half's items: core's `evaluate` then `rank`.
#[test]
fn top_k_after_evaluate_matches_core() {
    let m = matrix::<K>(ITEMS);
    let (items, ratings) = client(ITEMS);
    let rated = sorted(&items);
    let all: Vec<u32> = (0..ITEMS).collect();
    let mut host = Host::default();
    host.hello(K as u32)
        .ratings(&items, &ratings)
        .round(
            start(4, RoundMode::Evaluate, rated.len() as u32),
            &rated,
            &m,
        )
        .msg(&Message::TopKRequest(TopKRequest { round: 4, k: 10 }))
        .rows(4, RowEncoding::F32, &all, &m);
    let out = Fixture::new().run(&host.out, 11);
    let f = frames(&out);
    assert_eq!(f.len(), 3, "hello, eval report, top-k answer");
    let dense = DenseRows::new(&m);
    let mut dev = reference(&items, &ratings);
    dev.evaluate(&dense, &config(), 99).unwrap();
    let mut top = TopK::<f32, 32>::new(10).unwrap();
    dev.rank(&dense, &config(), &mut top).unwrap();
    let want: Vec<(u32, f32)> = top.into_sorted().to_vec();
    let Message::TopKAnswer(a) = decode(&f[2]) else {
        panic!("not a top-k answer")
    };
    let got: Vec<(u32, f32)> = a.items.iter().map(|s| (s.item, s.score)).collect();
    assert_eq!(got, want);
    assert!(
        got.iter()
            .all(|(i, _)| dev.excluded().binary_search(i).is_err()),
        "a first-half item was ranked"
    );
}

/// A board provisioned once (`Ratings` + `StoreRatings`) keeps the dataset in its store: a
/// new board over the same store (a reboot) announces it (`StoredData`) and trains a round
/// sent without ratings to the same bytes; a `StoreRatings` that does not match the upload is
/// refused and stores nothing.
#[test]
fn provisioned_data_survives_a_reboot() {
    use crate::store::tests::MemStore;
    use fedrecon_core::wire::{RatingsDigest, StoreRatings, StoredData};
    let m = matrix::<K>(ITEMS);
    let (items, ratings) = client(ITEMS);
    let held = RatingsDigest::of(&items, &ratings);
    let info = BoardInfo {
        client: CLIENT,
        firmware: FIRMWARE_VERSION,
    };
    let run = |store: &mut MemStore, input: &[u8]| {
        let mut fx = Fixture::new();
        let mut board: Board<'_, f32, N, K, FB> =
            Board::with_store(&mut fx.device, &mut fx.rows, info, store);
        let mut pipe = Pipe::new(input, 17);
        board.serve(&mut pipe).unwrap();
        pipe.output
    };
    let query = Message::StoredData(StoredData {
        ratings: 0,
        digest: 0,
    });
    let mut store = MemStore::default();
    let mut host = Host::default();
    host.hello(K as u32)
        .msg(&query)
        .ratings(&items, &ratings)
        .msg(&Message::StoreRatings(StoreRatings {
            ratings: held.ratings,
            digest: held.digest ^ 1,
        }))
        .msg(&Message::StoreRatings(StoreRatings {
            ratings: held.ratings,
            digest: held.digest,
        }));
    let f = frames(&run(&mut store, &host.out));
    assert_eq!(f.len(), 4, "hello, empty StoredData, refusal, StoredData");
    assert!(matches!(decode(&f[1]), Message::StoredData(d) if d.ratings == 0));
    assert_eq!(error_of(&f[2]).0, ErrorCode::InvalidValue);
    assert!(matches!(decode(&f[3]), Message::StoredData(d) if d == held));

    // Reboot: nothing but the round; the update is the one core computes from the ratings.
    let mut host = Host::default();
    host.hello(K as u32).msg(&query).round(
        start(3, RoundMode::Train, items.len() as u32),
        &sorted(&items),
        &m,
    );
    let f = frames(&run(&mut store, &host.out));
    assert!(matches!(decode(&f[1]), Message::StoredData(d) if d == held));
    let mut dev = reference(&items, &ratings);
    let update = dev.train(&DenseRows::new(&m), &config(), 99).unwrap();
    let mut buf = [0u8; update_buf_len(K)];
    let mut want = Vec::new();
    let info = UpdateInfo {
        round: 3,
        client: CLIENT,
    };
    encode_update(info, &update, RowEncoding::F32, &mut buf, |f: &[u8]| {
        want.extend_from_slice(f);
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(f[2..].concat(), want);

    // A corrupted flash holds nothing.
    store.0[20] ^= 1;
    let f = frames(&run(&mut store, &host.out));
    assert!(matches!(decode(&f[1]), Message::StoredData(d) if d.ratings == 0));
}
