#!/usr/bin/env python3
"""CPU benchmark of the feature drafters (MTP, EAGLE-3, DFlash): the cost of
one drafter step against one target step, and the block-verify cost.

    python benchmarks/bench_heads.py --threads 2 --reps 2 --update-md BENCHMARKS.md

(without --update-md it only prints the table and writes benchmarks/out/heads.json).

Targets are real or realistic, drafters are random heads of the right shape
(random weights time the work exactly; their drafts are almost never accepted):

- EAGLE-3 and DFlash draft for Gemma 3 270M Q4_K_M (`pyspec.default_model_path()`),
  with heads written by tests/tiny_draft_heads.py carrying the target's tokenizer
  (EAGLE-3: one decoder layer of the target's width over target layers 2, 9, 15,
  a 32768-token draft vocabulary with a d2t table; DFlash: 4 layers of the
  target's width over target layers 1, 6, 11, 16, block size 16, the target's
  embeddings and LM head), converted to bf16 (in f16, the fused Gemma layer inputs overflow: the drafts were NaN).
- No real model with MTP layers is at hand: MTP drafts for a synthetic hy_v3
  target (tests/tiny_mtp_models.write_mtp_dense, 12 layers of width 1024 plus one
  nextn block, a 32000-token vocabulary: the tiny vocabulary padded with filler
  tokens), quantized to Q4_K_M.

The generated models are cached under ~/.cache/pyspec/bench/. Per drafter and
draft length k, the engine's own stats give the drafter's time per step
(draft_ms / n_steps: its draft() plus what it does with the target's features
after each verify) and per drafted token; Engine.forward times one target
forward of 1 and of k + 1 tokens (the block verify) on an engine without a
drafter, and again on the drafter's engine, whose target also exports the
features the drafter reads.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from datetime import date
from pathlib import Path

import gguf

import pyspec
from pyspec import _core
from pyspec.prompts import DEMO_PROMPT
from pyspec.models import cache_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
import tiny_mtp_models  # noqa: E402
from bench_cpu import update_markdown  # noqa: E402
from tiny_draft_heads import write_dflash, write_eagle3  # noqa: E402

COMMAND = "python benchmarks/bench_heads.py --threads 2 --reps 2 --update-md BENCHMARKS.md"
HEADING = "## Feature drafters (MTP, EAGLE-3, DFlash): step costs on the CPU"
MD_NAME = "bench_heads"

# Gemma 3 270M: hidden size 640, 18 layers, 4 heads of 256 over 1 KV head, FFN 2048.
GEMMA = dict(n_embd=640, n_layer=18, n_ff=2048)
EAGLE3 = dict(target_layer_ids=[2, 9, 15], n_head=4, n_head_kv=1, n_ff=2048, draft_vocab=32768)
DFLASH = dict(target_layer_ids=[1, 6, 11, 16], block_size=16, n_layer=4, n_head=4, n_head_kv=1, head_dim=256,
              n_ff=2048)
GEMMA_MASK = "<mask>"  # DFlash's mask token, from the Gemma tokenizer
MTP = dict(n_layer=12, n_embd=1024, n_head=8, n_head_kv=2, n_ff=2816, n_nextn=1, n_vocab=32000)
MTP_QUANT = "q4_k_m"


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def log(msg: str) -> None:
    # the 1-minute load average: another busy process makes ggml's spinning threads far slower
    print(f"[{time.strftime('%H:%M:%S')} load {loadavg():.2f}] {msg}", file=sys.stderr, flush=True)


# ---- models ----

def bench_dir() -> Path:
    d = cache_dir() / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(out: Path, write_f32, quant: str) -> Path:
    """out, written once: write_f32(path) writes an f32 GGUF, then llama.cpp's quantizer converts it."""
    if out.exists():
        return out
    tmp = out.with_name(out.stem + ".f32.part")
    log(f"writing {out.name} ...")
    t0 = time.perf_counter()
    try:
        write_f32(tmp)
        part = out.with_name(out.name + ".part")
        _core.quantize(str(tmp), str(part), quant)
        part.rename(out)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    return out


def token_id(gguf_path: Path, text: str) -> int:
    tokens = gguf.GGUFReader(str(gguf_path)).fields["tokenizer.ggml.tokens"].contents()
    return tokens.index(text)


def eagle3_path(target: Path) -> Path:
    out = bench_dir() / f"{target.stem}-eagle3-random-l{'-'.join(map(str, EAGLE3['target_layer_ids']))}" \
                        f"-dv{EAGLE3['draft_vocab']}-bf16.gguf"
    return _cached(out, lambda p: write_eagle3(p, target_n_embd=GEMMA["n_embd"], target_n_layer=GEMMA["n_layer"],
                                               n_ctx=32768, tokenizer_from=target, **EAGLE3), "bf16")


def dflash_path(target: Path) -> Path:
    out = bench_dir() / f"{target.stem}-dflash-random-{DFLASH['n_layer']}x" \
                        f"-l{'-'.join(map(str, DFLASH['target_layer_ids']))}-b{DFLASH['block_size']}-bf16.gguf"
    return _cached(out, lambda p: write_dflash(p, target_n_embd=GEMMA["n_embd"], target_n_layer=GEMMA["n_layer"],
                                               target_arch="gemma3", n_ctx=32768, tokenizer_from=target,
                                               mask_token_id=token_id(target, GEMMA_MASK), **DFLASH), "bf16")


def mtp_target_path() -> Path:
    c = MTP
    out = bench_dir() / (f"hy_v3-mtp-random-{c['n_layer']}x{c['n_embd']}-ff{c['n_ff']}-v{c['n_vocab']}"
                         f"-nextn{c['n_nextn']}-{MTP_QUANT}.gguf")

    def write(p: Path) -> None:
        tiny_mtp_models.write_mtp_dense(p, n_nextn=c["n_nextn"], n_layer=c["n_layer"], n_embd=c["n_embd"],
                                        n_head=c["n_head"], n_head_kv=c["n_head_kv"], n_ff=c["n_ff"],
                                        n_ctx=4096, n_vocab=c["n_vocab"])

    return _cached(out, write, MTP_QUANT)


# ---- measurements ----

def time_forwards(engines: list, prompt: list[int], cont: list[int], widths: list[int],
                  reps: int) -> list[dict[int, float]]:
    """Median ms of one Engine.forward of w tokens per engine and width, at
    position len(prompt) + len(cont) // 2; engines and widths interleaved, so
    that the machine's drift (it is shared and noisy) hits them alike."""
    half = len(cont) // 2
    src = (cont[half:] * 64)[:max(widths)]
    bases = []
    for e in engines:
        e.reset()
        e.decode(prompt + cont[:half], 512, False)
        bases.append(e.n_past)
        for w in widths:  # warm-up
            e.forward(src[:w])
            e.rollback(bases[-1])
    samples = [{w: [] for w in widths} for _ in engines]
    for _ in range(reps):
        for w in widths:
            for e, base, smp in zip(engines, bases, samples):
                t0 = time.perf_counter()
                e.forward(src[:w])
                smp[w].append((time.perf_counter() - t0) * 1e3)
                e.rollback(base)
    return [{w: statistics.median(s) for w, s in smp.items()} for smp in samples]


def run_generate(e, prompt, n, k=0, drafter=None) -> dict:
    t0 = time.perf_counter()
    r = e.generate(prompt, n_predict=n, draft_n_max=k, ignore_eos=True, drafter=drafter)
    s = dict(r["stats"])
    s["wall_ms"] = (time.perf_counter() - t0) * 1e3
    s["tokens"] = list(r["tokens"])
    return s


def med(runs: list[dict], f) -> float:
    return statistics.median(f(r) for r in runs)


def bench_target(label: str, target: Path, load_mtp: bool, drafters: dict, args) -> dict:
    """Plain decoding, target forward costs and every drafter of `drafters` ({name: (factory, file)})."""
    log(f"== {label}: loading {target.name}")
    model = _core.Model(str(target), load_mtp=load_mtp)
    prompt = model.tokenize(DEMO_PROMPT)
    widths = sorted({1} | {k + 1 for k in args.ks})
    res = {"target": target.name, "arch": model.arch, "n_embd": model.n_embd, "n_layer": model.n_layer,
           "n_vocab": model.n_vocab, "target_mb": target.stat().st_size / 1e6, "n_prompt": len(prompt),
           "drafters": {}}

    e0 = _core.Engine(model, n_ctx=args.n_ctx, n_threads=args.threads, exact=True)
    run_generate(e0, prompt, 8)  # warm-up
    plain = []
    for rep in range(args.reps):
        plain.append(run_generate(e0, prompt, args.n))
        tok_s = plain[-1]["predicted_n"] / plain[-1]["predicted_ms"] * 1e3
        log(f"{label} plain rep {rep + 1}/{args.reps}: {tok_s:.1f} tok/s")
    greedy = plain[0]["tokens"]
    res["plain"] = {"ms_per_token": med(plain, lambda s: s["predicted_ms"] / s["n_steps"]),
                    "per_rep_ms_per_token": [s["predicted_ms"] / s["n_steps"] for s in plain],
                    "tok_s": med(plain, lambda s: s["predicted_n"] / s["predicted_ms"] * 1e3),
                    "deterministic": all(p["tokens"] == greedy for p in plain)}
    log(f"{label} target forwards, widths {widths}")
    res["forward_ms"] = time_forwards([e0], prompt, greedy, widths, args.fwd_reps)[0]
    log(f"{label} forward ms: " + ", ".join(f"{w}: {ms:.1f}" for w, ms in res["forward_ms"].items()))

    for name, (factory, file) in drafters.items():
        log(f"== {label}: drafter {name}" + (f" ({file.name})" if file else ""))
        row = res["drafters"][name] = {"file": file.name if file else None,
                                       "file_mb": file.stat().st_size / 1e6 if file else None, "runs": {}}
        try:
            e = _core.Engine(model, n_ctx=args.n_ctx, n_threads=args.threads, exact=True)
            d = factory(e)
            ks = [k for k in args.ks if k < getattr(d, "block_size", 1 << 30)]
            row["block_size"] = getattr(d, "block_size", None)
            row["memory_initial"] = dict(d.memory())
            run_generate(e, prompt, 8, max(ks), d)  # warm-up
            runs = {k: [] for k in ks}
            plain_adj = []  # plain decoding again, interleaved with this drafter's runs
            for rep in range(args.reps):
                plain_adj.append(run_generate(e0, prompt, args.n))
                for k in ks:
                    s = run_generate(e, prompt, args.n, k, d)
                    runs[k].append(s)
                    log(f"{label} {name} k={k} rep {rep + 1}/{args.reps}: "
                        f"{s['predicted_n'] / s['predicted_ms'] * 1e3:.1f} tok/s, "
                        f"draft {s['draft_ms'] / s['n_steps']:.1f} ms/step, verify {s['verify_ms'] / s['n_steps']:.1f} "
                        f"ms/step, accepted {s['draft_n_accepted']}/{s['draft_n']}, "
                        f"output == greedy: {s['tokens'] == greedy}")
            row["memory"] = dict(d.memory())
            row["plain_ms_per_token"] = med(plain_adj, lambda s: s["predicted_ms"] / s["n_steps"])
            row["plain_equal"] = all(s["tokens"] == greedy for s in plain_adj)
            log(f"{label} {name}: target forwards without / with feature export, interleaved")
            row["forward_ms"], row["forward_ms_with_features"] = time_forwards(
                [e0, e], prompt, greedy, sorted({1} | {k + 1 for k in ks}), args.fwd_reps)
            fw, fx = row["forward_ms"], row["forward_ms_with_features"]
            log(f"{label} {name} forward ms (without; with features): "
                + ", ".join(f"{w}: {fw[w]:.1f}; {fx[w]:.1f}" for w in fw))
            for k, rs in runs.items():
                row["runs"][k] = {
                    "draft_ms_per_step": med(rs, lambda s: s["draft_ms"] / s["n_steps"]),
                    "draft_ms_per_token": med(rs, lambda s: s["draft_ms"] / max(1, s["draft_n"])),
                    "verify_ms_per_step": med(rs, lambda s: s["verify_ms"] / s["n_steps"]),
                    "step_ms": med(rs, lambda s: s["predicted_ms"] / s["n_steps"]),
                    "tok_s": med(rs, lambda s: s["predicted_n"] / s["predicted_ms"] * 1e3),
                    "mean_draft_len": med(rs, lambda s: s["draft_n"] / s["n_steps"]),
                    "acceptance": sum(s["draft_n_accepted"] for s in rs) / max(1, sum(s["draft_n"] for s in rs)),
                    "n_steps": rs[0]["n_steps"],
                    "output_equal": all(s["tokens"] == greedy for s in rs),
                    "per_rep": [{key: s[key] for key in ("draft_ms", "verify_ms", "predicted_ms", "n_steps", "draft_n",
                                                         "draft_n_accepted")} for s in rs],
                }
            del d, e
        except Exception as ex:  # report it in the table; the engine is not worked around
            row["error"] = f"{type(ex).__name__}: {ex}"
            row["traceback"] = traceback.format_exc()
            log(f"{label} {name} FAILED:\n{row['traceback']}")
    del e0
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2, help="generations per drafter and draft length (median)")
    ap.add_argument("-n", type=int, default=64, help="tokens per generation")
    ap.add_argument("--ks", default="4,8,15", help="draft lengths (DFlash: at most block_size - 1)")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--fwd-reps", type=int, default=8, help="timed Engine.forward calls per width")
    ap.add_argument("--only", default="mtp,eagle3,dflash", help="drafters to run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "heads.json"))
    ap.add_argument("--update-md", help="replace (or append) the bench_heads section of this markdown file")
    args = ap.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    only = set(args.only.split(","))
    t_start = time.perf_counter()

    gemma = pyspec.default_model_path()
    groups = []
    if only & {"eagle3", "dflash"}:
        dr = {}
        if "eagle3" in only:
            p = eagle3_path(gemma)
            dr["eagle3"] = (lambda e, p=p: _core.Eagle3Drafter(e, _core.Model(str(p)))), p
        if "dflash" in only:
            p = dflash_path(gemma)
            dr["dflash"] = (lambda e, p=p: _core.DFlashDrafter(e, _core.Model(str(p)))), p
        groups.append(("gemma3", gemma, False, dr))
    if "mtp" in only:
        groups.append(("hy_v3", mtp_target_path(), True, {"mtp": (lambda e: _core.MtpDrafter(e), None)}))
    log(f"models ready ({time.perf_counter() - t_start:.0f} s)")

    t_bench = time.perf_counter()
    results = {"load_before": loadavg(), "date": date.today().isoformat(),
               "machine": f"{platform.machine()}, {_ncpu()} cores",
               "threads": args.threads, "n": args.n, "reps": args.reps, "ks": args.ks, "n_ctx": args.n_ctx,
               "fwd_reps": args.fwd_reps, "build": pyspec.build_info(), "targets": {}}
    for label, target, load_mtp, dr in groups:
        results["targets"][label] = bench_target(label, target, load_mtp, dr, args)
    results["bench_s"] = time.perf_counter() - t_bench
    results["load_after"] = loadavg()
    log(f"benchmark done in {results['bench_s']:.0f} s")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    md = to_markdown(results)
    print(md)
    if args.update_md:
        update_markdown(Path(args.update_md), md, MD_NAME, HEADING)
        log(f"updated {args.update_md}")
    return 0


def _ncpu() -> int:
    import os
    return os.cpu_count() or 0


def _mb(b: float) -> str:
    return f"{b / 2**20:.1f}"


def to_markdown(res: dict) -> str:
    L = []
    L.append(f"Measured {res['date']} on this development machine ({res['machine']}, {res['threads']} threads), "
             f"{res['n']} greedy tokens per generation after the quicksort code prompt, median of {res['reps']} "
             f"generations per drafter and draft length k, exact (batch-invariant) target kernels, n_ctx "
             f"{res['n_ctx']}. Command: `{COMMAND}`.")
    L.append("")
    L.append("The drafters are **random heads of the real shapes**: right for timing, but their drafts are "
             "(almost) never accepted, so every step drafts k tokens and emits one; the acceptance and "
             "break-even columns say what a trained head would have to reach. Models:")
    L.append("")
    t = res["targets"]
    if "gemma3" in t:
        g = t["gemma3"]
        L.append(f"- Target of EAGLE-3 and DFlash: {g['target']} (Gemma 3 270M, hidden size {g['n_embd']}, "
                 f"{g['n_layer']} layers, {g['n_vocab']}-token vocabulary, {g['target_mb']:.0f} MB); prompt "
                 f"{g['n_prompt']} tokens.")
        if "eagle3" in g["drafters"]:
            L.append(f"- EAGLE-3 head (bf16, {g['drafters']['eagle3']['file_mb']:.0f} MB): one decoder layer of width "
                     f"640 (4 heads, 1 KV head, FFN 2048) over the fused features of target layers "
                     f"{', '.join(map(str, EAGLE3['target_layer_ids']))}; its own LM head over a "
                     f"{EAGLE3['draft_vocab']}-token draft vocabulary (d2t), the target's token embeddings.")
        if "dflash" in g["drafters"]:
            L.append(f"- DFlash drafter (bf16, {g['drafters']['dflash']['file_mb']:.0f} MB): {DFLASH['n_layer']} "
                     f"gemma3-style layers of width 640 (4 heads of 256, 1 KV head, FFN 2048) over target layers "
                     f"{', '.join(map(str, DFLASH['target_layer_ids']))}, block size {DFLASH['block_size']} "
                     f"(drafts at most 15 tokens, one drafter forward per block), the target's embeddings and "
                     f"262k-token LM head.")
    if "hy_v3" in t:
        h = t["hy_v3"]
        L.append(f"- MTP: no real model with MTP layers is available; the target is a **synthetic random hy_v3 "
                 f"model** ({h['target']}, {MTP_QUANT.upper()}, {h['target_mb']:.0f} MB: {h['n_layer']} dense "
                 f"layers of width {h['n_embd']}, 8 heads / 2 KV heads, FFN {MTP['n_ff']}, plus "
                 f"{MTP['n_nextn']} nextn (MTP) block, a {h['n_vocab']}-token vocabulary: tests/tiny_mtp_models' "
                 f"tiny vocabulary padded with filler tokens) written with `write_mtp_dense`; the MTP head is "
                 f"one target-width layer plus the shared {h['n_vocab']}-token LM head; prompt {h['n_prompt']} "
                 f"tokens. Its costs are relative to this target, not to Gemma.")
    L.append("")
    L.append("Target forward cost (`Engine.forward` on an engine without a drafter, ms, median of "
             f"{res['fwd_reps']}, measured before the drafters ran; the (k+1)-token forward is the block verify "
             "of a k-token draft):")
    L.append("")
    widths = sorted({int(w) for g in t.values() for w in g["forward_ms"]})
    L.append("| target | plain decoding ms/token | " + " | ".join(f"{w} token{'s' if w > 1 else ''}" for w in widths)
             + " |")
    L.append("|---|---:|" + "---:|" * len(widths))
    for label, g in t.items():
        f1 = g["forward_ms"][1]
        cells = [f"{g['forward_ms'][w]:.1f}" + ("" if w == 1 else f" ({g['forward_ms'][w] / f1:.2f}×)")
                 for w in widths]
        L.append(f"| {g['target']} | {g['plain']['ms_per_token']:.1f} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Per drafter and draft length k. The target forwards of this table were measured again right "
             "after the drafter's runs, interleaved with the *with features* ones, and plain decoding (for "
             "break-even) was rerun between them: this machine drifts by 10-20% within minutes. "
             "*Drafter step*: the drafter's time per speculative step (`draft_ms / n_steps`: its `draft()` "
             "plus what it does with the target's features after each verify); MTP and EAGLE-3 run one head "
             "forward per drafted token, DFlash one forward per block. "
             "*With features*: the (k+1)-token target forward on the drafter's engine, whose target also "
             "exports the hidden states the drafter reads. *Break-even*: tokens a step must emit for "
             "speculation to match plain decoding (generation step time / plain ms per token).")
    L.append("")
    L.append("| drafter | k | target 1-token fwd ms | verify fwd k+1 ms | with features ms | drafter ms / step "
             "| drafter ms / drafted token | drafter step / target step | step ms (generate) | break-even "
             "tokens/step | acceptance | drafter memory MiB: KV + buffers (compute) | output == greedy |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    order = [("mtp", "hy_v3"), ("eagle3", "gemma3"), ("dflash", "gemma3")]
    errors = []
    for name, label in order:
        if label not in t or name not in t[label]["drafters"]:
            continue
        g = t[label]
        row = g["drafters"][name]
        f1 = row.get("forward_ms", g["forward_ms"])[1]
        if "error" in row and not row["runs"]:
            L.append(f"| {name} | – | {f1:.1f} | – | – | – | – | – | – | – | – | – | crashed: "
                     f"`{row['error'][:160]}` |")
            errors.append((name, row))
            continue
        mem = row["memory"]
        mem_s = f"{_mb(mem.get('kv_bytes', 0))} + {_mb(mem.get('buffer_bytes', 0))}"
        if "compute_bytes" in mem:
            mem_s += f" ({_mb(mem['compute_bytes'])})"
        for k, r in row["runs"].items():
            k = int(k)
            fk = row["forward_ms"][k + 1]
            fx = row["forward_ms_with_features"][k + 1]
            L.append(f"| {name} | {k} | {f1:.1f} | {fk:.1f} ({fk / f1:.2f}×) | {fx:.1f} | "
                     f"{r['draft_ms_per_step']:.1f} | {r['draft_ms_per_token']:.2f} | "
                     f"{r['draft_ms_per_step'] / f1:.2f}× | {r['step_ms']:.1f} | "
                     f"{r['step_ms'] / row['plain_ms_per_token']:.2f} | {100 * r['acceptance']:.1f}% | {mem_s} | "
                     f"{'yes' if r['output_equal'] and row['plain_equal'] else 'NO'} |")
        if "error" in row:
            errors.append((name, row))
    if errors:
        L.append("")
        for name, row in errors:
            L.append(f"{name} failed: `{row['error']}`")
    L.append("")
    L.append(f"Drafter memory at n_ctx {res['n_ctx']}: `FeatureDrafter.memory()` after the runs (KV: the "
             "drafter context's cache; buffers: the bound on the feature rows it keeps on the host; compute: "
             "its llama.cpp compute buffers), weights not included. Benchmark wall time "
             f"{res['bench_s'] / 60:.1f} min (1-minute load average {res['load_before']:.2f} before, "
             f"{res['load_after']:.2f} after).")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
