#!/usr/bin/env bash
# Runs every check CI runs, in order, failing on the first problem: the README's "all tests"
# command. Installs what it needs first (scripts/install-target-tools.sh), so it works on a
# fresh machine with only rustup, gcc and Python.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints the seconds since the start, so a slow step shows in CI's log.
step() { printf '\n==> [%ds] %s\n' "$SECONDS" "$*"; }

# Everything below is also logged so the closing line can total every test runner's results.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
exec > >(tee "$log") 2>&1

# A one-shot build gains nothing from incremental state, which is the largest part of a debug
# target directory; without it a cold run needs about half the disk.
export CARGO_INCREMENTAL=0

step "tools"
df -h . | awk 'NR == 2 { print "disk free at start: " $4 }'
rustup component add clippy rustfmt >/dev/null 2>&1 || true
bash scripts/install-target-tools.sh

step "format (cargo fmt --check)"
cargo fmt --all -- --check
for m in target-tests/Cargo.toml target-tests/runner/Cargo.toml firmware/boards/pico/Cargo.toml firmware/boards/esp32c3/Cargo.toml; do
    [ -f "$m" ] && cargo fmt --manifest-path "$m" -- --check
done

step "lint (cargo clippy --all-targets -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "host tests (cargo test --workspace)"
cargo test --workspace --locked

step "no_std core builds for every declared target"
# Each crate lists the targets it must build for in [package.metadata.fedrecon] targets.
for target in $(sed -n 's/^targets = \[\(.*\)\]/\1/p' core/Cargo.toml | tr -d '",'); do
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    cargo build -p fedrecon-core --release --locked --target "$target"
done

step "fuzz the wire frame decoder for a bounded time (no panic on any input)"
cargo run --release --locked -p fedrecon-core --example fuzz_frames -- --seconds 15

step "coverage-guided fuzzing (cargo-fuzz): every parser of untrusted input, 5 s per target"
# Installs nightly (minimal) and cargo-fuzz when missing; stable stays the default toolchain.
bash scripts/fuzz.sh --seconds 5

# One build and one QEMU boot per case per target: Cortex-M4F (mps2-an386), and the FPU-less
# Cortex-M3 and Cortex-M0+ instruction sets on mps2-an385 and RV32IMC on riscv32 virt, where
# every f32 operation is soft-float and must still give the host's bits.
for target in thumbv7em-none-eabihf thumbv7m-none-eabi thumbv6m-none-eabi riscv32imc-unknown-none-elf; do
    step "core's shared cases on QEMU for $target (cargo test-target --target $target)"
    cargo test-target --target "$target" --locked
done

step "firmware: format, lint, host tests of the protocol loop (firmware/ and firmware/xtask)"
# cargo runs inside each directory so its .cargo/config.toml (target) applies. The library's
# protocol tests run on the host (`--target host-tuple`); the images build for thumbv7em.
(cd firmware && cargo fmt -- --check && cargo clippy --all-targets --locked -- -D warnings)
(cd firmware && cargo clippy --lib --tests --target host-tuple --locked -- -D warnings)
# The nRF52840-DK image needs a device key to build (firmware/build.rs); lint with a throwaway
# one (`cargo build-fw` builds the real image with its own, firmware/README.md "Device keys").
(cd firmware && FEDRECON_DEVICE_ID=1 FEDRECON_DEVICE_KEY="$(printf '00%.0s' $(seq 32))" \
    cargo clippy --release --features nrf52840-dk --bin nrf52840 --bin nrf52840-usb --locked -- -D warnings)
(cd firmware && cargo test --lib --target host-tuple --locked)
(cd firmware/xtask && cargo fmt -- --check && cargo clippy --all-targets --locked -- -D warnings)

step "board images without an FPU: Raspberry Pi Pico (thumbv6m) and ESP32-C3 (riscv32imc), Q3.12"
# Each is its own workspace (its HAL's dependency versions stay out of firmware/'s); cargo runs
# inside the directory so its .cargo/config.toml (target, linker script) applies.
# They embed a device key (firmware/README.md, "Device keys"): CI builds them with a throwaway one.
for board in pico esp32c3; do
    (cd "firmware/boards/$board" && export FEDRECON_DEVICE_ID=1 \
        FEDRECON_DEVICE_KEY="$(printf '00%.0s' $(seq 32))" \
        && cargo clippy --release --locked -- -D warnings && cargo build --release --locked)
done

step "firmware images (cargo build-fw) and footprint report (cargo footprint)"
cargo build-fw
cargo footprint

step "firmware protocol over QEMU's UART0 socket, byte-for-byte against core (cargo fw-smoke)"
cargo fw-smoke

step "fidelity: random rounds through the firmware on QEMU, byte-for-byte against core (cargo fw-parity)"
cargo fw-parity

step "simulator rounds with QEMU boards (clean, with link faults, with dropout, a dying link; every scalar, model and link mode; evaluation and recommend on boards; and their goldens), bit-identical to all-virtual rounds"
FEDRECON_REQUIRE_QEMU=1 cargo test --locked -p fedrecon-host-sim --test it -- boards:: board_matrix:: board_eval:: board_reconnect:: board_owned:: link_faults:: goldens::qemu_board_goldens

step "Python package and the tutorial notebook (scripts/python-tests.sh: venv, maturin, pytest, nbclient)"
bash scripts/python-tests.sh

step "the simulator across MPI ranks (scripts/mpi-tests.sh: OpenMPI, mpirun -np 2 and 3 bit-identical to one process, a killed and a failing rank)"
# Last, so the `mpi`-featured build of the fedrecon binary replaces the default one only
# after every other step has used it.
t_mpi=$SECONDS
bash scripts/mpi-tests.sh
echo "MPI step: $((SECONDS - t_mpi)) s"

echo
echo "all checks passed in ${SECONDS}s"
df -h . | awk 'NR == 2 { print "disk free at end: " $4 }'
du -sh target firmware/target target-tests/target fuzz/target 2>/dev/null || true
# One closing line for the whole run: the sum over every "test result:" line above.
# pytest's closing line ("== 25 passed, 1 skipped in 9.1s ==") counts too.
awk '/test result: ok\./ || /^(=+ )?[0-9]+ (passed|failed).* in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed[;,]?$/) p += $i; if ($(i+1) ~ /^failed[;,]?$/) f += $i } }
     END { printf "checks: %d passed, %d failed\n", p, f }' "$log"
