"""`pyspec train dflash`: trains a DFlash block-diffusion drafter for a GGUF target.

Recipe (after the DFlash paper, arXiv 2602.06036, scaled to one small GPU run): the target
answers an offline prompt corpus itself (self-distillation, data.py); its layer inputs at the
tapped layers are the drafter's context features; training blocks start at random anchors in
the responses ([x_P, mask x (B-1)], slot j predicts x_{P+j}), cross-entropy weighted
exp(-(j-1)/gamma) by slot; AdamW with warm-up and cosine decay; the target's embeddings and LM
head frozen. The result is a GGUF for llama.cpp's `dflash` architecture.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from ..errors import InvalidParameterError

try:
    import torch
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(f"pyspec train needs PyTorch: pip install 'pyspec[train]' ({_e})") from _e

from . import data as D
from .gguf_io import (default_target_layers, embedding_scale, gemma_like, target_head, target_info,
                      write_drafter)
from .model import DFlashConfig, DFlashDrafter


@dataclass
class TrainOptions:
    """What `pyspec train dflash` runs with (CLI flags of the same names)."""

    layers: Optional[int] = None         # drafter layers (None: about a sixth of the target's, 1..5)
    block_size: int = 16
    target_layers: Optional[list] = None  # layer-input ids (None: n_target_layers spread over the target)
    n_target_layers: int = 5
    n_ff: Optional[int] = None           # None: the target's
    steps: int = 2000                    # optimizer steps (time_budget may end training first)
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
    n_ctx: int = 0                       # target context for data generation (0: prompt + response)
    device: Optional[str] = None         # torch device (None: cuda when available, else cpu)
    checkpoint_every: int = 500          # steps between checkpoints (out + ".ckpt")
    resume: bool = False
    mask_token_id: Optional[int] = None
    progress: bool = True

    def check(self) -> None:
        for name in ("block_size", "steps", "batch_size", "anchors", "prompts", "max_tokens", "max_prompt",
                     "n_target_layers", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InvalidParameterError(f"{name} must be an integer >= 1, got {v!r}")
        if self.block_size < 2:
            raise InvalidParameterError(f"block_size must be >= 2 (the anchor and a masked slot), got {self.block_size}")
        if self.layers is not None and (not isinstance(self.layers, int) or self.layers < 1):
            raise InvalidParameterError(f"layers must be an integer >= 1, got {self.layers!r}")
        if not self.lr > 0:
            raise InvalidParameterError(f"lr must be > 0, got {self.lr!r}")
        if self.dtype not in ("f32", "f16", "q8_0"):
            raise InvalidParameterError(f"dtype must be f32, f16 or q8_0, got {self.dtype!r}")


@dataclass
class EvalReport:
    tau: float                    # mean acceptance length per block (accepted drafts + 1), teacher-forced
    per_position: list            # acceptance rate of block slot j = 1.. (given slots < j accepted)
    n_blocks: int
    by_kind: dict = field(default_factory=dict)  # kind -> tau


@dataclass
class TrainResult:
    out: str
    config: dict
    steps: int
    train_tokens: int             # response tokens in the training data
    n_sequences: int
    seconds: dict                 # data, features, train, eval
    loss: list                    # (step, loss) samples
    curve: list                   # (step, target tokens seen, held-out tau)
    eval: Optional[EvalReport] = None

    def to_dict(self) -> dict:
        return asdict(self)


def _pick_device(name: Optional[str]) -> "torch.device":
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Batches:
    """Random training blocks over a list of (features, tokens, n_prompt) sequences on `device`."""

    def __init__(self, seqs, feats, block_size: int, device, seed: int):
        self.items = [(torch.as_tensor(f, device=device), torch.as_tensor(s.tokens.astype(np.int64), device=device),
                       s.n_prompt) for s, f in zip(seqs, feats) if len(s.tokens) - max(s.n_prompt - 1, 1) >= 2]
        if not self.items:
            raise InvalidParameterError("no training sequence has a response of 2 tokens or more; raise max_tokens "
                                        "or check the target's output")
        self.B = block_size
        self.rng = random.Random(seed)
        self.device = device

    def sample(self, n_seq: int, n_anchor: int, items=None):
        items = items if items is not None else [self.rng.choice(self.items) for _ in range(n_seq)]
        return self.pack(items, [self._anchors(t, p, n_anchor) for _, t, p in items])

    def _anchors(self, toks, n_prompt, n):
        lo, hi = max(n_prompt - 1, 1), len(toks) - 2  # P >= 1 sees a feature; P + 1 is a label
        return [self.rng.randint(lo, hi) for _ in range(n)]

    def pack(self, items, anchors):
        T = max(len(t) for _, t, _ in items)
        W = items[0][0].shape[1]
        N = len(items)
        feats = torch.zeros((N, T, W), dtype=items[0][0].dtype, device=self.device)
        toks = torch.zeros((N, T), dtype=torch.long, device=self.device)
        n_ctx = torch.zeros(N, dtype=torch.long, device=self.device)
        for i, (f, t, _) in enumerate(items):
            feats[i, :len(t)] = f
            toks[i, :len(t)] = t
            n_ctx[i] = len(t)
        A = max(len(a) for a in anchors)
        anc = torch.tensor([a + [a[-1]] * (A - len(a)) for a in anchors], dtype=torch.long, device=self.device)
        # labels: slot j -> token P + j (ignored past the sequence and for slot 0)
        idx = anc[:, :, None] + torch.arange(self.B, device=self.device)
        ok = idx < n_ctx[:, None, None]
        labels = torch.gather(toks, 1, idx.clamp(max=T - 1).reshape(N, -1)).view(N, A, self.B)
        labels = torch.where(ok, labels, torch.full_like(labels, -100))
        labels[:, :, 0] = -100
        return feats, toks, anc, n_ctx, labels


def _loss(model, batch, gamma: float, autocast):
    feats, toks, anc, n_ctx, labels = batch
    with autocast():
        h = model.hidden(feats, toks, anc, n_ctx)
        logits = model.logits(h)
    B = labels.shape[-1]
    w = torch.exp(-(torch.arange(B, device=labels.device, dtype=torch.float32) - 1).clamp(min=0) / gamma)
    ce = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100, reduction="none").view(labels.shape)
    valid = (labels >= 0).float()
    wv = w * valid
    return (ce * wv).sum() / wv.sum().clamp(min=1.0), logits.detach(), labels


@torch.no_grad()
def evaluate(model, batches: _Batches, items, *, anchors_per_seq: int = 64, autocast=None, kinds=None) -> EvalReport:
    """Teacher-forced acceptance on held-out sequences: a block is accepted up to its first
    slot whose argmax differs from the target's token; tau = accepted + 1."""
    autocast = autocast or (lambda: torch.autocast("cpu", enabled=False))
    model.eval()
    B = batches.B
    acc_len, by_kind = [], {}
    hits = np.zeros(B, dtype=np.float64)
    tries = np.zeros(B, dtype=np.float64)
    rng = random.Random(1234)
    for k, (f, t, p) in enumerate(items):
        lo, hi = max(p - 1, 1), len(t) - 2
        if hi < lo:
            continue
        anc = sorted(rng.sample(range(lo, hi + 1), min(anchors_per_seq, hi - lo + 1)))
        _, _, a, n_ctx, labels = batch = batches.pack([(f, t, p)], [anc])
        with autocast():
            logits = model.logits(model.hidden(batch[0], batch[1], a, n_ctx))
        pred = logits.argmax(-1)[0].cpu().numpy()
        lab = labels[0].cpu().numpy()
        for r in range(len(anc)):
            n = 0
            for j in range(1, B):
                if lab[r, j] < 0:
                    break
                tries[j] += 1
                if pred[r, j] != lab[r, j]:
                    break
                hits[j] += 1
                n += 1
            acc_len.append(n + 1)
            if kinds is not None:
                by_kind.setdefault(kinds[k], []).append(n + 1)
    model.train()
    per_pos = [float(hits[j] / tries[j]) if tries[j] else 0.0 for j in range(1, B)]
    return EvalReport(float(np.mean(acc_len)) if acc_len else 0.0, per_pos, len(acc_len),
                      {k: float(np.mean(v)) for k, v in by_kind.items()})


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


def train_dflash(target: os.PathLike, out: os.PathLike, options: Optional[TrainOptions] = None,
                 log: Callable[[str], None] = print, **kwargs) -> TrainResult:
    """Trains a DFlash drafter for `target` and writes it to `out` (a GGUF); see TrainOptions.
    Keyword arguments override fields of options."""
    import dataclasses

    import pyspec

    o = dataclasses.replace(options or TrainOptions(), **kwargs)
    o.check()
    target, out = Path(target), Path(out)
    if not target.is_file():
        raise InvalidParameterError(f"target {target} is not a file; expected a GGUF model")
    torch.manual_seed(o.seed)
    dev = _pick_device(o.device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else \
        (lambda: torch.autocast("cpu", enabled=False))
    info = target_info(target, o.mask_token_id)
    layers = list(o.target_layers) if o.target_layers else default_target_layers(info.n_layer, o.n_target_layers)
    bad = [i for i in layers if not 0 <= int(i) < info.n_layer]
    if bad:
        raise InvalidParameterError(f"target layer ids {bad} are not layer inputs of this target: expected "
                                    f"0..{info.n_layer - 1} (0: the embeddings, k: the output of layer k - 1)")
    ckpt_path = out.with_name(out.name + ".ckpt")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False) if o.resume and ckpt_path.exists() else None
    if o.resume and ckpt is None:
        log(f"no checkpoint at {ckpt_path}: starting afresh")

    from .gguf_io import _field  # the target's layer shape (the drafter mirrors it)
    import gguf
    f = gguf.GGUFReader(str(target)).fields
    a = info.arch
    n_head = int(_field(f, f"{a}.attention.head_count", 4))
    n_head_kv = int(_field(f, f"{a}.attention.head_count_kv", n_head))
    head_dim = int(_field(f, f"{a}.attention.key_length", info.n_embd // n_head))
    cfg = DFlashConfig(
        n_embd=info.n_embd, n_vocab=info.n_vocab, target_layers=[int(i) for i in layers],
        n_layer=o.layers or max(1, min(5, round(info.n_layer / 6))), n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=o.n_ff or int(_field(f, f"{a}.feed_forward_length", 4 * info.n_embd)),
        block_size=o.block_size, mask_token_id=info.mask_token_id,
        embedding_scale=embedding_scale(info), gelu=gemma_like(a), post_norms=gemma_like(a))
    if ckpt is not None:
        cfg = DFlashConfig(**ckpt["config"])
    log(f"target {target.name}: {a}, {info.n_layer} layers, hidden {info.n_embd}, vocabulary {info.n_vocab}; "
        f"drafter: {cfg.n_layer} layers, block {cfg.block_size}, target layers {cfg.target_layers}, "
        f"mask token {cfg.mask_token_id} ({info.mask_token_source}), device {dev}")

    seconds = {}
    n_ctx = o.n_ctx or (o.max_prompt + o.max_tokens + 16)
    llm = pyspec.LLM(str(target), n_ctx=n_ctx, n_gpu_layers=o.n_gpu_layers)
    t0 = time.monotonic()
    if ckpt is not None:
        seqs = [D.Sequence(np.asarray(t, dtype=np.int32), n, s, k) for t, n, s, k in ckpt["train"]]
        held = [D.Sequence(np.asarray(t, dtype=np.int32), n, s, k) for t, n, s, k in ckpt["held"]]
        log(f"resumed at step {ckpt['step']} with {len(seqs)} training sequences")
    else:
        train_prompts = D.corpus("train", n=o.prompts, seed=o.seed, kinds=o.kinds)
        held_prompts = D.corpus("held_out", n=o.eval_prompts, seed=o.seed, kinds=o.kinds)
        if not train_prompts:
            raise InvalidParameterError("the prompt corpus is empty (no standard-library sources found)")
        bar = _progress(len(train_prompts) + len(held_prompts), "self-distillation", o.progress, "prompt")
        state = {"n": 0}

        def tick(done, n_gen):
            bar.update(done - state["n"])
            state["n"] = done
            el = time.monotonic() - t0
            bar.set_postfix_str(f"{n_gen} tokens, {n_gen / max(el, 1e-9):.0f} tok/s")

        seqs = D.self_distill(llm, train_prompts, max_tokens=o.max_tokens, max_prompt=o.max_prompt,
                              token_budget=o.token_budget, time_budget=o.data_time, on_progress=tick)
        state["n"] = 0
        held = D.self_distill(llm, held_prompts, max_tokens=o.max_tokens, max_prompt=o.max_prompt)
        bar.close()
    seconds["data"] = time.monotonic() - t0
    n_train_tokens = int(sum(len(s.tokens) - s.n_prompt for s in seqs))
    log(f"data: {len(seqs)} training sequences ({n_train_tokens} response tokens), {len(held)} held-out, "
        f"{seconds['data']:.1f} s")

    t0 = time.monotonic()
    fdtype = np.float16 if dev.type == "cuda" else np.float32
    feats = [D.features(llm, s, cfg.target_layers, fdtype) for s in seqs]
    hfeats = [D.features(llm, s, cfg.target_layers, fdtype) for s in held]
    del llm
    seconds["features"] = time.monotonic() - t0

    emb, head = target_head(target)
    tdt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    emb_t = torch.as_tensor(emb).to(dev, tdt)
    head_t = emb_t if head is emb else torch.as_tensor(head).to(dev, tdt)
    del emb, head
    model = DFlashDrafter(cfg, emb_t, head_t).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr, betas=(0.9, 0.95), weight_decay=o.weight_decay)
    warm = max(1, int(o.warmup * o.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / o.steps))))
    step = 0
    loss_log, curve = [], []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"], strict=False)
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        step, loss_log, curve = ckpt["step"], ckpt["loss"], ckpt["curve"]
    batches = _Batches(seqs, feats, cfg.block_size, dev, o.seed + step)
    hb = _Batches(held, hfeats, cfg.block_size, dev, 0) if held else None
    hkinds = [s.kind for s in held if len(s.tokens) - max(s.n_prompt - 1, 1) >= 2]

    def save_ckpt():
        torch.save({"config": cfg.to_dict(), "model": {k: v for k, v in model.state_dict().items()},
                    "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step, "loss": loss_log,
                    "curve": curve, "train": [(s.tokens.tolist(), s.n_prompt, s.source, s.kind) for s in seqs],
                    "held": [(s.tokens.tolist(), s.n_prompt, s.source, s.kind) for s in held]}, ckpt_path)

    def write(final: bool):
        write_drafter(out, cfg, model.gguf_tensors(), target, dtype=o.dtype,
                      description=f"pyspec train dflash: target {target.name}, {step} steps, "
                                  f"{n_train_tokens} response tokens, seed {o.seed}" + ("" if final else " (partial)"))

    t0 = time.monotonic()
    bar = _progress(o.steps, "training", o.progress, "step")
    bar.update(step)
    tokens_per_step = o.batch_size * o.anchors * (cfg.block_size - 1)
    eval_every = max(1, o.steps // 8)
    while step < o.steps:
        batch = batches.sample(o.batch_size, o.anchors)
        loss, _, _ = _loss(model, batch, o.gamma, autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        el = time.monotonic() - t0
        if step % 10 == 0 or step == o.steps:
            loss_log.append((step, float(loss)))
            bar.set_postfix(loss=f"{float(loss):.3f}", tok_s=f"{tokens_per_step * step / max(el, 1e-9):.0f}")
        if hb is not None and (step % eval_every == 0 or step == o.steps):
            r = evaluate(model, hb, hb.items[:8], anchors_per_seq=16, autocast=autocast)
            curve.append((step, step * o.batch_size * o.anchors, r.tau))
        if step % o.checkpoint_every == 0 and step < o.steps:
            save_ckpt()
            write(final=False)
        if o.train_time and el >= o.train_time:
            log(f"training time budget ({o.train_time:.0f} s) reached at step {step}")
            break
    bar.close()
    seconds["train"] = time.monotonic() - t0
    write(final=True)
    save_ckpt()

    t0 = time.monotonic()
    report = evaluate(model, hb, hb.items, autocast=autocast, kinds=hkinds) if hb is not None else None
    seconds["eval"] = time.monotonic() - t0
    if report is not None:
        log(f"held-out: tau {report.tau:.2f} over {report.n_blocks} blocks "
            + " ".join(f"{k} {v:.2f}" for k, v in report.by_kind.items())
            + "; per-slot acceptance " + " ".join(f"{p:.2f}" for p in report.per_position))
    res = TrainResult(str(out), cfg.to_dict(), step, n_train_tokens, len(seqs), seconds, loss_log, curve, report)
    Path(str(out) + ".json").write_text(json.dumps(res.to_dict(), indent=1))
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {out}.json")
    return res


@torch.no_grad()
def simulate_steps(model, feats: np.ndarray, tokens, n_prompt: int, n_draft: Optional[int] = None) -> list:
    """The accepted draft count of each speculative step when this drafter (greedy, n_draft per
    block, default block_size - 1) drafts for a target whose greedy output is tokens[n_prompt:]:
    the decode loop of the engine replayed on known output. feats [T, W] are the target's layer
    inputs for `tokens`. A check of the port: pyspec's own DFlash steps must match it."""
    model.eval()
    B = model.c.block_size
    n_draft = (B - 1) if n_draft is None else n_draft
    dev = next(model.parameters()).device
    f = torch.as_tensor(np.asarray(feats, dtype=np.float32), device=dev)[None]
    t = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=dev)[None]
    T = len(tokens)
    P, out = n_prompt, []
    while P < T - 1:
        h = model.hidden(f.to(next(model.parameters()).dtype), t, torch.tensor([[P]], device=dev))
        pred = model.logits(h)[0, 0].argmax(-1).tolist()
        k = 0
        for j in range(1, min(n_draft, T - 1 - P) + 1):
            if pred[j] != int(tokens[P + j]):
                break
            k += 1
        out.append(k)
        P += k + 1
    model.train()
    return out
