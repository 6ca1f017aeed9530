//! A keyed board (`Board::set_key`, core/WIRE.md 7) built for the host: after a genuine
//! session opening, records framed with valid CRCs (forged frames, plain frames, bad
//! `SessionOpen`s) interleaved with genuine sealed ones (a record whose first byte is 0xFF:
//! the server seals its kind and payload). Plain `Hello` records are left out, so the session
//! the harness opened is the board's throughout: then every frame the board sends after its
//! `SessionOpen` must open, in sequence, with the server's session and decode; a refusal is
//! a sealed `Error`, never a plain frame. Byte 0 picks the read size.
#![no_main]

use core::convert::Infallible;
use fedrecon_core::wire::auth::{DeviceKey, Role, Session, SessionOpen};
use fedrecon_core::wire::{
    FirmwareVersion, Hello, Kind, Message, PROTOCOL_MAJOR, PROTOCOL_MINOR, Version, next_raw_frame,
};
use fedrecon_core::{Device, ScalarKind};
use fedrecon_firmware::{Board, BoardInfo, BoardKey, CachedRows, FIRMWARE_VERSION, sealed_buf_len};
use libfuzzer_sys::fuzz_target;

const K: usize = 8;
const N: usize = 40;
const FB: usize = sealed_buf_len(K);
const DEVICE: u32 = 42;
const KEY: DeviceKey = DeviceKey([0x42; 32]);
const BOARD_NONCE: u64 = 5;
const SERVER_NONCE: u64 = 0x5eed;

struct Pipe<'a> {
    input: &'a [u8],
    step: usize,
    output: Vec<u8>,
}

impl embedded_io::ErrorType for Pipe<'_> {
    type Error = Infallible;
}

impl embedded_io::Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.step).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl embedded_io::Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

fn plain_hello() -> Vec<u8> {
    let mut buf = vec![0u8; FB];
    let n = Message::Hello(Hello {
        protocol: Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
        },
        scalar: ScalarKind::F32,
        k: K as u32,
        max_examples: 0,
        max_rows: 0,
        max_frame: 4096,
        encodings: 7,
        firmware: FirmwareVersion::default(),
    })
    .encode(&mut buf)
    .unwrap();
    buf.truncate(n);
    buf
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let step = 1 + usize::from(mode) % 64;
    let mut server = Session::new(&KEY, Role::Server, DEVICE, SERVER_NONCE, BOARD_NONCE);
    let mut input = plain_hello();
    let mut buf = vec![0u8; FB];
    let n = SessionOpen {
        device: DEVICE,
        nonce: SERVER_NONCE,
    }
    .encode(&mut buf)
    .unwrap();
    input.extend_from_slice(&buf[..n]);
    for record in fedrecon_fuzz::records(rest) {
        let Some((header, payload)) = record.split_first_chunk::<3>() else {
            continue;
        };
        if header[0] == 0xFF {
            let Some(kind) = Kind::from_u8(header[2]) else {
                continue;
            };
            let mut buf = vec![0u8; sealed_buf_len(payload.len().max(K))];
            if let Ok(n) = server.seal_frame_with(kind, &mut buf, |p| {
                if p.len() < payload.len() {
                    return Err(fedrecon_core::wire::WireError::Encode);
                }
                p[..payload.len()].copy_from_slice(payload);
                Ok(payload.len())
            }) {
                input.extend_from_slice(&buf[..n]);
            }
        } else if header[2] != Kind::Hello as u8 {
            fedrecon_fuzz::push_frame(record, &mut input);
        }
    }

    let mut device = Box::new(Device::<f32, N, K>::new());
    let mut rows = Box::new(CachedRows::<f32, N, K>::new());
    let info = BoardInfo {
        client: 7,
        firmware: FIRMWARE_VERSION,
    };
    let mut board: Board<'_, f32, N, K, FB> = Board::new(&mut device, &mut rows, info);
    board.set_key(BoardKey {
        device: DEVICE,
        key: KEY,
        nonce: BOARD_NONCE,
    });
    let mut pipe = Pipe {
        input: &input,
        step,
        output: Vec::new(),
    };
    let Ok(()) = board.serve(&mut pipe) else {
        panic!("the board's own frames must encode")
    };
    assert!(board.session_open(), "the harness's session was lost");

    // The server's session opens the board's frames (its receiving sequence is its own).
    let mut raw = vec![0u8; FB];
    let mut out = &pipe.output[..];
    let mut first = true;
    while !out.is_empty() {
        let (used, r) = next_raw_frame(out, &mut raw);
        let r = r
            .expect("the board sends valid frames")
            .expect("no empty ones");
        if first {
            let open = SessionOpen::check(r).expect("a SessionOpen first");
            assert_eq!(
                open,
                Some(SessionOpen {
                    device: DEVICE,
                    nonce: BOARD_NONCE
                })
            );
            first = false;
        } else {
            let frame = server
                .open(r)
                .expect("every frame the board sends opens, in sequence");
            Message::decode::<K>(&frame).expect("the opened frame decodes");
        }
        out = &out[used..];
    }
});
