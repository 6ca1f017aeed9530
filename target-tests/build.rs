//! Puts the machine's memory layout on the linker path as `memory.x` (mps2 for Arm targets,
//! QEMU virt for RISC-V) and links with the runtime's and embedded-test's scripts.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let layout: &[u8] = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("riscv32") => include_bytes!("memory-riscv32-virt.x"),
        _ => include_bytes!("memory-mps2.x"),
    };
    fs::write(out.join("memory.x"), layout).expect("write memory.x");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=memory-mps2.x");
    println!("cargo::rerun-if-changed=memory-riscv32-virt.x");
    println!("cargo::rerun-if-changed=build.rs");
    // cortex-m-rt and riscv-rt both name their script link.x.
    // Not `rustc-link-arg-tests`: that reaches integration tests only, not the lib's unit tests.
    println!("cargo::rustc-link-arg=-Tlink.x");
    println!("cargo::rustc-link-arg=-Tembedded-test.x");
    println!("cargo::rustc-check-cfg=cfg(rust_analyzer)");
}
