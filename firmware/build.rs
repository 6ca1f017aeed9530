//! Puts the memory layout on the linker path as `memory.x` (QEMU mps2-an386 / an385 by
//! default, the nRF52840's with feature `board-nrf52840`, so the linker checks the board's
//! budget, QEMU riscv32 virt's for RISC-V) and links with cortex-m-rt's or riscv-rt's script
//! (both `link.x`). Host builds (the library's tests) link nothing special.
//!
//! The nRF52840-DK image (feature `nrf52840-dk`) is a real board: it gets its authentication
//! key (core/WIRE.md 7) at build time from `FEDRECON_DEVICE_ID` (decimal `u32`) and
//! `FEDRECON_DEVICE_KEY` (64 hex digits), and does not build without them (`cargo build-fw`
//! draws and keeps one, README.md "Device keys").

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=memory-mps2-an386.x");
    println!("cargo::rerun-if-changed=memory-nrf52840.x");
    println!("cargo::rerun-if-changed=memory-riscv32-virt.x");
    // Without `images` this is a library for a board crate, which links with its own layout.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none")
        || env::var_os("CARGO_FEATURE_IMAGES").is_none()
    {
        return;
    }
    let layout = if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("riscv32") {
        "memory-riscv32-virt.x"
    } else if env::var_os("CARGO_FEATURE_BOARD_NRF52840").is_some() {
        "memory-nrf52840.x"
    } else {
        "memory-mps2-an386.x"
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir")).join(layout);
    fs::copy(&src, out.join("memory.x")).expect("copy memory.x");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rustc-link-arg-bins=-Tlink.x");
    if env::var_os("CARGO_FEATURE_NRF52840_DK").is_some() {
        check_device_key();
        // defmt's sections, for the images that log with defmt (the DK's UART and USB ones).
        println!("cargo::rustc-link-arg-bin=nrf52840=-Tdefmt.x");
        println!("cargo::rustc-link-arg-bin=nrf52840-usb=-Tdefmt.x");
    }
}

/// Refuses to build a real board's image without a well-formed device id and key: it would
/// either speak an unauthenticated link or fail at the first session.
fn check_device_key() {
    println!("cargo::rerun-if-env-changed=FEDRECON_DEVICE_ID");
    println!("cargo::rerun-if-env-changed=FEDRECON_DEVICE_KEY");
    let id = env::var("FEDRECON_DEVICE_ID").unwrap_or_default();
    let key = env::var("FEDRECON_DEVICE_KEY").unwrap_or_default();
    if id.parse::<u32>().is_err() {
        panic!(
            "the nRF52840-DK image needs FEDRECON_DEVICE_ID, its enrolled device id (a decimal \
             u32), got {id:?}: build it with `cargo build-fw`, or set it and FEDRECON_DEVICE_KEY"
        );
    }
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        panic!(
            "the nRF52840-DK image needs FEDRECON_DEVICE_KEY, its 32-byte device key as 64 hex \
             digits (got {} characters): build it with `cargo build-fw`, or set it and \
             FEDRECON_DEVICE_ID",
            key.len()
        );
    }
}
