#!/usr/bin/env bash
# verdict's exports checked in the tools that read them: transformers (HF folder), PEFT (LoRA
# adapter), llama.cpp (both GGUFs), TRL (the exported JSONL) and the Ollama Modelfile's template.
# Outside CI: it needs two Python venvs and a few minutes on two cores. See check_exports.py for
# what each check compares.
#
#   benches/peers/check_exports.sh
#
# Environment: VERDICT_BIN (default target/release/verdict, else target/debug/verdict),
# VERDICT_TRL_VENV (torch, transformers 5, peft, trl, gguf; default benches/peers/.venv-trl, made
# by setup_trl.sh), VERDICT_LLAMACPP_VENV (llama-cpp-python; default .venv-bench, made by
# setup_llamacpp.sh), VERDICT_MODEL (the base GGUF; default: the default model), THREADS (2),
# KEEP=1 keeps the work folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VERDICT="${VERDICT_BIN:-}"
if [ -z "$VERDICT" ]; then
    if [ -x target/release/verdict ]; then VERDICT=target/release/verdict; else VERDICT=target/debug/verdict; fi
fi
[ -x "$VERDICT" ] || { echo "no verdict binary at $VERDICT: run cargo build (or set VERDICT_BIN)" >&2; exit 1; }
VERDICT="$(realpath "$VERDICT")"
TRL_VENV="${VERDICT_TRL_VENV:-$ROOT/benches/peers/.venv-trl}"
LLAMA_VENV="${VERDICT_LLAMACPP_VENV:-$ROOT/.venv-bench}"
"$TRL_VENV/bin/python" -c 'import trl, peft, gguf' 2>/dev/null || VERDICT_TRL_VENV="$TRL_VENV" benches/peers/setup_trl.sh
"$LLAMA_VENV/bin/python" -c 'import llama_cpp' 2>/dev/null || VENV="$LLAMA_VENV" benches/peers/setup_llamacpp.sh
export THREADS="${THREADS:-2}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/verdict-check-exports.XXXXXX")"
[ "${KEEP:-0}" = 1 ] && echo "work folder: $WORK" || trap 'rm -rf "$WORK"' EXIT
DB="$WORK/v.db"
BASE="${VERDICT_MODEL:-$("$VERDICT" --db "$WORK/fetch.db" model fetch)}"

# A tiny LoRA run on the sample pairs, with a learning rate high enough to move the logits.
"$VERDICT" --db "$DB" init --samples >/dev/null
"$VERDICT" --db "$DB" export "$WORK/pairs.jsonl" --format conversational 2>/dev/null
"$VERDICT" --db "$DB" train --model "$BASE" --lora-rank 8 --lora-targets q,k,v,o --learning-rate 1e-3 \
    --max-steps 3 --batch-size 2 --max-length 256 --eval-every 0 --sample-prompts 0 --threads "$THREADS" \
    --out "$WORK/run" >"$WORK/train.log" 2>&1 || { tail -20 "$WORK/train.log" >&2; exit 1; }
"$VERDICT" --db "$DB" export --ollama "$WORK/ollama" --quant q8_0
"$TRL_VENV/bin/python" benches/peers/check_exports.py --verdict "$VERDICT" --work "$WORK" --base "$BASE" \
    --llamacpp-python "$LLAMA_VENV/bin/python"
