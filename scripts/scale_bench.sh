#!/usr/bin/env bash
# Issue 14's scale figures, as a benchmark that prints them (never a timed test):
#   1. round time and peak RSS against clients per round (1k, 10k, 100k, 1M) on a synthetic
#      population of 1 M users: time should grow with rating-steps, memory stay flat;
#   2. a full-population round of the ML-25M shape (162,541 users, uncapped clients).
# Each `fedrecon bench` is its own process, so its peak RSS is that run's alone.
#
#   bash scripts/scale_bench.sh [--threads N] [--dir DIR] [--skip-25m]
#
# The generated data (about 0.7 GB each) stays in DIR (default target/scale) for reruns.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2
dir=target/scale
skip25=0
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --skip-25m) skip25=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cargo build --release --locked -p fedrecon-host-sim
bin=target/release/fedrecon

million="$dir/synth-1m-users"
if [ ! -f "$million/ratings.csv" ]; then
    "$bin" synth --out "$million" --shape ml-25m --users 1000000 --items 20000 \
        --ratings 25000000 --seed 1
fi

echo "== clients per round on 1 M users (paper preset, ratings capped at 2,400, $threads threads)"
printf '%-10s %s\n' clients "bench summary"
for n in 1000 10000 100000 1000000; do
    # One timed round after the warm-up past 100k clients (each takes seconds).
    rounds=5
    [ "$n" -ge 100000 ] && rounds=1
    out=$("$bin" bench --data "$million" --preset paper --clients-per-round "$n" \
        --eval-clients 100 --threads "$threads" --rounds "$rounds")
    printf '%-10s %s\n' "$n" "$(echo "$out" | grep -E '^round|peak RSS' | tr '\n' ' ')"
done

if [ "$skip25" -eq 0 ]; then
    ml25="$dir/synth-ml-25m"
    if [ ! -f "$ml25/ratings.csv" ]; then
        "$bin" synth --out "$ml25" --shape ml-25m --seed 1
    fi
    echo "== ML-25M shape, full population, uncapped ($threads threads)"
    "$bin" bench --data "$ml25" --clients-per-round all --max-ratings-per-user none \
        --eval-clients 100 --threads "$threads" --rounds 1
fi
