"""`pyspec train dflash`: trains a DFlash block-diffusion drafter for a GGUF target.

Recipe (after the DFlash paper, arXiv 2602.06036, scaled to one small GPU run): the target
answers an offline prompt corpus itself (self-distillation, data.py); its layer inputs at the
tapped layers are the drafter's context features; training blocks start at random anchors in
the responses ([x_P, mask x (B-1)], slot j predicts x_{P+j}), cross-entropy weighted
exp(-(j-1)/gamma) by slot; AdamW with warm-up and cosine decay; the target's embeddings and LM
head frozen. The result is a GGUF for llama.cpp's `dflash` architecture.

Two processes: this one runs the target (pyspec, llama.cpp) to make the data, then a child
process that imports PyTorch first trains (trainer.py). On CUDA hosts PyTorch and pyspec's CUDA
build do not share a process safely (seen on the H200 host: `import pyspec, torch` aborts, and
loading a model after `import torch` crashes), and the child never loads a llama.cpp model.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import InvalidParameterError, PyspecError
from . import data as D
from .gguf_io import default_target_layers, target_info


@dataclass
class TrainOptions:
    """What `pyspec train dflash` runs with (CLI flags of the same names)."""

    layers: Optional[int] = None         # drafter layers (None: about a sixth of the target's, 1..5)
    block_size: int = 16
    target_layers: Optional[list] = None  # layer-input ids (None: n_target_layers spread over the target)
    n_target_layers: int = 5
    n_ff: Optional[int] = None           # None: the target's
    steps: int = 2000                    # optimizer steps (train_time may end training first)
    batch_size: int = 8                  # sequences per step
    anchors: int = 32                    # blocks per sequence per step
    lr: float = 6e-4
    warmup: float = 0.05                 # fraction of steps
    weight_decay: float = 0.0
    gamma: float = 7.0                   # loss weight exp(-(j-1)/gamma) of block slot j
    seed: int = 0
    prompts: int = 2000                  # training prompts at most
    eval_prompts: int = 32               # held-out prompts for the final evaluation
    max_tokens: int = 256                # response tokens per prompt
    max_prompt: int = 256                # prompt tokens kept (the end)
    token_budget: Optional[int] = None   # stop data generation after this many response tokens
    data_time: Optional[float] = None    # ... or after this many seconds
    train_time: Optional[float] = None   # stop training after this many seconds
    kinds: tuple = D.KINDS
    dtype: str = "f16"                   # weights of the written GGUF: f32, f16, q8_0
    n_gpu_layers: int = 0                # target layers on the GPU for data generation
    parallel: int = 0                    # responses generated at once (0: 32 with GPU layers, else 4)
    n_ctx: int = 0                       # target context for data generation (0: prompt + response)
    device: Optional[str] = None         # torch device (None: cuda when available, else cpu)
    checkpoint_every: int = 500          # steps between checkpoints (out + ".ckpt")
    resume: bool = False                 # reuse out + ".data.npz" and continue from out + ".ckpt"
    more_data: bool = False              # add responses to out + ".data.npz" (the next unused training
    #                                      prompts, data_time / token_budget more) before training
    mask_token_id: Optional[int] = None
    progress: bool = True

    def check(self) -> None:
        for name in ("block_size", "steps", "batch_size", "anchors", "prompts", "max_tokens", "max_prompt",
                     "n_target_layers", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidParameterError(f"{name} must be an integer >= 1, got {v!r}")
        if self.block_size < 2:
            raise InvalidParameterError(f"block_size must be >= 2 (the anchor and a masked slot), got {self.block_size}")
        if self.layers is not None and (not isinstance(self.layers, int) or self.layers < 1):
            raise InvalidParameterError(f"layers must be an integer >= 1, got {self.layers!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise InvalidParameterError(f"lr must be > 0, got {self.lr!r}")
        if isinstance(self.parallel, bool) or not isinstance(self.parallel, int) or not 0 <= self.parallel <= 64:
            raise InvalidParameterError(f"parallel must be an integer in [0, 64] (0: automatic), got {self.parallel!r}")
        if self.dtype not in ("f32", "f16", "q8_0"):
            raise InvalidParameterError(f"dtype must be f32, f16 or q8_0, got {self.dtype!r}")


@dataclass
class EvalReport:
    tau: float                    # mean acceptance length per block (accepted drafts + 1), teacher-forced,
    #                               blocks at uniformly drawn anchors: weights easy stretches of text
    #                               as much as hard ones, so it overstates decode_tau (trainer.decode_tau)
    per_position: list            # acceptance rate of block slot j = 1.. (given slots < j accepted)
    n_blocks: int
    by_kind: dict = field(default_factory=dict)  # kind -> tau
    decode_tau: float = 0.0       # tokens per step of pyspec's greedy decode loop on the held-out responses
    decode_by_kind: dict = field(default_factory=dict)  # (draft_n_max = block_size - 1): what a speedup needs
    decode_steps: int = 0


@dataclass
class TrainResult:
    out: str
    config: dict
    steps: int
    train_tokens: int             # response tokens in the training data
    n_sequences: int
    seconds: dict                 # data, features, train, eval
    loss: list                    # (step, loss) samples
    curve: list                   # (step, blocks seen, held-out tau per anchor, decode tau)
    eval: Optional[EvalReport] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainResult":
        d = dict(d)
        if d.get("eval"):
            d["eval"] = EvalReport(**d["eval"])
        return cls(**d)


def _progress(total: int, desc: str, enabled: bool, unit: str = "it"):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    if tqdm is None or not enabled:
        class _Null:
            def update(self, n=1): pass
            def set_postfix(self, *a, **k): pass
            def set_postfix_str(self, *a, **k): pass
            def close(self): pass
        return _Null()
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)




def data_path(out: os.PathLike) -> Path:
    return Path(str(out) + ".data.npz")


def prepare_data(target: os.PathLike, layers: list, o: TrainOptions, path: os.PathLike,
                 log: Callable[[str], None] = print, *, extend: bool = False) -> dict:
    """Self-distillation and features (this process runs the target): writes `path` (npz) with
    the training and held-out sequences and the target's layer inputs for every token.

    extend=True adds to the data already in `path`: responses to the training prompts after the
    ones it used (data_time / token_budget more), the held-out set kept as it is; so a data budget
    can be spread over several runs (each under a device's time limit, say)."""
    import pyspec

    old_train, old_held, used, before = _existing_data(path, layers) if extend else ([], None, 0, (0.0, 0.0))
    t0 = time.monotonic()
    n_ctx = o.n_ctx or (o.max_prompt + o.max_tokens + 16)
    llm = pyspec.LLM(str(target), n_ctx=n_ctx, n_gpu_layers=o.n_gpu_layers)
    train_prompts = D.corpus("train", n=o.prompts, seed=o.seed, kinds=o.kinds)
    if not train_prompts:
        raise InvalidParameterError("the prompt corpus is empty (no standard-library sources found)")
    if extend and used >= len(train_prompts):
        raise InvalidParameterError(f"--more-data: the data in {path} already used {used} training prompts, and "
                                    f"--prompts allows {len(train_prompts)}; raise --prompts (the corpus of this "
                                    f"machine has {len(D.corpus('train', kinds=o.kinds))})")
    train_prompts = train_prompts[used:]
    held_prompts = [] if extend else D.corpus("held_out", n=o.eval_prompts, seed=o.seed, kinds=o.kinds)
    bar = _progress(len(train_prompts), "self-distillation", o.progress, "prompt")
    state = {"n": 0}

    def tick(done, n_gen):
        bar.update(done - state["n"])
        state["n"] = done
        bar.set_postfix_str(f"{n_gen} tokens, {n_gen / max(time.monotonic() - t0, 1e-9):.0f} tok/s")

    n_par = o.parallel or (32 if o.n_gpu_layers != 0 else 4)
    seqs = D.self_distill(llm, train_prompts, max_tokens=o.max_tokens, max_prompt=o.max_prompt,
                          token_budget=o.token_budget, time_budget=o.data_time, on_progress=tick, n_parallel=n_par)
    bar.close()
    held = D.self_distill(llm, held_prompts, max_tokens=o.max_tokens, max_prompt=o.max_prompt, n_parallel=n_par)
    t_data = time.monotonic() - t0
    # stored as bfloat16 bits (uint16): float32's range (Gemma's residual stream overflows float16)
    # in half the memory and disk of float32, e.g. 6.4 KB instead of 12.8 KB a token for Gemma 3 270M
    t0 = time.monotonic()
    def with_feats(ss):
        return [(s, D.to_bf16_bits(D.features(llm, s, layers))) for s in ss]

    parts = {"train": old_train + with_feats(seqs), "held": old_held if extend else with_feats(held)}
    arrays = {"feats_format": np.asarray("bf16")}
    for name, items in parts.items():
        ss = [s for s, _ in items]
        arrays[f"{name}_tokens"] = np.concatenate([s.tokens for s in ss]) if ss else np.zeros(0, np.int32)
        arrays[f"{name}_offsets"] = np.cumsum([0] + [len(s.tokens) for s in ss]).astype(np.int64)
        arrays[f"{name}_n_prompt"] = np.asarray([s.n_prompt for s in ss], dtype=np.int64)
        arrays[f"{name}_source"] = np.asarray([s.source for s in ss], dtype=str)
        arrays[f"{name}_kind"] = np.asarray([s.kind for s in ss], dtype=str)
        arrays[f"{name}_feats"] = np.concatenate([f for _, f in items]) if items else np.zeros((0, 1), np.uint16)
    parts = old_train = old_held = None  # the arrays hold them now
    arrays["layers"] = np.asarray(layers, dtype=np.int64)
    arrays["train_prompts_used"] = np.asarray(used + state["n"], dtype=np.int64)
    t_feat = time.monotonic() - t0
    arrays["seconds"] = np.asarray([before[0] + t_data, before[1] + t_feat])
    tmp = Path(str(path) + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    n_tok = int(sum(len(s.tokens) - s.n_prompt for s in seqs))
    n_all = int(len(arrays["train_offsets"]) - 1)
    log(f"data: {len(seqs)} {'more ' if extend else ''}training sequences ({n_tok} response tokens, {n_par} at once)"
        + (f", {n_all} in all" if extend else f", {len(held)} held-out")
        + f", {t_data:.1f} s; features {t_feat:.1f} s -> {path}")
    return {"data": t_data, "features": t_feat}


def _existing_data(path: os.PathLike, layers: list) -> tuple:
    """(train, held, training prompts used, seconds) of the data in `path`, for extending it:
    (Sequence, features as bfloat16 bits) pairs, as D.load_data reads them."""
    path = Path(path)
    if not path.exists():
        raise InvalidParameterError(f"--more-data adds to the data in {path}, which does not exist; run once "
                                    f"without --more-data first")
    with np.load(path) as z:
        have = [int(x) for x in z["layers"]]
        # files before the count: one sequence per prompt (empty responses are rare)
        used = int(z["train_prompts_used"]) if "train_prompts_used" in z.files else len(z["train_offsets"]) - 1
    if have != [int(x) for x in layers]:
        raise InvalidParameterError(f"the data in {path} holds target layers {have}, these options ask for "
                                    f"{layers}; use the same --target-layers, or a new --out")
    train, held, seconds = D.load_data(path)
    def bits(items):  # float32 features of older files: to bfloat16 bits
        return [(s, f if f.dtype == np.uint16 else D.to_bf16_bits(f)) for s, f in items]

    return bits(train), bits(held), used, seconds


def train_dflash(target: os.PathLike, out: os.PathLike, options: Optional[TrainOptions] = None,
                 log: Callable[[str], None] = print, **kwargs) -> TrainResult:
    """Trains a DFlash drafter for `target` and writes it to `out` (a GGUF), with its report in
    out + ".json"; see TrainOptions (keyword arguments override its fields)."""
    o = dataclasses.replace(options or TrainOptions(), **kwargs)
    o.check()
    target, out = Path(target), Path(out)
    if not target.is_file():
        raise InvalidParameterError(f"target {target} is not a file; expected a GGUF model")
    if not out.parent.is_dir():
        raise InvalidParameterError(f"the folder of --out {out} does not exist; create it first")
    info = target_info(target, o.mask_token_id)
    layers = [int(i) for i in o.target_layers] if o.target_layers else default_target_layers(info.n_layer,
                                                                                                o.n_target_layers)
    bad = [i for i in layers if not 0 <= i < info.n_layer]
    if bad:
        raise InvalidParameterError(f"target layer ids {bad} are not layer inputs of this target: expected "
                                    f"0..{info.n_layer - 1} (0: the embeddings, k: the output of layer k - 1)")
    dp = data_path(out)
    if o.more_data:
        prepare_data(target, layers, o, dp, log, extend=True)
    elif o.resume and dp.exists():
        log(f"reusing the data in {dp}")
    else:
        prepare_data(target, layers, o, dp, log)
    spec = {"target": str(target), "out": str(out), "data": str(dp), "layers": layers,
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(o).items()}}
    spec_path = Path(str(out) + ".spec.json")
    spec_path.write_text(json.dumps(spec))
    # PyTorch first, in a process of its own (module docstring)
    code = "import torch, sys; from pyspec.train.trainer import main; sys.exit(main(sys.argv[1]))"
    rc = subprocess.run([sys.executable, "-c", code, str(spec_path)]).returncode
    if rc != 0:
        raise PyspecError(f"the training process failed (exit code {rc}); its messages are above. "
                          f"Rerun with resume=True (--resume) to keep the data in {dp}")
    res = TrainResult.from_dict(json.loads(Path(str(out) + ".json").read_text()))
    if res.eval is not None:
        log(f"held-out: decode tau {res.eval.decode_tau:.2f} ("
            + ", ".join(f"{k} {v:.2f}" for k, v in res.eval.decode_by_kind.items())
            + f"; {res.eval.decode_steps} steps, draft_n_max {res.config['block_size'] - 1}); "
            f"per-anchor tau {res.eval.tau:.2f} over {res.eval.n_blocks} blocks ("
            + ", ".join(f"{k} {v:.2f}" for k, v in res.eval.by_kind.items()) + ")"
            + "; per-slot acceptance " + " ".join(f"{p:.2f}" for p in res.eval.per_position))
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {out}.json")
    return res
