//! The firmware's protocol loop (`fedrecon_firmware::Board`) built for the host, driven by
//! records framed with valid CRCs and read in pieces; every byte the board answers must be a
//! valid frame that decodes. The first byte picks the scalar (bit 0) and the read size.
#![no_main]

use core::convert::Infallible;
use fedrecon_core::wire::{Message, max_frame_buf_len, next_frame};
use fedrecon_core::{Device, Q16, Scalar};
use fedrecon_firmware::{Board, BoardInfo, CachedRows, FIRMWARE_VERSION};
use libfuzzer_sys::fuzz_target;

const K: usize = 8;
const N: usize = 40;
const FB: usize = max_frame_buf_len(K);

/// Bytes in, `step` at a time; bytes out.
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

fn serve<S: Scalar>(input: &[u8], step: usize) {
    let mut device = Box::new(Device::<S, N, K>::new());
    let mut rows = Box::new(CachedRows::<S, N, K>::new());
    let info = BoardInfo {
        client: 7,
        firmware: FIRMWARE_VERSION,
    };
    let mut board: Board<'_, S, N, K, FB> = Board::new(&mut device, &mut rows, info);
    let mut pipe = Pipe {
        input,
        step,
        output: Vec::new(),
    };
    let Ok(()) = board.serve(&mut pipe) else {
        panic!("the board's own frames must encode")
    };
    let mut buf = vec![0u8; FB];
    let mut out = &pipe.output[..];
    while !out.is_empty() {
        let (used, r) = next_frame(out, &mut buf);
        let frame = r
            .expect("the board sends valid frames")
            .expect("and no empty ones");
        Message::decode::<K>(&frame).expect("that decode");
        out = &out[used..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = fedrecon_fuzz::framed(rest);
    let step = 1 + (mode >> 1) as usize % 64;
    if mode & 1 == 0 {
        serve::<f32>(&input, step);
    } else {
        serve::<Q16>(&input, step);
    }
});
