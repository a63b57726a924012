#!/usr/bin/env python3
"""The GPU exactness matrix: every drafter x draft lengths {1, 3, 7, 8, 15} x 5 prompts x 256 greedy
tokens, speculative output against plain output (run_h200.sh step "matrix").

    python benchmarks/gpu/exact_matrix.py --models DIR [--tiny DIR] [--gemma GEMMA.gguf] --out DIR

DIR holds tests/gpu_models.py's models, --tiny benchmarks/gpu/smoke_heads.py's (EAGLE-3 and DFlash
heads of tiny targets); with --gemma the real default model runs with n-gram, itself as the draft
model, the DFlash drafter pyspec ships and a noisy oracle. Every model loads before numpy is imported
(the H200 host's crash, BENCHMARKS.md "GPU"); this script never imports it. Writes DIR/matrix.json
and DIR/matrix.md; exits 1 when any run differs from plain.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from gpu_models import PROMPTS, first_diff, noisy_oracle  # noqa: E402  (tests/gpu_models.py: no numpy there)

KS = (1, 3, 7, 8, 15)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--tiny", type=Path)
    ap.add_argument("--gemma", type=Path)
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    m, t = args.models, args.tiny

    ngl = -1 if pyspec.build_info()["gpu_offload"] else 0  # (a CPU build runs the same matrix on the CPU)

    refused = []

    def llm(path, **kw):
        try:
            return pyspec.LLM(str(path), n_gpu_layers=ngl, n_ctx=2048, **kw)
        except pyspec.UnsupportedError as e:  # e.g. float weights: exact CUDA kernels refuse them
            refused.append(f"{Path(path).name}: {str(e)[:200]}")
            print("refused:", refused[-1], flush=True)
            return None

    # (target label, drafter label, LLM, spec_type or "oracle"): every LLM built here, before numpy
    cases = []
    q4k = llm(m / "llama256-q4_k_m.gguf")
    cases += [("tiny llama Q4_K_M", "ngram", q4k, "ngram"), ("tiny llama Q4_K_M", "noisy oracle", q4k, "oracle"),
              ("tiny llama Q4_K_M", "draft (Q4_0 twin)", llm(m / "llama256-q4_k_m.gguf",
                                                             draft_model=str(m / "llama256-q4_0.gguf")), "draft"),
              ("tiny MTP Q8_0", "mtp", llm(m / "mtp256-q8_0.gguf"), "mtp")]
    if t:  # the Q8_0 copies smoke_heads.py writes (exact CUDA kernels refuse the float originals)
        q = "-q8_0" if (t / "bigram-q8_0.gguf").exists() else ""
        cases += [
                  (f"tiny bigram llama{q.upper().replace('-', ' ')}", "eagle3 (bigram head)",
                   llm(t / f"bigram{q}.gguf", draft_model=str(t / f"eb{q}.gguf")), "eagle3"),
                  (f"tiny llama{q.upper().replace('-', ' ')}", "dflash (random head)",
                   llm(t / f"t{q}.gguf", draft_model=str(t / f"df{q}.gguf")), "dflash")]
    if args.gemma:
        g = llm(args.gemma)
        cases += [("Gemma 3 270M Q4_K_M", "ngram", g, "ngram"), ("Gemma 3 270M Q4_K_M", "noisy oracle", g, "oracle"),
                  ("Gemma 3 270M Q4_K_M", "draft (itself)", llm(args.gemma, draft_model=str(args.gemma)), "draft"),
                  ("Gemma 3 270M Q4_K_M", "dflash (shipped, trained)",
                   llm(args.gemma, draft_model=str(pyspec.shipped_drafter(str(args.gemma)))), "dflash")]
    res = {"date": time.strftime("%Y-%m-%d"), "build": pyspec.build_info(), "n": args.n, "ks": KS, "rows": []}
    plain: dict = {}
    cases = [c for c in cases if c[2] is not None]
    for target, drafter, model, spec in cases:
        row = {"target": target, "drafter": drafter, "exact": model._engine.exact, "runs": 0, "equal": 0,
               "differ": [], "drafted": 0, "accepted": 0}
        t0 = time.perf_counter()
        for p in PROMPTS:
            key = (target, p)
            if key not in plain:
                plain[key] = model.generate(p, max_tokens=args.n, ignore_eos=True, spec_type="none").tokens
            base = plain[key]
            for k in KS:
                if spec == "oracle":
                    r = model._engine.generate(model.tokenize(p), n_predict=args.n, draft_n_max=k, ignore_eos=True,
                                               drafter=noisy_oracle(base, model.n_vocab))
                    got, st = list(r["tokens"]), r["stats"]
                    drafted, accepted = st["draft_n"], st["draft_n_accepted"]
                else:
                    g = model.generate(p, max_tokens=args.n, ignore_eos=True, spec_type=spec, draft_n_max=k)
                    got, drafted, accepted = g.tokens, g.stats.draft_n, g.stats.draft_n_accepted
                row["runs"] += 1
                row["drafted"] += drafted
                row["accepted"] += accepted
                if got == base:
                    row["equal"] += 1
                else:
                    row["differ"].append({"prompt": p[:24], "k": k, "first_diff": first_diff(got, base)})
        row["seconds"] = round(time.perf_counter() - t0, 1)
        res["rows"].append(row)
        print(f"{target} / {drafter}: {row['equal']}/{row['runs']} equal to plain, accepted "
              f"{row['accepted']}/{row['drafted']} drafts ({row['seconds']} s)", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "matrix.json").write_text(json.dumps(res, indent=1))
    where = "one NVIDIA H200" if ngl else "the CPU"
    md = [f"Measured {res['date']} on {where}, exact kernels (the default), {args.n} greedy tokens per run, "
          f"draft lengths {', '.join(map(str, KS))} x {len(PROMPTS)} prompts per row "
          "(`benchmarks/gpu/exact_matrix.py`).", "",
          "| target | drafter | speculative == plain | drafts accepted | first differences |", "|---|---|---:|---:|---|"]
    for r in res["rows"]:
        diffs = ", ".join(f"k={d['k']} {d['prompt']!r} @{d['first_diff']}" for d in r["differ"][:4]) or "–"
        acc = f"{100 * r['accepted'] / r['drafted']:.0f}% of {r['drafted']}" if r["drafted"] else "–"
        md.append(f"| {r['target']} | {r['drafter']} | {r['equal']} / {r['runs']} | {acc} | {diffs} |")
    md += [f"Refused in exact mode (UnsupportedError): {r}" for r in refused]
    (args.out / "matrix.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if all(r["equal"] == r["runs"] for r in res["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
