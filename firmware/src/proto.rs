//! The device side of the wire protocol (`core/WIRE.md`), independent of the hardware: a
//! [`Board`] reads frames from any [`embedded_io::Read`] + [`Write`] link, keeps the client's
//! ratings and the round's item rows, runs `fedrecon-core`'s round and answers with frames.
//!
//! Exchanges (the host speaks first):
//!
//! 1. host `Hello` → device `Hello` (its capabilities), then `Error` if the host's `K` differs;
//!    a `Hello` at any time restarts the session (the ratings are kept);
//! 2. `Ratings` chunks → nothing (or `Error`): the client dataset, replacing the previous one;
//!    `UpdateShape` → nothing: the next `Train` round's update is dense or padded with seeded
//!    zero decoys, and maybe stochastically rounded (`fedrecon_core::wire::encode_shaped_update`);
//! 3. `RoundStart` + `ItemRows` (the rows of the client's rated items, ascending) → by mode:
//!    `Train`: `UpdateBegin` + `UpdateRows`; `Evaluate`: `EvalReport`; `Reconstruct`: nothing;
//! 4. after a `Reconstruct` or `Evaluate` round, `TopKRequest` followed by the **whole catalogue** as an
//!    `ItemRows` stream of `num_items` rows (ids `0..num_items`, ascending, `seq` 1, 2, ...,
//!    the round's `down` encoding) → `TopKAnswer`. The rows stream past the heap one at a time,
//!    so ranking needs no more RAM than the round. (This convention is the device's; WIRE.md
//!    leaves the catalogue transfer of a top-k request open.)
//!
//! A board with a key ([`Board::set_key`], core/WIRE.md 7) authenticates its link: a plain
//! `Hello` from the host asks it for a session (it answers with its plain `SessionOpen`, the
//! host with its own), after which it opens every frame with the session
//! ([`fedrecon_core::wire::auth::Session::open`]) and seals every frame it sends, updates
//! included. A frame that does not open (forged, altered, replayed, another device's or
//! another session's, or plain) is never acted on: it is answered with an `Error` of code
//! `Unauthenticated` (sealed when a session is open) like any refusal, and the session stays
//! as it was. A plain `Hello` always starts a new session (so a host can resynchronise).
//!
//! Nothing the peer sends can make the board panic: every refusal is a typed [`WireError`] or
//! [`fedrecon_core::Error`], answered with an `Error` message, after which the board drops the
//! stream in progress and waits for the next `RoundStart` (or `Ratings`, or `Hello`). Only a
//! failing link ends [`Board::serve`].

use crate::rows::{CacheError, CachedRows};
use crate::store::{DataStore, read_record, write_record};
use embedded_io::{Read, Write};
use fedrecon_core::rank::TopK;
use fedrecon_core::wire::auth::{
    self, AuthError, DeviceKey, Role, SEALED, SESSION_OPEN, SessionOpen,
};
use fedrecon_core::wire::{
    EncodeError, ErrorCode, ErrorMsg, EvalReport, Feed, FeedRaw, FirmwareVersion, Frame,
    FrameAccumulator, FrameWriter, Framing, Hello, Kind, Message, PROTOCOL_MAJOR, PROTOCOL_MINOR,
    RatingsChunk, RatingsDigest, RatingsStream, RoundMode, RoundStart, RowChunk, RowEncoding,
    RowStream, Scored, StoreRatings, StoredData, TOP_K_MAX, TopKAnswer, TopKRequest, UpdateInfo,
    UpdateShape, Version, WireError, encode_shaped_update_with, encode_update_with, encoding_bit,
    max_frame_buf_len, max_payload_any,
};
use fedrecon_core::{Device, Scalar};

/// Bytes read from the link per call (a UART FIFO's worth; larger only costs stack).
const READ_CHUNK: usize = 64;

/// What the board says about itself in its `Hello`, and who it is in its updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardInfo {
    /// The client id of its updates and evaluation reports (the update stream id).
    pub client: u32,
    /// Firmware release.
    pub firmware: FirmwareVersion,
}

/// Why [`Board::serve`] stopped: only the link can end the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError<E> {
    /// Reading or writing the link failed.
    Io(E),
    /// A frame the board built did not encode (a bug: its buffer is sized for every frame).
    Encode(WireError),
}

/// What a board authenticates its link with (core/WIRE.md 7): its enrolled id and device key,
/// and its first session nonce (counted up for every session; a boot count or, on QEMU, a
/// random value the simulator provisions). `Debug` does not print the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardKey {
    /// The enrolled device id.
    pub device: u32,
    /// The device key.
    pub key: DeviceKey,
    /// The device nonce of the first session.
    pub nonce: u64,
}

/// Where a keyed board's link is.
enum LinkPhase {
    /// No session: only a plain `Hello` (a session request) is heard.
    Closed,
    /// `SessionOpen` sent with this device nonce; waiting for the server's.
    Offered(u64),
    /// Every frame is sealed and opened with this session.
    Open(auth::Session),
}

/// A keyed board's authentication state.
struct Keyed {
    key: BoardKey,
    phase: LinkPhase,
}

/// Writes the board's frames: plain, or sealed by the open session.
enum Tx<'s> {
    Plain,
    Sealed(&'s mut auth::Session),
}

impl FrameWriter for Tx<'_> {
    fn write_frame(
        &mut self,
        kind: Kind,
        buf: &mut [u8],
        payload: &mut dyn FnMut(&mut [u8]) -> Result<usize, WireError>,
    ) -> Result<usize, WireError> {
        match self {
            Tx::Plain => Framing::Stream.write_frame(kind, buf, payload),
            Tx::Sealed(s) => s.write_frame(kind, buf, payload),
        }
    }
}

/// The writer for a board's next frames.
fn tx_writer(keyed: &mut Option<Keyed>) -> Tx<'_> {
    match keyed {
        Some(Keyed {
            phase: LinkPhase::Open(s),
            ..
        }) => Tx::Sealed(s),
        _ => Tx::Plain,
    }
}

/// Where the session is.
#[allow(clippy::large_enum_variant)] // no alloc: one state value, sized by its largest variant
#[derive(Debug)]
enum State<S: Scalar> {
    /// Nothing may happen before the host's `Hello`.
    AwaitHello,
    /// Between rounds.
    Idle,
    /// A ratings upload in progress.
    Ratings(RatingsStream),
    /// A round's item rows arriving.
    Rows {
        start: RoundStart,
        stream: RowStream,
    },
    /// A `Reconstruct` round is done: top-k requests may follow.
    Reconstructed { start: RoundStart },
    /// A top-k request's catalogue streaming past the heap.
    Ranking {
        start: RoundStart,
        stream: RowStream,
        top: TopK<S, TOP_K_MAX>,
    },
}

/// A refusal: the round it concerns and the error message to send.
type Refusal = ErrorMsg;

/// The device's protocol session over a device workspace and a row cache it borrows (both
/// usually `static`s). `FB` is the frame buffer size, at least
/// [`max_frame_buf_len`]`(K)` (checked at compile time); two such buffers live in the board.
/// A keyed board ([`Board::set_key`]) needs [`sealed_buf_len`]`(K)` (20 bytes more).
pub struct Board<
    'a,
    S: Scalar,
    const N: usize,
    const K: usize,
    const FB: usize,
    const NB: usize = 0,
> {
    rx: FrameAccumulator<FB>,
    session: Session<'a, S, N, K, FB, NB>,
}

/// Everything but the receive buffer, so a received frame (borrowing the receive buffer) can
/// be handled while the session is mutated.
struct Session<'a, S: Scalar, const N: usize, const K: usize, const FB: usize, const NB: usize> {
    device: &'a mut Device<S, N, K>,
    rows: &'a mut CachedRows<S, N, K, NB>,
    info: BoardInfo,
    state: State<S>,
    /// The shape of the next `Train` round's update (kind 11); `None` sends the touched rows.
    shape: Option<UpdateShape>,
    /// Flash for the board's own dataset (kinds 12 and 13); `None`: the board keeps none.
    store: Option<&'a mut dyn DataStore>,
    /// The link's authentication (`None`: a plain link, as a board without a key).
    keyed: Option<Keyed>,
    /// What the store holds (announced when the server asks, kind 12).
    owned: Option<StoredData>,
    /// Digest of the ratings upload in progress.
    upload: RatingsDigest,
    /// Count and digest of the last complete upload (what `StoreRatings` may keep).
    uploaded: Option<StoredData>,
    tx: [u8; FB],
}

impl<'a, S: Scalar, const N: usize, const K: usize, const FB: usize, const NB: usize>
    Board<'a, S, N, K, FB, NB>
{
    /// A board waiting for the host's `Hello`. Clears the client dataset.
    pub fn new(
        device: &'a mut Device<S, N, K>,
        rows: &'a mut CachedRows<S, N, K, NB>,
        info: BoardInfo,
    ) -> Self {
        const {
            assert!(
                FB >= max_frame_buf_len(K),
                "FB must hold any frame: use max_frame_buf_len(K)"
            )
        };
        device.data_mut().clear();
        Self {
            rx: FrameAccumulator::new(),
            session: Session {
                device,
                rows,
                info,
                state: State::AwaitHello,
                shape: None,
                store: None,
                keyed: None,
                owned: None,
                upload: RatingsDigest::new(),
                uploaded: None,
                tx: [0; FB],
            },
        }
    }

    /// A board with flash for its own dataset: the stored record, if valid, becomes the
    /// client dataset (so a rebooted board trains its user without any upload); the server
    /// asks what it holds with `StoredData` (kind 12) and provisions it with `Ratings` then
    /// `StoreRatings` (kind 13).
    pub fn with_store(
        device: &'a mut Device<S, N, K>,
        rows: &'a mut CachedRows<S, N, K, NB>,
        info: BoardInfo,
        store: &'a mut dyn DataStore,
    ) -> Self {
        let mut board = Self::new(device, rows, info);
        let data = board.session.device.data_mut();
        let owned = read_record(store, N, |item, rating| {
            // At most N ratings (checked by read_record), so this cannot fail.
            let _ = data.push(item, S::from_f32(rating), u32::MAX);
        });
        if owned.is_none() {
            data.clear();
        }
        board.session.owned = owned;
        board.session.store = Some(store);
        board
    }

    /// Makes this a keyed board: from now on it only speaks sealed frames in a session it
    /// opened with `key` (core/WIRE.md 7). `FB` must be at least [`sealed_buf_len`]`(K)`.
    pub fn set_key(&mut self, key: BoardKey) {
        const {
            assert!(
                FB >= sealed_buf_len(K),
                "a keyed board's FB must hold any sealed frame: use sealed_buf_len(K)"
            )
        };
        self.session.keyed = Some(Keyed {
            key,
            phase: LinkPhase::Closed,
        });
        self.session.state = State::AwaitHello;
    }

    /// Whether an authenticated session is open (a keyed board after its `SessionOpen`
    /// exchange).
    pub fn session_open(&self) -> bool {
        matches!(
            self.session.keyed,
            Some(Keyed {
                phase: LinkPhase::Open(_),
                ..
            })
        )
    }

    /// What the board's flash holds (`None` without a valid record or without flash).
    pub fn owned(&self) -> Option<StoredData> {
        self.session.owned
    }

    /// The `Hello` this board sends.
    pub fn hello(&self) -> Hello {
        self.session.hello()
    }

    /// Serves the link until it ends: `Ok(())` when a read returns 0 bytes (end of input, as
    /// an in-memory pipe does; a UART never ends), or the link's error.
    pub fn serve<L: Read + Write>(&mut self, link: &mut L) -> Result<(), LinkError<L::Error>> {
        while self.poll(link)? {}
        Ok(())
    }

    /// One blocking read from the link and the handling of every frame it completes.
    /// Returns `false` at end of input.
    pub fn poll<L: Read + Write>(&mut self, link: &mut L) -> Result<bool, LinkError<L::Error>> {
        let mut buf = [0u8; READ_CHUNK];
        let n = link.read(&mut buf).map_err(LinkError::Io)?;
        if n == 0 {
            return Ok(false);
        }
        self.feed(&buf[..n], link)?;
        Ok(true)
    }

    /// Handles received bytes (for callers that read the link themselves, e.g. from an
    /// interrupt-filled buffer).
    pub fn feed<W: Write>(
        &mut self,
        bytes: &[u8],
        link: &mut W,
    ) -> Result<(), LinkError<W::Error>> {
        let mut input = bytes;
        if self.session.keyed.is_some() {
            loop {
                match self.rx.feed_raw(input) {
                    FeedRaw::Consumed => return Ok(()),
                    FeedRaw::Frame { raw, rest } => {
                        self.session.keyed_frame(raw, link)?;
                        input = rest;
                    }
                    FeedRaw::Error { error, rest } => {
                        self.session.refuse_wire(&error, link)?;
                        input = rest;
                    }
                }
            }
        }
        loop {
            match self.rx.feed(input) {
                Feed::Consumed => return Ok(()),
                Feed::Frame { frame, rest } => {
                    self.session.frame(&frame, link)?;
                    input = rest;
                }
                Feed::Error { error, rest } => {
                    self.session.refuse_wire(&error, link)?;
                    input = rest;
                }
            }
        }
    }
}

impl<S: Scalar, const N: usize, const K: usize, const FB: usize, const NB: usize>
    Session<'_, S, N, K, FB, NB>
{
    fn hello(&self) -> Hello {
        Hello {
            protocol: Version {
                major: PROTOCOL_MAJOR,
                minor: PROTOCOL_MINOR,
            },
            scalar: S::KIND,
            k: K as u32,
            max_examples: N as u32,
            max_rows: N as u32,
            max_frame: FB as u32,
            encodings: encoding_bit(RowEncoding::F32)
                | encoding_bit(RowEncoding::I16)
                | encoding_bit(RowEncoding::I8),
            firmware: self.info.firmware,
        }
    }

    /// The round the current state concerns (0 outside a round), for error messages.
    fn round(&self) -> u32 {
        match &self.state {
            State::Rows { start, .. }
            | State::Reconstructed { start }
            | State::Ranking { start, .. } => start.round,
            _ => 0,
        }
    }

    fn send<W: Write>(
        &mut self,
        msg: &Message<'_>,
        link: &mut W,
    ) -> Result<(), LinkError<W::Error>> {
        let len = msg
            .encode_with(&mut tx_writer(&mut self.keyed), &mut self.tx)
            .map_err(LinkError::Encode)?;
        link.write_all(&self.tx[..len]).map_err(LinkError::Io)
    }

    /// A keyed board's received frame (COBS-decoded): a `SessionOpen` answer, a plain
    /// `Hello` (a session request), or a sealed frame to open; anything else is refused
    /// unread (core/WIRE.md 7).
    fn keyed_frame<W: Write>(
        &mut self,
        raw: &[u8],
        link: &mut W,
    ) -> Result<(), LinkError<W::Error>> {
        let Some(keyed) = self.keyed.as_mut() else {
            return Ok(());
        };
        match SessionOpen::check(raw) {
            Err(e) => return self.refuse_auth(&e, link),
            Ok(Some(open)) => {
                let LinkPhase::Offered(nonce) = keyed.phase else {
                    let e = WireError::UnexpectedKind {
                        got: SESSION_OPEN,
                        expected: 0,
                    };
                    return self.refuse_wire(&e, link);
                };
                if open.device != keyed.key.device {
                    let e = AuthError::WrongDevice {
                        expected: keyed.key.device,
                        got: open.device,
                    };
                    keyed.phase = LinkPhase::Closed;
                    return self.refuse_auth(&e, link);
                }
                let s = auth::Session::new(
                    &keyed.key.key,
                    Role::Device,
                    open.device,
                    open.nonce,
                    nonce,
                );
                keyed.phase = LinkPhase::Open(s);
                self.restart();
                return Ok(());
            }
            Ok(None) => {}
        }
        // SessionOpen::check passed the envelope: the header is there.
        if raw[2] & SEALED == 0 {
            if Frame::check(raw).is_ok_and(|f| f.kind == Kind::Hello) {
                return self.offer_session(link);
            }
            return self.refuse_auth(&AuthError::Unsealed { kind: raw[2] }, link);
        }
        let LinkPhase::Open(s) = &mut keyed.phase else {
            // No session key to check it with.
            return self.refuse_auth(&AuthError::BadTag, link);
        };
        match s.open(raw) {
            Ok(frame) => self.frame(&frame, link),
            Err(e) => self.refuse_auth(&e, link),
        }
    }

    /// Answers a session request (a plain `Hello`): drops any session and stream in
    /// progress and sends `SessionOpen` with the next device nonce.
    fn offer_session<W: Write>(&mut self, link: &mut W) -> Result<(), LinkError<W::Error>> {
        self.restart();
        let Some(keyed) = self.keyed.as_mut() else {
            return Ok(());
        };
        let open = SessionOpen {
            device: keyed.key.device,
            nonce: keyed.key.nonce,
        };
        keyed.key.nonce = keyed.key.nonce.wrapping_add(1);
        keyed.phase = LinkPhase::Offered(open.nonce);
        let len = open.encode(&mut self.tx).map_err(LinkError::Encode)?;
        link.write_all(&self.tx[..len]).map_err(LinkError::Io)
    }

    /// Back to `AwaitHello` (a new session): a partial ratings upload is dropped.
    fn restart(&mut self) {
        if matches!(self.state, State::Ratings(_)) {
            self.device.data_mut().clear();
        }
        self.state = State::AwaitHello;
        self.shape = None;
    }

    /// Refuses a frame the authentication layer did not open; the session is unchanged.
    fn refuse_auth<W: Write>(
        &mut self,
        e: &AuthError,
        link: &mut W,
    ) -> Result<(), LinkError<W::Error>> {
        let msg = ErrorMsg::from_auth(self.round(), e);
        self.refuse(msg, link)
    }

    /// Sends an `Error` and drops whatever stream was in progress. A failed ratings upload
    /// also drops the partial dataset, so a round never trains on half of it.
    fn refuse<W: Write>(&mut self, msg: Refusal, link: &mut W) -> Result<(), LinkError<W::Error>> {
        self.shape = None;
        match self.state {
            State::AwaitHello => {}
            State::Ratings(_) => {
                self.device.data_mut().clear();
                self.state = State::Idle;
            }
            _ => self.state = State::Idle,
        }
        self.send(&Message::Error(msg), link)
    }

    fn refuse_wire<W: Write>(
        &mut self,
        e: &WireError,
        link: &mut W,
    ) -> Result<(), LinkError<W::Error>> {
        let msg = ErrorMsg::from_wire(self.round(), e);
        self.refuse(msg, link)
    }

    fn frame<W: Write>(
        &mut self,
        frame: &Frame<'_>,
        link: &mut W,
    ) -> Result<(), LinkError<W::Error>> {
        let msg = match Message::decode::<K>(frame) {
            Ok(m) => m,
            Err(e) => return self.refuse_wire(&e, link),
        };
        match self.message(msg, link)? {
            Ok(()) => Ok(()),
            Err(refusal) => self.refuse(refusal, link),
        }
    }

    /// Handles one decoded message. The outer result is the link's; the inner one a refusal
    /// to send back.
    fn message<W: Write>(
        &mut self,
        msg: Message<'_>,
        link: &mut W,
    ) -> Result<Result<(), Refusal>, LinkError<W::Error>> {
        let round = self.round();
        let unexpected = |kind: u8| {
            Err(ErrorMsg::from_wire(
                round,
                &WireError::UnexpectedKind {
                    got: kind,
                    expected: 0,
                },
            ))
        };
        // The peer's refusals end whatever was in progress; never answered (no ping-pong).
        if let Message::Error(_) = msg {
            if !matches!(self.state, State::AwaitHello) {
                self.state = State::Idle;
            }
            return Ok(Ok(()));
        }
        if let Message::Hello(h) = msg {
            return self.on_hello(&h, link);
        }
        if matches!(self.state, State::AwaitHello) {
            return Ok(unexpected(msg.kind() as u8));
        }
        let kind = msg.kind() as u8;
        match msg {
            Message::Ratings(chunk) => match self.state {
                State::Rows { .. } | State::Ranking { .. } => Ok(unexpected(kind)),
                _ => Ok(self.on_ratings(&chunk)),
            },
            Message::RoundStart(start) => match self.state {
                State::Idle | State::Reconstructed { .. } => self.on_round_start(start, link),
                _ => Ok(unexpected(kind)),
            },
            Message::ItemRows(chunk) => self.on_rows(&chunk, link),
            Message::StoredData(_) => match self.state {
                State::Idle | State::Reconstructed { .. } => {
                    let held = self.owned.unwrap_or(StoredData {
                        ratings: 0,
                        digest: RatingsDigest::new().finish(),
                    });
                    self.send(&Message::StoredData(held), link)?;
                    Ok(Ok(()))
                }
                _ => Ok(unexpected(kind)),
            },
            Message::StoreRatings(req) => match self.state {
                State::Idle | State::Reconstructed { .. } => self.on_store(req, link),
                _ => Ok(unexpected(kind)),
            },
            Message::UpdateShape(shape) => match self.state {
                State::Idle | State::Reconstructed { .. } => {
                    self.shape = Some(shape);
                    Ok(Ok(()))
                }
                _ => Ok(unexpected(kind)),
            },
            Message::TopKRequest(req) => match self.state {
                State::Reconstructed { start } => Ok(self.on_top_k(start, req)),
                _ => Ok(unexpected(kind)),
            },
            _ => Ok(unexpected(kind)),
        }
    }

    fn on_hello<W: Write>(
        &mut self,
        peer: &Hello,
        link: &mut W,
    ) -> Result<Result<(), Refusal>, LinkError<W::Error>> {
        self.state = State::Idle;
        self.shape = None;
        let ours = self.hello();
        self.send(&Message::Hello(ours), link)?;
        if peer.k != K as u32 {
            return Ok(Err(ErrorMsg::from_wire(
                0,
                &WireError::DimensionMismatch {
                    got: peer.k,
                    expected: K as u32,
                },
            )));
        }
        Ok(Ok(()))
    }

    fn on_ratings(&mut self, chunk: &RatingsChunk) -> Result<(), Refusal> {
        let mut stream = match self.state {
            State::Ratings(s) => s,
            // A new upload (chunk 0) replaces the dataset, even after a round.
            _ => {
                self.device.data_mut().clear();
                self.state = State::Ratings(RatingsStream::new());
                self.upload = RatingsDigest::new();
                self.uploaded = None;
                RatingsStream::new()
            }
        };
        if chunk.seq == 0 && chunk.total as usize > N {
            return Err(capacity(0, N));
        }
        let done = stream
            .accept(chunk)
            .map_err(|e| ErrorMsg::from_wire(0, &e))?;
        for r in &chunk.ratings {
            // Item ids are checked against the model when a round starts (its num_items).
            self.device
                .data_mut()
                .push(r.item, S::from_f32(r.rating), u32::MAX)
                .map_err(|e| ErrorMsg::from_core(0, &e))?;
            self.upload.push(r.item, r.rating);
        }
        if done {
            self.uploaded = Some(StoredData {
                ratings: self.upload.count(),
                digest: self.upload.finish(),
            });
        }
        self.state = if done {
            State::Idle
        } else {
            State::Ratings(stream)
        };
        Ok(())
    }

    fn on_round_start<W: Write>(
        &mut self,
        start: RoundStart,
        link: &mut W,
    ) -> Result<Result<(), Refusal>, LinkError<W::Error>> {
        let round = start.round;
        if start.rows as usize > N {
            return Ok(Err(capacity(round, N)));
        }
        if start.config.model.item_bias && !CachedRows::<S, N, K, NB>::keeps_biases() {
            // This build caches no item biases (see CachedRows): it cannot hold the round.
            return Ok(Err(capacity(round, 0)));
        }
        self.rows.reset(start.num_items);
        let stream = RowStream::new(
            round,
            0,
            start.down,
            start.config.model.item_bias,
            start.rows,
        );
        self.state = State::Rows { start, stream };
        if start.rows == 0 {
            return self.run_round(start, link);
        }
        Ok(Ok(()))
    }

    fn on_rows<W: Write>(
        &mut self,
        chunk: &RowChunk<'_>,
        link: &mut W,
    ) -> Result<Result<(), Refusal>, LinkError<W::Error>> {
        let round = self.round();
        match &mut self.state {
            State::Rows { start, stream } => {
                let start = *start;
                let rows = &mut *self.rows;
                let mut cache_err: Option<CacheError> = None;
                let res = stream.accept::<K>(chunk, |item, row, bias| {
                    if cache_err.is_none() {
                        cache_err = rows.push_f32(item, row, bias).err();
                    }
                });
                if let Err(e) = res {
                    return Ok(Err(ErrorMsg::from_wire(round, &e)));
                }
                if let Some(e) = cache_err {
                    return Ok(Err(cache_refusal(round, &e)));
                }
                if stream.is_complete() {
                    return self.run_round(start, link);
                }
                Ok(Ok(()))
            }
            State::Ranking { start, stream, top } => {
                let start = *start;
                let device = &*self.device;
                let res = stream.accept::<K>(chunk, |item, row, bias| {
                    let mut r = [S::ZERO; K];
                    for (d, s) in r.iter_mut().zip(row) {
                        *d = S::from_f32(*s);
                    }
                    let b = S::from_f32(bias.unwrap_or(0.0));
                    if let Some(score) = device.score(item, &r, b) {
                        top.offer(item, score);
                    }
                });
                if let Err(e) = res {
                    return Ok(Err(ErrorMsg::from_wire(round, &e)));
                }
                if stream.is_complete() {
                    return self.answer_top_k(start, link);
                }
                Ok(Ok(()))
            }
            _ => Ok(Err(ErrorMsg::from_wire(
                round,
                &WireError::UnexpectedKind {
                    got: fedrecon_core::wire::Kind::ItemRows as u8,
                    expected: 0,
                },
            ))),
        }
    }

    /// All of a round's rows arrived: run it and answer.
    fn run_round<W: Write>(
        &mut self,
        start: RoundStart,
        link: &mut W,
    ) -> Result<Result<(), Refusal>, LinkError<W::Error>> {
        let round = start.round;
        let client = self.info.client;
        self.state = State::Idle;
        // A shape applies to one training round only.
        if start.mode != RoundMode::Train {
            self.shape = None;
        }
        match start.mode {
            RoundMode::Train => {
                let update = match self.device.train(&*self.rows, &start.config, start.seed) {
                    Ok(u) => u,
                    Err(e) => return Ok(Err(ErrorMsg::from_core(round, &e))),
                };
                let info = UpdateInfo { round, client };
                let sink = |f: &[u8]| link.write_all(f);
                let mut w = tx_writer(&mut self.keyed);
                let res = match self.shape.take() {
                    Some(shape) if !shape.is_plain() => encode_shaped_update_with::<S, K, N, _>(
                        &mut w,
                        info,
                        &update,
                        start.up,
                        &shape,
                        start.num_items,
                        &mut self.tx,
                        sink,
                    )
                    .map(|_| ()),
                    _ => encode_update_with(&mut w, info, &update, start.up, &mut self.tx, sink)
                        .map(|_| ()),
                };
                match res {
                    Ok(_) => Ok(Ok(())),
                    Err(EncodeError::Sink(e)) => Err(LinkError::Io(e)),
                    Err(EncodeError::Wire(e)) => Ok(Err(ErrorMsg::from_wire(round, &e))),
                }
            }
            RoundMode::Evaluate => {
                match self.device.evaluate(&*self.rows, &start.config, start.seed) {
                    Ok(metrics) => {
                        let report = EvalReport {
                            round,
                            client,
                            metrics,
                        };
                        self.send(&Message::EvalReport(report), link)?;
                        // The user is reconstructed from the first half: the server may
                        // rank the catalogue for the held-out half (recall, NDCG).
                        self.state = State::Reconstructed { start };
                        Ok(Ok(()))
                    }
                    Err(e) => Ok(Err(ErrorMsg::from_core(round, &e))),
                }
            }
            RoundMode::Reconstruct => {
                match self
                    .device
                    .reconstruct(&*self.rows, &start.config, start.seed)
                {
                    Ok(()) => {
                        self.state = State::Reconstructed { start };
                        Ok(Ok(()))
                    }
                    Err(e) => Ok(Err(ErrorMsg::from_core(round, &e))),
                }
            }
        }
    }

    /// Keeps the last complete upload as the board's own dataset (WIRE.md kind 13).
    fn on_store<W: Write>(
        &mut self,
        req: StoreRatings,
        link: &mut W,
    ) -> Result<Result<(), Refusal>, LinkError<W::Error>> {
        let asked = StoredData {
            ratings: req.ratings,
            digest: req.digest,
        };
        if self.uploaded != Some(asked) {
            return Ok(Err(ErrorMsg::from_wire(
                0,
                &WireError::InvalidValue {
                    what: "StoreRatings does not match the last ratings upload",
                },
            )));
        }
        let data = self.device.data();
        let ratings = data
            .items()
            .iter()
            .zip(data.ratings())
            .map(|(&i, r)| (i, r.to_f32()));
        let Some(store) = self.store.as_deref_mut() else {
            return Ok(Err(ErrorMsg {
                round: 0,
                code: ErrorCode::Other,
                detail: None,
            }));
        };
        if !write_record(store, ratings, req.digest) {
            self.owned = None;
            return Ok(Err(ErrorMsg {
                round: 0,
                code: ErrorCode::Other,
                detail: None,
            }));
        }
        self.owned = Some(asked);
        self.send(&Message::StoredData(asked), link)?;
        Ok(Ok(()))
    }

    fn on_top_k(&mut self, start: RoundStart, req: TopKRequest) -> Result<(), Refusal> {
        if req.round != start.round {
            return Err(ErrorMsg::from_wire(
                start.round,
                &WireError::InvalidValue {
                    what: "top-k request for another round",
                },
            ));
        }
        let top =
            TopK::new(usize::from(req.k)).map_err(|e| ErrorMsg::from_core(start.round, &e))?;
        let stream = RowStream::new(
            start.round,
            0,
            start.down,
            start.config.model.item_bias,
            start.num_items,
        );
        self.state = State::Ranking { start, stream, top };
        Ok(())
    }

    fn answer_top_k<W: Write>(
        &mut self,
        start: RoundStart,
        link: &mut W,
    ) -> Result<Result<(), Refusal>, LinkError<W::Error>> {
        let State::Ranking { top, .. } =
            core::mem::replace(&mut self.state, State::Reconstructed { start })
        else {
            return Ok(Ok(()));
        };
        let mut answer = TopKAnswer {
            round: start.round,
            items: heapless::Vec::new(),
        };
        for (item, score) in top.into_sorted() {
            // TopK holds at most TOP_K_MAX items, the answer's capacity.
            let _ = answer.items.push(Scored {
                item,
                score: score.to_f32(),
            });
        }
        self.send(&Message::TopKAnswer(answer), link)?;
        Ok(Ok(()))
    }
}

/// Bytes of a keyed board's frame buffers at width `k`: [`max_frame_buf_len`] with room for
/// the seal (sequence and tag, core/WIRE.md 7.3).
pub const fn sealed_buf_len(k: usize) -> usize {
    auth::sealed_frame_buf_len(max_payload_any(k))
}

fn capacity(round: u32, cap: usize) -> ErrorMsg {
    ErrorMsg {
        round,
        code: ErrorCode::CapacityExceeded,
        detail: Some(cap as u32),
    }
}

fn cache_refusal(round: u32, e: &CacheError) -> ErrorMsg {
    match *e {
        CacheError::Full { capacity: c } => capacity(round, c),
        CacheError::NoBiasStorage { .. } => capacity(round, 0),
        CacheError::ItemOutOfRange { item, .. } => ErrorMsg {
            round,
            code: ErrorCode::RoundFailed,
            detail: Some(item),
        },
        CacheError::NotAscending { .. } => ErrorMsg::from_wire(
            round,
            &WireError::InvalidValue {
                what: "item rows must be strictly ascending",
            },
        ),
    }
}
