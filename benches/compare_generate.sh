#!/usr/bin/env bash
# verdict vs llama.cpp on the same GGUF, prompts, sampling settings and thread count, one after
# the other on this machine. Usage: benches/compare_generate.sh [THREADS=1]
# Environment: VERDICT_BENCH_RUNS (default 3), VERDICT_MODEL (another GGUF), VERDICT_BENCH_REQUANTIZE,
# VERDICT_BENCH_MAX_TOKENS (new tokens at most per answer for both engines, default 64; at 256
# most answers end on their own, at different lengths), BENCH_MANIFEST (a Cargo.toml that
# declares the `generate` bench; default this crate's),
# VENV (the llama.cpp venv; default .venv-bench), VERDICT_SIMD=avx2|baseline (caps verdict's own
# kernels). Sets up the llama.cpp venv first if it is missing (benches/peers/setup_llamacpp.sh,
# minutes). The header says what the numbers depend on: CPU model, vector extensions, thread
# count, and whether each engine flushes denormals.
set -euo pipefail
THREADS="${1:-1}"
export VERDICT_BENCH_RUNS="${VERDICT_BENCH_RUNS:-3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export VENV="${VENV:-$ROOT/.venv-bench}"
PY="$VENV/bin/python"
if ! [ -x "$PY" ] || ! "$PY" -c 'import llama_cpp' 2>/dev/null; then
    benches/peers/setup_llamacpp.sh
fi
MANIFEST="${BENCH_MANIFEST:-$ROOT/Cargo.toml}"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/verdict-compare.XXXXXX")"
echo "building the verdict bench..."
cargo bench --manifest-path "$MANIFEST" --bench generate --no-run --quiet 2>"$OUT/build.log" || { cat "$OUT/build.log" >&2; exit 1; }

echo "== before: $(uptime)"
echo "   busiest processes:"
ps -eo pid,pcpu,etime,comm --sort=-pcpu | sed -n '2,6p' | sed 's/^/     /'
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
CPU_MODEL="$( (grep -m1 'model name' /proc/cpuinfo 2>/dev/null || sysctl machdep.cpu.brand_string 2>/dev/null) | cut -d: -f2- | sed 's/^ *//')"
CPU_MODEL="$CPU_MODEL$(awk -F': ' '/^cpu family/ {f=$2} /^model\t/ {m=$2} END {if (f != "") printf " (family %s, model %s)", f, m}' /proc/cpuinfo 2>/dev/null)"
VECTOR_EXT="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' \
    | grep -E '^(avx|avx2|fma|f16c|avx512[a-z0-9_]*|amx[a-z0-9_]*|avx_vnni)$' | tr '\n' ' ')"
echo "   CPU: ${CPU_MODEL:-unknown}, $(nproc) cores visible, $THREADS thread(s) per engine"
echo "   vector extensions: ${VECTOR_EXT:-none listed}"
echo "   VERDICT_SIMD=${VERDICT_SIMD:-unset}"
echo "   new tokens at most per answer: ${VERDICT_BENCH_MAX_TOKENS:-64} (VERDICT_BENCH_MAX_TOKENS)"

echo "== verdict ($THREADS thread(s), $VERDICT_BENCH_RUNS runs)"
VERDICT_BENCH_THREADS="$THREADS" VERDICT_BENCH_EXPORT="$OUT/prompts.json" \
    cargo bench --manifest-path "$MANIFEST" --bench generate --quiet 2>"$OUT/verdict.err" | tee "$OUT/verdict.out"
MODEL="$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["model"])' "$OUT/verdict.out")"
LOAD_MID="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "== llama.cpp ($THREADS thread(s), $VERDICT_BENCH_RUNS runs)"
"$PY" benches/peers/llamacpp_generate.py --model "$MODEL" --threads "$THREADS" \
    --runs "$VERDICT_BENCH_RUNS" --check "$OUT/prompts.json" | tee "$OUT/llamacpp.out"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== after: $(uptime)"
echo "   busiest processes:"
ps -eo pid,pcpu,etime,comm --sort=-pcpu | sed -n '2,6p' | sed 's/^/     /'

"$PY" - "$OUT/verdict.out" "$OUT/llamacpp.out" "$THREADS" "$LOAD_BEFORE" "$LOAD_MID" "$LOAD_AFTER" "$(nproc)" <<'PYEOF'
import json, sys
v = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
l = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
threads, before, mid, after, cores = sys.argv[3:8]
rows = [
    ("prefill tok/s", v["prefill_tok_s"], l["prefill_tok_s"]),
    ("decode tok/s (1 stream)", v["decode_tok_s"], l["decode_tok_s"]),
    ("candidates/min (4/prompt, llama.cpp re-prefills)", v["cands_per_min"], l["cands_per_min"]),
    ("candidates/min (4/prompt, llama.cpp prefix cache)", v["cands_per_min"], l["cands_per_min_prefix_cache"]),
]
if "job_cands_per_min" in v:
    rows.append((f"candidates/min as a job ({v['batch_rows']} rows, vs prefix cache)", v["job_cands_per_min"], l["cands_per_min_prefix_cache"]))
print()
print(f"verdict ({v['run_as']}, stored {v['stored_as']}) vs llama.cpp {l['version']} ({l['model'].split('/')[-1]}), "
      f"{threads} thread(s) on {cores} cores, medians of {v['runs']} / {l['runs']} runs, {v['prompt_tokens']} prompt tokens over 8 prompts")
w = max(len(r[0]) for r in rows)
print(f"{'':{w}}  {'verdict':>9}  {'llama.cpp':>9}  {'ratio':>6}")
for name, a, b in rows:
    print(f"{name:{w}}  {a:9.1f}  {b:9.1f}  {a / b:6.2f}")
for name, a, b in [("generated tok/s, 4/prompt (re-prefill)", v["multi_tok_s"], l["multi_tok_s"]),
                   ("generated tok/s, 4/prompt (prefix cache)", v["multi_tok_s"], l["multi_tok_s_prefix_cache"])]:
    print(f"{name:{w}}  {a:9.1f}  {b:9.1f}  {a / b:6.2f}")
print(f"{'tokens/candidate (4/prompt)':{w}}  {v['tokens_per_candidate']:9.1f}  {l['tokens_per_candidate']:9.1f}")
print(f"{'tokens/answer (1 stream)':{w}}  {v['tokens_per_single']:9.1f}  {l['tokens_per_single']:9.1f}")
print(f"llama.cpp compute-only (perf counters): prefill {l['prefill_compute_tok_s']} tok/s, decode {l['decode_compute_tok_s']} tok/s; "
      f"verdict prefill forward only: {v['prefill_forward_tok_s']} tok/s")
if l.get("check"):
    c = l["check"]
    print(f"prompts: rendered text identical {c['rendered_identical']}/{c['of']}, token ids identical {c['ids_identical']}/{c['of']}")
print(f"denormals: verdict {'flushed (FTZ|DAZ, its default)' if v.get('flush_denormals') else 'kept (IEEE subnormals)'} "
      f"(MXCSR of the bench thread after loading); llama.cpp kept (ggml never writes MXCSR)")
if l.get("system_info"):
    print(f"llama.cpp system info: {l['system_info']}")
print(f"load average (1/5/15 min): before {before} | between {mid} | after {after}")
print(json.dumps({"threads": int(threads), "verdict": v, "llama.cpp": l,
                  "load_before": before, "load_between": mid, "load_after": after}, ensure_ascii=False))
PYEOF
echo "(outputs kept in $OUT)"
