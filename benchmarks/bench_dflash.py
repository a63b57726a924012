"""A trained DFlash drafter against plain decoding on held-out prompts (the corpus of
pyspec.train.data, held-out side: files never seen in training): tokens/s, tau (mean
acceptance length), per-position acceptance, and whether the output equals plain output.

    python benchmarks/bench_dflash.py --target T.gguf --drafter D.gguf [-ngl -1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import pyspec
from pyspec.train import data as D


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--drafter", required=True)
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=0)
    ap.add_argument("--prompts", type=int, default=10, help="held-out prompts per kind (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--draft-n-max", default="15",
                    help="drafted tokens per step; a comma-separated list measures each (default: %(default)s)")
    ap.add_argument("--kernels", default="exact", choices=("exact", "fast"))
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    try:
        dnms = [int(x) for x in a.draft_n_max.split(",")]
    except ValueError:
        ap.error(f"--draft-n-max takes integers separated by commas, got {a.draft_n_max!r}")
    llm = pyspec.LLM(a.target, n_ctx=1024, n_gpu_layers=a.n_gpu_layers, draft_model=a.drafter, kernels=a.kernels)
    prompts = D.corpus("held_out", n=2 * a.prompts)
    rows = []
    llm.generate("warm up", max_tokens=8, temperature=0, spec_type="none")
    llm.generate("warm up", max_tokens=8, temperature=0, spec_type="dflash")
    for p in prompts:
        toks = D.prompt_tokens(llm, p, 256)
        # spec_type none: with a drafter loaded the default (auto) would draft with it
        plain = llm.generate(toks, max_tokens=a.max_tokens, temperature=0, spec_type="none")
        for dnm in dnms:
            spec = llm.generate(toks, max_tokens=a.max_tokens, temperature=0, spec_type="dflash", draft_n_max=dnm)
            rows.append(dict(kind=p.kind, source=p.source, draft_n_max=dnm, n=len(plain.tokens),
                             same=plain.tokens == spec.tokens,
                             plain_tps=plain.stats.predicted_per_second, spec_tps=spec.stats.predicted_per_second,
                             tau=spec.stats.mean_acceptance_length, accepted=spec.stats.draft_n_accepted,
                             drafted=spec.stats.draft_n, steps=spec.stats.n_steps,
                             plain_ms=plain.stats.predicted_ms, spec_ms=spec.stats.predicted_ms,
                             draft_ms=spec.stats.draft_ms, verify_ms=spec.stats.verify_ms,
                             forward_ms=spec.stats.forward_ms))
            r = rows[-1]
            print(f"{p.kind:5s} {p.source[:40]:40s} k={dnm:2d} n={r['n']:4d} same={r['same']} plain "
                  f"{r['plain_tps']:7.1f} tok/s dflash {r['spec_tps']:7.1f} tok/s tau {r['tau']:.2f}", flush=True)
    summary = {}
    for kind, dnm in sorted({(r["kind"], r["draft_n_max"]) for r in rows}):
        rs = [r for r in rows if r["kind"] == kind and r["draft_n_max"] == dnm]
        pm, sm = sum(r["plain_ms"] for r in rs), sum(r["spec_ms"] for r in rs)
        s = summary[f"{kind} k={dnm}"] = dict(
            kind=kind, draft_n_max=dnm, prompts=len(rs), all_same=all(r["same"] for r in rs),
            speedup=pm / sm if sm else 0.0,
            tau=sum(r["accepted"] + r["steps"] for r in rs) / max(1, sum(r["steps"] for r in rs)),
            acceptance=sum(r["accepted"] for r in rs) / max(1, sum(r["drafted"] for r in rs)),
            plain_ms_per_token=pm / max(1, sum(r["n"] for r in rs)),
            # where a speculative step's time goes: the drafter, the target's verify forward, the rest
            draft_ms_per_step=sum(r["draft_ms"] for r in rs) / max(1, sum(r["steps"] for r in rs)),
            forward_ms_per_step=sum(r["forward_ms"] for r in rs) / max(1, sum(r["steps"] for r in rs)),
            other_ms_per_step=(sm - sum(r["draft_ms"] + r["forward_ms"] for r in rs)) / max(1, sum(r["steps"] for r in rs)))
        print(f"{kind} k={dnm}: {s['prompts']} prompts, speedup {s['speedup']:.2f}x, tau {s['tau']:.2f}, "
              f"acceptance {s['acceptance']:.2f}, output == plain: {s['all_same']}; per step: draft "
              f"{s['draft_ms_per_step']:.2f} ms, target forward {s['forward_ms_per_step']:.2f} ms, rest "
              f"{s['other_ms_per_step']:.2f} ms (plain {s['plain_ms_per_token']:.2f} ms per token)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"target": a.target, "drafter": a.drafter, "n_gpu_layers": a.n_gpu_layers,
                       "kernels": a.kernels, "date": time.strftime("%Y-%m-%d"), "rows": rows, "summary": summary},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
