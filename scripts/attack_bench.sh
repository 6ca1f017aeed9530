#!/usr/bin/env bash
# Issue 19 figures: attack × malicious fraction × defense on ML-1M (paper preset, every test
# user at the end), the clean run of each defense beside it.
# Usage: scripts/attack_bench.sh DATA_DIR OUT_DIR [extra flags]
# e.g. scripts/attack_bench.sh ../shared/data/ml-1m out/issue19 --rounds 200
# Environment: TARGET (dense item id, default 1289: ML-1M movie 125, the 1001st most rated),
# DEFENSES, ATTACKS, FRACTIONS (space-separated) to run a subset; BIN to use a built binary.
set -euo pipefail
data=${1:?data dir}; out=${2:?out dir}; shift 2
bin=${BIN:-target/release/fedrecon}
[ -n "${BIN:-}" ] || cargo build --release -p fedrecon-host-sim
target=${TARGET:-1289}
common=(--preset paper --data "$data" --eval-clients none --eval-every 0 --no-progress
        --no-plots --force --attack-target "$target" "$@")
defenses=${DEFENSES:-"mean norm_bound median trimmed_mean krum untrusted"}
attacks=${ATTACKS:-"promote promote_aligned sign_flip"}
fractions=${FRACTIONS:-"0.01 0.05 0.10"}

attack_flags() { # promotions as strong as an honest update, sign flips boosted 4x
  case $1 in
    sign_flip|boost) echo "--attack $1 --attack-scale ${FLIP_SCALE:-4}" ;;
    *) echo "--attack $1 --attack-scale 1" ;;
  esac
}
defense_flags() {
  case $1 in
    mean) echo "--aggregator mean" ;;
    norm_bound) echo "--aggregator mean --norm-bound ${NORM:-10}" ;;
    median) echo "--aggregator median" ;;
    trimmed_mean) echo "--aggregator trimmed_mean --trim 0.2" ;;
    krum) echo "--aggregator krum --krum-byzantine 10 --krum-select 80" ;;
    untrusted) echo "--untrusted --row-alignment 0.99999 --norm-bound 10" ;;
    *) echo "unknown defense $1" >&2; exit 2 ;;
  esac
}
run() { # name, flags...
  local name=$1; shift
  [ -s "$out/$name/metrics.jsonl" ] && return 0
  "$bin" train "${common[@]}" --out "$out/$name" "$@" > "$out/$name.log" 2>&1
}
mkdir -p "$out"
for d in $defenses; do
  # shellcheck disable=SC2046
  run "$d-clean" $(defense_flags "$d")
  for a in $attacks; do
    for f in $fractions; do
      # shellcheck disable=SC2046
      run "$d-$a-$f" $(defense_flags "$d") $(attack_flags "$a") --attack-fraction "$f"
    done
  done
done

python3 - "$out" "$defenses" "$attacks" "$fractions" <<'PY'
import json, os, sys
out, defenses, attacks, fractions = sys.argv[1], *[a.split() for a in sys.argv[2:]]
def test(name):
    rows = [json.loads(l) for l in open(os.path.join(out, name, "metrics.jsonl"))]
    return [r for r in rows if r.get("split") == "test"][-1]
print("| defense | attack | malicious | target HR@10 | test RMSE | test accuracy |")
print("|---|---|---:|---:|---:|---:|")
for d in defenses:
    c = test(f"{d}-clean")
    print(f"| {d} | clean | 0 % | {c['target_hit_ratio']:.4f} | {c['rmse']:.4f} | {c['rating_accuracy']:.4f} |")
    for a in attacks:
        for f in fractions:
            t = test(f"{d}-{a}-{f}")
            print(f"| {d} | {a} | {float(f)*100:g} % | {t['target_hit_ratio']:.4f} | {t['rmse']:.4f} | {t['rating_accuracy']:.4f} |")
PY
