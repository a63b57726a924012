"""`pyspec bench`: the baseline and each speculation method on a prompt set,
with a warm-up, repetitions and interleaved order; optionally beside
llama.cpp's own tools built from the same pinned source (--anchor llama.cpp).

    pyspec bench --spec-type ngram,draft -md draft.gguf --prompts code-edit -n 128 --reps 3 \\
        --json out.json --png out.png --anchor llama.cpp

Reports, per prompt and overall: generated tokens/s (the first token, sampled
from the prompt's logits, excluded: pyspec's predicted_per_second), speedup
over the baseline (no speculation, same prompt), mean acceptance length
(tokens per verify step), acceptance per draft position, the shares of
generation time spent drafting and verifying, and whether each output equals
the baseline's tokens. Overall = total tokens / total time of each method;
acceptance figures are pooled over all steps.

Used from Python (the prompts are in pyspec/prompts.py, the report writers in
pyspec/bench_report.py):

    >>> from pyspec import bench, bench_report, prompts
    >>> cfg = bench.BenchConfig(methods=["none", "ngram"], options=pyspec.GenerationOptions(max_tokens=64))
    >>> doc = bench.run(cfg, prompts.builtin_prompts("code-edit"))
    >>> print(bench_report.format_table(doc))
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .bench_report import ANCHOR_PREFIX, format_table, label, require_matplotlib, write_json, write_png
from .errors import InvalidParameterError
from .options import GenerationOptions
from .prompts import PROMPT_SET_NAMES, builtin_prompts, load_prompts_file

SCHEMA = "pyspec-bench/2"  # 2: the generation settings under settings["options"]
METHODS = ("none", "ngram", "draft")  # what the llama.cpp anchors run too
# every method pyspec runs: the feature drafters read -md (eagle3, dflash) or the model's MTP layers;
# dflash without -md is the drafter pyspec ships for the model (pyspec.shipped_drafter)
SPEC_METHODS = METHODS + ("mtp", "eagle3", "dflash")
FILE_METHODS = ("draft", "eagle3", "dflash")  # the methods that load -md
ANCHORS = ("llama.cpp",)

# ---------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    model: Optional[str] = None  # None: the default model
    draft_model: Optional[str] = None
    methods: list = field(default_factory=lambda: ["none", "ngram"])  # "none" is always the baseline
    threads: Optional[int] = None
    ctx: int = 4096
    n_gpu_layers: int = 0
    reps: int = 3
    warmup: int = 1
    kernels: str = "exact"
    anchor: Optional[str] = None
    progress: bool = True
    prompts: str = "all"  # what the prompts are, for the record
    # How every run generates; spec_type is set per method. seed None: one random seed for all
    # runs (validate() draws it); end-of-generation tokens are ignored, so each run makes max_tokens.
    options: GenerationOptions = field(default_factory=lambda: GenerationOptions(seed=0, ignore_eos=True))

    def validate(self, spec_types: Optional[list] = None) -> None:
        """spec_types: what a loaded LLM can run (LLM.spec_types); None: what run() can load."""
        methods = ["none"] + [m for m in dict.fromkeys(self.methods) if m != "none"]
        for m in methods:
            if spec_types is None and m not in SPEC_METHODS:
                raise InvalidParameterError(f"unknown --spec-type {m!r}; expected one of {', '.join(SPEC_METHODS)}")
            if spec_types is not None and (m not in spec_types or m == "auto"):
                raise InvalidParameterError(f"spec type {m!r} is not available for this LLM; it has: "
                                            f"{', '.join(t for t in spec_types if t != 'auto')}")
        if spec_types is None and not self.draft_model:
            for m, what in (("draft", "a draft model: -md small.gguf"), ("eagle3", "an EAGLE-3 head: -md eagle3.gguf")):
                if m in methods:
                    raise InvalidParameterError(f"--spec-type {m} needs {what}")
        if spec_types is None and sum(m in FILE_METHODS for m in methods) > 1:
            raise InvalidParameterError(f"--spec-type {', '.join(m for m in methods if m in FILE_METHODS)}: one run "
                                        f"loads one -md file, which is one of them; bench them in separate runs")
        self.methods = methods
        if not isinstance(self.options, GenerationOptions):
            raise InvalidParameterError(f"BenchConfig.options must be a pyspec.GenerationOptions, got "
                                        f"{type(self.options).__name__}")
        if self.options.seed is None:
            self.options = self.options.replace(seed=random.getrandbits(63))
        if self.reps < 1:
            raise InvalidParameterError(f"--reps must be >= 1, got {self.reps}")
        if self.warmup < 0:
            raise InvalidParameterError(f"--warmup must be >= 0, got {self.warmup}")
        if self.options.max_tokens < 2:
            raise InvalidParameterError(f"-n (max_tokens) must be >= 2 (the first token is not timed), "
                                        f"got {self.options.max_tokens}")
        if self.anchor is not None and self.anchor not in ANCHORS:
            raise InvalidParameterError(f"unknown anchor {self.anchor!r}; expected one of {', '.join(ANCHORS)}")


# ---------------------------------------------------------------- progress


class _Progress:
    """tqdm on a TTY when installed, else a one-line stderr counter; silent when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.n, self.enabled, self.bar = total, 0, enabled, None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, file=sys.stderr, unit="run", dynamic_ncols=True, leave=False)
            except ImportError:
                pass

    def start(self, desc: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str(desc, refresh=True)
        else:
            sys.stderr.write(f"\r\033[K[bench {self.n + 1}/{self.total}] {desc}")
            sys.stderr.flush()

    def done(self) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# ---------------------------------------------------------------- runs


def _pyspec_run(llm, tokens: list, method: str, cfg: BenchConfig) -> dict:
    t0 = time.perf_counter()
    g = llm.generate(tokens, cfg.options, spec_type=method)
    wall = time.perf_counter() - t0
    s = g.stats
    return {
        "engine": "pyspec", "tokens": list(g.tokens), "finish_reason": g.finish_reason,
        "timed_n": max(s.predicted_n - 1, 0), "timed_ms": s.predicted_ms, "tok_s": s.predicted_per_second,
        "prompt_n": s.prompt_n, "prompt_ms": s.prompt_ms, "predicted_n": s.predicted_n,
        "predicted_ms": s.predicted_ms, "n_steps": s.n_steps, "draft_n": s.draft_n,
        "draft_n_accepted": s.draft_n_accepted, "mean_acceptance_length": s.mean_acceptance_length,
        "drafted_per_position": list(s.drafted_per_position),
        "accepted_per_position": list(s.accepted_per_position),
        "draft_ms": s.draft_ms, "verify_ms": s.verify_ms, "forward_ms": s.forward_ms, "wall_ms": 1e3 * wall,
    }


def _anchor_run(tools: dict, method: str, cfg: BenchConfig, model: str, prompt_file: Path, threads: int) -> dict:
    from . import anchors
    o = cfg.options
    kw = dict(temp=o.temperature, seed=o.seed, ctx=cfg.ctx, ignore_eos=o.ignore_eos)
    t0 = time.perf_counter()
    if method == "none":
        r = anchors.completion(tools, model, prompt_file, o.max_tokens, threads, **kw)
    elif method == "ngram":
        r = anchors.speculative_ngram(tools, model, prompt_file, o.max_tokens, threads, n_max=o.draft_n_max,
                                      size_n=o.ngram_n, **kw)
    else:
        r = anchors.speculative_draft(tools, model, cfg.draft_model, prompt_file, o.max_tokens, threads,
                                      n_max=o.draft_n_max, n_min=o.draft_n_min, **kw)
    r.update(engine="llama.cpp", timed_n=r["predicted_n"], timed_ms=r["predicted_ms"],
             tok_s=r["predicted_per_second"], wall_ms=1e3 * (time.perf_counter() - t0))
    return r


def _ratio(a: float, b: float) -> Optional[float]:
    return a / b if b else None


def _pool_positions(runs: list) -> tuple:
    n = max((len(r.get("drafted_per_position") or []) for r in runs), default=0)
    drafted, accepted = [0] * n, [0] * n
    for r in runs:
        for i, (d, a) in enumerate(zip(r.get("drafted_per_position") or [], r.get("accepted_per_position") or [])):
            drafted[i] += d
            accepted[i] += a
    while drafted and drafted[-1] == 0:
        drafted.pop()
        accepted.pop()
    return drafted, accepted


def summarise(runs: list) -> dict:
    """Pools the runs of one method (over repetitions, and prompts for 'overall')."""
    timed_n = sum(r["timed_n"] for r in runs)
    timed_ms = sum(r["timed_ms"] for r in runs)
    tok = sorted(r["tok_s"] for r in runs)
    out = {"n_runs": len(runs), "timed_n": timed_n, "timed_ms": timed_ms,
           "tok_s": 1e3 * timed_n / timed_ms if timed_ms > 0 else 0.0,
           "tok_s_median": tok[len(tok) // 2] if len(tok) % 2 else 0.5 * (tok[len(tok) // 2 - 1] + tok[len(tok) // 2]),
           "tok_s_min": tok[0], "tok_s_max": tok[-1]}
    draft_n = sum(r.get("draft_n", 0) for r in runs)
    acc_n = sum(r.get("draft_n_accepted", 0) for r in runs)
    out.update(draft_n=draft_n, draft_n_accepted=acc_n, acceptance_rate=acc_n / draft_n if draft_n else 0.0)
    if runs[0]["engine"] == "pyspec":
        steps = sum(r["n_steps"] for r in runs)
        pred_ms = sum(r["predicted_ms"] for r in runs)
        drafted, accepted = _pool_positions(runs)
        out.update(
            n_steps=steps,
            mean_acceptance_length=sum(r["mean_acceptance_length"] * r["n_steps"] for r in runs) / steps if steps else 0.0,
            drafted_per_position=drafted, accepted_per_position=accepted,
            acceptance_per_position=[a / d if d else 0.0 for a, d in zip(accepted, drafted)],
            draft_ms=sum(r["draft_ms"] for r in runs), verify_ms=sum(r["verify_ms"] for r in runs),
            draft_share=sum(r["draft_ms"] for r in runs) / pred_ms if pred_ms > 0 else 0.0,
            verify_share=sum(r["verify_ms"] for r in runs) / pred_ms if pred_ms > 0 else 0.0,
        )
    return out


def _anchor_ratios(py: dict, ll: dict, methods: list) -> dict:
    """pyspec / llama.cpp per method: tok/s ratio, and the ratio of the speedups over each one's baseline."""
    out = {}
    for m in methods:
        a, k = py.get(m), ll.get(ANCHOR_PREFIX + m)
        if a is None or k is None:
            continue
        r = {"pyspec_tok_s": a["tok_s"], "llama_cpp_tok_s": k["tok_s"], "tok_s_ratio": _ratio(a["tok_s"], k["tok_s"]),
             "pyspec_speedup": a.get("speedup"), "llama_cpp_speedup": k.get("speedup")}
        if m != "none":
            r["speedup_ratio"] = _ratio(a.get("speedup") or 0.0, k.get("speedup") or 0.0)
            r["pyspec_acceptance_rate"] = a.get("acceptance_rate")
            r["llama_cpp_acceptance_rate"] = k.get("acceptance_rate")
        out[m] = r
    return out


def _prepare_prompts(llm, prompts: list) -> list:
    out = []
    for p in prompts:
        if "messages" in p:
            if llm.chat_template is None and not llm.has_chat_template:
                # A base model: its output is not a chat reply, but the timing still is a
                # chat-shaped prompt's. Say so and pick the family's format.
                llm.chat_template = "gemma" if llm.info()["architecture"].startswith("gemma") else "chatml"
                print(f"[bench] {Path(llm.model_path).name} has no chat template (a base model?); formatting "
                      f"the chat prompts with the built-in {llm.chat_template!r} template", file=sys.stderr)
            text = llm.apply_chat_template(p["messages"])
            kind = "chat"
        else:
            text, kind = p["prompt"], "text"
        # Tokenized as llama.cpp's tools do (BOS added, special tokens parsed), once for every method.
        toks = llm.tokenize(text, add_special=True, parse_special=True)
        if not toks:
            raise InvalidParameterError(f"prompt {p['name']!r} is empty")
        out.append({"name": p["name"], "set": p.get("set"), "kind": kind, "text": text, "tokens": toks,
                    **({"messages": p["messages"]} if kind == "chat" else {})})
    return out


def run(cfg: BenchConfig, prompts: list) -> dict:
    """Loads the model, runs the benchmark; returns everything (the JSON document)."""
    from .api import LLM

    cfg.validate()
    tools = None
    if cfg.anchor:
        from . import anchors
        anchors.checkout_dir()  # fail fast, before building or loading anything
        tools = anchors.build()
    if "dflash" in cfg.methods and not cfg.draft_model:
        from .models import shipped_drafter
        cfg.draft_model = str(shipped_drafter(cfg.model))
    llm = LLM(cfg.model, n_ctx=cfg.ctx, n_threads=cfg.threads, n_gpu_layers=cfg.n_gpu_layers, kernels=cfg.kernels,
              draft_model=cfg.draft_model if any(m in FILE_METHODS for m in cfg.methods) else None)
    return measure(llm, cfg, prompts, tools)


def measure(llm, cfg: BenchConfig, prompts: list, tools: Optional[dict] = None) -> dict:
    """The benchmark on a loaded LLM (what `pyspec demo` uses too): a warm-up, then cfg.reps
    interleaved rounds of every method on every prompt. cfg.methods may name any spec_type
    the LLM has; tools: the built llama.cpp anchors, or None."""
    from . import _core

    cfg.validate(llm.spec_types)
    if tools is not None and any(m not in METHODS for m in cfg.methods):
        raise InvalidParameterError(f"--anchor llama.cpp runs only {', '.join(METHODS)}; got {cfg.methods}")
    ps = _prepare_prompts(llm, prompts)
    keys = list(cfg.methods) + ([ANCHOR_PREFIX + m for m in cfg.methods] if tools else [])

    tmp = tempfile.TemporaryDirectory(prefix="pyspec-bench-")
    prompt_files = {}
    if tools:
        from .anchors import write_prompt_file
        for i, p in enumerate(ps):
            prompt_files[p["name"]] = write_prompt_file(p["text"], Path(tmp.name) / f"prompt{i}.txt")

    mismatch_warned: set = set()

    def one(key: str, p: dict) -> dict:
        if key.startswith(ANCHOR_PREFIX):
            r = _anchor_run(tools, key[len(ANCHOR_PREFIX):], cfg, llm.model_path, prompt_files[p["name"]],
                            llm.n_threads)
            # the tools tokenize the prompt file themselves: the same tokens?
            r["prompt_tokens_match"] = r.get("prompt_n") == len(p["tokens"])
            if not r["prompt_tokens_match"] and p["name"] not in mismatch_warned:
                mismatch_warned.add(p["name"])
                print(f"\n[bench] warning: {label(key)} read {r.get('prompt_n')} prompt tokens for "
                      f"{p['name']!r}, pyspec {len(p['tokens'])}", file=sys.stderr)
            return r
        return _pyspec_run(llm, p["tokens"], key, cfg)

    M, P = len(keys), len(ps)
    progress = _Progress(cfg.warmup * M + cfg.reps * P * M, cfg.progress and sys.stderr.isatty())
    runs, warm = [], []
    t_start = time.perf_counter()
    try:
        for w in range(cfg.warmup):  # discarded: page cache, allocations, CPU clocks
            p = ps[w % P]
            for j in range(M):
                key = keys[(w + j) % M]
                progress.start(f"warm-up {p['name']} {label(key)}")
                r = one(key, p)
                warm.append({"warmup": w, "prompt": p["name"], "method": key, "tok_s": r["tok_s"]})
                progress.done()
        for rep in range(cfg.reps):
            for pi, p in enumerate(ps):
                shift = (rep * P + pi) % M  # rotated order: no method always runs first or last
                for j in range(M):
                    key = keys[(shift + j) % M]
                    progress.start(f"rep {rep + 1}/{cfg.reps} {p['name']} {label(key)}")
                    r = one(key, p)
                    runs.append({"rep": rep, "prompt": p["name"], "method": key, "order": j, **r})
                    progress.done()
    finally:
        progress.close()
        tmp.cleanup()
    elapsed = time.perf_counter() - t_start

    # ---- per prompt and overall
    token_exact_expected = cfg.options.temperature <= 0
    results, all_equal = {}, True
    for p in ps:
        row = {}
        for key in keys:
            row[key] = summarise([r for r in runs if r["prompt"] == p["name"] and r["method"] == key])
        base_tokens = next(r["tokens"] for r in runs if r["prompt"] == p["name"] and r["method"] == "none")
        for key in keys:
            base = row[ANCHOR_PREFIX + "none" if key.startswith(ANCHOR_PREFIX) else "none"]
            row[key]["speedup"] = _ratio(row[key]["tok_s"], base["tok_s"])
            if not key.startswith(ANCHOR_PREFIX):
                eq = all(r["tokens"] == base_tokens for r in runs if r["prompt"] == p["name"] and r["method"] == key)
                row[key]["equal_to_baseline"] = eq
                all_equal &= eq
        results[p["name"]] = row
    overall = {key: summarise([r for r in runs if r["method"] == key]) for key in keys}
    # Runs far from their group's median: the pooled figures include them, so say so.
    noisy = []
    for p in ps:
        for key in keys:
            med = results[p["name"]][key]["tok_s_median"]
            for r in runs:
                if r["prompt"] == p["name"] and r["method"] == key and med > 0 and \
                        not 0.5 <= r["tok_s"] / med <= 2.0:
                    noisy.append({"prompt": p["name"], "method": key, "rep": r["rep"], "tok_s": r["tok_s"],
                                  "median_tok_s": med})
    for key in keys:
        base = overall[ANCHOR_PREFIX + "none" if key.startswith(ANCHOR_PREFIX) else "none"]
        overall[key]["speedup"] = _ratio(overall[key]["tok_s"], base["tok_s"])
        if not key.startswith(ANCHOR_PREFIX):
            overall[key]["equal_to_baseline"] = all(results[p["name"]][key]["equal_to_baseline"] for p in ps)

    doc = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "settings": {**{k: v for k, v in asdict(cfg).items() if k != "progress"},
                     "model": llm.model_path, "draft_model": llm.draft_model_path, "threads": llm.n_threads},
        "build_info": dict(_core.build_info()),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "prompts": [{k: v for k, v in p.items() if k != "tokens"} | {"n_tokens": len(p["tokens"])} for p in ps],
        "methods": keys,
        "labels": {k: label(k) for k in keys},
        "token_exact_expected": token_exact_expected,
        "exact_outputs_equal": all_equal,
        "results": results,
        "overall": overall,
        "anchor": None,
        "anchor_ratios": None,
        "noisy_runs": noisy,
        "elapsed_s": elapsed,
        "warmup_runs": warm,
        "runs": runs,
    }
    if tools:
        from .anchors import checkout_dir
        pin = json.loads((checkout_dir() / "llama.cpp" / "pin.json").read_text())
        doc["anchor"] = {"name": cfg.anchor, "tools": {k: str(v) for k, v in tools.items()},
                         "llama_cpp_commit": pin.get("commit"),
                         "note": "stock llama.cpp kernels (not batch-invariant), built from pyspec's pinned, "
                                 "patched source"}
        doc["anchor_ratios"] = {p["name"]: _anchor_ratios(results[p["name"]], results[p["name"]], cfg.methods)
                                for p in ps}
        doc["anchor_ratios"]["overall"] = _anchor_ratios(overall, overall, cfg.methods)
    return doc


# ---------------------------------------------------------------- command line


def _spec_types(value: str) -> list:
    types = [t.strip() for t in value.split(",") if t.strip()]
    for t in types:
        if t not in SPEC_METHODS:
            raise argparse.ArgumentTypeError(f"invalid spec type {t!r} (choose from {', '.join(SPEC_METHODS)})")
    return types


def _prompt_sets(value: str) -> str:
    for s in value.split(","):
        if s.strip() not in PROMPT_SET_NAMES:
            raise argparse.ArgumentTypeError(f"invalid prompt set {s.strip()!r} (choose from "
                                             f"{', '.join(PROMPT_SET_NAMES)}, or a comma list)")
    return value


def add_bench_parser(sub) -> argparse.ArgumentParser:
    """Registers `pyspec bench` on the CLI's subparsers."""
    b = sub.add_parser("bench", help="benchmark the baseline and speculation methods on a prompt set",
                       description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    g = b.add_argument_group("model")
    g.add_argument("-m", "--model", help="target GGUF (default: Gemma 3 270M Q4_K_M from pyspec[models])")
    g.add_argument("-md", "--spec-draft-model", "--model-draft", dest="draft_model",
                   help="draft GGUF: a draft model, an EAGLE-3 head or a DFlash drafter for the target")
    g.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size (default: %(default)s)")
    g.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", type=int, default=0,
                   help="layers on the GPU (-1: all; needs a CUDA build; default: %(default)s)")
    g.add_argument("-t", "--threads", type=int, default=None,
                   help="CPU threads (default: the physical cores; fewer when other processes share them)")
    g.add_argument("--kernels", choices=["exact", "fast"], default="exact",
                   help="pyspec's kernels: exact (default, lossless) or fast (NOT exact)")
    r = b.add_argument_group("runs")
    r.add_argument("-n", "--n-predict", type=int, default=128, help="tokens per generation (default: %(default)s)")
    r.add_argument("--spec-type", type=_spec_types, action="append", default=None, metavar="TYPE[,TYPE]",
                   help="methods to run beside the baseline (none, always run): ngram, draft, mtp, eagle3, "
                        "dflash (without -md: the drafter pyspec ships for the default model); repeatable or a "
                        "comma list (default: ngram, plus the kind of the -md file when one is given)")
    r.add_argument("--spec-draft-n-max", "--draft-max", type=int, default=16, dest="draft_n_max",
                   help="longest draft per step (default: %(default)s)")
    r.add_argument("--spec-draft-n-min", "--draft-min", type=int, default=0, dest="draft_n_min",
                   help="shorter drafts are not verified (default: %(default)s)")
    r.add_argument("--spec-ngram-size-n", type=int, default=3, dest="ngram_n",
                   help="n-gram lookup length (default: %(default)s)")
    p = r.add_mutually_exclusive_group()
    p.add_argument("--prompts", type=_prompt_sets, default="all",
                   help=f"built-in prompt set(s): {', '.join(PROMPT_SET_NAMES)} or a comma list (default: all)")
    p.add_argument("--prompts-file", metavar="FILE.jsonl",
                   help='JSONL: one object per line with "prompt" (text) or "messages" (chat), optional "name"')
    r.add_argument("--reps", type=int, default=3, help="measured repetitions per prompt and method (default: 3)")
    r.add_argument("--warmup", type=int, default=1, help="discarded warm-up rounds (default: 1)")
    r.add_argument("--temp", type=float, default=0.0, help="temperature; 0 = greedy (default)")
    r.add_argument("-s", "--seed", type=int, default=0, help="sampling seed, the same for every run (default: 0)")
    r.add_argument("--stop-at-eos", action="store_true",
                   help="stop at end-of-generation tokens (default: ignore them, so every run makes -n tokens)")
    o = b.add_argument_group("output")
    o.add_argument("--json", metavar="OUT.json", help="write every setting, result and raw run here")
    o.add_argument("--png", metavar="OUT.png", help="draw tok/s per prompt and method (needs pyspec[bench])")
    o.add_argument("--anchor", choices=list(ANCHORS), default=None,
                   help="also run llama.cpp's own tools (built once from the pinned source; needs a source checkout)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar (also off when stderr is not a TTY)")
    b.set_defaults(func=cmd_bench)
    return b


def _file_method(path: str) -> str:
    """The method a -md file runs: its drafter architecture (eagle3, dflash), else a draft model."""
    from .api import model_info
    info = model_info(path)
    return info["spec_types"][0] if info["role"] == "drafter" else "draft"


def cmd_bench(args) -> int:
    prompts = load_prompts_file(args.prompts_file) if args.prompts_file else builtin_prompts(args.prompts)
    methods = ["none"] + [m for group in (args.spec_type or []) for m in group]
    if args.spec_type is None:
        methods += ["ngram"] + ([_file_method(args.draft_model)] if args.draft_model else [])
    options = GenerationOptions(max_tokens=args.n_predict, draft_n_max=args.draft_n_max,
                                draft_n_min=args.draft_n_min, ngram_n=args.ngram_n, temperature=args.temp,
                                seed=args.seed, ignore_eos=not args.stop_at_eos)
    cfg = BenchConfig(model=args.model, draft_model=args.draft_model, methods=methods, threads=args.threads,
                      ctx=args.ctx_size, n_gpu_layers=args.n_gpu_layers, reps=args.reps, warmup=args.warmup,
                      kernels=args.kernels, anchor=args.anchor, progress=not args.no_progress,
                      prompts=f"file:{args.prompts_file}" if args.prompts_file else args.prompts, options=options)
    cfg.validate()
    if args.png:
        require_matplotlib()  # before minutes of measuring
    if args.anchor:
        from .anchors import checkout_dir
        checkout_dir()
    from .threads import warn_if_cores_are_busy
    warn_if_cores_are_busy(cfg.threads)
    doc = run(cfg, prompts)
    print(format_table(doc))
    if args.json:
        print(f"wrote {write_json(doc, args.json)}", file=sys.stderr)
    if args.png:
        print(f"wrote {write_png(doc, args.png)}", file=sys.stderr)
    if doc["token_exact_expected"] and not doc["exact_outputs_equal"] and cfg.kernels == "exact":
        print("error: a speculative output differs from the baseline's (greedy, exact kernels)", file=sys.stderr)
        return 1
    return 0
