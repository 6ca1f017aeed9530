#!/usr/bin/env bash
# Installs what `cargo test-target`, the firmware images and `cargo footprint` need: the Rust
# targets of every emulated and real board, and QEMU for Arm (mps2-an386 Cortex-M4F, mps2-an385
# Cortex-M3) and RISC-V 32 (virt). Idempotent: each step is skipped when already present.
set -euo pipefail

# Cortex-M4F, Cortex-M3, Cortex-M0+ (RP2040), RISC-V rv32imc (ESP32-C3).
TARGETS="thumbv7em-none-eabihf thumbv7m-none-eabi thumbv6m-none-eabi riscv32imc-unknown-none-elf"

installed=$(rustup target list --installed)
for target in $TARGETS; do
    if ! grep -qx "$target" <<<"$installed"; then
        rustup target add "$target"
    fi
done

# Debian packages: qemu-system-arm, and qemu-system-misc for qemu-system-riscv32.
missing=""
command -v qemu-system-arm >/dev/null 2>&1 || missing="$missing qemu-system-arm"
command -v qemu-system-riscv32 >/dev/null 2>&1 || missing="$missing qemu-system-misc"
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi

qemu-system-arm --version | head -n 1
qemu-system-riscv32 --version | head -n 1
