"""The PyTorch half of `pyspec train dflash` (see dflash.py): it runs in a process that imports
PyTorch before pyspec and never loads a llama.cpp model.

    python -c "import torch, sys; from pyspec.train.trainer import main; sys.exit(main(SPEC))"
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import InvalidParameterError, PyspecError
from .data import Sequence, load_data  # noqa: F401 - load_data: the trainer's input
from .dflash import EvalReport, TrainOptions, TrainResult, _progress
from .gguf_io import embedding_scale, gemma_like, target_head, target_info, write_drafter, _field
from .model import DFlashConfig, DFlashDrafter


def _pick_device(name: Optional[str]) -> "torch.device":
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _feat_tensor(f: np.ndarray, device, dtype) -> "torch.Tensor":
    """Features as stored (bfloat16 bits in uint16, or float32 from older data files) on `device`."""
    if f.dtype == np.uint16:
        return torch.from_numpy(np.ascontiguousarray(f).view(np.int16)).view(torch.bfloat16).to(device, dtype)
    return torch.as_tensor(f).to(device, dtype)


class _Batches:
    """Random training blocks over a list of (features, tokens, n_prompt) sequences on `device`."""

    def __init__(self, seqs, feats, block_size: int, device, seed: int, dtype=None):
        # features leave the host as float32 (the residual stream of some targets, Gemma's,
        # overflows float16); dtype on the device: bfloat16 on CUDA keeps float32's range
        self.items = [(_feat_tensor(f, device, dtype or torch.float32), torch.as_tensor(s.tokens.astype(np.int64), device=device),
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
        feats, toks, n_ctx = _pad(items, self.device)
        N, T = toks.shape
        A = max(len(a) for a in anchors)
        anc = torch.tensor([a + [a[-1]] * (A - len(a)) for a in anchors], dtype=torch.long, device=self.device)
        # labels: slot j -> token P + j (ignored past the sequence and for slot 0)
        idx = anc[:, :, None] + torch.arange(self.B, device=self.device)
        ok = idx < n_ctx[:, None, None]
        labels = torch.gather(toks, 1, idx.clamp(max=T - 1).reshape(N, -1)).view(N, A, self.B)
        labels = torch.where(ok, labels, torch.full_like(labels, -100))
        labels[:, :, 0] = -100
        return feats, toks, anc, n_ctx, labels


def _pad(items, device) -> tuple:
    """(features [N, T, W], tokens [N, T], lengths [N]) of (features, tokens, n_prompt) items,
    zero-padded to the longest."""
    T = max(len(t) for _, t, _ in items)
    W = items[0][0].shape[1]
    N = len(items)
    feats = torch.zeros((N, T, W), dtype=items[0][0].dtype, device=device)
    toks = torch.zeros((N, T), dtype=torch.long, device=device)
    n_ctx = torch.zeros(N, dtype=torch.long, device=device)
    for i, (f, t, _) in enumerate(items):
        feats[i, :len(t)] = f
        toks[i, :len(t)] = t
        n_ctx[i] = len(t)
    return feats, toks, n_ctx


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
    return (ce * wv).sum() / wv.sum().clamp(min=1.0)


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


@torch.no_grad()
def replay_steps(model, items, *, n_draft: Optional[int] = None, group: int = 16, autocast=None) -> list:
    """pyspec's greedy decode loop replayed on known output: for each (features [T, W], tokens [T],
    n_prompt) item, the accepted draft count of every speculative step when this drafter drafts
    n_draft (default block_size - 1) per step for a target whose greedy output is
    tokens[n_prompt:]. `group` items per forward (zero-padded)."""
    autocast = autocast or (lambda: torch.autocast("cpu", enabled=False))
    model.eval()
    B = model.c.block_size
    n_draft = (B - 1) if n_draft is None else min(n_draft, B - 1)
    param = next(model.parameters())
    out = []
    for g0 in range(0, len(items), group):
        its = items[g0:g0 + group]
        feats, toks, n_ctx = _pad(its, param.device)
        feats = feats.to(param.dtype)
        T = toks.shape[1]
        P = torch.tensor([p for _, _, p in its], dtype=torch.long, device=param.device)
        end = n_ctx - 1                      # a step from P needs P < T_i - 1
        steps = [[] for _ in its]
        j = torch.arange(1, n_draft + 1, device=param.device)
        active = P < end
        while bool(active.any()):
            anc = torch.where(active, P, torch.ones_like(P)).clamp(min=1)
            with autocast():
                pred = model.logits(model.hidden(feats, toks, anc[:, None], n_ctx))[:, 0].argmax(-1)  # [N, B]
            pos = anc[:, None] + j                                             # [N, n_draft]
            ok = (pred[:, 1:n_draft + 1] == torch.gather(toks, 1, pos.clamp(max=T - 1))) & (pos <= end[:, None])
            k = torch.cumprod(ok.long(), dim=1).sum(1)
            for i in torch.nonzero(active).flatten().tolist():
                steps[i].append(int(k[i]))
            P = torch.where(active, P + k + 1, P)
            active = P < end
        out.extend(steps)
    model.train()
    return out


def decode_tau(model, items, *, n_draft: Optional[int] = None, group: int = 16, autocast=None,
               kinds=None) -> tuple:
    """Held-out tau as pyspec's greedy decode loop gets it: tokens per step (replay_steps) over
    all items. Returns (tau, {kind: tau}, steps). Unlike evaluate's per-anchor mean, which weights
    every position alike, this is what a speedup needs: a stretch the drafter predicts whole takes
    few steps, a hard stretch one step per token (uniform anchors over half trivial, half hard
    text: 8.5 per anchor, 1.9 per decode step)."""
    runs = replay_steps(model, items, n_draft=n_draft, group=group, autocast=autocast)

    def tau(rs) -> float:
        n = sum(len(r) for r in rs)
        return sum(k + 1 for r in rs for k in r) / n if n else 0.0

    by_kind = {}
    for kind in dict.fromkeys(kinds or []):
        rs = [r for r, k in zip(runs, kinds) if k == kind]
        if any(rs):
            by_kind[kind] = tau(rs)
    return tau(runs), by_kind, sum(len(r) for r in runs)


def simulate_steps(model, feats: np.ndarray, tokens, n_prompt: int, n_draft: Optional[int] = None) -> list:
    """The accepted draft count of each speculative step when this drafter (greedy, n_draft per
    block, default block_size - 1) drafts for a target whose greedy output is tokens[n_prompt:]:
    replay_steps for one sequence; feats [T, W] are the target's layer inputs for `tokens`. A check
    of the port: pyspec's own DFlash steps must match it."""
    f = torch.as_tensor(np.asarray(feats, dtype=np.float32))
    t = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    return replay_steps(model, [(f, t, int(n_prompt))], n_draft=n_draft)[0]


def make_config(target, layers, o: TrainOptions) -> DFlashConfig:
    """The drafter's shape: the target's attention and FFN shape, o.layers layers."""
    import gguf
    info = target_info(target, o.mask_token_id)
    f = gguf.GGUFReader(str(target)).fields
    a = info.arch
    n_head = int(_field(f, f"{a}.attention.head_count", 4))
    n_head_kv = int(_field(f, f"{a}.attention.head_count_kv", n_head))
    head_dim = int(_field(f, f"{a}.attention.key_length", info.n_embd // n_head))
    return DFlashConfig(
        n_embd=info.n_embd, n_vocab=info.n_vocab, target_layers=[int(i) for i in layers],
        n_layer=o.layers or max(1, min(5, round(info.n_layer / 6))), n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=o.n_ff or int(_field(f, f"{a}.feed_forward_length", 4 * info.n_embd)),
        block_size=o.block_size, mask_token_id=info.mask_token_id,
        embedding_scale=embedding_scale(info), gelu=gemma_like(a), post_norms=gemma_like(a))


def load_drafter(target, drafter_gguf, device="cpu") -> DFlashDrafter:
    """A written drafter GGUF back as a module (its config from the GGUF's .json report)."""
    import gguf
    cfg = DFlashConfig(**json.loads(Path(str(drafter_gguf) + ".json").read_text())["config"])
    emb, head = target_head(target)
    m = DFlashDrafter(cfg, torch.as_tensor(emb.copy()), torch.as_tensor(head.copy()))
    tensors = {}
    for t in gguf.GGUFReader(str(drafter_gguf)).tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type not in (
            gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else np.array(t.data)
        tensors[t.name] = np.asarray(a, dtype=np.float32)
    names = m.gguf_tensors()
    with torch.no_grad():
        params = dict(m.named_parameters())
        for gname in names:
            p = params[_param_name(gname)]
            p.copy_(torch.as_tensor(tensors[gname]).reshape(p.shape))
    return m.to(device)


def _param_name(gguf_name: str) -> str:
    fixed = {"fc.weight": "fc.weight", "enc.output_norm.weight": "enc_output_norm",
             "output_norm.weight": "output_norm"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    _, i, rest = gguf_name.split(".", 2)  # blk.i.<name>.weight
    name = rest[:-len(".weight")]
    linear = name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    return f"layers.{i}.{name}" + (".weight" if linear else "")


def main(spec_path) -> int:
    spec = json.loads(Path(spec_path).read_text())
    o = TrainOptions(**{**spec["options"], "kinds": tuple(spec["options"]["kinds"])})
    target, out = Path(spec["target"]), Path(spec["out"])
    torch.manual_seed(o.seed)
    dev = _pick_device(o.device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else \
        (lambda: torch.autocast("cpu", enabled=False))
    ckpt_path = out.with_name(out.name + ".ckpt")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False) if o.resume and ckpt_path.exists() else None
    cfg = DFlashConfig(**ckpt["config"]) if ckpt is not None else make_config(target, spec["layers"], o)
    info = target_info(target, o.mask_token_id)
    print(f"target {target.name}: {info.arch}, {info.n_layer} layers, hidden {info.n_embd}, vocabulary "
          f"{info.n_vocab}; drafter: {cfg.n_layer} layers, block {cfg.block_size}, target layers "
          f"{cfg.target_layers}, mask token {cfg.mask_token_id} ({info.mask_token_source}), torch device {dev}",
          flush=True)
    train, held, (t_data, t_feat) = load_data(spec["data"])
    seqs, feats = [s for s, _ in train], [f for _, f in train]
    hseqs, hfeats = [s for s, _ in held], [f for _, f in held]
    n_train_tokens = int(sum(len(s.tokens) - s.n_prompt for s in seqs))

    emb, head = target_head(target)
    tdt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    emb_t = torch.from_numpy(emb).to(dev, tdt)
    head_t = emb_t if head is emb else torch.as_tensor(head).to(dev, tdt)
    del emb, head
    model = DFlashDrafter(cfg, emb_t, head_t).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr, betas=(0.9, 0.95), weight_decay=o.weight_decay)
    step, loss_log, curve, el_before = 0, [], [], 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"], strict=False)
        opt.load_state_dict(ckpt["opt"])
        step, loss_log, curve = ckpt["step"], ckpt["loss"], ckpt["curve"]
        el_before = float(ckpt.get("elapsed", 0.0))
        print(f"resumed at step {step} ({el_before:.0f} s trained)", flush=True)
    # the schedule ends at o.steps, or at the time budget when that comes first (a resumed run
    # with a train_time anneals to its own end, a warm restart)
    horizon = el_before + o.train_time if o.train_time else None

    def lr_at(s: int, el_total: float) -> float:
        """Linear warm-up over the first o.warmup of the run, then cosine decay to 0."""
        frac = s / o.steps if horizon is None else max(s / o.steps, el_total / horizon)
        up = 1.0 if o.warmup <= 0 else min(1.0, max(frac, (s + 1) / o.steps) / o.warmup)
        return o.lr * up * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    fdt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    batches = _Batches(seqs, feats, cfg.block_size, dev, o.seed + step, fdt)
    hb = _Batches(hseqs, hfeats, cfg.block_size, dev, 0, fdt) if hseqs else None
    hkinds = [s.kind for s in hseqs if len(s.tokens) - max(s.n_prompt - 1, 1) >= 2]

    def save_ckpt():
        torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "opt": opt.state_dict(),
                    "step": step, "loss": loss_log, "curve": curve,
                    "elapsed": el_before + time.monotonic() - t0}, ckpt_path)

    def write(final: bool):
        write_drafter(out, cfg, model.gguf_tensors(), target, dtype=o.dtype,
                      description=f"pyspec train dflash: target {target.name}, {step} steps, "
                                  f"{n_train_tokens} response tokens, seed {o.seed}" + ("" if final else " (partial)"))

    t0 = time.monotonic()
    bar = _progress(o.steps, "training", o.progress, "step")
    bar.update(step)
    blocks_per_step = o.batch_size * o.anchors
    # the held-out curve: 8 points over the run, by steps or by the time budget (whichever ends it)
    eval_every = max(1, o.steps // 8)
    eval_dt = o.train_time / 8 if o.train_time else None
    next_eval = eval_dt
    first = step
    while step < o.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, el_before + time.monotonic() - t0)
        loss = _loss(model, batches.sample(o.batch_size, o.anchors), o.gamma, autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        el = time.monotonic() - t0
        if step % 10 == 0 or step == o.steps:
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise PyspecError(f"the training loss is {lv} at step {step}: the drafter's weights are lost; "
                                  f"lower --lr (now {o.lr}) or check the target's features for inf/nan")
            loss_log.append((step, lv))
            left = (o.steps - step) * el / max(step - first, 1)
            if o.train_time:
                left = min(left, max(o.train_time - el, 0.0))
            bar.set_postfix_str(f"loss {lv:.3f}, {blocks_per_step * (step - first) / max(el, 1e-9):.0f} blocks/s, "
                                f"{left:.0f} s left")
            if not o.progress and step % 200 == 0:
                print(f"step {step}: loss {lv:.3f}, {el:.0f} s", flush=True)
        timed = eval_dt is not None and el >= next_eval
        if hb is not None and (step % eval_every == 0 or step == o.steps or timed):
            r = evaluate(model, hb, hb.items[:32], anchors_per_seq=16, autocast=autocast)
            dt, _, _ = decode_tau(model, hb.items[:32], autocast=autocast)
            curve.append((step, step * blocks_per_step, r.tau, dt))
        if timed:
            next_eval += eval_dt
        if step % o.checkpoint_every == 0 and step < o.steps:
            save_ckpt()  # the GGUF is written at the end (writing it costs seconds)
        if o.train_time and el >= o.train_time:
            print(f"training time budget ({o.train_time:.0f} s) reached at step {step}", flush=True)
            break
    bar.close()
    t_train = time.monotonic() - t0
    # blocks drawn per response token: past a few passes the drafter memorises its data (run 4 on
    # the H200: 6.6 passes, training loss 0.1, held-out tau 1.8)
    passes = step * blocks_per_step / max(n_train_tokens, 1)
    print(f"trained on {step * blocks_per_step} blocks: {passes:.1f} per response token of the data"
          + (" - more data (--data-time, --token-budget) would help more than more steps" if passes > 4 else ""),
          flush=True)
    write(final=True)
    save_ckpt()
    t0 = time.monotonic()
    report = evaluate(model, hb, hb.items, autocast=autocast, kinds=hkinds) if hb is not None else None
    if report is not None:
        report.decode_tau, report.decode_by_kind, report.decode_steps = decode_tau(model, hb.items,
                                                                                   autocast=autocast, kinds=hkinds)
    res = TrainResult(str(out), cfg.to_dict(), step, n_train_tokens, len(seqs),
                      {"data": t_data, "features": t_feat, "train": t_train, "eval": time.monotonic() - t0},
                      loss_log, curve, report)
    Path(str(out) + ".json").write_text(json.dumps(res.to_dict(), indent=1))
    return 0
