#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every parser of untrusted input: runs each
# target in fuzz/ for a bounded time over its committed seeds (fuzz/seeds/<target>) and the
# corpus it grows (fuzz/corpus/<target>, not committed). Fails on the first crash, leak or
# timeout; libFuzzer leaves the input in fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz.sh                 # every target, 10 s each (CI)
#   bash scripts/fuzz.sh --seconds 600   # a long run
#   bash scripts/fuzz.sh wire_bytes      # one target
#
# Installs what it needs idempotently: a nightly toolchain (minimal profile; stable stays the
# default) and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

cd fuzz
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    printf '%-20s ' "$t"
    log=$(mktemp)
    if ! cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        echo "FAILED"
        tail -n 60 "$log"
        rm -f "$log"
        exit 1
    fi
    # The last status line: executions, edges covered (cov), features (ft), corpus size.
    { grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || echo 'ok'; } | tail -n 1 | sed 's/^#/runs /'
    rm -f "$log"
done
