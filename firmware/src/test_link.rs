//! What the host tests of the protocol loop share: an in-memory link, the host's `Hello`, and
//! the item matrix and client they run on.

extern crate std;

use core::convert::Infallible;
use fedrecon_core::ScalarKind;
use fedrecon_core::wire::{Hello, Message, PROTOCOL_MAJOR, PROTOCOL_MINOR, Version};
use std::vec::Vec;

use crate::FIRMWARE_VERSION;

/// Bytes in, bytes out; reads hand out at most `step` bytes to exercise partial frames.
pub(crate) struct Pipe {
    input: Vec<u8>,
    pos: usize,
    step: usize,
    /// What the board wrote.
    pub(crate) output: Vec<u8>,
}

impl Pipe {
    /// A link that delivers `input`, `step` bytes per read at most.
    pub(crate) fn new(input: &[u8], step: usize) -> Self {
        Self {
            input: input.to_vec(),
            pos: 0,
            step,
            output: Vec::new(),
        }
    }
}

impl embedded_io::ErrorType for Pipe {
    type Error = Infallible;
}

impl embedded_io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.step).min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl embedded_io::Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// The host's `Hello` for an f32 board of width `k`.
pub(crate) fn host_hello(k: u32) -> Message<'static> {
    Message::Hello(Hello {
        protocol: Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
        },
        scalar: ScalarKind::F32,
        k,
        max_examples: 0,
        max_rows: 0,
        max_frame: 4096,
        encodings: 7,
        firmware: FIRMWARE_VERSION,
    })
}

/// `items` item rows of width `K`, seeded (the same matrix in every test).
pub(crate) fn matrix<const K: usize>(items: u32) -> Vec<[f32; K]> {
    let mut rng = fedrecon_core::rng::DeviceRng::new(3);
    (0..items)
        .map(|_| core::array::from_fn(|_| rng.unit_f32() - 0.5))
        .collect()
}

/// 30 ratings on distinct items below `items` (60 in the tests), not sorted.
pub(crate) fn client(items: u32) -> (Vec<u32>, Vec<f32>) {
    let rated: Vec<u32> = (0..30).map(|i| (i * 17 + 5) % items).collect();
    let ratings = (0..30).map(|i| (1 + i % 5) as f32).collect();
    (rated, ratings)
}
