//! A polling driver for the ARM CMSDK APB UART (QEMU mps2-an386's UART0–4), implementing
//! `embedded-io` so [`crate::proto::Board`] can run on it. No crate drives this UART.
//!
//! Registers (offsets from the base): DATA 0x0, STATE 0x4 (bit 0 TX full, bit 1 RX full),
//! CTRL 0x8 (bit 0 TX enable, bit 1 RX enable, bit 2 TX interrupt, bit 3 RX interrupt),
//! INTSTATUS/INTCLEAR 0xC (bit 0 TX, bit 1 RX), BAUDDIV 0x10 (>= 16). QEMU ignores the baud
//! rate; the receive side holds one byte, so the host must not outrun the reader by more than
//! the chardev's buffering (QEMU's socket chardev stops reading while the byte is unread, so
//! nothing is lost).

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};
use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};

const DATA: usize = 0x0;
const STATE: usize = 0x4;
const CTRL: usize = 0x8;
const INTCLEAR: usize = 0xC;
const BAUDDIV: usize = 0x10;
const TX_FULL: u32 = 1 << 0;
const RX_FULL: u32 = 1 << 1;
const TX_EN: u32 = 1 << 0;
const RX_EN: u32 = 1 << 1;
#[cfg(all(target_os = "none", target_arch = "arm"))]
const TX_INT_EN: u32 = 1 << 2;
#[cfg(all(target_os = "none", target_arch = "arm"))]
const RX_INT_EN: u32 = 1 << 3;
const TX_INT: u32 = 1 << 0;
const RX_INT: u32 = 1 << 1;
/// NVIC set-enable and clear-pending registers (interrupts 0–31).
#[cfg(all(target_os = "none", target_arch = "arm"))]
const NVIC_ISER0: usize = 0xE000_E100;
#[cfg(all(target_os = "none", target_arch = "arm"))]
const NVIC_ICPR0: usize = 0xE000_E280;

/// Base address of UART0 on mps2-an386 (UART1–4 at 0x4000_5000, 6000, 7000, 9000).
pub const UART0_BASE: usize = 0x4000_4000;

/// One CMSDK APB UART, polled.
#[derive(Debug)]
pub struct CmsdkUart {
    base: usize,
    /// NVIC bits of its RX and TX interrupts when waits sleep (`WFI`), else 0.
    irq_mask: u32,
}

impl CmsdkUart {
    /// Enables transmit and receive with the given baud divider (clamped to the minimum 16).
    ///
    /// # Safety
    /// `base` must be the base address of a CMSDK APB UART, and no other code may use that
    /// UART while this value lives (the driver assumes it owns the registers).
    pub unsafe fn new(base: usize, bauddiv: u32) -> Self {
        let uart = Self { base, irq_mask: 0 };
        uart.write_reg(BAUDDIV, bauddiv.max(16));
        uart.write_reg(CTRL, TX_EN | RX_EN);
        uart
    }

    /// Like [`new`](Self::new), but waits sleep in `WFI` until the UART's RX or TX interrupt
    /// (NVIC lines `rx_irq` and `tx_irq`, 0 and 1 for UART0 on mps2-an386) is pending,
    /// instead of spinning. Interrupts stay masked (`PRIMASK`): a pending interrupt wakes
    /// `WFI` without running a handler, and the driver clears it. Under QEMU this gives the
    /// emulator's I/O thread the CPU, so the link runs several times faster (with
    /// `-icount shift=0` most of all).
    ///
    /// # Safety
    /// As [`new`](Self::new); in addition no other code may use those two interrupt lines
    /// or rely on interrupts being enabled.
    #[cfg(all(target_os = "none", target_arch = "arm"))]
    pub unsafe fn new_sleeping(base: usize, bauddiv: u32, rx_irq: u8, tx_irq: u8) -> Self {
        cortex_m::interrupt::disable();
        let irq_mask = (1u32 << rx_irq) | (1u32 << tx_irq);
        let uart = Self { base, irq_mask };
        uart.write_reg(BAUDDIV, bauddiv.max(16));
        uart.write_reg(CTRL, TX_EN | RX_EN | TX_INT_EN | RX_INT_EN);
        // SAFETY: the NVIC's enable register; the caller gave us these two lines.
        unsafe { write_volatile(NVIC_ISER0 as *mut u32, irq_mask) };
        uart
    }

    /// Waits until `ready` holds: spinning, or sleeping until the UART's interrupt.
    fn wait(&self, ready: impl Fn(&Self) -> bool) {
        while !ready(self) {
            if self.irq_mask == 0 {
                core::hint::spin_loop();
                continue;
            }
            // Clear the UART's and the NVIC's pending state, check again (an event after
            // this check leaves the interrupt pending, so WFI returns at once), then sleep.
            self.write_reg(INTCLEAR, TX_INT | RX_INT);
            #[cfg(all(target_os = "none", target_arch = "arm"))]
            {
                // SAFETY: the NVIC's clear-pending register, for our own lines.
                unsafe { write_volatile(NVIC_ICPR0 as *mut u32, self.irq_mask) };
                if !ready(self) {
                    cortex_m::asm::wfi();
                }
            }
        }
    }

    fn read_reg(&self, off: usize) -> u32 {
        // SAFETY: `new`'s contract: `base + off` is a register of a UART this value owns.
        unsafe { read_volatile((self.base + off) as *const u32) }
    }

    fn write_reg(&self, off: usize, v: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { write_volatile((self.base + off) as *mut u32, v) }
    }

    fn rx_ready(&self) -> bool {
        self.read_reg(STATE) & RX_FULL != 0
    }

    fn tx_ready(&self) -> bool {
        self.read_reg(STATE) & TX_FULL == 0
    }
}

impl ErrorType for CmsdkUart {
    type Error = Infallible;
}

impl Read for CmsdkUart {
    /// Blocks until at least one byte arrived, then takes whatever else is already there.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.wait(Self::rx_ready);
        let mut n = 0;
        while n < buf.len() && self.rx_ready() {
            buf[n] = self.read_reg(DATA) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl ReadReady for CmsdkUart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.rx_ready())
    }
}

impl Write for CmsdkUart {
    /// Blocks until the first byte is accepted, then writes while the transmitter has room.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let mut n = 0;
        for &b in buf {
            if n > 0 && !self.tx_ready() {
                break;
            }
            self.wait(Self::tx_ready);
            self.write_reg(DATA, u32::from(b));
            n += 1;
        }
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        self.wait(Self::tx_ready);
        Ok(())
    }
}

impl WriteReady for CmsdkUart {
    fn write_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.tx_ready())
    }
}
