//! fedrecon board image for the ESP32-C3: the serial protocol loop of `fedrecon-firmware` over
//! the chip's built-in USB-Serial-JTAG, a fixed CDC-ACM port, so the board appears on the host
//! as `/dev/ttyACM0` (Linux) and `fedrecon train --device /dev/ttyACM0` talks to it.
//!
//! Scalar: Q3.12. The C3's RV32IMC has no FPU; on it (`cargo footprint`, riscv32imc on QEMU
//! virt) a 300-rating K = 50 round takes 0.78 M instructions in Q3.12 against 5.09 M in
//! soft-float f32 and 1.22 M in Q16.16, and Q3.12 halves the RAM.
#![no_std]
#![no_main]

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use esp_hal::Blocking;
use esp_hal::usb::usb_serial_jtag::{UsbSerialJtag, UsbSerialJtagRx, UsbSerialJtagTx};
use fedrecon_core::wire::auth::DeviceKey;
use fedrecon_core::{Device, Q12};
use fedrecon_firmware::{Board, BoardInfo, BoardKey, CachedRows, sealed_buf_len};
use panic_halt as _;
use static_cell::ConstStaticCell;

esp_bootloader_esp_idf::esp_app_desc!();

/// Embedding width (the presets' K).
const K: usize = 50;
/// Ratings per client the board accepts (the tutorial's and the paper's per-user cap).
const N: usize = 300;
const FB: usize = sealed_buf_len(K);
// The board's enrolled id and key (core/WIRE.md 7), given at build time and checked at
// compile time (firmware/README.md, "Device keys"); the simulator refuses unkeyed boards.
fedrecon_firmware::device_key_from_env!();

// Zero-initialised and const-constructed: both land in .bss, never on the stack.
static DEVICE: ConstStaticCell<Device<Q12, N, K>> = ConstStaticCell::new(Device::new());
static ROWS: ConstStaticCell<CachedRows<Q12, N, K>> = ConstStaticCell::new(CachedRows::new());

/// The USB-Serial-JTAG port as an `embedded-io` link (the hardware handles USB itself; the
/// driver reads and writes its 64-byte FIFOs).
struct JtagLink<'d> {
    rx: UsbSerialJtagRx<'d, Blocking>,
    tx: UsbSerialJtagTx<'d, Blocking>,
}

impl ErrorType for JtagLink<'_> {
    type Error = ErrorKind;
}

impl Read for JtagLink<'_> {
    /// Waits until the receive FIFO holds something, then takes what fits.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.rx.drain_rx_fifo(buf);
            if n > 0 {
                return Ok(n);
            }
            core::hint::spin_loop();
        }
    }
}

impl Write for JtagLink<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        self.tx.write(buf).map_err(|_| ErrorKind::Other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        self.tx.flush_tx().map_err(|_| ErrorKind::Other)
    }
}

#[esp_hal::main]
fn main() -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default());
    let (rx, tx) = UsbSerialJtag::new(peripherals.USB_DEVICE).split();
    let mut link = JtagLink { rx, tx };
    let info = BoardInfo {
        client: 0,
        firmware: fedrecon_firmware::FIRMWARE_VERSION,
    };
    let mut board: Board<'_, Q12, N, K, FB> = Board::new(DEVICE.take(), ROWS.take(), info);
    // No random source used here: the device nonce starts at 0 every boot (the server's nonce
    // is fresh per session, which is what keeps session keys apart).
    board.set_key(BoardKey {
        device: DEVICE_ID,
        key: DeviceKey(DEVICE_KEY),
        nonce: 0,
    });
    loop {
        // A link error ends one session; serve the next.
        let _ = board.serve(&mut link);
    }
}
