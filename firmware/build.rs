//! Puts the memory layout on the linker path as `memory.x` (QEMU mps2-an386 / an385 by
//! default, the nRF52840's with feature `board-nrf52840`, so the linker checks the board's
//! budget, QEMU riscv32 virt's for RISC-V) and links with cortex-m-rt's or riscv-rt's script
//! (both `link.x`). Host builds (the library's tests) link nothing special.

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
        // defmt's sections, for the images that log with defmt (the DK's UART and USB ones).
        println!("cargo::rustc-link-arg-bin=nrf52840=-Tdefmt.x");
        println!("cargo::rustc-link-arg-bin=nrf52840-usb=-Tdefmt.x");
    }
}
