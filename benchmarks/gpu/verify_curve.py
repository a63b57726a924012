#!/usr/bin/env python3
"""Verify-cost curve on the GPU: one target forward of k tokens, pyspec exact vs pyspec fast vs
llama-bench from the same pinned source, in one run (run_h200.sh step "curve").

    python benchmarks/gpu/verify_curve.py --out DIR [--llama-bench PATH] MODEL.gguf [MODEL.gguf ...]

Writes DIR/curve.json and DIR/curve.md (one table per model).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/

import pyspec  # noqa: E402  (models load before numpy: see BENCHMARKS.md, "GPU")

K = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 24, 32]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--llama-bench")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu", action="store_true", help="no GPU offload (to try the script on a CPU build)")
    args = ap.parse_args()
    from bench_gpu import llama_bench, verify_curve  # noqa: E402
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d"), "build": pyspec.build_info(), "models": {}}
    md = [f"Measured {res['date']} on one NVIDIA H200 (CUDA, sm_90a); ms per forward of k tokens at context "
          f"depth 512 (median of {args.reps}), each row's greedy pick taken on the device unless it says host "
          f"logits; llama-bench `-p k` / `-n` from an empty context (one logits row), same source. "
          f"Exact kernels: {res['build'].get('exact_cuda_kernels', 'chunked MMVQ (patch 0005)')}.", ""]
    # (label, kernels, argmax): the verify as the engine runs it takes each row's argmax on the device
    # and copies token ids back; "+ host logits" copies every logits row to the host as well (how
    # this curve was measured before 2026-12-04: 1 MiB per row on Gemma 3's vocabulary)
    modes = [("exact", "exact", True), ("exact + host logits", "exact", False), ("fast", "fast", True)]
    for m in args.models:
        row = {}
        for label, kernels, argmax in modes:
            llm = pyspec.LLM(m, n_ctx=4096, n_gpu_layers=0 if args.cpu else -1, flash_attn=True,
                             kernels=kernels)
            row[label] = verify_curve(llm, K, args.reps, argmax=argmax)
            print(Path(m).name, label, {k: round(v, 3) for k, v in row[label].items()}, flush=True)
            del llm
        if args.llama_bench:
            try:
                row["llama_bench"] = llama_bench(Path(args.llama_bench), Path(m), K, args.reps)
            except RuntimeError as e:
                print("llama-bench failed:", e, file=sys.stderr)
        res["models"][Path(m).name] = row
        (out / "curve.json").write_text(json.dumps(res, indent=1))
        e1, f1 = row["exact"][1], row["fast"][1]
        lb = row.get("llama_bench", {})
        md += [f"**{Path(m).name}**", "",
               "| k | exact ms | vs k=1 | exact + host logits ms | fast ms | vs k=1 | llama-bench ms | vs k=1 | exact / llama-bench |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for k in K:
            e, h, f, b = row["exact"][k], row["exact + host logits"][k], row["fast"][k], lb.get(k)
            md.append(f"| {k} | {e:.2f} | {e / e1:.2f} | {h:.2f} | {f:.2f} | {f / f1:.2f} | "
                      + (f"{b:.2f} | {b / lb[1]:.2f} | {e / b:.2f} |" if b and lb.get(1) else "– | – | – |"))
        md.append("")
    (out / "curve.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
