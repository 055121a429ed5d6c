#!/usr/bin/env bash
# Sets up the TRL peer for benches/compare_train.sh: a venv (default benches/peers/.venv-trl,
# or $VERDICT_TRL_VENV) with PyTorch, transformers, TRL, PEFT, accelerate, datasets and gguf
# from PyPI. The versions are pinned so the comparison is repeatable; override one with e.g.
# TRL_VERSION=1.15.0. Idempotent: does nothing when the venv already imports them all.
#
#   benches/peers/setup_trl.sh
#   VERDICT_TRL_VENV=/tmp/trl-venv benches/peers/setup_trl.sh
#
# PyPI's torch wheel for Linux x86_64 pulls the CUDA runtime wheels (~3 GB on disk); only the
# CPU is used. Where the PyTorch CPU index is reachable, TORCH_INDEX_URL=<that index> installs
# the CPU-only build instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VERDICT_TRL_VENV:-$ROOT/benches/peers/.venv-trl}"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.15.0}"
TRL_VERSION="${TRL_VERSION:-1.16.0}"
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.24.0}"
PEFT_VERSION="${PEFT_VERSION:-0.21.2}"
PROBE='import torch, transformers, trl, peft, accelerate, datasets, gguf'

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$PROBE" 2>/dev/null; then
    echo "TRL peer already in $VENV: $("$VENV/bin/python" -c 'import torch, transformers, trl, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}")')"
    exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
echo "installing torch $TORCH_VERSION into $VENV (large download)"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$VENV/bin/python" -m pip install --quiet --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
else
    "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
fi
echo "installing trl $TRL_VERSION, transformers $TRANSFORMERS_VERSION, peft $PEFT_VERSION"
"$VENV/bin/python" -m pip install --quiet "trl==$TRL_VERSION" "transformers==$TRANSFORMERS_VERSION" \
    "peft==$PEFT_VERSION" accelerate datasets "gguf>=0.10" "numpy" "sentencepiece" "protobuf"
"$VENV/bin/python" -c "$PROBE"
end=$(date +%s)
echo "installed into $VENV in $((end - start)) s:"
"$VENV/bin/python" -m pip freeze | grep -i -E '^(torch|transformers|trl|peft|accelerate|datasets|gguf|tokenizers)=' | sed 's/^/  /'
