//! Auth-cost image: what authenticated frames add to the footprint round's traffic on the
//! device (see `fedrecon_firmware::auth_cost`).
#![no_std]
#![no_main]

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    fedrecon_firmware::auth_cost::run()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fedrecon_firmware::qemu_panic(info)
}
