#!/usr/bin/env bash
# Sets up the llama.cpp peer for benches/compare_generate.sh: a venv at <repo>/.venv-bench with
# llama-cpp-python from PyPI, which compiles llama.cpp from source with cmake (several minutes on
# 2 cores). Idempotent: does nothing when the venv already imports llama_cpp.
#
#   benches/peers/setup_llamacpp.sh            # default build (GGML_NATIVE=ON: -march=native)
#   LLAMA_CPP_VERSION=0.3.16 benches/peers/setup_llamacpp.sh
#   CMAKE_ARGS="-DGGML_NATIVE=OFF" benches/peers/setup_llamacpp.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv-bench}"
PY="${PYTHON:-python3}"
SPEC="llama-cpp-python${LLAMA_CPP_VERSION:+==$LLAMA_CPP_VERSION}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "llama-cpp-python $("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)') already in $VENV"
    exit 0
fi

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! command -v cmake >/dev/null 2>&1; then
    echo "cmake not found: installing it into the venv from PyPI"
    "$VENV/bin/python" -m pip install --quiet cmake
fi
export PATH="$VENV/bin:$PATH"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
echo "building $SPEC (CMAKE_ARGS=$CMAKE_ARGS, $CMAKE_BUILD_PARALLEL_LEVEL jobs); this compiles llama.cpp"
"$VENV/bin/python" -m pip install --no-cache-dir --verbose "$SPEC" >"$VENV/build.log" 2>&1 || {
    echo "build failed; last lines of $VENV/build.log:" >&2
    tail -n 40 "$VENV/build.log" >&2
    exit 1
}
end=$(date +%s)
ver=$("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')
echo "installed llama-cpp-python $ver into $VENV in $((end - start)) s (log: $VENV/build.log)"
