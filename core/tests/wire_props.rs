//! Wire protocol properties: round trips of every message and encoding, maximum sizes against
//! worst-case encodings, and the error for every kind of bad frame.

use fedrecon_core::wire::*;
use fedrecon_core::{
    Metrics, ModelConfig, Reconstruction, RoundConfig, ScalarKind, SplitConfig, Update, Weighting,
};
use proptest::prelude::*;

const K: usize = 50;

fn collect_frames(
    info: UpdateInfo,
    upd: &Update<'_, f32, K>,
    enc: RowEncoding,
) -> (Vec<u8>, Vec<usize>) {
    let mut buf = vec![0u8; update_buf_len(K)];
    let mut out = Vec::new();
    let mut ends = Vec::new();
    encode_update(info, upd, enc, &mut buf, |f: &[u8]| {
        out.extend_from_slice(f);
        ends.push(out.len());
        Ok::<(), ()>(())
    })
    .unwrap();
    (out, ends)
}

type Decoded = (UpdateSummary, Vec<(u32, [f32; K], Option<f32>)>);

fn decode(bytes: &[u8]) -> Result<Decoded, WireError> {
    let mut buf = vec![0u8; update_buf_len(K)];
    let mut rows = Vec::new();
    let s = decode_update::<K>(bytes, &mut buf, |i, d, b| rows.push((i, *d, b)))?;
    Ok((s, rows))
}

type UpdateParts = (Vec<u32>, Vec<[f32; K]>, Option<Vec<f32>>, u32, Metrics);

fn arb_update() -> impl Strategy<Value = UpdateParts> {
    (0usize..40, any::<bool>()).prop_flat_map(|(n, bias)| {
        (
            proptest::collection::btree_set(any::<u32>(), n),
            proptest::collection::vec(proptest::array::uniform32(-10.0f32..10.0), n),
            proptest::collection::vec(-1.0f32..1.0, n),
            any::<u32>(),
            (any::<f32>(), any::<f32>(), any::<u32>(), any::<u32>()),
        )
            .prop_map(move |(items, halves, biases, weight, m)| {
                let n = items.len();
                let deltas: Vec<[f32; K]> = halves[..n]
                    .iter()
                    .map(|h| core::array::from_fn(|k| h[k % 32] * (1.0 + k as f32 / 7.0)))
                    .collect();
                let metrics = Metrics {
                    loss_sum: m.0,
                    abs_err_sum: m.1,
                    correct: m.2,
                    count: m.3,
                };
                (
                    items.into_iter().collect(),
                    deltas,
                    bias.then_some(biases),
                    weight,
                    metrics,
                )
            })
    })
}

fn arb_encoding() -> impl Strategy<Value = RowEncoding> {
    prop_oneof![
        Just(RowEncoding::F32),
        Just(RowEncoding::I16),
        Just(RowEncoding::I8)
    ]
}

fn same_metrics(a: &Metrics, b: &Metrics) -> bool {
    a.loss_sum.to_bits() == b.loss_sum.to_bits()
        && a.abs_err_sum.to_bits() == b.abs_err_sum.to_bits()
        && a.correct == b.correct
        && a.count == b.count
}

proptest! {
    #[test]
    fn update_round_trips((items, deltas, biases, weight, metrics) in arb_update(),
                          enc in arb_encoding(), round in any::<u32>(), client in any::<u32>()) {
        let upd = Update::<f32, K> {
            items: &items,
            deltas: &deltas,
            bias_deltas: biases.as_deref(),
            weight,
            metrics,
        };
        let info = UpdateInfo { round, client };
        let (bytes, ends) = collect_frames(info, &upd, enc);
        prop_assert_eq!(ends.len(), 1 + items.len().div_ceil(ROWS_PER_CHUNK));
        let (s, rows) = decode(&bytes).unwrap();
        prop_assert_eq!((s.round, s.client, s.weight, s.rows), (round, client, weight, items.len() as u32));
        prop_assert!(same_metrics(&s.metrics, &metrics));
        prop_assert_eq!(s.encoding, enc);
        prop_assert_eq!(s.bytes, bytes.len());
        prop_assert_eq!(rows.len(), items.len());
        for (i, (item, d, b)) in rows.iter().enumerate() {
            prop_assert_eq!(*item, items[i]);
            prop_assert_eq!(*b, biases.as_ref().map(|v| v[i]));
            let m = deltas[i].iter().fold(0.0f32, |a, x| a.max(x.abs()));
            let tol = match enc {
                RowEncoding::F32 => 0.0,
                RowEncoding::I16 => m / 32767.0 * 0.5001 + 1e-30,
                RowEncoding::I8 => m / 127.0 * 0.5001 + 1e-30,
            };
            for k in 0..K {
                let e = (d[k] - deltas[i][k]).abs();
                prop_assert!(e <= tol + m * 1e-6 * (enc != RowEncoding::F32) as u32 as f32,
                    "row {} k {} got {} want {} tol {}", i, k, d[k], deltas[i][k], tol);
            }
        }
        // Any truncation at a frame boundary or inside a frame is refused.
        for cut in [bytes.len() - 1, ends[0], bytes.len() / 2] {
            if cut < bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for every message kind.

fn frame_of(msg: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; max_frame_buf_len(K)];
    let n = msg.encode(&mut buf).unwrap();
    assert!(n <= max_frame_len(max_payload(msg.kind(), K)));
    buf.truncate(n);
    buf
}

/// Decodes exactly one frame and re-encodes the typed message, returning it.
fn decode_one(bytes: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut buf = vec![0u8; max_frame_buf_len(K)];
    let (used, res) = next_frame(bytes, &mut buf);
    let frame = res?.ok_or(WireError::Truncated)?;
    assert_eq!(used, bytes.len());
    let msg = Message::decode::<K>(&frame)?;
    Ok(frame_of(&msg))
}

fn arb_metrics() -> impl Strategy<Value = Metrics> {
    (any::<f32>(), any::<f32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c, d)| Metrics {
        loss_sum: a,
        abs_err_sum: b,
        correct: c,
        count: d,
    })
}

fn arb_config() -> impl Strategy<Value = RoundConfig> {
    (
        (
            1u16..=u16::MAX,
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u64>()),
            any::<bool>(),
            1u16..=u16::MAX,
            proptest::option::of(1u16..=u16::MAX),
            1u16..=u16::MAX,
            proptest::option::of(1u16..=u16::MAX),
        ),
        (
            0.0f32..10.0,
            0.0f32..10.0,
            0.0f32..1.0,
            0.0f32..1.0,
            any::<bool>(),
            0.0f32..2.0,
        ),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(-5.0f32..5.0),
            any::<bool>(),
            proptest::option::of((0.0f32..8.0, 0.0f32..1.0, 0.0f32..8.0)),
        ),
    )
        .prop_map(|(s, h, m)| RoundConfig {
            split: SplitConfig {
                batch_size: s.0,
                max_examples: s.1,
                shuffle_seed: s.2,
                split_dataset: s.3,
                recon_epochs: s.4,
                recon_steps_max: s.5,
                post_epochs: s.6,
                post_steps_max: s.7,
            },
            recon_lr: h.0,
            post_lr: h.1,
            user_l2: h.2,
            init_scale: h.3,
            weighting: if h.4 {
                Weighting::Examples
            } else {
                Weighting::Uniform
            },
            accuracy_threshold: h.5,
            model: ModelConfig {
                user_bias: m.0,
                item_bias: m.1,
                global_mean: m.2,
            },
            // Exact reconstruction is valid only with a regulariser.
            reconstruction: match (m.3, h.2 > 0.0, m.4) {
                (true, true, None) => Reconstruction::Exact,
                (true, true, Some((user_prior, bias_l2, bias_prior))) => {
                    Reconstruction::ExactPrior {
                        user_prior,
                        bias_l2,
                        bias_prior,
                    }
                }
                _ => Reconstruction::Sgd,
            },
        })
}

fn arb_message_owned() -> impl Strategy<Value = Message<'static>> {
    prop_oneof![
        (
            any::<(u8, u8, bool, u32, u32, u32, u32, u8)>(),
            any::<(u16, u16, u16, u32)>()
        )
            .prop_map(|(a, f)| Message::Hello(Hello {
                protocol: Version {
                    major: a.0,
                    minor: a.1
                },
                scalar: if a.2 {
                    ScalarKind::F32
                } else {
                    ScalarKind::Q16_16
                },
                k: a.3,
                max_examples: a.4,
                max_rows: a.5,
                max_frame: a.6,
                encodings: a.7,
                firmware: FirmwareVersion {
                    major: f.0,
                    minor: f.1,
                    patch: f.2,
                    build: f.3
                },
            })),
        (
            any::<(u32, u64, u8, u32, u32)>(),
            arb_config(),
            arb_encoding(),
            arb_encoding()
        )
            .prop_map(|(a, config, down, up)| Message::RoundStart(RoundStart {
                round: a.0,
                seed: a.1,
                mode: [
                    RoundMode::Train,
                    RoundMode::Evaluate,
                    RoundMode::Reconstruct
                ][usize::from(a.2 % 3)],
                config,
                num_items: a.3,
                rows: a.4,
                down,
                up,
            })),
        (
            any::<(u32, u32)>(),
            proptest::collection::vec((any::<u32>(), -5.0f32..5.0), 0..=RATINGS_PER_CHUNK)
        )
            .prop_map(|(a, r)| Message::Ratings(RatingsChunk {
                seq: a.0,
                total: a.1,
                ratings: r
                    .into_iter()
                    .map(|(item, rating)| Rating { item, rating })
                    .collect(),
            })),
        (
            any::<(u32, u32, u32, bool, u32, u32)>(),
            arb_encoding(),
            arb_metrics()
        )
            .prop_map(|(a, encoding, metrics)| Message::UpdateBegin(UpdateBegin {
                round: a.0,
                client: a.1,
                k: K as u32,
                encoding,
                has_bias: a.3,
                rows: a.4,
                weight: a.5,
                metrics,
            })),
        (any::<(u32, u32)>(), arb_metrics()).prop_map(|(a, metrics)| Message::EvalReport(
            EvalReport {
                round: a.0,
                client: a.1,
                metrics
            }
        )),
        (any::<u32>(), 1u16..=TOP_K_MAX as u16)
            .prop_map(|(round, k)| Message::TopKRequest(TopKRequest { round, k })),
        (
            any::<u32>(),
            proptest::collection::vec((any::<u32>(), any::<f32>()), 0..=TOP_K_MAX)
        )
            .prop_map(|(round, v)| Message::TopKAnswer(TopKAnswer {
                round,
                items: v
                    .into_iter()
                    .map(|(item, score)| Scored { item, score })
                    .collect(),
            })),
        (any::<(u32, Option<u32>, u8)>()).prop_map(|(round, detail, c)| Message::Error(ErrorMsg {
            round,
            code: [
                ErrorCode::UnsupportedVersion,
                ErrorCode::Crc,
                ErrorCode::TooLarge,
                ErrorCode::BadChunkSequence,
                ErrorCode::RoundFailed,
                ErrorCode::Other,
                ErrorCode::Unauthenticated,
            ][usize::from(c % 7)],
            detail,
        })),
        (any::<(u32, u32)>())
            .prop_map(|(ratings, digest)| Message::StoredData(StoredData { ratings, digest })),
        (any::<(u32, u32)>())
            .prop_map(|(ratings, digest)| Message::StoreRatings(StoreRatings { ratings, digest })),
        (any::<(u8, u32, u64, bool)>()).prop_map(|(r, pad_rows, seed, stochastic_rounding)| {
            Message::UpdateShape(UpdateShape {
                rows: [UplinkRows::Sparse, UplinkRows::Dense, UplinkRows::Padded]
                    [usize::from(r % 3)],
                pad_rows,
                seed,
                stochastic_rounding,
            })
        }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in arb_message_owned()) {
        let bytes = frame_of(&msg);
        prop_assert_eq!(*bytes.last().unwrap(), 0);
        prop_assert!(!bytes[..bytes.len() - 1].contains(&0));
        // Decoding and re-encoding gives the same bytes (bit-exact, NaN payloads included).
        prop_assert_eq!(decode_one(&bytes).unwrap(), bytes.clone());
        // Through the accumulator, split at an arbitrary point.
        let mut acc = FrameAccumulator::<{ max_frame_buf_len(K) }>::new();
        let cut = bytes.len() / 3;
        prop_assert!(matches!(acc.feed(&bytes[..cut]), Feed::Consumed));
        match acc.feed(&bytes[cut..]) {
            Feed::Frame { frame, rest } => {
                prop_assert!(rest.is_empty());
                prop_assert_eq!(frame_of(&Message::decode::<K>(&frame).unwrap()), bytes);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn item_rows_round_trip(n in 0usize..40, enc in arb_encoding(), bias in any::<bool>(), round in any::<u32>()) {
        let rows = deltas(n, round as u64 + 1);
        let items: Vec<u32> = (0..n as u32).map(|i| i * 3 + 1).collect();
        let biases: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
        let mut buf = vec![0u8; update_buf_len(K)];
        let mut bytes = Vec::new();
        encode_item_rows(round, enc, bias, n, |i| (items[i], &rows[i], bias.then_some(biases[i])), &mut buf,
            |f: &[u8]| { bytes.extend_from_slice(f); Ok::<(), ()>(()) }).unwrap();
        let mut stream = RowStream::new(round, 0, enc, bias, n as u32);
        let mut got = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (used, res) = next_frame(&bytes[pos..], &mut buf);
            pos += used;
            let frame = res.unwrap().unwrap();
            let Message::ItemRows(chunk) = Message::decode::<K>(&frame).unwrap() else { panic!() };
            stream.accept::<K>(&chunk, |i, r, b| got.push((i, *r, b))).unwrap();
        }
        prop_assert!(stream.is_complete());
        prop_assert_eq!(got.len(), n);
        for (i, (item, r, b)) in got.iter().enumerate() {
            prop_assert_eq!(*item, items[i]);
            prop_assert_eq!(*b, bias.then_some(biases[i]));
            if enc == RowEncoding::F32 { prop_assert_eq!(*r, rows[i]); }
        }
    }

    #[test]
    fn ratings_upload_round_trips(n in 0usize..300) {
        let items: Vec<u32> = (0..n as u32).map(|i| i * 7).collect();
        let ratings: Vec<f32> = (0..n).map(|i| (i % 5 + 1) as f32).collect();
        let mut buf = vec![0u8; max_frame_buf_len(K)];
        let mut bytes = Vec::new();
        encode_ratings(&items, &ratings, &mut buf, |f: &[u8]| { bytes.extend_from_slice(f); Ok::<(), ()>(()) }).unwrap();
        let mut stream = RatingsStream::new();
        let mut got = Vec::new();
        let mut done = false;
        let mut pos = 0;
        while pos < bytes.len() {
            let (used, res) = next_frame(&bytes[pos..], &mut buf);
            pos += used;
            let Message::Ratings(c) = Message::decode::<K>(&res.unwrap().unwrap()).unwrap() else { panic!() };
            prop_assert!(!done);
            done = stream.accept(&c).unwrap();
            got.extend(c.ratings.iter().map(|r| (r.item, r.rating)));
        }
        prop_assert!(done);
        prop_assert_eq!(got, items.into_iter().zip(ratings).collect::<Vec<_>>());
    }

    /// Any single corrupted byte of an update stream is an error, never a wrong value.
    #[test]
    fn corrupted_byte_is_detected(n in 1usize..20, enc in arb_encoding(), pos_frac in 0.0f64..1.0, x in 1u8..=255) {
        let items: Vec<u32> = (0..n as u32).collect();
        let d = deltas(n, 7);
        let upd = Update::<f32, K> { items: &items, deltas: &d, bias_deltas: None, weight: 3, metrics: Metrics::default() };
        let (mut bytes, _) = collect_frames(UpdateInfo { round: 1, client: 2 }, &upd, enc);
        let pos = ((bytes.len() - 1) as f64 * pos_frac) as usize;
        bytes[pos] ^= x;
        prop_assert!(decode(&bytes).is_err());
    }
}

fn deltas(n: usize, seed: u64) -> Vec<[f32; K]> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            core::array::from_fn(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
        })
        .collect()
}

fn sample_update_frames(n: usize, enc: RowEncoding) -> (Vec<u8>, Vec<usize>) {
    let items: Vec<u32> = (0..n as u32).map(|i| i * 2).collect();
    let d = deltas(n, 99);
    let upd = Update::<f32, K> {
        items: &items,
        deltas: &d,
        bias_deltas: None,
        weight: 30,
        metrics: Metrics::default(),
    };
    collect_frames(
        UpdateInfo {
            round: 5,
            client: 9,
        },
        &upd,
        enc,
    )
}

/// Splits concatenated frames at the recorded ends.
fn split_frames(bytes: &[u8], ends: &[usize]) -> Vec<Vec<u8>> {
    let mut start = 0;
    ends.iter()
        .map(|&e| {
            let f = bytes[start..e].to_vec();
            start = e;
            f
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Maximum sizes against worst-case encodings.

fn postcard_len<T: serde::Serialize>(v: &T) -> usize {
    let mut b = vec![0u8; 8192];
    postcard::to_slice(v, &mut b).unwrap().len()
}

#[test]
fn max_sizes_equal_worst_case_encodings() {
    use postcard::experimental::max_size::MaxSize;
    let big_metrics = Metrics {
        loss_sum: f32::MAX,
        abs_err_sum: f32::MAX,
        correct: u32::MAX,
        count: u32::MAX,
    };
    let hello = Hello {
        protocol: Version {
            major: 255,
            minor: 255,
        },
        scalar: ScalarKind::Q16_16,
        k: u32::MAX,
        max_examples: u32::MAX,
        max_rows: u32::MAX,
        max_frame: u32::MAX,
        encodings: 255,
        firmware: FirmwareVersion {
            major: u16::MAX,
            minor: u16::MAX,
            patch: u16::MAX,
            build: u32::MAX,
        },
    };
    assert_eq!(postcard_len(&hello), Hello::POSTCARD_MAX_SIZE);
    let mut config = RoundConfig::default();
    config.split.max_examples = Some(u16::MAX);
    config.split.shuffle_seed = Some(u64::MAX);
    config.split.batch_size = u16::MAX;
    config.split.recon_epochs = u16::MAX;
    config.split.post_epochs = u16::MAX;
    config.split.recon_steps_max = Some(u16::MAX);
    config.split.post_steps_max = Some(u16::MAX);
    config.weighting = Weighting::Uniform;
    config.model.global_mean = Some(3.5);
    config.user_l2 = 0.1;
    config.reconstruction = Reconstruction::ExactImplicit {
        user_prior: 1.0,
        bias_l2: 0.5,
        bias_prior: 2.0,
        items: u32::MAX,
        implicit_lr: 0.2,
        both_halves: true,
    };
    let start = RoundStart {
        round: u32::MAX,
        seed: u64::MAX,
        mode: RoundMode::Reconstruct,
        config,
        num_items: u32::MAX,
        rows: u32::MAX,
        down: RowEncoding::I8,
        up: RowEncoding::I8,
    };
    assert_eq!(postcard_len(&start), RoundStart::POSTCARD_MAX_SIZE);
    let ratings = RatingsChunk {
        seq: u32::MAX,
        total: u32::MAX,
        ratings: (0..RATINGS_PER_CHUNK)
            .map(|_| Rating {
                item: u32::MAX,
                rating: 5.0,
            })
            .collect(),
    };
    assert_eq!(postcard_len(&ratings), RatingsChunk::POSTCARD_MAX_SIZE);
    let begin = UpdateBegin {
        round: u32::MAX,
        client: u32::MAX,
        k: u32::MAX,
        encoding: RowEncoding::I8,
        has_bias: true,
        rows: u32::MAX,
        weight: u32::MAX,
        metrics: big_metrics,
    };
    assert_eq!(postcard_len(&begin), UpdateBegin::POSTCARD_MAX_SIZE);
    let eval = EvalReport {
        round: u32::MAX,
        client: u32::MAX,
        metrics: big_metrics,
    };
    assert_eq!(postcard_len(&eval), EvalReport::POSTCARD_MAX_SIZE);
    let req = TopKRequest {
        round: u32::MAX,
        k: u16::MAX,
    };
    assert_eq!(postcard_len(&req), TopKRequest::POSTCARD_MAX_SIZE);
    let ans = TopKAnswer {
        round: u32::MAX,
        items: (0..TOP_K_MAX)
            .map(|_| Scored {
                item: u32::MAX,
                score: 1.0,
            })
            .collect(),
    };
    assert_eq!(postcard_len(&ans), TopKAnswer::POSTCARD_MAX_SIZE);
    let err = ErrorMsg {
        round: u32::MAX,
        code: ErrorCode::Other,
        detail: Some(u32::MAX),
    };
    assert_eq!(postcard_len(&err), ErrorMsg::POSTCARD_MAX_SIZE);
    let shape = UpdateShape {
        rows: UplinkRows::Padded,
        pad_rows: u32::MAX,
        seed: u64::MAX,
        stochastic_rounding: true,
    };
    assert_eq!(postcard_len(&shape), UpdateShape::POSTCARD_MAX_SIZE);
    assert_eq!(UpdateShape::POSTCARD_MAX_SIZE, 17);
    let held = StoredData {
        ratings: u32::MAX,
        digest: u32::MAX,
    };
    assert_eq!(postcard_len(&held), StoredData::POSTCARD_MAX_SIZE);
    let store = StoreRatings {
        ratings: u32::MAX,
        digest: u32::MAX,
    };
    assert_eq!(postcard_len(&store), StoreRatings::POSTCARD_MAX_SIZE);
    assert_eq!(StoreRatings::POSTCARD_MAX_SIZE, 10);

    // Row chunks at several widths: f32 with bias is the worst case (i16 for K = 1).
    for k_any in [1usize, 2, 8, 50, 64] {
        let stride = RowEncoding::max_row_stride(k_any);
        let data = vec![0xFFu8; ROWS_PER_CHUNK * stride];
        let chunk = RowChunk {
            round: u32::MAX,
            stream: u32::MAX,
            seq: u32::MAX,
            k: u32::MAX,
            encoding: RowEncoding::I8,
            has_bias: true,
            count: u16::MAX,
            data: Bytes(&data),
        };
        assert_eq!(
            postcard_len(&chunk),
            row_chunk_max_payload(k_any),
            "K = {k_any}"
        );
    }
    // The real worst-case frame of the update path fits the buffer and the frame bound.
    let data = vec![0xFFu8; ROWS_PER_CHUNK * RowEncoding::max_row_stride(K)];
    let chunk = RowChunk {
        round: u32::MAX,
        stream: u32::MAX,
        seq: u32::MAX,
        k: u32::MAX,
        encoding: RowEncoding::I8,
        has_bias: true,
        count: u16::MAX,
        data: Bytes(&data),
    };
    let mut buf = vec![0u8; update_buf_len(K)];
    let n = encode_frame(Kind::UpdateRows, &chunk, &mut buf).unwrap();
    assert_eq!(n, max_frame_len(row_chunk_max_payload(K)));
    assert!(n <= update_buf_len(K));
    // A buffer one byte short is refused, not overrun.
    let mut short = vec![0u8; n - 3];
    assert!(matches!(
        encode_frame(Kind::UpdateRows, &chunk, &mut short),
        Err(WireError::BufferTooSmall { .. })
    ));
    // Every kind's frame fits the accumulator buffer at K = 64 in ≤ 2.2 KB.
    assert!(max_frame_buf_len(64) <= 2200, "{}", max_frame_buf_len(64));
}

// ---------------------------------------------------------------------------------------
// Every bad input gives its error.

#[test]
fn truncated_streams() {
    let (bytes, ends) = sample_update_frames(20, RowEncoding::F32);
    assert_eq!(ends.len(), 4);
    // The last chunk lost entirely.
    assert_eq!(decode(&bytes[..ends[2]]).unwrap_err(), WireError::Truncated);
    // Cut inside a frame (no delimiter).
    assert_eq!(
        decode(&bytes[..ends[2] + 10]).unwrap_err(),
        WireError::Truncated
    );
    // Delimiter inserted early: a short frame with a bad CRC or COBS.
    let mut cut = bytes[..ends[1] + 40].to_vec();
    cut.push(0);
    assert!(matches!(
        decode(&cut).unwrap_err(),
        WireError::Crc { .. } | WireError::Cobs
    ));
    // Nothing at all.
    assert_eq!(decode(&[]).unwrap_err(), WireError::Truncated);
    assert_eq!(decode(&[0, 0, 0]).unwrap_err(), WireError::Truncated);
    // A frame shorter than header + CRC.
    assert_eq!(
        decode(&[0x03, 0x01, 0x01, 0x00]).unwrap_err(),
        WireError::Truncated
    );
}

#[test]
fn reordered_lost_and_duplicated_chunks() {
    let (bytes, ends) = sample_update_frames(30, RowEncoding::I16);
    let f = split_frames(&bytes, &ends);
    assert_eq!(f.len(), 5);
    let cat = |order: &[usize]| {
        order
            .iter()
            .flat_map(|&i| f[i].clone())
            .collect::<Vec<u8>>()
    };
    assert_eq!(
        decode(&cat(&[0, 2, 1, 3, 4])).unwrap_err(),
        WireError::BadChunkSequence {
            expected: 1,
            got: 2
        }
    );
    assert_eq!(
        decode(&cat(&[0, 1, 3, 4])).unwrap_err(),
        WireError::BadChunkSequence {
            expected: 2,
            got: 3
        }
    );
    assert_eq!(
        decode(&cat(&[0, 1, 1, 2, 3, 4])).unwrap_err(),
        WireError::BadChunkSequence {
            expected: 2,
            got: 1
        }
    );
    assert_eq!(
        decode(&cat(&[1, 0, 2, 3, 4])).unwrap_err(),
        WireError::UnexpectedKind {
            got: Kind::UpdateRows as u8,
            expected: Kind::UpdateBegin as u8
        }
    );
    assert_eq!(
        decode(&cat(&[0, 0, 1, 2, 3, 4])).unwrap_err(),
        WireError::UnexpectedKind {
            got: Kind::UpdateBegin as u8,
            expected: Kind::UpdateRows as u8
        }
    );
    // A complete update followed by more frames.
    assert_eq!(
        decode(&cat(&[0, 1, 2, 3, 4, 4])).unwrap_err(),
        WireError::TrailingData
    );
    // Leading and trailing delimiters are harmless.
    let mut padded = vec![0, 0];
    padded.extend(cat(&[0, 1, 2, 3, 4]));
    padded.extend([0, 0]);
    assert_eq!(decode(&padded).unwrap().1.len(), 30);
}

#[test]
fn corrupted_frames_give_crc_or_cobs_errors() {
    let (bytes, ends) = sample_update_frames(8, RowEncoding::F32);
    // Flip each bit of the second frame in turn.
    for pos in ends[0]..ends[1] - 1 {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[pos] ^= 1 << bit;
            if b[pos] == 0 {
                continue; // an inserted delimiter: covered by the truncation tests
            }
            let e = decode(&b).unwrap_err();
            assert!(
                matches!(
                    e,
                    WireError::Crc { .. } | WireError::Cobs | WireError::Truncated
                ),
                "pos {pos} bit {bit}: {e:?}"
            );
        }
    }
}

#[test]
fn oversized_frames_are_refused_before_reading() {
    // Longer than the receiver's buffer.
    let mut big = vec![0x01u8; 5000];
    big.push(0);
    let mut buf = vec![0u8; update_buf_len(K)];
    let (used, res) = next_frame(&big, &mut buf);
    assert_eq!(used, big.len());
    assert_eq!(
        res.unwrap_err(),
        WireError::TooLarge {
            len: 5000,
            max: update_buf_len(K)
        }
    );
    // Through the accumulator: refused, and the next frame is read normally.
    let mut acc = FrameAccumulator::<512>::new();
    let mut stream = big.clone();
    let ok = frame_of(&Message::TopKRequest(TopKRequest { round: 3, k: 5 }));
    stream.extend_from_slice(&ok);
    let rest = match acc.feed(&stream) {
        Feed::Error { error, rest } => {
            assert_eq!(
                error,
                WireError::TooLarge {
                    len: 5000,
                    max: 512
                }
            );
            rest
        }
        other => panic!("{other:?}"),
    };
    match acc.feed(rest) {
        Feed::Frame { frame, rest } => {
            assert!(rest.is_empty());
            assert_eq!(
                Message::decode::<K>(&frame).unwrap(),
                Message::TopKRequest(TopKRequest { round: 3, k: 5 })
            );
        }
        other => panic!("{other:?}"),
    }
    // A valid frame whose payload exceeds its kind's maximum.
    let payload = vec![1u8; 200];
    let mut fb = vec![0u8; 1024];
    let n = encode_frame_raw(
        [PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::TopKRequest as u8],
        &mut fb,
        |o| {
            o[..200].copy_from_slice(&payload);
            Ok(200)
        },
    )
    .unwrap();
    let (_, res) = next_frame(&fb[..n], &mut buf);
    let frame = res.unwrap().unwrap();
    assert_eq!(
        Message::decode::<K>(&frame).unwrap_err(),
        WireError::TooLarge {
            len: 200,
            max: max_payload(Kind::TopKRequest, K)
        }
    );
}

fn raw(header: [u8; 3], payload: &[u8]) -> Vec<u8> {
    let mut fb = vec![0u8; 4096];
    let n = encode_frame_raw(header, &mut fb, |o| {
        o[..payload.len()].copy_from_slice(payload);
        Ok(payload.len())
    })
    .unwrap();
    fb.truncate(n);
    fb
}

#[test]
fn versions_and_kinds() {
    let req = postcard_bytes(&TopKRequest { round: 1, k: 3 });
    let mut buf = vec![0u8; 4096];
    // Another major (1 and 2 are previous versions): a clear error, whatever the payload.
    for major in [0u8, 1, 2, PROTOCOL_MAJOR + 1, 255] {
        let f = raw([major, 0, Kind::TopKRequest as u8], &req);
        assert_eq!(
            next_frame(&f, &mut buf).1.unwrap_err(),
            WireError::UnsupportedVersion {
                got: major,
                supported: PROTOCOL_MAJOR
            }
        );
    }
    // A newer minor may append fields; our own minor may not.
    let mut longer = req.clone();
    longer.extend([9, 9, 9]);
    let f = raw(
        [PROTOCOL_MAJOR, PROTOCOL_MINOR + 1, Kind::TopKRequest as u8],
        &longer,
    );
    let frame = next_frame(&f, &mut buf).1.unwrap().unwrap();
    assert_eq!(
        Message::decode::<K>(&frame).unwrap(),
        Message::TopKRequest(TopKRequest { round: 1, k: 3 })
    );
    let f = raw(
        [PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::TopKRequest as u8],
        &longer,
    );
    let frame = next_frame(&f, &mut buf).1.unwrap().unwrap();
    assert_eq!(
        Message::decode::<K>(&frame).unwrap_err(),
        WireError::TrailingData
    );
    // Unknown kinds.
    for kind in [0u8, 14, 200] {
        let f = raw([PROTOCOL_MAJOR, PROTOCOL_MINOR, kind], &req);
        assert_eq!(
            next_frame(&f, &mut buf).1.unwrap_err(),
            WireError::UnknownKind { kind }
        );
    }
    // A payload that is not the kind's message.
    let f = raw([PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::Hello as u8], &req);
    let frame = next_frame(&f, &mut buf).1.unwrap().unwrap();
    assert_eq!(Message::decode::<K>(&frame).unwrap_err(), WireError::Decode);
    // Out-of-range values.
    let f = raw(
        [PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::TopKRequest as u8],
        &postcard_bytes(&TopKRequest { round: 1, k: 0 }),
    );
    let frame = next_frame(&f, &mut buf).1.unwrap().unwrap();
    assert!(matches!(
        Message::decode::<K>(&frame).unwrap_err(),
        WireError::InvalidValue { .. }
    ));
}

fn postcard_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut b = vec![0u8; 8192];
    let n = postcard::to_slice(v, &mut b).unwrap().len();
    b.truncate(n);
    b
}

#[test]
fn width_mismatch_and_bad_values() {
    // An update of width 8 read at width 50.
    let items = [1u32];
    let d = [[0.5f32; 8]];
    let upd = Update::<f32, 8> {
        items: &items,
        deltas: &d,
        bias_deltas: None,
        weight: 1,
        metrics: Metrics::default(),
    };
    let mut buf = vec![0u8; update_buf_len(K)];
    let mut bytes = Vec::new();
    encode_update(
        UpdateInfo::default(),
        &upd,
        RowEncoding::F32,
        &mut buf,
        |f: &[u8]| {
            bytes.extend_from_slice(f);
            Ok::<(), ()>(())
        },
    )
    .unwrap();
    assert_eq!(
        decode(&bytes).unwrap_err(),
        WireError::DimensionMismatch {
            got: 8,
            expected: K as u32
        }
    );

    // Hand-made chunks with valid CRCs but bad contents.
    let begin = |rows: u32, enc| {
        raw(
            [PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::UpdateBegin as u8],
            &postcard_bytes(&UpdateBegin {
                round: 1,
                client: 2,
                k: K as u32,
                encoding: enc,
                has_bias: false,
                rows,
                weight: 1,
                metrics: Metrics::default(),
            }),
        )
    };
    let chunk = |enc: RowEncoding, rows: &[Vec<u8>]| {
        let data: Vec<u8> = rows.concat();
        raw(
            [PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::UpdateRows as u8],
            &postcard_bytes(&RowChunk {
                round: 1,
                stream: 2,
                seq: 1,
                k: K as u32,
                encoding: enc,
                has_bias: false,
                count: rows.len() as u16,
                data: Bytes(&data),
            }),
        )
    };
    let f32_row = |item: u32, x: f32| {
        let mut r = item.to_le_bytes().to_vec();
        for _ in 0..K {
            r.extend(x.to_le_bytes());
        }
        r
    };
    let i16_row = |item: u32, scale: f32, q: i16| {
        let mut r = item.to_le_bytes().to_vec();
        r.extend(scale.to_le_bytes());
        for _ in 0..K {
            r.extend(q.to_le_bytes());
        }
        r
    };
    let good = [
        begin(2, RowEncoding::F32),
        chunk(RowEncoding::F32, &[f32_row(1, 0.5), f32_row(2, 0.25)]),
    ]
    .concat();
    assert_eq!(decode(&good).unwrap().1.len(), 2);
    for (what, bytes) in [
        (
            "NaN",
            [
                begin(1, RowEncoding::F32),
                chunk(RowEncoding::F32, &[f32_row(1, f32::NAN)]),
            ]
            .concat(),
        ),
        (
            "inf",
            [
                begin(1, RowEncoding::F32),
                chunk(RowEncoding::F32, &[f32_row(1, f32::INFINITY)]),
            ]
            .concat(),
        ),
        (
            "unsorted",
            [
                begin(2, RowEncoding::F32),
                chunk(RowEncoding::F32, &[f32_row(2, 0.5), f32_row(1, 0.5)]),
            ]
            .concat(),
        ),
        (
            "duplicate",
            [
                begin(2, RowEncoding::F32),
                chunk(RowEncoding::F32, &[f32_row(2, 0.5), f32_row(2, 0.5)]),
            ]
            .concat(),
        ),
        (
            "count",
            [
                begin(3, RowEncoding::F32),
                chunk(RowEncoding::F32, &[f32_row(1, 0.5), f32_row(2, 0.5)]),
            ]
            .concat(),
        ),
        (
            "encoding",
            [
                begin(1, RowEncoding::I16),
                chunk(RowEncoding::F32, &[f32_row(1, 0.5)]),
            ]
            .concat(),
        ),
        (
            "i16 min",
            [
                begin(1, RowEncoding::I16),
                chunk(RowEncoding::I16, &[i16_row(1, 0.1, i16::MIN)]),
            ]
            .concat(),
        ),
        (
            "neg scale",
            [
                begin(1, RowEncoding::I16),
                chunk(RowEncoding::I16, &[i16_row(1, -0.1, 3)]),
            ]
            .concat(),
        ),
        (
            "nan scale",
            [
                begin(1, RowEncoding::I16),
                chunk(RowEncoding::I16, &[i16_row(1, f32::NAN, 3)]),
            ]
            .concat(),
        ),
    ] {
        let e = decode(&bytes).unwrap_err();
        assert!(matches!(e, WireError::InvalidValue { .. }), "{what}: {e:?}");
    }
    // A data length that does not match count × stride.
    let mut short = f32_row(1, 0.5);
    short.pop();
    let bytes = [
        begin(1, RowEncoding::F32),
        chunk(RowEncoding::F32, &[short]),
    ]
    .concat();
    assert!(matches!(
        decode(&bytes).unwrap_err(),
        WireError::InvalidValue { .. }
    ));

    // The encoder refuses non-finite deltas.
    let d = [[f32::NAN; K]];
    let upd = Update::<f32, K> {
        items: &items,
        deltas: &d,
        bias_deltas: None,
        weight: 1,
        metrics: Metrics::default(),
    };
    for enc in RowEncoding::ALL {
        let r = encode_update(UpdateInfo::default(), &upd, enc, &mut buf, |_: &[u8]| {
            Ok::<(), ()>(())
        });
        assert!(matches!(
            r,
            Err(EncodeError::Wire(WireError::InvalidValue { .. }))
        ));
    }
    // A failing sink is reported as such.
    let r = encode_update(
        UpdateInfo::default(),
        &Update::<f32, K> {
            items: &[],
            deltas: &[],
            bias_deltas: None,
            weight: 0,
            metrics: Metrics::default(),
        },
        RowEncoding::F32,
        &mut buf,
        |_: &[u8]| Err("link down"),
    );
    assert_eq!(r, Err(EncodeError::Sink("link down")));
    // A too-small buffer is refused up front.
    let mut small = [0u8; 64];
    let r = encode_update(
        UpdateInfo::default(),
        &upd,
        RowEncoding::F32,
        &mut small,
        |_: &[u8]| Ok::<(), ()>(()),
    );
    assert!(matches!(
        r,
        Err(EncodeError::Wire(WireError::BufferTooSmall { .. }))
    ));
}

#[test]
fn quantization_is_pinned() {
    // [1.0, -0.5, 0.25, 0.0]: i8 scale 1/127, codes 127, -64 (−63.5 rounds away from zero), 32, 0.
    let row = [1.0f32, -0.5, 0.25, 0.0];
    let mut out = [0u8; 4 + 4 + 4];
    pack_row(RowEncoding::I8, 9, &row, None, &mut out).unwrap();
    assert_eq!(&out[..4], &9u32.to_le_bytes());
    assert_eq!(
        f32::from_le_bytes(out[4..8].try_into().unwrap()),
        1.0f32 / 127.0
    );
    assert_eq!(&out[8..], &[127u8, (-64i8) as u8, 32, 0]);
    let mut back = [0f32; 4];
    let (item, bias) = unpack_row(RowEncoding::I8, false, &out, &mut back).unwrap();
    assert_eq!((item, bias), (9, None));
    assert_eq!(back[0], 127.0 * (1.0f32 / 127.0));
    let mut out16 = [0u8; 4 + 4 + 8];
    pack_row(RowEncoding::I16, 9, &row, None, &mut out16).unwrap();
    let q: Vec<i16> = out16[8..]
        .chunks(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(q, [32767, -16384, 8192, 0]); // -16383.5 → -16384, 8191.75 → 8192
    // An all-zero row has scale 0 and decodes to zeros.
    pack_row(RowEncoding::I8, 1, &[0.0f32; 4], None, &mut out).unwrap();
    assert_eq!(&out[4..], &[0u8; 8]);
}

#[test]
fn golden_frame_for_wire_md() {
    // The example in WIRE.md: TopKRequest { round: 1, k: 5 }. Raw frame 03 01 08 | 01 05 |
    // CRC-32 0x5e5c7ede little-endian; COBS: no zero byte, one group of 9.
    let f = frame_of(&Message::TopKRequest(TopKRequest { round: 1, k: 5 }));
    assert_eq!((PROTOCOL_MAJOR, PROTOCOL_MINOR), (3, 1));
    assert_eq!(
        fedrecon_core::wire::crc::crc32(&[3, 1, 8, 1, 5]),
        0x5e5c_7ede
    );
    assert_eq!(
        f,
        [
            0x0a, 0x03, 0x01, 0x08, 0x01, 0x05, 0xde, 0x7e, 0x5c, 0x5e, 0x00
        ]
    );
}

/// WIRE.md 1: a frame whose raw bytes end in a run of exactly 254 non-zero bytes is encoded
/// as a `0xFF` group and the delimiter, with no empty `0x01` group after it (as Python's
/// `cobs` package does); a decoder also accepts the form with the `0x01`.
#[test]
fn cobs_group_of_254_at_the_end_gets_no_trailing_01() {
    // raw = major, minor, kind, then a payload of a zero byte and 250 non-zero bytes, then
    // the CRC: the last group is 254 non-zero bytes when the CRC has no zero byte (vary the
    // last payload byte until it has none).
    let kind = Kind::TopKAnswer as u8;
    let (payload, crc) = (1u8..=255)
        .find_map(|last| {
            let mut p: Vec<u8> = (0..251).map(|i| (i % 251) as u8).collect();
            p[250] = last;
            let mut body = vec![PROTOCOL_MAJOR, PROTOCOL_MINOR, kind];
            body.extend(&p);
            let crc = fedrecon_core::wire::crc::crc32(&body).to_le_bytes();
            (!crc.contains(&0)).then_some((p, crc))
        })
        .unwrap();
    assert!(PROTOCOL_MINOR != 0 && payload[0] == 0 && !payload[1..].contains(&0));
    let frame = raw([PROTOCOL_MAJOR, PROTOCOL_MINOR, kind], &payload);
    let mut want = vec![0x04, PROTOCOL_MAJOR, PROTOCOL_MINOR, kind, 0xFF];
    want.extend(&payload[1..]);
    want.extend(crc);
    want.push(0x00);
    assert_eq!(want.len(), 4 + 1 + 254 + 1);
    assert_eq!(frame, want);
    // With an empty final group (`0x01`) inserted before the delimiter: the same frame.
    let mut with_01 = frame.clone();
    with_01.insert(with_01.len() - 1, 0x01);
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    let (used_a, fa) = next_frame(&frame, &mut a);
    let (used_b, fb) = next_frame(&with_01, &mut b);
    assert_eq!((used_a, used_b), (frame.len(), with_01.len()));
    let (fa, fb) = (fa.unwrap().unwrap(), fb.unwrap().unwrap());
    assert_eq!(fa, fb);
    assert_eq!(fa.payload, &payload[..]);
}

/// WIRE.md 3, kind 10: `detail` is an `Option<u32>`, so "no detail" (`00`) and "item 0"
/// (`01 00`) differ on the wire.
#[test]
fn error_detail_none_and_item_zero_differ() {
    let missing0 = ErrorMsg::from_core(3, &fedrecon_core::Error::MissingItemRow { item: 0 });
    assert_eq!(
        missing0,
        ErrorMsg {
            round: 3,
            code: ErrorCode::RoundFailed,
            detail: Some(0)
        }
    );
    let cfg = RoundConfig {
        recon_lr: f32::NAN,
        ..RoundConfig::default()
    };
    let invalid = ErrorMsg::from_core(3, &cfg.validate().unwrap_err());
    assert_eq!(invalid.detail, None);
    assert_eq!(
        postcard_bytes(&missing0),
        [3, ErrorCode::RoundFailed as u8, 1, 0]
    );
    let none = ErrorMsg {
        detail: None,
        ..missing0
    };
    assert_eq!(postcard_bytes(&none), [3, ErrorCode::RoundFailed as u8, 0]);
    // Both survive a frame round trip as themselves.
    for m in [missing0, none] {
        let f = frame_of(&Message::Error(m));
        let mut buf = vec![0u8; 256];
        let (_, fr) = next_frame(&f, &mut buf);
        assert_eq!(
            Message::decode::<K>(&fr.unwrap().unwrap()).unwrap(),
            Message::Error(m)
        );
    }
    // Codes without a detail send none; those with one send it, even when it is 0.
    assert_eq!(
        ErrorMsg::from_wire(
            0,
            &WireError::Crc {
                computed: 1,
                received: 2
            }
        )
        .detail,
        None
    );
    assert_eq!(
        ErrorMsg::from_wire(
            0,
            &WireError::BadChunkSequence {
                expected: 0,
                got: 4
            }
        )
        .detail,
        Some(0)
    );
}

/// WIRE.md 2: a row chunk that disagrees with its `UpdateBegin` (or `RoundStart`) on the
/// round, the stream, K, the encoding or the bias flag is refused with these errors, the same
/// through `decode_update` and through `Message::decode` + `RowStream` (the firmware's path).
#[test]
fn chunk_disagreeing_with_its_begin() {
    let begin = raw(
        [PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::UpdateBegin as u8],
        &postcard_bytes(&UpdateBegin {
            round: 1,
            client: 2,
            k: K as u32,
            encoding: RowEncoding::F32,
            has_bias: false,
            rows: 1,
            weight: 1,
            metrics: Metrics::default(),
        }),
    );
    // One row of width k in `enc`, with a bias iff `bias`.
    let chunk = |round: u32, stream: u32, seq: u32, k: usize, enc: RowEncoding, bias: bool| {
        let mut data = 7u32.to_le_bytes().to_vec();
        if enc != RowEncoding::F32 {
            data.extend(0.01f32.to_le_bytes());
        }
        for _ in 0..k {
            match enc {
                RowEncoding::F32 => data.extend(0.5f32.to_le_bytes()),
                RowEncoding::I16 => data.extend(3i16.to_le_bytes()),
                RowEncoding::I8 => data.push(3),
            }
        }
        if bias {
            data.extend(0.25f32.to_le_bytes());
        }
        raw(
            [PROTOCOL_MAJOR, PROTOCOL_MINOR, Kind::UpdateRows as u8],
            &postcard_bytes(&RowChunk {
                round,
                stream,
                seq,
                k: k as u32,
                encoding: enc,
                has_bias: bias,
                count: 1,
                data: Bytes(&data),
            }),
        )
    };
    let f32_ = RowEncoding::F32;
    let ok = chunk(1, 2, 1, K, f32_, false);
    assert_eq!(decode(&[begin.clone(), ok].concat()).unwrap().1.len(), 1);
    let invalid = |what| WireError::InvalidValue { what };
    let cases = [
        (
            "round",
            chunk(9, 2, 1, K, f32_, false),
            invalid("row chunk belongs to another round or stream"),
        ),
        (
            "stream",
            chunk(1, 9, 1, K, f32_, false),
            invalid("row chunk belongs to another round or stream"),
        ),
        (
            "K",
            chunk(1, 2, 1, 8, f32_, false),
            WireError::DimensionMismatch {
                got: 8,
                expected: K as u32,
            },
        ),
        (
            "encoding",
            chunk(1, 2, 1, K, RowEncoding::I8, false),
            invalid("row chunk encoding differs from its stream's"),
        ),
        (
            "bias flag",
            chunk(1, 2, 1, K, f32_, true),
            invalid("row chunk encoding differs from its stream's"),
        ),
        // K is checked before the sequence number, the sequence number before the rest.
        (
            "K and seq",
            chunk(1, 2, 5, 8, f32_, false),
            WireError::DimensionMismatch {
                got: 8,
                expected: K as u32,
            },
        ),
        (
            "seq and round",
            chunk(9, 2, 5, K, f32_, false),
            WireError::BadChunkSequence {
                expected: 1,
                got: 5,
            },
        ),
    ];
    for (what, bad, want) in cases {
        assert_eq!(
            decode(&[begin.clone(), bad.clone()].concat()).unwrap_err(),
            want,
            "{what}"
        );
        // The firmware's path: layer two, then the stream announced by the begin message.
        let mut buf = vec![0u8; update_buf_len(K)];
        let (_, fr) = next_frame(&bad, &mut buf);
        let fr = fr.unwrap().unwrap();
        let got = Message::decode::<K>(&fr).and_then(|m| match m {
            Message::UpdateRows(c) => {
                RowStream::new(1, 2, f32_, false, 1).accept::<K>(&c, |_, _, _| {})
            }
            m => panic!("{what}: {m:?}"),
        });
        assert_eq!(
            got.unwrap_err(),
            want,
            "{what} (Message::decode + RowStream)"
        );
    }
    // What a device sends back for them.
    assert_eq!(
        ErrorMsg::from_wire(4, &invalid("row chunk encoding differs from its stream's")),
        ErrorMsg {
            round: 4,
            code: ErrorCode::InvalidValue,
            detail: None
        }
    );
    assert_eq!(
        ErrorMsg::from_wire(
            4,
            &WireError::DimensionMismatch {
                got: 8,
                expected: K as u32
            }
        ),
        ErrorMsg {
            round: 4,
            code: ErrorCode::DimensionMismatch,
            detail: Some(K as u32)
        }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// A small in-test fuzz (the long one is `examples/fuzz_frames.rs`): arbitrary bytes and
    /// arbitrarily edited valid streams never panic, and an accepted update has finite rows.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        n in 0usize..12,
    ) {
        let _ = decode(&bytes);
        let mut buf = vec![0u8; max_frame_buf_len(K)];
        let (_, r) = next_frame(&bytes, &mut buf);
        if let Ok(Some(f)) = r {
            let _ = Message::decode::<K>(&f);
        }
        let (mut stream, _) = sample_update_frames(n, RowEncoding::I8);
        for (i, b) in edits {
            let i = i.index(stream.len());
            stream[i] = b;
        }
        if let Ok((_, rows)) = decode(&stream) {
            prop_assert!(rows.iter().all(|(_, d, _)| d.iter().all(|x| x.is_finite())));
        }
    }
}

fn packets_of(info: UpdateInfo, upd: &Update<'_, f32, K>, enc: RowEncoding) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; update_buf_len(K)];
    let mut out = Vec::new();
    encode_update_in(Framing::Packet, info, upd, enc, &mut buf, |p: &[u8]| {
        out.push(p.to_vec());
        Ok::<(), ()>(())
    })
    .unwrap();
    out
}

fn decode_packets(bytes: &[u8]) -> Result<Decoded, WireError> {
    let mut buf = vec![0u8; update_buf_len(K)];
    let mut rows = Vec::new();
    let s = decode_update_in::<K>(Framing::Packet, bytes, &mut buf, |i, d, b| {
        rows.push((i, *d, b))
    })?;
    Ok((s, rows))
}

proptest! {
    /// Packets carry exactly the messages a serial link's frames carry (same header and
    /// payload bytes), decode to the same update, and refuse truncation and trailing bytes.
    #[test]
    fn packets_carry_the_same_messages_as_stream_frames(
        (items, deltas, biases, weight, metrics) in arb_update(),
        enc in arb_encoding(), round in any::<u32>(), client in any::<u32>(),
    ) {
        let upd = Update::<f32, K> {
            items: &items,
            deltas: &deltas,
            bias_deltas: biases.as_deref(),
            weight,
            metrics,
        };
        let info = UpdateInfo { round, client };
        let (stream, ends) = collect_frames(info, &upd, enc);
        let packets = packets_of(info, &upd, enc);
        prop_assert_eq!(packets.len(), ends.len());
        let mut scratch = vec![0u8; update_buf_len(K)];
        let mut start = 0;
        for (p, &end) in packets.iter().zip(&ends) {
            let (_, f) = next_frame(&stream[start..end], &mut scratch);
            let f = f.unwrap().unwrap();
            let (used, g) = next_packet(p, update_buf_len(K));
            prop_assert_eq!(used, p.len());
            prop_assert_eq!(g.unwrap(), f);
            start = end;
        }
        let bytes: Vec<u8> = packets.concat();
        let (a, rows_a) = decode(&stream).unwrap();
        let (b, rows_b) = decode_packets(&bytes).unwrap();
        prop_assert_eq!((a.round, a.client, a.weight, a.rows, a.frames), (b.round, b.client, b.weight, b.rows, b.frames));
        prop_assert!(same_metrics(&a.metrics, &b.metrics));
        prop_assert_eq!(b.bytes, bytes.len());
        prop_assert_eq!(a.payload, b.payload);
        prop_assert_eq!(b.bytes - b.payload, PACKET_LEN_BYTES * packets.len());
        prop_assert!(a.bytes >= a.payload + (CRC_LEN + 1) * ends.len());
        prop_assert_eq!(rows_a.len(), rows_b.len());
        for (x, y) in rows_a.iter().zip(&rows_b) {
            prop_assert_eq!(x.0, y.0);
            prop_assert_eq!(x.1.map(f32::to_bits), y.1.map(f32::to_bits));
            prop_assert_eq!(x.2.map(f32::to_bits), y.2.map(f32::to_bits));
        }
        for cut in [bytes.len() - 1, packets[0].len(), bytes.len() / 2] {
            if cut < bytes.len() {
                prop_assert!(decode_packets(&bytes[..cut]).is_err());
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(decode_packets(&longer).unwrap_err(), WireError::TrailingData);
    }

    /// Arbitrary bytes, and valid packets with arbitrary edits, never panic the packet decoder,
    /// and whatever it accepts has finite rows.
    #[test]
    fn arbitrary_packets_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        n in 0usize..12,
    ) {
        let _ = decode_packets(&bytes);
        let items: Vec<u32> = (0..n as u32).map(|i| 3 * i + 1).collect();
        let d = deltas(n, 7);
        let upd = Update::<f32, K> { items: &items, deltas: &d, bias_deltas: None, weight: 3, metrics: Metrics::default() };
        let mut packets = packets_of(UpdateInfo { round: 1, client: 2 }, &upd, RowEncoding::I8).concat();
        for (i, b) in edits {
            let i = i.index(packets.len());
            packets[i] = b;
        }
        if let Ok((_, rows)) = decode_packets(&packets) {
            prop_assert!(rows.iter().all(|(_, d, _)| d.iter().all(|x| x.is_finite())));
        }
    }
}
