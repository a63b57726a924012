"""The DFlash drafter as a PyTorch module: the same computation as the pinned llama.cpp's
`dflash` graph (src/models/dflash.cpp), so that weights trained here draft the same tokens there.

What the pin computes, and this module with it:
  - context rows: for every target position q, the fused feature f_q = [inputs of the target
    layers dflash.target_layers at q] goes through g_q = enc_norm(fc f_q); each drafter layer
    writes K_q = rope(k_norm(W_k g_q), q) and V_q = W_v g_q into its KV cache;
  - a block: tokens [x_P, mask x (B - 1)] at positions P .. P+B-1, embedded with the target's
    token embeddings (times dflash.embedding_scale for Gemma targets); per layer pre-norm
    attention with q/k norms and NeoX rope over the context rows of positions < P and the
    whole block (non-causal), the post-norms of Gemma-style layers, a gated FFN (SiLU, or
    tanh-GELU for Gemma); then output_norm and the target's LM head. Slot j >= 1 predicts the
    token at P + j.
The token embeddings and the LM head are the target's, frozen (the GGUF written has none of
its own, llama.cpp takes them from the target through ctx_other).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DFlashConfig:
    """The drafter's shape. n_embd must be the target's hidden size (the pin sizes fc by it)."""

    n_embd: int
    n_vocab: int
    target_layers: list = field(default_factory=list)  # layer-input ids (0: embeddings, k: output of layer k-1)
    n_layer: int = 5
    n_head: int = 4
    n_head_kv: int = 1
    head_dim: int = 64
    n_ff: int = 1024
    block_size: int = 16
    mask_token_id: int = 0
    rms_eps: float = 1e-6
    rope_base: float = 10000.0
    embedding_scale: float = 0.0  # 0: none (llama targets); sqrt(n_embd) for Gemma targets
    gelu: bool = False            # tanh-GELU FFN (Gemma targets), else SiLU
    post_norms: bool = False      # Gemma-style post-attention / post-FFN norms

    def to_dict(self) -> dict:
        return asdict(self)


def rms_norm(x: torch.Tensor, w: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    # ggml_rms_norm in float32, then the weight (llama.cpp's build_norm)
    y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    y = y.to(x.dtype)
    return y * w if w is not None else y


def rope_neox(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """NeoX rope (ggml LLAMA_ROPE_TYPE_NEOX) over the last dim of x [..., T, H, D] at positions pos [..., T]."""
    d = x.shape[-1]
    half = d // 2
    inv = base ** (-torch.arange(0, half, device=x.device, dtype=torch.float32) * 2.0 / d)
    ang = pos.float()[..., None] * inv  # [..., T, half]
    cos, sin = ang.cos()[..., None, :], ang.sin()[..., None, :]  # broadcast over heads
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class Layer(nn.Module):
    def __init__(self, c: DFlashConfig):
        super().__init__()
        E, H, Hkv, D = c.n_embd, c.n_head, c.n_head_kv, c.head_dim
        self.c = c
        self.attn_norm = nn.Parameter(torch.ones(E))
        self.attn_q = nn.Linear(E, H * D, bias=False)
        self.attn_k = nn.Linear(E, Hkv * D, bias=False)
        self.attn_v = nn.Linear(E, Hkv * D, bias=False)
        self.attn_output = nn.Linear(H * D, E, bias=False)
        self.attn_q_norm = nn.Parameter(torch.ones(D))
        self.attn_k_norm = nn.Parameter(torch.ones(D))
        self.ffn_norm = nn.Parameter(torch.ones(E))
        self.ffn_gate = nn.Linear(E, c.n_ff, bias=False)
        self.ffn_up = nn.Linear(E, c.n_ff, bias=False)
        self.ffn_down = nn.Linear(c.n_ff, E, bias=False)
        if c.post_norms:
            self.post_attention_norm = nn.Parameter(torch.ones(E))
            self.post_ffw_norm = nn.Parameter(torch.ones(E))

    def context_kv(self, g: torch.Tensor, pos: torch.Tensor):
        """K, V of the context rows: g [N, T, E] (fused features), pos [N, T] -> [N, Hkv, T, D] each."""
        c = self.c
        N, T, _ = g.shape
        k = self.attn_k(g).view(N, T, c.n_head_kv, c.head_dim)
        v = self.attn_v(g).view(N, T, c.n_head_kv, c.head_dim)
        k = rope_neox(rms_norm(k, self.attn_k_norm, c.rms_eps), pos, c.rope_base)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, ctx_k: torch.Tensor, ctx_v: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """x [N, R, E] block rows at positions pos [N, R]; ctx_k/v [N, Hkv, T, D]; mask [N, 1, R, T + R] (True: attend)."""
        c = self.c
        N, R, E = x.shape
        xn = rms_norm(x, self.attn_norm, c.rms_eps)
        q = rms_norm(self.attn_q(xn).view(N, R, c.n_head, c.head_dim), self.attn_q_norm, c.rms_eps)
        k = rms_norm(self.attn_k(xn).view(N, R, c.n_head_kv, c.head_dim), self.attn_k_norm, c.rms_eps)
        v = self.attn_v(xn).view(N, R, c.n_head_kv, c.head_dim)
        q = rope_neox(q, pos, c.rope_base).transpose(1, 2)
        k = rope_neox(k, pos, c.rope_base).transpose(1, 2)
        v = v.transpose(1, 2)
        keys = torch.cat([ctx_k, k], dim=2)
        vals = torch.cat([ctx_v, v], dim=2)
        rep = c.n_head // c.n_head_kv  # ggml's GQA: query head h reads kv head h // rep
        if rep > 1:
            keys = keys.repeat_interleave(rep, dim=1)
            vals = vals.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, scale=1.0 / math.sqrt(c.head_dim))
        a = self.attn_output(a.transpose(1, 2).reshape(N, R, c.n_head * c.head_dim))
        if c.post_norms:
            a = rms_norm(a, self.post_attention_norm, c.rms_eps)
        h = x + a
        hn = rms_norm(h, self.ffn_norm, c.rms_eps)
        gate = self.ffn_gate(hn)
        act = F.gelu(gate, approximate="tanh") if c.gelu else F.silu(gate)
        f = self.ffn_down(act * self.ffn_up(hn))
        if c.post_norms:
            f = rms_norm(f, self.post_ffw_norm, c.rms_eps)
        return h + f


class DFlashDrafter(nn.Module):
    """The trainable drafter; tok_embd / lm_head are the target's ([n_vocab, n_embd], frozen buffers)."""

    def __init__(self, c: DFlashConfig, tok_embd: torch.Tensor, lm_head: torch.Tensor):
        super().__init__()
        if c.n_head % c.n_head_kv:
            raise ValueError(f"n_head ({c.n_head}) must be a multiple of n_head_kv ({c.n_head_kv})")
        if c.block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {c.block_size}")
        if not c.target_layers:
            raise ValueError("target_layers is empty: the drafter needs at least one target layer")
        self.c = c
        n_in = len(c.target_layers) * c.n_embd
        self.fc = nn.Linear(n_in, c.n_embd, bias=False)
        self.enc_output_norm = nn.Parameter(torch.ones(c.n_embd))
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.n_layer))
        self.output_norm = nn.Parameter(torch.ones(c.n_embd))
        self.register_buffer("tok_embd", tok_embd, persistent=False)
        self.register_buffer("lm_head", lm_head, persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)

    def hidden(self, feats: torch.Tensor, tokens: torch.Tensor, anchors: torch.Tensor,
               n_ctx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The block rows' final hidden states (after output_norm).

        feats [N, T, n_ids * E]: fused target features of positions 0..T-1; tokens [N, T];
        anchors [N, A]: positions P (>= 1) of the blocks' first token; each block attends to the
        context rows of positions < P and to itself. n_ctx [N] (optional): valid length of
        each sequence (padding beyond is never attended). Returns [N, A, B, E].
        """
        c = self.c
        N, T, _ = feats.shape
        A, B = anchors.shape[1], c.block_size
        dev = feats.device
        g = rms_norm(self.fc(feats), self.enc_output_norm, c.rms_eps)
        ctx_pos = torch.arange(T, device=dev).expand(N, T)
        offs = torch.arange(B, device=dev)
        pos = (anchors[:, :, None] + offs).reshape(N, A * B)
        blk = torch.full((N, A, B), c.mask_token_id, dtype=torch.long, device=dev)
        blk[:, :, 0] = torch.gather(tokens, 1, anchors)
        x = self.tok_embd[blk.reshape(N, A * B)].to(feats.dtype)
        if c.embedding_scale:
            x = x * c.embedding_scale
        # mask: context rows of positions < P; block rows of the same block
        ctx_ok = ctx_pos[:, None, :] < anchors.reshape(N, A)[:, :, None]  # [N, A, T]
        if n_ctx is not None:
            ctx_ok = ctx_ok & (ctx_pos[:, None, :] < n_ctx[:, None, None])
        ctx_ok = ctx_ok[:, :, None, :].expand(N, A, B, T).reshape(N, A * B, T)
        bid = torch.arange(A, device=dev).repeat_interleave(B)
        blk_ok = (bid[:, None] == bid[None, :]).expand(N, A * B, A * B)
        mask = torch.cat([ctx_ok, blk_ok], dim=2)[:, None]
        for layer in self.layers:
            ck, cv = layer.context_kv(g, ctx_pos)
            x = layer(x, pos, ck, cv, mask)
        return rms_norm(x, self.output_norm, c.rms_eps).view(N, A, B, c.n_embd)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.lm_head.to(h.dtype).t()

    def gguf_tensors(self) -> dict:
        """{GGUF tensor name: float32 numpy array in torch (out, in) layout} for the writer."""
        out = {"fc.weight": self.fc.weight, "enc.output_norm.weight": self.enc_output_norm,
               "output_norm.weight": self.output_norm}
        for i, L in enumerate(self.layers):
            for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
                out[f"blk.{i}.{name}.weight"] = getattr(L, name).weight
            for name in ("attn_norm", "attn_q_norm", "attn_k_norm", "ffn_norm") + (
                    ("post_attention_norm", "post_ffw_norm") if self.c.post_norms else ()):
                out[f"blk.{i}.{name}.weight"] = getattr(L, name)
        return {k: v.detach().float().cpu().numpy() for k, v in out.items()}
