#!/usr/bin/env bash
# Peak RSS of `verdict train` on the sample data, per model size and mode (full / LoRA), beside
# the memory plan the run printed for its data before loading its weights (`train::memory_plan`).
#
#   benches/train_memory.sh [SIZES=135M,Qwen2.5-0.5B] [MODES=full,lora] [MAX_LENGTH=512] [STEPS=2] [BATCH=1]
#
# SIZES: `135M` is the default model (SmolLM2-135M-Instruct, Q4_1 GGUF); the others are
# random-weight HF folders of real configurations made by scripts/make_sized_models.py (needs
# the TRL venv's python: VERDICT_PY, default /work/venvs/trl/bin/python) into
# ~/.cache/verdict/sized-models. LoRA is r 16 on q,k,v,o. Environment: VERDICT_BIN (default
# target/debug/verdict), VERDICT_THREADS (default 2), extra `verdict train` flags in
# VERDICT_TRAIN_FLAGS (and VERDICT_LABEL, a suffix for the rows they make), VERDICT_BENCH_PAIRS (train pairs used, default 4),
# VERDICT_BENCH_PAIRS_FILE (a JSONL of pairs to import instead of the sample data's: long pairs
# fill --max-length 1024: benches/long_pairs.py writes some). Peak RSS is the whole process (ru_maxrss from wait4): loading,
# tokenization, reference pass, steps, export. Prints one line per run and a JSON line each to
# $OUT/measure.jsonl.
set -euo pipefail
SIZES="${1:-135M,Qwen2.5-0.5B}"
MODES="${2:-full,lora}"
MAX_LENGTH="${3:-512}"
STEPS="${4:-2}"
BATCH="${5:-1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERDICT="${VERDICT_BIN:-$ROOT/target/debug/verdict}"
PY="${VERDICT_PY:-/work/venvs/trl/bin/python}"
THREADS="${VERDICT_THREADS:-2}"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/verdict-train-memory.XXXXXX")"
# The sample data's first PAIRS train pairs (VERDICT_BENCH_PAIRS, default 4: every pair gets a
# reference pass, which at 0.5B takes a while on 2 cores).
"$VERDICT" --db "$OUT/samples.db" init --samples >/dev/null
"$VERDICT" --db "$OUT/samples.db" export "$OUT/all-pairs.jsonl" --format conversational >/dev/null 2>&1
python3 - "$OUT/all-pairs.jsonl" "$OUT/subset.jsonl" "${VERDICT_BENCH_PAIRS:-4}" <<'PYEOF'
import json, sys
rows = [l for l in open(sys.argv[1], encoding="utf-8") if json.loads(l)["split"] == "train"]
open(sys.argv[2], "w", encoding="utf-8").writelines(rows[:int(sys.argv[3])])
PYEOF
"$VERDICT" --db "$OUT/v.db" --no-samples import "${VERDICT_BENCH_PAIRS_FILE:-$OUT/subset.jsonl}" >/dev/null

model_for() {
    case "$1" in
        135M) "$VERDICT" --db "$OUT/v.db" model fetch ;;
        *) "$PY" scripts/make_sized_models.py "$1" ;;
    esac
}

echo "== $(date -u +%FT%TZ) $(uptime | sed 's/.*load/load/'); max length $MAX_LENGTH, $STEPS steps, batch $BATCH, $THREADS threads"
for size in ${SIZES//,/ }; do
    model="$(model_for "$size")"
    for mode in ${MODES//,/ }; do
        flags=(--model "$model" --max-steps "$STEPS" --batch-size "$BATCH" --max-length "$MAX_LENGTH"
            --threads "$THREADS" --eval-every 0)
        [ "$mode" = lora ] && flags+=(--lora-rank 16 --lora-targets q,k,v,o)
        # shellcheck disable=SC2206
        extra=(${VERDICT_TRAIN_FLAGS:-})
        label="$size-$mode${VERDICT_LABEL:+-$VERDICT_LABEL}"
        python3 - "$label" "$OUT" "$VERDICT" --db "$OUT/v.db" train "${flags[@]}" \
            ${extra[@]+"${extra[@]}"} --out "$OUT/run-$label" <<'PYEOF'
import json, os, subprocess, sys, threading, time
label, out, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
start = time.perf_counter()
# The resident size over time (every 0.2 s) beside the run's own lines, both stamped with the
# seconds since the start: $OUT/<label>.timeline says which phase reached the peak.
timeline = open(f"{out}/{label}.timeline", "w")
with open(f"{out}/{label}.out", "wb") as o:
    proc = subprocess.Popen(cmd, stdout=o, stderr=subprocess.PIPE)
    def sample():
        last = -1
        while proc.poll() is None:
            try:
                rss = next(int(l.split()[1]) for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmRSS"))
            except (OSError, StopIteration):
                break
            if abs(rss - last) > 20 * 1024:
                timeline.write(f"{time.perf_counter() - start:8.1f} rss {rss / 1024:8.0f} MB\n")
                last = rss
            time.sleep(0.2)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with open(f"{out}/{label}.err", "wb") as e:
        for line in proc.stderr:
            e.write(line)
            timeline.write(f"{time.perf_counter() - start:8.1f} | {line.decode(errors='replace').rstrip()[:160]}\n")
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.join()
timeline.close()
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
peak = usage.ru_maxrss / 1024
# The run's own plan, printed before its weights load: "  predicted peak   1,234 MiB".
plan = next((l.split("predicted peak")[1].strip() for l in open(f"{out}/{label}.err", errors="replace")
             if "predicted peak" in l), "")
row = {"label": label, "peak_rss_mb": round(peak), "plan": plan, "wall_seconds": round(wall, 1), "exit": code}
with open(f"{out}/measure.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
mib = float(plan.replace(",", "").split()[0]) if plan else 0
ratio = f"{mib / peak:5.2f}" if mib else "   -"
print(f"   {label:24} peak RSS {peak:8.0f} MiB   plan {plan or '-':>12}   plan/peak {ratio}   {wall:6.1f} s   exit {code}")
if code != 0:
    sys.stderr.write(open(f"{out}/{label}.err", errors="replace").read()[-2000:])
PYEOF
        rm -rf "$OUT/run-$label" # the tuned model (f32) is gigabytes
    done
done
echo "   (logs and timelines in $OUT)"
