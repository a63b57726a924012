#!/usr/bin/env bash
# Builds pyspec with CUDA on the H200 host and measures it (benchmarks/bench_gpu.py).
# The host reaches no registry: the pinned llama.cpp source travels packed
# (benchmarks/gpu/pack_source.py -> build/gpu/llama-src.tar.gz) with
# shared/tools/synth_gguf.py copied beside it; carry build/gpu.
#
#   bash benchmarks/gpu/run_h200.sh build models bench     (steps skip what is already there)
#   bash benchmarks/gpu/run_h200.sh build smoke            (after smoke_heads.py --write build/gpu/tiny here)
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=/tmp/pyspec-gpu/src
MODELS=/tmp/pyspec-gpu/models
OUT=${OUT:-/tmp/pyspec-gpu/out}
mkdir -p "$SRC" "$MODELS" "$OUT"
[ -d "$SRC/llama.cpp" ] || tar xzf build/gpu/llama-src.tar.gz -C "$SRC"
export LLAMA_CPP_SOURCE_DIR="$SRC/llama.cpp"
export PYTHONUNBUFFERED=1

build() {  # once: skipped when a CUDA build is installed
  (cd /tmp && python3 -c "import pyspec, sys; sys.exit(0 if pyspec.build_info()['cuda'] else 1)") 2>/dev/null && return 0
  rebuild
}

rebuild() {  # incremental in build/cuda
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) PYSPEC_CUDA=1 python3 -m pip install --no-build-isolation --no-deps . \
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90a -C cmake.define.PYSPEC_BUILD_ANCHORS=ON \
    -C build-dir=build/cuda > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
  (cd /tmp && python3 -c "import pyspec; print(pyspec.build_info())")
}

synth() {  # name dim layers ffn heads kv_heads
  [ -f "$MODELS/$1-q4_k_m.gguf" ] && return 0
  PYTHONPATH="$SRC/llama.cpp/gguf-py" python3 build/gpu/synth_gguf.py \
    "$SRC/llama.cpp/models/ggml-vocab-llama-bpe.gguf" "$MODELS/$1-f16.gguf" \
    --dim "$2" --layers "$3" --ffn "$4" --heads "$5" --kv-heads "$6"
  (cd /tmp && python3 -c "from pyspec import _core; _core.quantize('$MODELS/$1-f16.gguf', '$MODELS/$1-q4_k_m.gguf', 'q4_k_m', 0)")
  rm -f "$MODELS/$1-f16.gguf"
}

models() {
  synth synth-8b 4096 32 14336 32 8
  synth synth-small 1024 8 4096 16 4
  ls -la "$MODELS"
}

bench() {
  find build/cuda -name 'llama-bench' -type f
  python3 benchmarks/bench_gpu.py --model "$MODELS/synth-8b-q4_k_m.gguf" --small "$MODELS/synth-small-q4_k_m.gguf" \
    --llama-bench "$(find build/cuda -name llama-bench -type f -perm -u+x | head -1)" --out "$OUT"
}

smoke() {  # feature drafters + device argmax on tiny models written beforehand (benchmarks/gpu/smoke_heads.py)
  python3 benchmarks/gpu/smoke_heads.py --run "$PWD/build/gpu/tiny"
}

for step in "$@"; do
  echo "== $step ($(date +%T))"
  "$step"
done
