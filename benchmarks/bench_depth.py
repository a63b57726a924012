"""Decode and n-gram speculation speed against context depth on the CPU (issue 13's depth
table): for each depth, a prompt of that many tokens (Python standard-library source), then 64
greedy tokens plain and 64 with n-gram speculation, exact kernels, the default model.

    python benchmarks/bench_depth.py --depths 1024,4096,8192,16384 --update-md BENCHMARKS.md

The n-gram run reuses the plain run's prefill (Engine.reuse_prefix), so each depth reads its
prompt once. Prefill tok/s is the plain run's; decode tok/s = generated tokens / generation time.
"""
from __future__ import annotations

import argparse
import platform
import sys
import sysconfig
from datetime import date
from pathlib import Path

import pyspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cpu  # noqa: E402  (update_markdown)

HEADING = "## CPU: decode and speculation against context depth, Gemma 3 270M"


def source_text(n_chars: int) -> str:
    """Standard-library source, files in name order, until n_chars."""
    out, n = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        t = f.read_text(errors="replace")
        out.append(t)
        n += len(t)
        if n >= n_chars:
            break
    return "".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF (default: the default model)")
    ap.add_argument("--depths", default="1024,4096,8192,16384")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--update-md", default=None)
    a = ap.parse_args(argv)
    depths = [int(x) for x in a.depths.split(",")]
    model = a.model or str(pyspec.models.default_model_path())
    text = source_text(6 * max(depths))
    rows = []
    for d in depths:
        llm = pyspec.LLM(model, n_ctx=d + a.max_tokens + 64, n_threads=a.threads)
        toks = llm.tokenize(text)
        if len(toks) < d:
            raise SystemExit(f"the source text gives {len(toks)} tokens, fewer than depth {d}")
        prompt = toks[:d]
        llm._engine.reuse_prefix = True
        plain = llm.generate(prompt, max_tokens=a.max_tokens, temperature=0, spec_type="none", ignore_eos=True)
        spec = llm.generate(prompt, max_tokens=a.max_tokens, temperature=0, spec_type="ngram", ignore_eos=True)
        mem = llm.memory()
        r = dict(depth=d, prefill_tps=plain.stats.prompt_n / max(plain.stats.prompt_ms, 1e-9) * 1e3,
                 plain_tps=plain.stats.predicted_n / max(plain.stats.predicted_ms, 1e-9) * 1e3,
                 spec_tps=spec.stats.predicted_n / max(spec.stats.predicted_ms, 1e-9) * 1e3,
                 tau=spec.stats.mean_acceptance_length, same=plain.tokens == spec.tokens,
                 kv_mib=mem["target_kv_bytes"] / 2**20)
        rows.append(r)
        print(f"depth {d:6d}: prefill {r['prefill_tps']:6.1f} tok/s, plain {r['plain_tps']:6.1f} tok/s, ngram "
              f"{r['spec_tps']:6.1f} tok/s ({r['spec_tps'] / r['plain_tps']:.2f}x, tau {r['tau']:.2f}), "
              f"same {r['same']}, KV {r['kv_mib']:.0f} MiB", flush=True)
        del llm
    base = rows[0]["plain_tps"]
    lines = [f"Measured {date.today().isoformat()} on {platform.machine()}, {a.threads} threads, "
             f"{Path(model).name}, exact kernels, f16 KV without swa_full, {a.max_tokens} greedy tokens after a prompt "
             f"of standard-library source. Command: `python benchmarks/bench_depth.py --depths {a.depths} "
             f"--update-md BENCHMARKS.md`.", "",
             "| depth (tokens) | prefill tok/s | plain tok/s | plain vs the shallowest | n-gram tok/s | n-gram speedup "
             "| mean acceptance length | output == plain | target KV MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['depth']} | {r['prefill_tps']:.1f} | {r['plain_tps']:.1f} | {r['plain_tps'] / base:.2f} "
                     f"| {r['spec_tps']:.1f} | {r['spec_tps'] / r['plain_tps']:.2f}x | {r['tau']:.2f} "
                     f"| {'yes' if r['same'] else 'NO'} | {r['kv_mib']:.0f} |")
    md = "\n".join(lines)
    print(md)
    if a.update_md:
        bench_cpu.update_markdown(Path(a.update_md), md, name="bench_depth", heading=HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
