//! The protocol loop on QEMU mps2-an386's UART0 in Q16.16 (`src/qemu_board.rs`: K from
//! `FEDRECON_FW_K`, default 50; up to 300 ratings; item biases kept). Boot it with the host
//! holding the serial link (see README.md, "Talking to the QEMU board"). Semihosting prints a
//! line when the loop starts; a panic exits QEMU with 101.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use fedrecon_core::Device;
use fedrecon_firmware::CachedRows;
use fedrecon_firmware::qemu_board::{K, N, run};
use static_cell::ConstStaticCell;

// Both in .bss and handed out once, so the ~128 KB workspace never touches the stack.
static DEVICE: ConstStaticCell<Device<fedrecon_core::Q16, N, K>> =
    ConstStaticCell::new(Device::new());
static ROWS: ConstStaticCell<CachedRows<fedrecon_core::Q16, N, K, N>> =
    ConstStaticCell::new(CachedRows::new());

#[entry]
fn main() -> ! {
    run(DEVICE.take(), ROWS.take())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fedrecon_firmware::qemu_panic(info)
}
