#!/usr/bin/env bash
# Installs what the simulator's `mpi` feature and its tests need: OpenMPI (mpirun, libmpi) and
# libclang + pkg-config for mpi-sys's bindgen. Idempotent: skipped when everything is present.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
if ! have mpirun || ! have pkg-config || ! pkg-config --exists ompi 2>/dev/null \
    || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
        libopenmpi-dev openmpi-bin libclang-dev pkg-config
fi

mpirun --version | head -n 1
