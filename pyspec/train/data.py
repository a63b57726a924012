"""Training data for a drafter, made offline by self-distillation.

The prompt corpus comes only from what the machine already has: the Python standard library's
source (functions with their docstrings: code) and its docstrings (prose). Each prompt names
its source file; `split` puts whole files on one side (a held-out prompt's file is never seen in
training). Prompts go through the target's chat template when it has one, else stay raw text.
The responses are the target's own greedy continuations (pyspec generates them, with n-gram
speculation: the output is the target's plain greedy output), and the features are the
target's layer inputs over prompt + response, from llama.cpp's own graphs
(Engine.layer_inputs).
"""
from __future__ import annotations

import ast
import collections
import hashlib
import random
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import numpy as np

KINDS = ("code", "prose")


@dataclass
class Prompt:
    text: str    # the user's request (before any chat template)
    source: str  # the file it came from, relative to the standard library
    kind: str    # "code" or "prose"


def _held_out(source: str, held_out_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(source.encode()).digest()[:4], "little")
    return h / 2**32 < held_out_fraction


def _stdlib_files() -> List[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "__pycache__")
    return sorted(p for p in root.rglob("*.py") if not set(p.relative_to(root).parts) & set(skip))


def _prompts_of(path: Path, root: Path) -> Iterator[Prompt]:
    try:
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return
    rel = str(path.relative_to(root))
    lines = src.splitlines()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc or len(doc) < 40:
            continue
        summary = doc.strip().split("\n\n")[0].replace("\n", " ")
        if isinstance(node, ast.FunctionDef) and node.end_lineno and node.end_lineno - node.lineno < 60:
            body = "\n".join(lines[node.lineno - 1:node.end_lineno])
            head = "\n".join(lines[node.lineno - 1:min(node.end_lineno, node.lineno + 12)])
            yield Prompt(f"Write a Python function `{node.name}` that does this: {summary}", rel, "code")
            yield Prompt(f"Explain what this Python code does:\n```python\n{body}\n```", rel, "code")
            yield Prompt(f"Complete this Python code:\n```python\n{head}\n", rel, "code")
        if len(doc) > 120:
            yield Prompt(f"Explain the following in plain words:\n{doc.strip()[:1200]}", rel, "prose")
            yield Prompt(f"Summarize this documentation in a few sentences:\n{doc.strip()[:1200]}", rel, "prose")


def corpus(split: str = "train", *, n: Optional[int] = None, held_out_fraction: float = 0.1, seed: int = 0,
           kinds=KINDS) -> List[Prompt]:
    """Prompts from the standard library's files on one side of the split ("train" or "held_out"),
    shuffled by seed, code and prose interleaved, at most n."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    root = Path(sysconfig.get_paths()["stdlib"])
    by_kind = {k: [] for k in kinds}
    for p in _stdlib_files():
        rel = str(p.relative_to(root))
        if _held_out(rel, held_out_fraction) != (split == "held_out"):
            continue
        for pr in _prompts_of(p, root):
            if pr.kind in by_kind:
                by_kind[pr.kind].append(pr)
    rng = random.Random(seed)
    for v in by_kind.values():
        rng.shuffle(v)
    out: List[Prompt] = []
    for group in zip(*by_kind.values()):  # interleaved, as many of each kind
        out.extend(group)
    return out[:n] if n is not None else out


@dataclass
class Sequence:
    tokens: np.ndarray    # int32 [T]: prompt then the target's response
    n_prompt: int         # tokens of the prompt
    source: str
    kind: str


def prompt_tokens(llm, p: Prompt, max_prompt: int) -> List[int]:
    """The prompt as the target sees it: through its chat template when it has one."""
    text = p.text
    try:
        text = llm.apply_chat_template([{"role": "user", "content": p.text}])
        toks = llm.tokenize(text, add_special=True, parse_special=True)
    except Exception:  # noqa: BLE001 - no chat template: a base model continues the raw text
        toks = llm.tokenize(text)
    return toks[-max_prompt:]


def self_distill(llm, prompts: List[Prompt], *, max_tokens: int, max_prompt: int = 256,
                 token_budget: Optional[int] = None, time_budget: Optional[float] = None,
                 on_progress: Optional[Callable[[int, int], None]] = None, n_parallel: int = 1) -> List[Sequence]:
    """The target's greedy responses to `prompts`, in their order (stops at token_budget generated
    tokens or time_budget seconds). on_progress(done prompts, generated tokens).

    n_parallel > 1 generates that many responses at once in one BatchLLM (one forward per step
    for all of them, no speculation); with exact kernels each response is the one the target
    gives alone, so the data does not depend on n_parallel, only its speed does."""
    seqs: List[Sequence] = []
    if not prompts:
        return seqs
    n_gen, t0 = 0, time.monotonic()

    def spent() -> bool:
        return bool((token_budget and n_gen >= token_budget) or (time_budget and time.monotonic() - t0 >= time_budget))

    def keep(p: Prompt, toks: List[int], out: List[int]) -> None:
        nonlocal n_gen
        if out:
            seqs.append(Sequence(np.asarray(list(toks) + list(out), dtype=np.int32), len(toks), p.source, p.kind))
            n_gen += len(out)

    if n_parallel <= 1:
        for i, p in enumerate(prompts):
            toks = prompt_tokens(llm, p, max_prompt)
            keep(p, toks, llm.generate(toks, max_tokens=max_tokens, temperature=0.0, spec_type="ngram").tokens)
            if on_progress:
                on_progress(i + 1, n_gen)
            if spent():
                break
        return seqs

    from ..batch import BatchLLM

    per_seq = max_prompt + max_tokens + 16
    window: collections.deque = collections.deque()  # (prompt, tokens, request), in prompt order
    with BatchLLM(llm, n_parallel, n_ctx=per_seq * n_parallel,
                  n_batch=max(llm._context_args["n_batch"], n_parallel)) as b:
        it, done = iter(prompts), 0
        while True:
            while not spent() and len(window) < 2 * n_parallel:  # keep every sequence busy
                p = next(it, None)
                if p is None:
                    break
                toks = prompt_tokens(llm, p, max_prompt)
                window.append((p, toks, b.submit(toks, max_tokens=max_tokens, temperature=0.0)))
            if not window:
                break
            p, toks, req = window.popleft()
            keep(p, toks, req.result().tokens)
            done += 1
            if on_progress:
                on_progress(done, n_gen)
    return seqs


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) as uint16 bit patterns: float32's range in half
    the bytes (Gemma's residual stream overflows float16), the type training uses on the GPU."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    """The float32 values of to_bf16_bits' output."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def features(llm, seq: Sequence, layers: List[int], dtype=np.float32) -> np.ndarray:
    """The target's layer inputs for every token of seq: [T, len(layers) * n_embd]."""
    eng = llm._engine
    eng.reset()
    f = eng.layer_inputs([int(t) for t in seq.tokens], list(layers))
    eng.reset()
    return f.reshape(f.shape[0], -1).astype(dtype)


def load_data(path) -> tuple:
    """(train, held) lists of (Sequence, features [T, W]) from prepare_data's npz: bfloat16 bit
    patterns as uint16 (float32 in data files written before that)."""
    z = np.load(path)
    out = []
    for name in ("train", "held"):
        off = z[f"{name}_offsets"]
        toks, feats = z[f"{name}_tokens"], z[f"{name}_feats"]
        items = []
        for i in range(len(off) - 1):
            a, b = int(off[i]), int(off[i + 1])
            items.append((Sequence(toks[a:b].astype(np.int32), int(z[f"{name}_n_prompt"][i]),
                                   str(z[f"{name}_source"][i]), str(z[f"{name}_kind"][i])), feats[a:b]))
        out.append(items)
    return out[0], out[1], [float(x) for x in z["seconds"]]
