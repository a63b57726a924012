#!/usr/bin/env python3
"""GPU measurements of pyspec's engine beside llama.cpp's llama-bench, on a
synthetic model (random weights: right for the cost of a forward pass, wrong
for acceptance; every acceptance figure here is synthetic by construction).

Run on the GPU host by benchmarks/gpu/run_h200.sh, which builds pyspec with
CUDA and writes the models; it writes gpu.json and gpu.md to --out.

Measures:
  1. the cost of one target forward for k = 1..32 tokens (the verify-cost
     curve) and the decode rate, through pyspec and through llama-bench;
  2. speculative throughput with (a) the target as its own drafter and (b) an
     oracle drafter that replays the target's own greedy continuation, cut at
     a length drawn from a geometric distribution (means 3 and 6);
  3. a roofline column: weight bytes per forward / measured copy bandwidth;
  4. exactness: speculative == plain over 5 prompts x 256 greedy tokens;
  5. the engine's own overhead per verify step.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyspec
from pyspec import _core

K_CURVE = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 20, 24, 32]
PROMPTS = [
    "def quicksort(arr):",
    "The history of the Roman Empire",
    "import numpy as np\nimport torch\n",
    "Once upon a time, in a small village",
    "Q: What is the capital of France?\nA:",
]


BANDWIDTH_SCRIPT = """
import statistics, torch
n = 2 * 1024**3 // 4
a = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
torch.cuda.synchronize()
times = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); b.copy_(a); e.record(); torch.cuda.synchronize()
    times.append(s.elapsed_time(e) / 1e3)
print(2 * n * 4 / statistics.median(times) / 1e9)
"""


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), via torch in its own
    process (torch's CUDA libraries and pyspec's statically linked ggml-cuda do not share one)."""
    r = subprocess.run([sys.executable, "-c", BANDWIDTH_SCRIPT], capture_output=True, text=True, timeout=300)
    try:
        return float(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print("bandwidth measurement failed:", r.stderr[-500:], file=sys.stderr)
        return float("nan")


def llama_bench(tool: Path, model: Path, ks: list, reps: int) -> dict:
    """ms per forward for pp=k (k>1) and tg (k=1), from llama-bench's JSON."""
    out = subprocess.run([str(tool), "-m", str(model), "-ngl", "99", "-fa", "1", "-r", str(reps), "-o", "json",
                          "-p", ",".join(str(k) for k in ks if k > 1), "-n", "64"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    res = {}
    for row in json.loads(out.stdout):
        k = row["n_prompt"] if row["n_prompt"] > 0 else 1
        n_tok = row["n_prompt"] if row["n_prompt"] > 0 else row["n_gen"]
        res[k] = 1e3 * n_tok / row["avg_ts"] / (1 if k > 1 else n_tok)  # ms per forward
    return res


def verify_curve(llm, ks: list, reps: int, depth: int = 512, argmax: bool = False) -> dict:
    """ms per target forward of k tokens (logits for all k), at a context depth. argmax=True: each row's
    greedy pick leaves the forward instead of its logits row (what a greedy verify does; on the GPU the
    argmax runs on the device), argmax=False: every logits row is copied to the host."""
    eng = llm._engine
    rng = random.Random(0)
    prompt = [rng.randrange(min(1000, llm.n_vocab // 2), llm.n_vocab) for _ in range(depth)]
    eng.reset()
    eng.decode(prompt, 512, False)
    res = {}
    for k in ks:
        toks = [rng.randrange(min(1000, llm.n_vocab // 2), llm.n_vocab) for _ in range(k)]
        for _ in range(3):  # warm-up (graph allocation for this shape)
            eng.forward(toks, argmax)
            eng.rollback(depth)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            eng.forward(toks, argmax)
            times.append((time.perf_counter() - t0) * 1e3)
            eng.rollback(depth)
        res[k] = statistics.median(times)
    return res


class OracleDrafter(_core.Drafter):
    """Replays a known continuation; each draft is cut at a geometric length with the given mean (max 16)."""

    def __init__(self, reference: list, mean: float, seed: int = 0):
        super().__init__()
        self.reference, self.a, self.rng = reference, mean / (mean + 1.0), random.Random(seed)

    def begin(self, prompt):
        self.n = 0  # generated tokens committed so far

    def accept(self, n_accepted, emitted):
        self.n += len(emitted)

    def draft(self, n_max):
        length = 0
        while length < min(n_max, 16) and self.rng.random() < self.a:
            length += 1
        return self.reference[self.n:self.n + length]


def spec_run(llm, prompt, n, **kw) -> dict:
    g = llm.generate(prompt, max_tokens=n, ignore_eos=True, **kw)
    s = g.stats
    return {"tok_s": s.predicted_per_second, "mal": s.mean_acceptance_length, "tokens": g.tokens,
            "ms_per_step": s.predicted_ms / max(s.n_steps, 1), "overhead_ms_per_step": s.overhead_ms / max(s.n_steps, 1),
            "forward_ms_per_step": s.forward_ms / max(s.n_steps, 1), "draft_ms_per_step": s.draft_ms / max(s.n_steps, 1)}


def generate_with(llm, prompt, n, drafter, n_max):
    """LLM.generate with an arbitrary _core drafter (the oracle)."""
    toks = llm.tokenize(prompt)
    r = llm._engine.generate(toks, n_predict=n, draft_n_max=n_max, ignore_eos=True, drafter=drafter)
    st = pyspec.Stats(**r["stats"])
    return {"tok_s": st.predicted_per_second, "mal": st.mean_acceptance_length, "tokens": list(r["tokens"]),
            "ms_per_step": st.predicted_ms / max(st.n_steps, 1),
            "overhead_ms_per_step": st.overhead_ms / max(st.n_steps, 1),
            "forward_ms_per_step": st.forward_ms / max(st.n_steps, 1),
            "draft_ms_per_step": st.draft_ms / max(st.n_steps, 1)}


def exactness(llm, n: int) -> list:
    rows = []
    for p in PROMPTS:
        base = llm.generate(p, max_tokens=n, ignore_eos=True).tokens
        for name, kw in (("ngram", dict(spec_type="ngram", draft_n_max=8)),
                         ("self-draft", dict(spec_type="draft", draft_n_max=8))):
            t = llm.generate(p, max_tokens=n, ignore_eos=True, **kw).tokens
            first = next((i for i, (a, b) in enumerate(zip(base, t)) if a != b), None)
            rows.append({"prompt": p[:24].replace("\n", "\\n"), "drafter": name, "equal": t == base, "first_diff": first})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="8B-shape Q4_K_M GGUF")
    ap.add_argument("--small", help="a small model for the exactness check")
    ap.add_argument("--llama-bench", help="llama-bench built from the same source")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu", action="store_true", help="no GPU offload (to try the script on a CPU build)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d"), "build": pyspec.build_info(), "model": Path(args.model).name}

    def save():
        (out / "gpu.json").write_text(json.dumps(res, indent=1))

    bw = copy_bandwidth_gbs()
    weights = pyspec.model_info(args.model)["size_bytes"]
    res.update(copy_gbs=bw, weight_bytes=weights, roofline_ms=weights / (bw * 1e9) * 1e3)
    print(f"copy {bw:.0f} GB/s, weights {weights / 1e9:.2f} GB, roofline {res['roofline_ms']:.2f} ms", flush=True)

    ngl = 0 if args.cpu else -1
    llm = pyspec.LLM(args.model, n_ctx=4096, n_gpu_layers=ngl, flash_attn=True, draft_model=args.model)
    res["pyspec_curve"] = verify_curve(llm, K_CURVE, args.reps)
    print("pyspec curve", res["pyspec_curve"], flush=True)
    save()
    if args.llama_bench:
        res["llama_bench"] = llama_bench(Path(args.llama_bench), Path(args.model), K_CURVE, args.reps)
        print("llama-bench", res["llama_bench"], flush=True)
        save()

    # speculative throughput on the synthetic model
    prompt = PROMPTS[0]
    spec_run(llm, prompt, 32, spec_type="draft", draft_n_max=8)  # warm-up: graphs for every batch shape
    base = spec_run(llm, prompt, args.n, spec_type="none")
    res["spec"] = {"none": {k: v for k, v in base.items() if k != "tokens"}}
    for n_max in (4, 8):
        r = spec_run(llm, prompt, args.n, spec_type="draft", draft_n_max=n_max)
        res["spec"][f"self-draft n_max={n_max}"] = {k: v for k, v in r.items() if k != "tokens"}
    for mean in (3, 6):
        r = generate_with(llm, prompt, args.n, OracleDrafter(base["tokens"], mean), 16)
        r["equal"] = r.pop("tokens") == base["tokens"]
        res["spec"][f"oracle mean {mean}"] = r
    # the same runs with the argmax on the host (every logits row copied back)
    os.environ["PYSPEC_DEVICE_ARGMAX"] = "0"
    host = pyspec.LLM(args.model, n_ctx=4096, n_gpu_layers=ngl, flash_attn=True)
    os.environ.pop("PYSPEC_DEVICE_ARGMAX")
    spec_run(host, prompt, 32, spec_type="ngram", draft_n_max=8)  # warm-up
    r = spec_run(host, prompt, args.n, spec_type="none")
    res["host_argmax_equal"] = r.pop("tokens") == base["tokens"]
    res["spec"]["none, host argmax"] = r
    r = generate_with(host, prompt, args.n, OracleDrafter(base["tokens"], 3), 16)
    r.pop("tokens")
    res["spec"]["oracle mean 3, host argmax"] = r
    del host
    print(json.dumps(res["spec"], indent=1), flush=True)
    save()

    res["exactness_8b"] = exactness(llm, args.n)
    del llm
    if args.small:
        small = pyspec.LLM(args.small, n_ctx=4096, n_gpu_layers=ngl, flash_attn=True, draft_model=args.small)
        res["exactness_small"] = exactness(small, args.n)
    save()
    (out / "gpu.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


def to_markdown(res: dict) -> str:
    roof = res["roofline_ms"]
    L = [f"Measured {res['date']} on one NVIDIA H200 (CUDA build, sm_90a), synthetic Llama-3-8B-shape model "
         f"({res['model']}, random weights, {res['weight_bytes'] / 1e9:.2f} GB of weights), flash attention on, "
         f"all layers on the GPU. Device-to-device copy {res['copy_gbs']:.0f} GB/s; roofline = weight bytes / copy "
         f"bandwidth = {roof:.2f} ms per forward. Command: `benchmarks/gpu/run_h200.sh` through the device tool.", "",
         "Verify-cost curve (one forward of k tokens, logits for all k; pyspec at context depth 512, "
         "llama-bench `-p k` from an empty context):", "",
         "| k | pyspec ms | cost vs k=1 | llama-bench ms | pyspec / roofline |", "|---:|---:|---:|---:|---:|"]
    pc, lb = res["pyspec_curve"], res.get("llama_bench", {})
    k1 = pc[1] if 1 in pc else pc["1"]
    for k, ms in pc.items():
        lbm = lb.get(k, lb.get(str(k)))
        L.append(f"| {k} | {ms:.2f} | {ms / k1:.2f} | {lbm:.2f} | {ms / roof:.1f}× |" if lbm else
                 f"| {k} | {ms:.2f} | {ms / k1:.2f} | – | {ms / roof:.1f}× |")
    L += ["", "Speculative throughput (synthetic: random weights; the self-drafter is the target itself, the oracle "
          "replays the target's greedy continuation cut at geometric lengths):", "",
          "| run | tok/s | speedup | mean acc. length | ms per step | forward ms per step | engine overhead per step |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    base = res["spec"]["none"]["tok_s"]
    for name, r in res["spec"].items():
        L.append(f"| {name} | {r['tok_s']:.1f} | {r['tok_s'] / base:.2f}× | {r['mal']:.2f} | {r['ms_per_step']:.2f} | "
                 f"{r['forward_ms_per_step']:.2f} | {r['overhead_ms_per_step']:.3f} ms "
                 f"({100 * r['overhead_ms_per_step'] / r['ms_per_step']:.2f}%) |")
    if "host_argmax_equal" in res:
        L += ["", "Rows marked *host argmax* copy every logits row to the host and take the argmax there "
              "(`PYSPEC_DEVICE_ARGMAX=0`); the others take it on the GPU (pyspec's argmax-only backend sampler) and "
              f"copy back only token ids. Same tokens both ways: {'yes' if res['host_argmax_equal'] else 'NO'}."]
    for key, label in (("exactness_8b", "8B shape"), ("exactness_small", "small model")):
        if key not in res:
            continue
        L += ["", f"Exactness on the GPU, {label}: speculative vs plain greedy, 256 tokens:", "",
              "| prompt | drafter | equal | first differing position |", "|---|---|---|---:|"]
        for r in res[key]:
            L.append(f"| `{r['prompt']!s}` | {r['drafter']} | {'yes' if r['equal'] else 'NO'} | "
                     f"{'–' if r['first_diff'] is None else r['first_diff']} |")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
