//! The protocol loop on the nRF52840-DK (f32, K = 50, up to 300 ratings): UARTE0 on the
//! pins of the DK's J-Link virtual COM port (P0.06 TXD, P0.08 RXD, P0.05 RTS, P0.07 CTS, with
//! hardware flow control, 115200 baud), so the host sees the board as `/dev/ttyACM0`.
//! Logging is defmt over RTT (probe-rs prints it); a panic is reported by panic-probe.
//! See README.md, "The nRF52840-DK image".
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use embedded_io::{ErrorKind, ErrorType, Read, Write};
use fedrecon_core::Device;
use fedrecon_core::wire::auth::DeviceKey;
use fedrecon_firmware::{Board, BoardInfo, BoardKey, CachedRows, sealed_buf_len};
use nrf52840_hal::gpio::{Level, p0};
use nrf52840_hal::pac;
use nrf52840_hal::uarte::{self, Baudrate, Parity, Uarte};
use panic_probe as _;
use static_cell::ConstStaticCell;

const K: usize = 50;
const N: usize = 300;
const FB: usize = sealed_buf_len(K);
/// The board's enrolled id and key (core/WIRE.md 7), from the build (`build.rs` checks them).
const DEVICE_ID: u32 = parse_u32(env!("FEDRECON_DEVICE_ID"));
const DEVICE_KEY: [u8; 32] = parse_key(env!("FEDRECON_DEVICE_KEY"));

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut v: u32 = 0;
    let mut i = 0;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

const fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("FEDRECON_DEVICE_KEY: not a hex digit"),
    }
}

const fn parse_key(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    assert!(b.len() == 64, "FEDRECON_DEVICE_KEY: 64 hex digits");
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = hex(b[2 * i]) << 4 | hex(b[2 * i + 1]);
        i += 1;
    }
    k
}

static DEVICE: ConstStaticCell<Device<f32, N, K>> = ConstStaticCell::new(Device::new());
// Item biases kept (N of them, 1.2 KB): every model of the simulator runs on the board.
static ROWS: ConstStaticCell<CachedRows<f32, N, K, N>> = ConstStaticCell::new(CachedRows::new());

/// UARTE0 as an `embedded-io` link. Reads take one byte per DMA transfer (the UARTE's read
/// blocks until its buffer is full; with RTS/CTS flow control nothing is lost between
/// transfers); writes go out in one transfer from the board's RAM frame buffer.
struct Link(Uarte<pac::UARTE0>);

impl ErrorType for Link {
    type Error = ErrorKind;
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        // EasyDMA needs a RAM buffer: a local byte is one.
        let mut byte = [0u8; 1];
        self.0.read(&mut byte).map_err(|_| ErrorKind::Other)?;
        buf[0] = byte[0];
        Ok(1)
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        self.0.write(buf).map_err(|_| ErrorKind::Other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

#[entry]
fn main() -> ! {
    let p = pac::Peripherals::take().expect("peripherals taken once");
    let port0 = p0::Parts::new(p.P0);
    let pins = uarte::Pins {
        txd: port0.p0_06.into_push_pull_output(Level::High).degrade(),
        rxd: port0.p0_08.into_floating_input().degrade(),
        cts: Some(port0.p0_07.into_floating_input().degrade()),
        rts: Some(port0.p0_05.into_push_pull_output(Level::High).degrade()),
    };
    let uart = Uarte::new(p.UARTE0, pins, Parity::EXCLUDED, Baudrate::BAUD115200);
    let mut link = Link(uart);
    let info = BoardInfo {
        client: 0,
        firmware: fedrecon_firmware::FIRMWARE_VERSION,
    };
    let mut board: Board<'_, f32, N, K, FB, N> = Board::new(DEVICE.take(), ROWS.take(), info);
    // No random source or boot counter here: the device nonce starts at 0 every boot (the
    // server's nonce is fresh per session, which is what keeps session keys apart).
    board.set_key(BoardKey {
        device: DEVICE_ID,
        key: DeviceKey(DEVICE_KEY),
        nonce: 0,
    });
    defmt::info!(
        "fedrecon nRF52840-DK board: K={} N={} max_frame={} device={}",
        K,
        N,
        FB,
        DEVICE_ID
    );
    loop {
        // The UARTE reports framing/overrun errors; log them and keep serving (the host
        // sees a refused or missing answer and can resend).
        match board.serve(&mut link) {
            Ok(()) => defmt::warn!("link ended"),
            Err(e) => defmt::warn!("link error: {}", defmt::Debug2Format(&e)),
        }
    }
}
