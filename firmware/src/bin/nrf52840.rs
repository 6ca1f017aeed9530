//! The protocol loop on the nRF52840-DK (f32, K = 50, up to 300 ratings): UARTE0 on the
//! pins of the DK's J-Link virtual COM port (P0.06 TXD, P0.08 RXD, P0.05 RTS, P0.07 CTS, with
//! hardware flow control, 115200 baud), so the host sees the board as `/dev/ttyACM0`; the
//! user's dataset in the last flash page (`dk`). `nrf52840-usb` is the same board over the
//! nRF52840's own USB port. Logging is defmt over RTT (probe-rs prints it); a panic is
//! reported by panic-probe. See README.md, "The nRF52840-DK image".
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use embedded_io::{ErrorKind, ErrorType, Read, Write};
use fedrecon_firmware::dk;
use nrf52840_hal::gpio::{Level, p0};
use nrf52840_hal::pac;
use nrf52840_hal::uarte::{self, Baudrate, Parity, Uarte};

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
    let mut store = dk::flash_store(p.NVMC);
    dk::serve_forever(&mut Link(uart), &mut store, "UART")
}
