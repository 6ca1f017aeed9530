//! # fedrecon-firmware
//!
//! What a board needs around `fedrecon-core`'s round, on the Cortex-M4F and on the FPU-less
//! Cortex-M3 / M0+ and RV32IMC (the Pico and ESP32-C3 images in `boards/` use this library):
//!
//! - [`rows::CachedRows`]: the item rows of the client's rated items only, as an
//!   [`fedrecon_core::ItemRows`] the round borrows;
//! - [`proto::Board`]: the device side of the wire protocol over any `embedded-io` link;
//! - [`store`]: the board's own dataset in flash (a checksummed record), behind
//!   [`store::DataStore`] (`semihosting_flash` on QEMU, [`nor_store::NorStore`] in a real
//!   board's NOR flash);
//! - [`cmsdk_uart::CmsdkUart`]: an `embedded-io` driver for QEMU mps2's UARTs;
//! - [`device_key`]: a real board's build-time device id and key, checked at compile time;
//! - `usb_link` (feature `usb`): a USB CDC-ACM serial port as an `embedded-io` link, over any
//!   HAL's `usb-device` bus;
//! - `dk` (feature `nrf52840-dk`): the nRF52840-DK images' shared parts (dataset page, serve
//!   loop);
//! - `qemu_board` (Arm only): the QEMU board images' loop, in every scalar and any K;
//! - [`footprint`] (target only): the measured round behind `cargo footprint`, counted by
//!   [`counter`] (SysTick on Cortex-M, `mcycle` on RISC-V);
//! - [`auth_cost`] (target only): what authenticated frames add to that round;
//! - [`parity`] (target only): the protocol loop over semihosting files, behind
//!   `cargo fw-parity`.
//!
//! The hardware-independent parts build on the host too, so their tests run there; the parts
//! that touch the core are compiled only for `target_os = "none"` (and the mps2 UART's
//! interrupt wait only for Arm).
#![no_std]
#![deny(missing_docs)]

pub mod cmsdk_uart;
pub mod device_key;
pub mod nor_store;
pub mod proto;
pub mod rows;
pub mod store;
#[cfg(feature = "usb")]
pub mod usb_link;

#[cfg(all(feature = "nrf52840-dk", target_os = "none"))]
pub mod dk;

#[cfg(test)]
mod proto_auth_tests;
#[cfg(test)]
mod proto_tests;
#[cfg(test)]
mod test_link;

#[cfg(target_os = "none")]
pub mod auth_cost;
#[cfg(target_os = "none")]
pub mod counter;
#[cfg(target_os = "none")]
pub mod footprint;
#[cfg(target_os = "none")]
pub mod parity;
#[cfg(all(target_os = "none", target_arch = "arm", feature = "images"))]
pub mod qemu_board;
#[cfg(target_os = "none")]
pub mod semihosting_flash;
#[cfg(target_os = "none")]
pub mod semihosting_link;
#[cfg(target_os = "none")]
pub mod stack;

pub use proto::{Board, BoardInfo, BoardKey, LinkError, sealed_buf_len};

/// This firmware's version, sent in `Hello` (the build id is 0: no commit hash is embedded).
pub const FIRMWARE_VERSION: fedrecon_core::wire::FirmwareVersion =
    fedrecon_core::wire::FirmwareVersion {
        major: 0,
        minor: 1,
        patch: 0,
        build: 0,
    };

/// The panic handler body of the QEMU images: prints the message over semihosting and exits
/// QEMU with 101 (as a host test would), so a panic never hangs CI. Each QEMU binary defines
/// `#[panic_handler]` calling this; the nRF image uses panic-probe instead.
#[cfg(target_os = "none")]
pub fn qemu_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    semihosting::eprintln!("panic: {}", info);
    semihosting::process::exit(101)
}
pub use rows::{CacheError, CachedRows};
