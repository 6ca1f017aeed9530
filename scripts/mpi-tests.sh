#!/usr/bin/env bash
# The simulator across MPI ranks (issue 15), end to end with `mpirun`: a run on 2 and on 3
# ranks writes the same model (items.npy, byte for byte) and the same metrics (timings aside)
# as one process, on a synthetic population and on the tutorial preset with MovieLens 1M
# (skipped with a reason when ../shared/data/ml-1m is absent); a rank killed mid-run or failing
# with an error ends the job on every rank naming it, without a hang; the killed run's
# checkpoint resumes on another number of ranks to the same model as the one-process run.
# Installs OpenMPI when missing (scripts/install-mpi.sh). Builds only the `fedrecon` binary.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-mpi.sh
cargo build --locked -p fedrecon-host-sim --features mpi --bin fedrecon
bin="$PWD/target/debug/fedrecon"
# CI runs as root; 3 ranks on 2 cores need --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export RUST_LOG=warn
mpirun_n() { local n=$1; shift; mpirun --oversubscribe -np "$n" "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Same model bits and same metrics, timings aside.
same_run() {
    cmp "$1/items.npy" "$2/items.npy"
    # The bundle holds what items.npy does not: biases and implicit rows.
    cmp "$1/model.npz" "$2/model.npz"
    python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
def rows(p):
    out = []
    for line in open(p):
        r = json.loads(line)
        for k in [k for k in r if "seconds" in k]:
            del r[k]
        out.append(r)
    return out
a, b = rows(sys.argv[1]), rows(sys.argv[2])
assert a and a == b, f"metrics differ: {sys.argv[1]} vs {sys.argv[2]}"
PY
}

# Runs `train` on 1, 2 and 3 ranks into $work/$1-N and checks 2 and 3 against 1.
compare_ranks() {
    local name=$1; shift
    local t0=$SECONDS
    "$bin" train "$@" --no-progress --no-plots --out "$work/$name-1"
    for n in 2 3; do
        mpirun_n "$n" "$bin" train "$@" --no-progress --no-plots --out "$work/$name-$n"
        same_run "$work/$name-1" "$work/$name-$n"
    done
    echo "mpi: $name on 2 and 3 ranks is bit-identical to one process ($((SECONDS - t0)) s)"
}

"$bin" synth --out "$work/synth" --users 2000 --items 500 --seed 3 >/dev/null
compare_ranks synth --data "$work/synth" --preset tutorial --rounds 3 --clients-per-round 200 \
    --threads 1 --dropout 0.1 --over-select 0.2

# best: biases, the exact solve, implicit rows after the catalogue, both halves.
compare_ranks best --data "$work/synth" --preset best --k 8 --rounds 3 --clients-per-round 100 \
    --threads 1 --eval-every 0

ml1m=../shared/data/ml-1m
if [ -f "$ml1m/ratings.dat" ]; then
    compare_ranks tutorial --data "$ml1m" --preset tutorial --rounds 3 --threads 1
else
    echo "mpi: skipping the tutorial on MovieLens 1M: $ml1m/ratings.dat not found"
fi

# A rank that dies (SIGKILL) or fails: the job ends on every rank within the timeout, naming
# the rank. The killed run checkpointed every round; it resumes on 2 ranks to the model of
# an uninterrupted one-process run.
expect_failure() {
    local rank=$1 log=$2; shift 2
    local t0=$SECONDS status=0
    timeout 120 "$@" >"$log" 2>&1 || status=$?
    if [ "$status" -eq 0 ] || [ "$status" -eq 124 ]; then
        cat "$log"
        echo "mpi: expected the job to fail (status $status; 124 = hung until the timeout)"
        exit 1
    fi
    if ! grep -Eq "rank $rank\b" "$log"; then
        cat "$log"
        echo "mpi: the failure does not name rank $rank"
        exit 1
    fi
    echo "mpi: rank $rank's failure ended the job in $((SECONDS - t0)) s (status $status): \
$(grep -Em1 "rank $rank\b" "$log")"
}
args=(--data "$work/synth" --preset tutorial --rounds 4 --clients-per-round 200 --threads 1
    --checkpoint-every 1 --no-progress --no-plots)
"$bin" train "${args[@]}" --out "$work/whole"
FEDRECON_CLUSTER_FAULT=kill:1:3 expect_failure 1 "$work/killed.log" \
    mpirun --oversubscribe -np 3 "$bin" train "${args[@]}" --out "$work/killed"
FEDRECON_CLUSTER_FAULT=error:2:2 expect_failure 2 "$work/error.log" \
    mpirun --oversubscribe -np 3 "$bin" train "${args[@]}" --out "$work/failed"
mpirun_n 2 "$bin" train --resume "$work/killed" --no-progress --no-plots
cmp "$work/whole/items.npy" "$work/killed/items.npy"
echo "mpi: the killed 3-rank run resumed on 2 ranks to the one-process model"

# SIGTERM to every rank (what Slurm's scancel does): rank 0 ends its round, checkpoints and
# stops the others; each rank says so and exits 143; the run resumes on 2 ranks to the
# one-process model. SIGTERM to mpirun (or Ctrl-C): Open MPI kills the ranks within about a
# second; the job ends and its last checkpoint resumes the same way.
interrupt() {
    local name=$1 who=$2 t0=$SECONDS status=0
    mpirun --oversubscribe -np 3 "$bin" train "${args[@]}" --out "$work/$name" \
        >"$work/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        [ -f "$work/$name/checkpoint.bin" ] && break
        sleep 0.1
    done
    if [ "$who" = "every rank" ]; then
        # shellcheck disable=SC2046 # one PID per word
        kill -TERM $(pgrep -P "$pid")
    else
        kill -TERM "$pid"
    fi
    timeout 120 tail --pid="$pid" -f /dev/null || { echo "mpi: $name hung"; exit 1; }
    wait "$pid" || status=$?
    if [ "$status" -eq 0 ]; then
        cat "$work/$name.log"
        echo "mpi: $name: expected the run to be interrupted"
        exit 1
    fi
    if [ "$who" = "every rank" ]; then
        for r in 1 2; do
            grep -q "rank $r of 3: stopped when rank 0 did: interrupted by SIGTERM" \
                "$work/$name.log" || { cat "$work/$name.log"; exit 1; }
        done
        grep -q "checkpoint of round [0-9]* written" "$work/$name.log" ||
            { cat "$work/$name.log"; exit 1; }
    fi
    mpirun_n 2 "$bin" train --resume "$work/$name" --no-progress --no-plots >/dev/null
    cmp "$work/whole/items.npy" "$work/$name/items.npy"
    echo "mpi: SIGTERM to $who: the job ended (status $status), its checkpoint resumed on 2 \
ranks to the one-process model ($((SECONDS - t0)) s)"
}
interrupt sigterm-ranks "every rank"
interrupt sigterm-mpirun mpirun
