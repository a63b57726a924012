#!/usr/bin/env python3
"""CPU benchmark: plain vs n-gram vs draft-model speculation on the default
model (Gemma 3 270M Q4_K_M), beside llama.cpp's own tools built from the same
pinned source, plus the cost of exact (batch-invariant) kernels.

    python benchmarks/bench_cpu.py                    # writes benchmarks/out/cpu.json
    python benchmarks/bench_cpu.py --update-md BENCHMARKS.md

Every ratio is measured in one run, pyspec and llama.cpp interleaved.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pyspec
from pyspec import _core
from pyspec.prompts import DEMO_PROMPT, PROMPT_SETS
from pyspec.models import cache_dir

sys.path.insert(0, str(Path(__file__).parent))
import anchors  # noqa: E402


def _builtin(set_name: str, name: str) -> str:
    return next(p["prompt"] for p in PROMPT_SETS[set_name] if p["name"] == name)


# One prompt of each kind from `pyspec bench`'s built-in sets (the code rewrite
# is `pyspec demo`'s quicksort prompt).
PROMPTS = {
    "code_rewrite": DEMO_PROMPT,
    "summarisation": _builtin("summarise", "council-article"),
    "prose": _builtin("prose", "fairy-tale"),
}
DRAFT_TYPE = "q4_0"


def draft_model_path(target: Path) -> Path:
    """The default model requantized to a lower-bit type, as a same-vocabulary draft (cached)."""
    out = cache_dir() / "models" / f"{target.stem}-requant-{DRAFT_TYPE}.gguf"
    if not out.exists():
        tmp = out.with_suffix(".part")
        _core.quantize(str(target), str(tmp), DRAFT_TYPE)
        tmp.rename(out)
    return out


def run_pyspec(llm, prompt, spec_type, n, n_max):
    t0 = time.perf_counter()
    g = llm.generate(prompt, max_tokens=n, spec_type=spec_type, draft_n_max=n_max, ignore_eos=True)
    wall = time.perf_counter() - t0
    s = g.stats
    return {"tokens": g.tokens, "predicted_per_second": s.predicted_per_second,
            "api_per_second": (s.predicted_n - 1) / (wall - s.prompt_ms / 1e3),
            "prompt_per_second": s.prompt_per_second, "draft_n": s.draft_n,
            "draft_n_accepted": s.draft_n_accepted, "mean_acceptance_length": s.mean_acceptance_length,
            "acceptance_per_position": s.acceptance_per_position, "draft_ms": s.draft_ms, "verify_ms": s.verify_ms,
            "predicted_ms": s.predicted_ms}


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=128, help="tokens per generation")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-max", type=int, default=16, help="draft length for ngram")
    ap.add_argument("--draft-n-max", type=int, default=4, help="draft length for the draft model")
    ap.add_argument("--no-anchor", action="store_true", help="skip llama.cpp's tools")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "cpu.json"))
    ap.add_argument("--update-md", help="replace the CPU section of this markdown file")
    args = ap.parse_args()

    target = pyspec.default_model_path()
    draft = draft_model_path(target)
    print(f"target {target}\ndraft  {draft}", file=sys.stderr)
    tools = None if args.no_anchor else anchors.build()
    exact = pyspec.LLM(target, n_ctx=4096, n_threads=args.threads, draft_model=draft)
    fast = pyspec.LLM(target, n_ctx=4096, n_threads=args.threads, kernels="fast")

    results = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
               "threads": args.threads, "n": args.n, "reps": args.reps, "build": pyspec.build_info(),
               "target": target.name, "draft": draft.name, "prompts": {}}
    for name, prompt in PROMPTS.items():
        runs = {k: [] for k in ("none", "ngram", "draft", "fast_none", "fast_ngram", "llama_completion",
                                "llama_spec_ngram")}
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(prompt)
            prompt_file = Path(f.name)
        exact.generate(prompt, max_tokens=8)  # warm-up
        fast.generate(prompt, max_tokens=8)
        for rep in range(args.reps):
            print(f"[{name}] rep {rep + 1}/{args.reps}", file=sys.stderr)
            runs["none"].append(run_pyspec(exact, prompt, "none", args.n, args.n_max))
            runs["ngram"].append(run_pyspec(exact, prompt, "ngram", args.n, args.n_max))
            runs["draft"].append(run_pyspec(exact, prompt, "draft", args.n, args.draft_n_max))
            runs["fast_none"].append(run_pyspec(fast, prompt, "none", args.n, args.n_max))
            runs["fast_ngram"].append(run_pyspec(fast, prompt, "ngram", args.n, args.n_max))
            if tools:
                runs["llama_completion"].append(anchors.completion(tools, target, prompt_file, args.n, args.threads))
                runs["llama_spec_ngram"].append(anchors.speculative_ngram(tools, target, prompt_file, args.n,
                                                                          args.threads, n_max=args.n_max))
        prompt_file.unlink()
        base = runs["none"][0]["tokens"]
        row = {"exact_outputs_equal": all(r["tokens"] == base for k in ("none", "ngram", "draft") for r in runs[k])}
        for k, rs in runs.items():
            if not rs:
                continue
            row[k] = {"tok_s": median_of(rs, "predicted_per_second")}
            if "api_per_second" in rs[0]:
                row[k]["api_tok_s"] = median_of(rs, "api_per_second")
                row[k]["prompt_tok_s"] = median_of(rs, "prompt_per_second")
                row[k]["mean_acceptance_length"] = rs[0]["mean_acceptance_length"]
                row[k]["draft_share"] = median_of([{"x": r["draft_ms"] / r["predicted_ms"]} for r in rs], "x")
                row[k]["verify_share"] = median_of([{"x": r["verify_ms"] / r["predicted_ms"]} for r in rs], "x")
            if rs[0].get("draft_n"):
                row[k]["acceptance"] = rs[0]["draft_n_accepted"] / rs[0]["draft_n"]
        results["prompts"][name] = row
        print(json.dumps({name: {k: v for k, v in row.items()}}, indent=1), file=sys.stderr)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    md = to_markdown(results, args)
    print(md)
    if args.update_md:
        update_markdown(Path(args.update_md), md)
    return 0


def to_markdown(res: dict, args) -> str:
    L = []
    L.append(f"Measured {res['date']} on this development machine ({res['machine']}, {res['threads']} threads), "
             f"{res['n']} greedy tokens per run, median of {res['reps']} interleaved runs. "
             f"Command: `python benchmarks/bench_cpu.py --update-md BENCHMARKS.md`.")
    L.append(f"Target {res['target']}; draft model: the same model requantized to {DRAFT_TYPE} ({res['draft']}). "
             f"n-gram: n=3, draft length {args.n_max}; draft model: draft length {args.draft_n_max}.")
    L.append("")
    L.append("| prompt | method | tok/s | speedup | acceptance | mean acc. length | drafting / verifying share "
             "| output == plain |")
    L.append("|---|---|---:|---:|---:|---:|---:|---|")
    for name, row in res["prompts"].items():
        base = row["none"]["tok_s"]
        for k, label in (("none", "pyspec, no speculation"), ("ngram", "pyspec ngram"), ("draft", "pyspec draft model")):
            r = row[k]
            acc = f"{100 * r['acceptance']:.1f}%" if "acceptance" in r else "–"
            L.append(f"| {name} | {label} | {r['tok_s']:.1f} | {r['tok_s'] / base:.2f}× | {acc} | "
                     f"{r['mean_acceptance_length']:.2f} | {100 * r['draft_share']:.0f}% / {100 * r['verify_share']:.0f}% "
                     f"| {'yes' if row['exact_outputs_equal'] else 'NO'} |")
        if "llama_completion" in row:
            lb = row["llama_completion"]["tok_s"]
            L.append(f"| {name} | llama-completion | {lb:.1f} | – | – | – | – | – |")
            s = row["llama_spec_ngram"]
            L.append(f"| {name} | llama-speculative-simple ngram-simple | {s['tok_s']:.1f} | {s['tok_s'] / lb:.2f}× "
                     f"(vs llama-completion) | {100 * s.get('acceptance', 0):.1f}% | – | – | – |")
    L.append("")
    L.append("Speedup ratios, each against its own baseline in the same run:")
    L.append("")
    L.append("| prompt | pyspec ngram / pyspec plain | llama.cpp ngram / llama-completion | pyspec ngram / llama.cpp ngram "
             "| Python API tok/s / engine tok/s (plain, ngram) |")
    L.append("|---|---:|---:|---:|---:|")
    for name, row in res["prompts"].items():
        ours = row["ngram"]["tok_s"] / row["none"]["tok_s"]
        if "llama_completion" in row:
            theirs = row["llama_spec_ngram"]["tok_s"] / row["llama_completion"]["tok_s"]
            abs_ratio = row["ngram"]["tok_s"] / row["llama_spec_ngram"]["tok_s"]
            t, a = f"{theirs:.2f}×", f"{abs_ratio:.2f}×"
        else:
            t = a = "–"
        api = ", ".join(f"{row[k]['api_tok_s'] / row[k]['tok_s']:.3f}" for k in ("none", "ngram"))
        L.append(f"| {name} | {ours:.2f}× | {t} | {a} | {api} |")
    L.append("")
    L.append("Cost of exactness (the same engine, `kernels=\"exact\"` vs `kernels=\"fast\"`; fast is NOT exact):")
    L.append("")
    L.append("| prompt | prompt tok/s exact | prompt tok/s fast | decode tok/s exact | decode tok/s fast | exact/fast decode "
             "| ngram tok/s exact | ngram tok/s fast |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in res["prompts"].items():
        e, f = row["none"], row["fast_none"]
        L.append(f"| {name} | {e['prompt_tok_s']:.1f} | {f['prompt_tok_s']:.1f} | {e['tok_s']:.1f} | {f['tok_s']:.1f} "
                 f"| {e['tok_s'] / f['tok_s']:.2f} | {row['ngram']['tok_s']:.1f} | {row['fast_ngram']['tok_s']:.1f} |")
    return "\n".join(L)


def update_markdown(path: Path, section: str, name: str = "bench_cpu", heading: str = "") -> None:
    """Replaces the section between `<!-- {name}:begin -->` and `<!-- {name}:end -->`
    of `path`, appending it (under `heading`) when the markers are missing."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin not in text:
        text = text.rstrip("\n") + (f"\n\n{heading}\n" if heading else "\n") + f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{section}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
