//! Parity image (f32): the protocol loop over semihosting files, for `cargo fw-parity`
//! (see `src/parity.rs`).
#![no_std]
#![no_main]

use fedrecon_core::Device;
use fedrecon_firmware::CachedRows;
use fedrecon_firmware::parity::{K, N, run};
use static_cell::ConstStaticCell;

static DEVICE: ConstStaticCell<Device<f32, N, K>> = ConstStaticCell::new(Device::new());
static ROWS: ConstStaticCell<CachedRows<f32, N, K>> = ConstStaticCell::new(CachedRows::new());

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    run(DEVICE.take(), ROWS.take())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fedrecon_firmware::qemu_panic(info)
}
