#!/usr/bin/env bash
# Sets up the llama.cpp peer for benches/compare_generate.sh: a venv at <repo>/.venv-bench with
# llama-cpp-python from PyPI, which compiles llama.cpp from source with cmake (several minutes on
# 2 cores). Idempotent: does nothing when the venv already imports llama_cpp.
#
#   benches/peers/setup_llamacpp.sh            # default build (GGML_NATIVE=ON: -march=native;
#                                              # without AMX on a CPU that has it, see below)
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
# On a CPU with AMX (Intel Sapphire Rapids and later) -march=native compiles ggml's AMX kernels,
# and llama-cpp-python 0.3.36 built that way dies with a segmentation fault in its first decode
# (2026-12-06, Xeon family 6 model 167 under a hypervisor). There the default is every vector
# extension the CPU has except AMX, named one by one (GGML_NATIVE=OFF); CMAKE_ARGS overrides.
default_cmake_args() {
    local flags
    flags="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
    if ! grep -qw amx_int8 <<<"$flags"; then
        echo "-DGGML_NATIVE=ON"
        return
    fi
    local args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    local f opt
    for f in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
        avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
        opt="${f#*:}"
        if grep -qw "${f%%:*}" <<<"$flags"; then args="$args -DGGML_$opt=ON"; else args="$args -DGGML_$opt=OFF"; fi
    done
    echo "$args"
}
export CMAKE_ARGS="${CMAKE_ARGS:-$(default_cmake_args)}"
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
