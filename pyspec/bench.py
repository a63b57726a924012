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

Used from Python:

    >>> from pyspec import bench
    >>> res = bench.run(bench.BenchConfig(methods=["none", "ngram"]), bench.builtin_prompts("code-edit"))
    >>> print(bench.format_table(res))
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .cli import DEMO_PROMPT
from .errors import InvalidParameterError, PyspecError

SCHEMA = "pyspec-bench/1"
METHODS = ("none", "ngram", "draft")
ANCHORS = ("llama.cpp",)
ANCHOR_PREFIX = "llama.cpp:"

# ---------------------------------------------------------------- prompts

PROMPT_SETS = {
    # Copy-heavy: the answer mostly repeats the prompt (n-gram lookup's best case).
    "code-edit": [
        {"name": "quicksort-hints", "prompt": DEMO_PROMPT},  # `pyspec demo`s prompt
        {"name": "rename-field", "prompt": (
            "class Order:\n"
            "    def __init__(self, customer, items, total):\n"
            "        self.customer = customer\n"
            "        self.items = items\n"
            "        self.total = total\n"
            "\n"
            "    def describe(self):\n"
            "        names = ', '.join(item.name for item in self.items)\n"
            "        return f'{self.customer} ordered {names} for {self.total:.2f}'\n"
            "\n"
            "# The same class, with the field `customer` renamed to `buyer`:\n"
            "class Order:\n")},
        {"name": "config-edit", "prompt": (
            "Original config.yaml:\n"
            "server:\n"
            "  host: 0.0.0.0\n"
            "  port: 8080\n"
            "  workers: 4\n"
            "database:\n"
            "  url: postgres://db.internal:5432/app\n"
            "  pool_size: 10\n"
            "logging:\n"
            "  level: info\n"
            "  file: /var/log/app.log\n"
            "\n"
            "The same config.yaml with the port changed to 9090 and the log level set to debug:\n"
            "server:\n")},
    ],
    "code-gen": [
        {"name": "is-prime", "prompt": (
            "def is_prime(n: int) -> bool:\n"
            "    \"\"\"Return True if n is a prime number, False otherwise.\"\"\"\n")},
        {"name": "csv-average", "prompt": (
            "# Read people.csv (columns: name, age, city) and print the average age per city.\n"
            "import csv\n"
            "from collections import defaultdict\n"
            "\n"
            "\n"
            "def main():\n")},
    ],
    "summarise": [
        {"name": "council-article", "prompt": (
            "Article: The city council met on Tuesday to discuss the new bicycle lanes on Main Street. "
            "Residents said the lanes made the street safer for children who ride to school, while shop "
            "owners worried that removing parking spaces would keep customers away. The council voted six "
            "to three to keep the lanes for a trial period of one year and to review the number of visitors "
            "to the shops every three months. The mayor said the city would add new parking spaces on Oak "
            "Street, two blocks away, before the end of the summer.\n\n"
            "Summarise the article above in three sentences, reusing its wording.\nSummary:")},
        {"name": "meeting-notes", "prompt": (
            "Meeting notes, 12 March: The team reviewed the release plan for version 2.4. Maria reported that "
            "the payment service migration is finished and all tests pass. Tom said the mobile app still "
            "crashes on older Android phones when the user opens the settings page, and he expects a fix by "
            "Friday. The team agreed to move the release from 18 March to 25 March so that the fix can be "
            "tested, and to send a short note to customers about the new date.\n\n"
            "Summary of the decisions and action items:\n")},
    ],
    "prose": [
        {"name": "fairy-tale", "prompt":
            "Once upon a time, in a small village at the edge of a great forest, there lived"},
        {"name": "printing-press", "prompt": (
            "The invention of the printing press in the fifteenth century changed Europe in ways that its "
            "inventor could hardly have imagined. Before it,")},
    ],
    # Formatted with the model's chat template.
    "chat": [
        {"name": "explain-hash-table", "messages": [
            {"role": "user", "content": "Explain what a hash table is in three short sentences."}]},
        {"name": "add-docstring", "messages": [
            {"role": "user", "content": (
                "Add a docstring and type hints to this function and show the whole function again:\n\n"
                "def moving_average(values, window):\n"
                "    result = []\n"
                "    for i in range(len(values) - window + 1):\n"
                "        result.append(sum(values[i:i + window]) / window)\n"
                "    return result\n")}]},
    ],
}
PROMPT_SET_NAMES = tuple(PROMPT_SETS) + ("all",)


class PromptFileError(PyspecError):
    """A --prompts-file is missing or malformed."""


def builtin_prompts(sets: str = "all") -> list:
    """The built-in prompt sets (a name, a comma list of names, or "all"): [{"name", "set", "prompt"|"messages"}]."""
    names = list(PROMPT_SETS) if sets == "all" else [s.strip() for s in sets.split(",") if s.strip()]
    out = []
    for s in names:
        if s == "all":
            return builtin_prompts("all")
        if s not in PROMPT_SETS:
            raise InvalidParameterError(f"unknown prompt set {s!r}; expected one of {', '.join(PROMPT_SET_NAMES)}")
        out += [{**p, "set": s} for p in PROMPT_SETS[s]]
    return out


def _check_messages(msgs, where: str) -> list:
    if not isinstance(msgs, list) or not msgs:
        raise PromptFileError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise PromptFileError(f"{where}: messages[{i}] must be an object with string \"role\" and "
                                  f"\"content\"; got {m!r:.80}")
    return msgs


def load_prompts_file(path) -> list:
    """A JSONL file: one object per line with "prompt" (text) or "messages" (chat), optional "name"."""
    p = Path(path)
    if not p.is_file():
        raise PromptFileError(f"prompts file not found: '{p}'")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptFileError(f"cannot read prompts file '{p}': {e}") from None
    out, names = [], set()
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{no}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise PromptFileError(f"{where}: not valid JSON ({e}); each line must be one JSON object such as "
                                  "{\"name\": \"x\", \"prompt\": \"text\"} or {\"messages\": [...]}") from None
        if not isinstance(obj, dict) or ("prompt" in obj) == ("messages" in obj):
            raise PromptFileError(f"{where}: expected an object with either \"prompt\" (text) or \"messages\" "
                                  "(chat), not both")
        rec = {"set": p.stem}
        if "prompt" in obj:
            if not isinstance(obj["prompt"], str) or not obj["prompt"]:
                raise PromptFileError(f"{where}: \"prompt\" must be a non-empty string")
            rec["prompt"] = obj["prompt"]
        else:
            rec["messages"] = _check_messages(obj["messages"], where)
        name = str(obj.get("name") or f"{p.stem}-{len(out) + 1}")
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name)
        rec["name"] = name
        out.append(rec)
    if not out:
        raise PromptFileError(f"no prompts in '{p}' (expected one JSON object per line)")
    return out


# ---------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    model: Optional[str] = None  # None: the default model
    draft_model: Optional[str] = None
    methods: list = field(default_factory=lambda: ["none", "ngram"])  # "none" is always the baseline
    n_predict: int = 128
    threads: Optional[int] = None
    ctx: int = 4096
    draft_n_max: int = 16
    draft_n_min: int = 0
    ngram_n: int = 3
    reps: int = 3
    warmup: int = 1
    temp: float = 0.0
    seed: int = 0
    kernels: str = "exact"
    ignore_eos: bool = True
    anchor: Optional[str] = None
    progress: bool = True
    prompts: str = "all"  # what the prompts are, for the record

    def validate(self) -> None:
        methods = ["none"] + [m for m in dict.fromkeys(self.methods) if m != "none"]
        for m in methods:
            if m not in METHODS:
                raise InvalidParameterError(f"unknown --spec-type {m!r}; expected one of {', '.join(METHODS)}")
        if "draft" in methods and not self.draft_model:
            raise InvalidParameterError("--spec-type draft needs a draft model: -md small.gguf")
        self.methods = methods
        if self.reps < 1:
            raise InvalidParameterError(f"--reps must be >= 1, got {self.reps}")
        if self.warmup < 0:
            raise InvalidParameterError(f"--warmup must be >= 0, got {self.warmup}")
        if self.n_predict < 2:
            raise InvalidParameterError(f"-n must be >= 2 (the first token is not timed), got {self.n_predict}")
        if self.anchor is not None and self.anchor not in ANCHORS:
            raise InvalidParameterError(f"unknown anchor {self.anchor!r}; expected one of {', '.join(ANCHORS)}")


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PyspecError("--png needs matplotlib, which is not installed: pip install 'pyspec[bench]' "
                          "(or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg


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


def _label(key: str) -> str:
    if key.startswith(ANCHOR_PREFIX):
        m = key[len(ANCHOR_PREFIX):]
        tool = {"none": "llama-completion", "ngram": "ngram-simple", "draft": "draft-simple"}[m]
        return f"llama.cpp {m} ({tool})"
    return f"pyspec {key}"


def _pyspec_run(llm, tokens: list, method: str, cfg: BenchConfig) -> dict:
    t0 = time.perf_counter()
    g = llm.generate(tokens, max_tokens=cfg.n_predict, temperature=cfg.temp, seed=cfg.seed, spec_type=method,
                     draft_n_max=cfg.draft_n_max, draft_n_min=cfg.draft_n_min, ngram_n=cfg.ngram_n,
                     ignore_eos=cfg.ignore_eos)
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
    kw = dict(temp=cfg.temp, seed=cfg.seed, ctx=cfg.ctx, ignore_eos=cfg.ignore_eos)
    t0 = time.perf_counter()
    if method == "none":
        r = anchors.completion(tools, model, prompt_file, cfg.n_predict, threads, **kw)
    elif method == "ngram":
        r = anchors.speculative_ngram(tools, model, prompt_file, cfg.n_predict, threads, n_max=cfg.draft_n_max,
                                      size_n=cfg.ngram_n, **kw)
    else:
        r = anchors.speculative_draft(tools, model, cfg.draft_model, prompt_file, cfg.n_predict, threads,
                                      n_max=cfg.draft_n_max, n_min=cfg.draft_n_min, **kw)
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
            try:
                text = llm.apply_chat_template(p["messages"])
            except InvalidParameterError as e:
                if llm.chat_template is not None or "no chat template" not in str(e):
                    raise
                print(f"[bench] {Path(llm.model_path).name} has no chat template; formatting chat prompts "
                      "with chatml", file=sys.stderr)
                llm.chat_template = "chatml"
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
    """Runs the benchmark; returns everything (the JSON document)."""
    from . import _core
    from .api import LLM

    cfg.validate()
    tools = None
    if cfg.anchor:
        from . import anchors
        anchors.checkout_dir()  # fail fast, before building or loading anything
        tools = anchors.build()
    llm = LLM(cfg.model, n_ctx=cfg.ctx, n_threads=cfg.threads, kernels=cfg.kernels,
              draft_model=cfg.draft_model if "draft" in cfg.methods else None)
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
                print(f"\n[bench] warning: {_label(key)} read {r.get('prompt_n')} prompt tokens for "
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
                progress.start(f"warm-up {p['name']} {_label(key)}")
                r = one(key, p)
                warm.append({"warmup": w, "prompt": p["name"], "method": key, "tok_s": r["tok_s"]})
                progress.done()
        for rep in range(cfg.reps):
            for pi, p in enumerate(ps):
                shift = (rep * P + pi) % M  # rotated order: no method always runs first or last
                for j in range(M):
                    key = keys[(shift + j) % M]
                    progress.start(f"rep {rep + 1}/{cfg.reps} {p['name']} {_label(key)}")
                    r = one(key, p)
                    runs.append({"rep": rep, "prompt": p["name"], "method": key, "order": j, **r})
                    progress.done()
    finally:
        progress.close()
        tmp.cleanup()
    elapsed = time.perf_counter() - t_start

    # ---- per prompt and overall
    token_exact_expected = cfg.temp <= 0
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
        "labels": {k: _label(k) for k in keys},
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


# ---------------------------------------------------------------- output


def _table(header: list, rows: list, right: set) -> str:
    w = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w[i]) if i in right else str(c).ljust(w[i])
                                 for i, c in enumerate(cells)) + " |"
    sep = "|" + "|".join(("-" * (w[i] + 1) + ":") if i in right else "-" * (w[i] + 2) for i in range(len(w))) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def _fmt_positions(acc: list, k: int = 4) -> str:
    if not acc:
        return "–"
    s = " ".join(f"{a:.2f}" for a in acc[:k])
    return s + (" …" if len(acc) > k else "")


def _fmt_x(v) -> str:
    return f"{v:.2f}x" if v is not None else "–"


def format_table(doc: dict) -> str:
    s = doc["settings"]
    keys = [k for k in doc["methods"] if not k.startswith(ANCHOR_PREFIX)]
    exact_expected = doc["token_exact_expected"]
    head = (f"model {Path(s['model']).name}" + (f", draft {Path(s['draft_model']).name}" if s.get("draft_model") else "")
            + f"; {s['n_predict']} tokens, temp {s['temp']}, {s['threads']} threads, kernels {s['kernels']}, "
              f"draft length {s['draft_n_max']}, {s['reps']} reps (+{s['warmup']} warm-up), interleaved")
    rows = []
    for name, row in list(doc["results"].items()) + [("overall", doc["overall"])]:
        for k in keys:
            r = row[k]
            spec = k != "none"
            eq = r["equal_to_baseline"]
            eq_s = ("yes" if eq else "NO") if exact_expected else ("yes" if eq else "no (sampled)")
            rows.append([name, _label(k), f"{r['tok_s']:.1f}", _fmt_x(r["speedup"]),
                         f"{r['mean_acceptance_length']:.2f}" if spec else "–",
                         _fmt_positions(r["acceptance_per_position"]) if spec else "–",
                         f"{100 * r['draft_share']:.0f}%" if spec else "–", f"{100 * r['verify_share']:.0f}%",
                         eq_s if spec else ("yes" if eq else "NO (not deterministic)")])
    out = [head, "", _table(["prompt", "method", "tok/s", "speedup", "mean acc. len", "acceptance by position",
                             "drafting", "verifying", "== none"], rows, {2, 3, 4, 6, 7})]
    if doc.get("noisy_runs"):
        out += ["", f"warning: {len(doc['noisy_runs'])} run(s) far (over 2x) from the median of their prompt and "
                    "method; the pooled figures include them (a busy machine? try more --reps):"]
        out += [f"  {n['prompt']} {_label(n['method'])} rep {n['rep'] + 1}: {n['tok_s']:.1f} tok/s, median "
                f"{n['median_tok_s']:.1f}" for n in doc["noisy_runs"]]
    if doc.get("anchor_ratios"):
        arows = []
        for name, ratios in doc["anchor_ratios"].items():
            for m, r in ratios.items():
                acc = "–"
                if m != "none":
                    acc = f"{100 * (r['pyspec_acceptance_rate'] or 0):.0f}% / {100 * (r['llama_cpp_acceptance_rate'] or 0):.0f}%"
                arows.append([name, m, f"{r['pyspec_tok_s']:.1f}", f"{r['llama_cpp_tok_s']:.1f}",
                              _fmt_x(r["tok_s_ratio"]), _fmt_x(r["pyspec_speedup"]), _fmt_x(r["llama_cpp_speedup"]),
                              _fmt_x(r.get("speedup_ratio")) if m != "none" else "–", acc])
        a = doc["anchor"]
        out += ["", f"Anchor: llama.cpp {a.get('llama_cpp_commit')} (llama-completion, llama-speculative-simple; "
                    "same prompts and settings, stock kernels); ratios are pyspec / llama.cpp:", "",
                _table(["prompt", "method", "pyspec tok/s", "llama.cpp tok/s", "pyspec/llama.cpp", "pyspec speedup",
                        "llama.cpp speedup", "speedup ratio", "acceptance pyspec / llama.cpp"], arows,
                       {2, 3, 4, 5, 6, 7})]
    return "\n".join(out)


def write_png(doc: dict, path) -> Path:
    """Grouped bars: tok/s per prompt (and overall) and method, anchors included."""
    Figure, FigureCanvasAgg = require_matplotlib()
    keys = doc["methods"]
    groups = list(doc["results"]) + ["overall"]
    vals = {k: [doc["results"][g][k]["tok_s"] if g != "overall" else doc["overall"][k]["tok_s"] for g in groups]
            for k in keys}
    width = 0.8 / len(keys)
    fig = Figure(figsize=(min(16.0, max(6.5, 0.32 * len(groups) * len(keys) + 2.0)), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    colors = {"none": "#7f7f7f", "ngram": "#1f77b4", "draft": "#2ca02c"}
    for i, k in enumerate(keys):
        m = k[len(ANCHOR_PREFIX):] if k.startswith(ANCHOR_PREFIX) else k
        xs = [g + (i - (len(keys) - 1) / 2) * width for g in range(len(groups))]
        anchor = k.startswith(ANCHOR_PREFIX)
        bars = ax.bar(xs, vals[k], width * 0.95, label=_label(k), color=colors.get(m, None),
                      alpha=0.45 if anchor else 0.95, hatch="//" if anchor else None,
                      edgecolor="black" if anchor else None, linewidth=0.4)
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("generated tokens/s")
    s = doc["settings"]
    ax.set_title(f"{Path(s['model']).name}: {s['n_predict']} tokens, {s['threads']} threads, temp {s['temp']}",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2 if len(keys) > 3 else 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def write_json(doc: dict, path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    return out


# ---------------------------------------------------------------- command line


def _spec_types(value: str) -> list:
    types = [t.strip() for t in value.split(",") if t.strip()]
    for t in types:
        if t not in METHODS:
            raise argparse.ArgumentTypeError(f"invalid spec type {t!r} (choose from {', '.join(METHODS)})")
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
    g.add_argument("-md", "--spec-draft-model", "--model-draft", dest="draft_model", help="draft model GGUF")
    g.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size (default: %(default)s)")
    g.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores)")
    g.add_argument("--kernels", choices=["exact", "fast"], default="exact",
                   help="pyspec's kernels: exact (default, lossless) or fast (NOT exact)")
    r = b.add_argument_group("runs")
    r.add_argument("-n", "--n-predict", type=int, default=128, help="tokens per generation (default: %(default)s)")
    r.add_argument("--spec-type", type=_spec_types, action="append", default=None, metavar="TYPE[,TYPE]",
                   help="methods to run beside the baseline (none, always run): ngram, draft; repeatable or a "
                        "comma list (default: ngram, plus draft when -md is given)")
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


def cmd_bench(args) -> int:
    prompts = load_prompts_file(args.prompts_file) if args.prompts_file else builtin_prompts(args.prompts)
    methods = ["none"] + [m for group in (args.spec_type or []) for m in group]
    if args.spec_type is None:
        methods += ["ngram"] + (["draft"] if args.draft_model else [])
    cfg = BenchConfig(model=args.model, draft_model=args.draft_model, methods=methods, n_predict=args.n_predict,
                      threads=args.threads, ctx=args.ctx_size, draft_n_max=args.draft_n_max,
                      draft_n_min=args.draft_n_min, ngram_n=args.ngram_n, reps=args.reps, warmup=args.warmup,
                      temp=args.temp, seed=args.seed, kernels=args.kernels, ignore_eos=not args.stop_at_eos,
                      anchor=args.anchor, progress=not args.no_progress,
                      prompts=f"file:{args.prompts_file}" if args.prompts_file else args.prompts)
    cfg.validate()
    if args.png:
        require_matplotlib()  # before minutes of measuring
    if args.anchor:
        from .anchors import checkout_dir
        checkout_dir()
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
