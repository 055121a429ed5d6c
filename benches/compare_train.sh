#!/usr/bin/env bash
# verdict train vs TRL's DPOTrainer (PyTorch, CPU) on the same model, pairs, batch size, max
# length, beta, learning rate and thread count, one run after the other on this machine, full
# fine-tune and LoRA (r 16 on q,k,v,o). Prints seconds per optimizer step and peak RSS for
# each, and the ratios verdict / TRL.
#
#   benches/compare_train.sh [STEPS=6] [BATCH=1] [MAX_LENGTH=256] [THREADS=2]
#
# Environment: VERDICT_BIN (default target/release/verdict, built when missing), VERDICT_BENCH_PAIRS
# (use only the first K train pairs of the sample data; default all 34), VERDICT_MODEL
# (another GGUF, or an HF model folder such as scripts/make_sized_models.py makes: both tools
# train it as stored there, TRL loading it in f32; default: the default model, fetched when
# missing), VERDICT_BENCH_MODES (default full,lora), VERDICT_BENCH_LORA_BASES (extra verdict
# LoRA rows with `--base-dtype` each of these, e.g. bf16 or bf16,quantized; TRL keeps its f32
# base), VERDICT_TRAIN_FLAGS (more `verdict train` flags for every verdict row), VERDICT_TRL_VENV (default
# benches/peers/.venv-trl, set up by benches/peers/setup_trl.sh when missing: a large download),
# VERDICT_BENCH_TRL_ALSO_NO_PRECOMPUTE=0 to skip the two TRL runs with its default per-step
# reference forward, VERDICT_BENCH_NO_FLUSH_DENORMALS=1 to run verdict with --no-flush-denormals
# (IEEE subnormals, as torch computes by default), VERDICT_BENCH_SKIP_TRL=1 to time verdict alone
# (another build against the same machine), VERDICT_SIMD=avx2|baseline to cap verdict's own
# kernels (not gemm's). The header says what the numbers depend on: CPU model, vector extensions,
# thread count, and whether each tool flushes denormals.
#
# What is timed: verdict's per-step time is num_tokens / tokens_per_second of each step in
# run_metrics, i.e. train::step::train_step: batch packing, forward, backward, clipping, AdamW.
# TRL's is on_step_begin -> on_step_end: forward, backward, clipping, AdamW (its collation runs
# before). The first step of each is a warm-up and left out; the median of the rest is shown.
# Peak RSS is the whole process (ru_maxrss from wait4): loading, reference pass, training,
# and for verdict writing the tuned model.
set -euo pipefail
STEPS="${1:-6}"
BATCH="${2:-1}"
MAX_LENGTH="${3:-256}"
THREADS="${4:-2}"
BETA=0.1
LR=5e-6
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERDICT="${VERDICT_BIN:-$ROOT/target/release/verdict}"
VENV="${VERDICT_TRL_VENV:-$ROOT/benches/peers/.venv-trl}"
PY="$VENV/bin/python"

if ! [ -x "$VERDICT" ]; then
    echo "building $VERDICT (cargo build --release, minutes)..."
    cargo build --release --quiet
fi
if ! [ -x "$PY" ] || ! "$PY" -c 'import trl, peft, gguf' 2>/dev/null; then
    VERDICT_TRL_VENV="$VENV" benches/peers/setup_trl.sh
fi
OUT="$(mktemp -d "${TMPDIR:-/tmp}/verdict-compare-train.XXXXXX")"
DB="$OUT/v.db"
MODEL="${VERDICT_MODEL:-$("$VERDICT" --db "$OUT/samples.db" model fetch)}"
# The sample data, exported as TRL conversational JSONL; with VERDICT_BENCH_PAIRS=K only the
# first K train pairs (both tools compute reference log-probs for every pair before step 1).
"$VERDICT" --db "$OUT/samples.db" init --samples >/dev/null
"$VERDICT" --db "$OUT/samples.db" export "$OUT/all-pairs.jsonl" --format conversational >/dev/null
python3 - "$OUT/all-pairs.jsonl" "$OUT/subset.jsonl" "${VERDICT_BENCH_PAIRS:-0}" <<'PYEOF'
import json, sys
rows = [l for l in open(sys.argv[1], encoding="utf-8") if json.loads(l)["split"] == "train"]
keep = int(sys.argv[3]) or len(rows)
open(sys.argv[2], "w", encoding="utf-8").writelines(rows[:keep])
PYEOF
"$VERDICT" --db "$DB" --no-samples import "$OUT/subset.jsonl" >/dev/null
"$VERDICT" --db "$DB" export "$OUT/pairs.jsonl" --format conversational >/dev/null
# transformers will not train a model loaded with gguf_file: convert the GGUF once to a float32
# folder (kept in the venv, not timed). An HF folder is read as it is by both tools.
if [ -d "$MODEL" ]; then
    HF_DIR="$MODEL"
else
    HF_DIR="${VERDICT_TRL_HF_DIR:-$VENV/models/$(basename "$MODEL" .gguf)-f32}"
    [ -f "$HF_DIR/config.json" ] || "$PY" benches/peers/trl_dpo.py --model "$MODEL" --hf-dir "$HF_DIR" --convert-only \
        2>"$OUT/convert.err"
fi
MODES="${VERDICT_BENCH_MODES:-full,lora}"
has_mode() { [[ ",$MODES," == *",$1,"* ]]; }

# Runs a command, keeps its output, appends {"label", "wall_seconds", "peak_rss_mb", "exit"} to
# $OUT/measure.jsonl. Peak RSS from wait4, the same way for both tools.
measure() {
    local label="$1"; shift
    python3 - "$label" "$OUT" "$@" <<'PYEOF'
import json, os, subprocess, sys, time
label, out, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
start = time.perf_counter()
with open(f"{out}/{label}.out", "wb") as o, open(f"{out}/{label}.err", "wb") as e:
    proc = subprocess.Popen(cmd, stdout=o, stderr=e)
    _, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
with open(f"{out}/measure.jsonl", "a") as f:
    f.write(json.dumps({"label": label, "wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
                        "exit": code, "load_after": open("/proc/loadavg").read().split()[:3]}) + "\n")
if code != 0:
    sys.stderr.write(open(f"{out}/{label}.err", errors="replace").read()[-3000:])
    sys.exit(f"{label} failed ({code}); output in {out}")
PYEOF
}

echo "== before: $(uptime)"
echo "   busiest processes:"
ps -eo pid,pcpu,etime,comm --sort=-pcpu | sed -n '2,6p' | sed 's/^/     /'
echo "   $("$VERDICT" --version 2>/dev/null || echo verdict) | $("$PY" -c 'import trl, transformers, torch; print(f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")')"
echo "   $STEPS steps, batch $BATCH pair(s), max length $MAX_LENGTH, $THREADS thread(s), model $MODEL"
echo "   $(grep -c . "$OUT/pairs.jsonl") train pairs; verdict binary $VERDICT"
CPU_MODEL="$( (grep -m1 'model name' /proc/cpuinfo 2>/dev/null || sysctl machdep.cpu.brand_string 2>/dev/null) | cut -d: -f2- | sed 's/^ *//')"
CPU_MODEL="$CPU_MODEL$(awk -F': ' '/^cpu family/ {f=$2} /^model\t/ {m=$2} END {if (f != "") printf " (family %s, model %s)", f, m}' /proc/cpuinfo 2>/dev/null)"
VECTOR_EXT="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' \
    | grep -E '^(avx|avx2|fma|f16c|avx512[a-z0-9_]*|amx[a-z0-9_]*|avx_vnni)$' | tr '\n' ' ')"
NO_FLUSH=()
if [ "${VERDICT_BENCH_NO_FLUSH_DENORMALS:-0}" != 0 ]; then NO_FLUSH=(--no-flush-denormals); fi
echo "   CPU: ${CPU_MODEL:-unknown}, $(nproc) cores visible, $THREADS thread(s) per tool"
echo "   vector extensions: ${VECTOR_EXT:-none listed}"
# torch keeps subnormals unless told otherwise (torch.set_flush_denormal; trl_dpo.py does not).
echo "   denormals: verdict $([ ${#NO_FLUSH[@]} -gt 0 ] && echo 'kept (--no-flush-denormals)' || echo 'flushed (FTZ|DAZ, its default)');" \
    "torch kept (its default); torch's CPU kernels: $("$PY" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')"
echo "   VERDICT_SIMD=${VERDICT_SIMD:-unset}; TRL: reference log-probs precomputed before step 1 (as verdict), f32 weights"
[ -d "$MODEL" ] && echo "   model config: $(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(", ".join(f"{k} {c[k]}" for k in ["model_type","hidden_size","intermediate_size","num_hidden_layers","num_attention_heads","num_key_value_heads","vocab_size"] if k in c))' "$MODEL/config.json")"

common=(--max-steps "$STEPS" --batch-size "$BATCH" --max-length "$MAX_LENGTH" --threads "$THREADS"
    --beta "$BETA" --learning-rate "$LR")
# shellcheck disable=SC2206
extra=(${VERDICT_TRAIN_FLAGS:-})
# The verdict rows in the order they run: their run ids in $DB are 1, 2, ...
VERDICT_ROWS=()
verdict_row() {
    local label="$1"; shift
    echo "== $label"
    measure "$label" "$VERDICT" ${NO_FLUSH[@]+"${NO_FLUSH[@]}"} --db "$DB" train --model "$MODEL" --out "$OUT/run-$label" \
        "${common[@]}" ${extra[@]+"${extra[@]}"} "$@"
    echo "   verdict says: $(grep -m1 '^device:' "$OUT/$label.err" || echo '(no device line)')"
    grep -E '^(memory:|  predicted peak)' "$OUT/$label.err" | sed 's/^ */   plan: /' || true
    VERDICT_ROWS+=("$label")
    rm -rf "$OUT/run-$label" # the tuned model (f32) is gigabytes at these sizes
}
has_mode full && verdict_row verdict-full
if has_mode lora; then
    verdict_row verdict-lora --lora-rank 16 --lora-targets q,k,v,o
    for base in ${VERDICT_BENCH_LORA_BASES:+${VERDICT_BENCH_LORA_BASES//,/ }}; do
        verdict_row "verdict-lora-$base" --lora-rank 16 --lora-targets q,k,v,o --base-dtype "$base"
    done
fi

trl_common=(benches/peers/trl_dpo.py --model "$MODEL" --hf-dir "$HF_DIR" --pairs "$OUT/pairs.jsonl" --steps "$STEPS"
    --batch-size "$BATCH" --max-length "$MAX_LENGTH" --threads "$THREADS" --beta "$BETA" --learning-rate "$LR")
if [ "${VERDICT_BENCH_SKIP_TRL:-0}" = 0 ]; then
    if has_mode full; then
        echo "== TRL full (precomputed reference)"
        measure trl-full "$PY" "${trl_common[@]}" --mode full
    fi
    if has_mode lora; then
        echo "== TRL lora (precomputed reference)"
        measure trl-lora "$PY" "${trl_common[@]}" --mode lora --lora-rank 16 --lora-alpha 16
    fi
fi
if [ "${VERDICT_BENCH_SKIP_TRL:-0}" = 0 ] && [ "${VERDICT_BENCH_TRL_ALSO_NO_PRECOMPUTE:-1}" != 0 ]; then
    if has_mode full; then
        echo "== TRL full (reference model, TRL's default)"
        measure trl-full-refmodel "$PY" "${trl_common[@]}" --mode full --no-precompute-ref
    fi
    if has_mode lora; then
        echo "== TRL lora (reference forward each step, TRL's default)"
        measure trl-lora-refmodel "$PY" "${trl_common[@]}" --mode lora --lora-rank 16 --lora-alpha 16 --no-precompute-ref
    fi
fi
echo "== after: $(uptime)"
echo "   busiest processes:"
ps -eo pid,pcpu,etime,comm --sort=-pcpu | sed -n '2,6p' | sed 's/^/     /'

python3 - "$OUT" "$DB" "$THREADS" "$(nproc)" "${VERDICT_ROWS[@]}" <<'PYEOF'
import json, sqlite3, statistics, sys
out, db, threads, cores = sys.argv[1:5]
verdict_rows = sys.argv[5:]
measured = {m["label"]: m for m in map(json.loads, open(f"{out}/measure.jsonl"))}
conn = sqlite3.connect(db)

def verdict_run(run_id):
    rows = conn.execute("SELECT step, name, value FROM run_metrics WHERE run_id = ? "
                        "AND name IN ('num_tokens', 'tokens_per_second') ORDER BY step", (run_id,)).fetchall()
    steps = {}
    for step, name, value in rows:
        steps.setdefault(step, {})[name] = value
    secs = [s["num_tokens"] / s["tokens_per_second"] for _, s in sorted(steps.items())]
    tokens = [s["num_tokens"] for _, s in sorted(steps.items())]
    return {"seconds_per_step": statistics.median(secs[1:] or secs), "seconds_per_step_all": [round(x, 3) for x in secs],
            "tokens_per_step": statistics.median(tokens[1:] or tokens), "tokens_per_step_all": tokens}

def per_1k_tokens(r):
    # The two tools draw the pairs in different orders, so their medians cover slightly
    # different steps: total seconds over total tokens of steps 2..N compares the same work.
    secs, tokens = r["seconds_per_step_all"], r["tokens_per_step_all"]
    secs, tokens = (secs[1:], tokens[1:]) if len(secs) > 1 else (secs, tokens)
    return 1000 * sum(secs) / sum(tokens)

def trl_run(label):
    lines = open(f"{out}/{label}.out").read().strip().splitlines()
    return json.loads(lines[-1])

results = {}
for run_id, label in enumerate(verdict_rows, start=1):
    v = verdict_run(run_id)
    v.update(measured[label])
    results[label] = v
for label in ["trl-full", "trl-lora", "trl-full-refmodel", "trl-lora-refmodel"]:
    if label in measured:
        t = trl_run(label)
        t.update(measured[label])
        results[label] = t

print()
print(f"verdict vs TRL DPOTrainer, {threads} thread(s) on {cores} cores; seconds per optimizer step = median of "
      f"steps 2..N (first step is warm-up); peak RSS = whole process")
print(f"{'':34} {'s/step':>8} {'tok/step':>8} {'s/1k tok':>8} {'peak RSS MB':>11} {'wall s':>7}")
for label, r in results.items():
    r["seconds_per_1k_tokens"] = per_1k_tokens(r)
    print(f"{label:34} {r['seconds_per_step']:8.2f} {r['tokens_per_step']:8.0f} {r['seconds_per_1k_tokens']:8.2f} "
          f"{r['peak_rss_mb']:11.0f} {r['wall_seconds']:7.1f}")
print()
print(f"{'ratio verdict / TRL':34} {'s/step':>8} {'s/1k tok':>8} {'peak RSS':>8}")
for label in verdict_rows:
    mode = label.split("-")[1]
    for suffix, what in [("", "TRL precomputed ref."), ("-refmodel", "TRL default ref.")]:
        t = results.get(f"trl-{mode}{suffix}")
        if t is None:
            continue
        v = results[label]
        name = label.removeprefix("verdict-") + " vs " + what
        print(f"{name:34} {v['seconds_per_step'] / t['seconds_per_step']:8.2f} "
              f"{v['seconds_per_1k_tokens'] / t['seconds_per_1k_tokens']:8.2f} {v['peak_rss_mb'] / t['peak_rss_mb']:8.2f}")
print(json.dumps(results))
PYEOF
echo "(outputs kept in $OUT)"
