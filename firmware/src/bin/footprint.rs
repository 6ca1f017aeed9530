//! Footprint image, f32: one 300-rating training round at K = 50 (see `fedrecon_firmware::footprint`).
#![no_std]
#![no_main]

use fedrecon_firmware::footprint::{self, FootDevice, FootRows};
use static_cell::ConstStaticCell;

// Zero-initialised and const-constructed: both land in .bss, never on the stack.
static DEVICE: ConstStaticCell<FootDevice<f32>> = ConstStaticCell::new(FootDevice::new());
static ROWS: ConstStaticCell<FootRows<f32>> = ConstStaticCell::new(FootRows::new());

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    let painted = footprint::paint();
    footprint::run("f32", painted, DEVICE.take(), ROWS.take())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fedrecon_firmware::qemu_panic(info)
}
