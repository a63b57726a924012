"""Self-distillation speed: BatchLLM greedy generation rate on a target, by kernels and
parallelism, with the training prompts (long: up to 256 tokens) and with short prompts (decode
only), plus one sequence's prompt and decode speed, and where a step's time goes: for
--steps-for N sequences (default 1, 8, 32 and --parallel) decoding together, the wall time per
step against llama_decode's (the forward, synchronised) per step; what is left is host work of
the batch loop. One configuration per process (the CUDA kernels read
GGML_CUDA_BATCH_INVARIANT_MAX_COLS once):

    python benchmarks/gpu/batch_rate.py --target T.gguf -ngl -1 --kernels exact --parallel 32
"""
from __future__ import annotations

import argparse
import json
import time

import pyspec
from pyspec.train import data as D


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    ap.add_argument("--kernels", default="exact", choices=("exact", "fast"))
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--steps-for", default=None, help="comma-separated sequence counts for the step-time "
                    "breakdown (default: 1,8,32,PARALLEL)")
    ap.add_argument("--json", default=None, help="append one JSON line of results here")
    a = ap.parse_args(argv)
    llm = pyspec.LLM(a.target, n_ctx=1024, n_gpu_layers=a.n_gpu_layers, kernels=a.kernels)
    res = dict(kernels=a.kernels, parallel=a.parallel)
    long_p = D.corpus("train", n=a.prompts)
    toks = D.prompt_tokens(llm, long_p[0], 256)
    llm.generate(toks, max_tokens=8, temperature=0)
    g = llm.generate(toks, max_tokens=a.max_tokens, temperature=0, ignore_eos=True)
    res.update(solo_prompt_tps=g.stats.prompt_per_second, solo_decode_tps=g.stats.predicted_per_second,
               n_prompt=len(toks))
    short_p = [D.Prompt(f"Write a short story about the number {i}.", "short", "prose") for i in range(a.prompts)]
    for name, ps in (("long", long_p), ("short", short_p)):
        t0 = time.perf_counter()
        seqs = D.self_distill(llm, ps, max_tokens=a.max_tokens, n_parallel=a.parallel)
        dt = time.perf_counter() - t0
        n_gen = sum(len(s.tokens) - s.n_prompt for s in seqs)
        n_prompt = sum(s.n_prompt for s in seqs)
        res[f"{name}_gen_tps"] = n_gen / dt
        res[f"{name}_prompt_tokens"] = n_prompt
        res[f"{name}_seconds"] = dt
    counts = [int(x) for x in a.steps_for.split(",")] if a.steps_for else sorted({1, 8, 32, a.parallel})
    for n in counts:  # decode only: n equal short prompts, every sequence runs a.max_tokens steps
        with pyspec.BatchLLM(llm, n, n_ctx=n * (a.max_tokens + 64)) as b:
            t0 = time.perf_counter()
            reqs = [b.submit(f"Count to ten, {i}:", max_tokens=a.max_tokens, temperature=0, ignore_eos=True)
                    for i in range(n)]
            gens = [r.result() for r in reqs]
            dt = time.perf_counter() - t0
            steps = b.n_steps
        fwd = max(g.stats.forward_ms for g in gens)  # every sequence is in every step's forward
        res[f"steps{n}_ms_per_step"] = dt * 1e3 / max(steps, 1)
        res[f"steps{n}_forward_ms_per_step"] = fwd / max(steps, 1)
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
