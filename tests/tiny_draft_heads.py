"""Writes tiny random GGUF speculative drafters for the pinned llama.cpp, in
well under a second each, with the `gguf` package:

- `write_eagle3`: an EAGLE-3 head (architecture ``eagle3``),
- `write_dflash`: a DFlash block-diffusion drafter (architecture ``dflash``),
- `write_dspark`: DFlash plus the DSpark Markov (and confidence) head,
- `write_dflash2`: DFlash plus the DFlash2 convolutions and candidate selector,

to pair with the tiny llama targets of `tiny_models.write_llama`, and
`write_gemma3`, a tiny gemma3-architecture target on the same vocabulary.

Tensor names, shapes and metadata keys follow the pin's loaders
(src/models/eagle3.cpp, src/models/dflash.cpp) and converters
(conversion/llama.py, conversion/qwen.py). Shapes below are in ggml order
({ne0, ne1}); numpy arrays are written transposed, (ne1, ne0).

Target layer ids are stored as llama.cpp reads them: id k captures the input
of target layer k (`llama_set_embeddings_layer_inp(ctx_tgt, k)`), i.e. the
output of layer k - 1; id 0 is the token embeddings. Hugging Face DFlash
configs count layer outputs, so their ``target_layer_ids`` are these minus 1.
An id equal to the target's layer count is not usable with llama targets: the
llama graph does not expose the input of the output norm (DFlash asserts
"layer input tensor is null"; EAGLE-3 reads the target's unset nextn
embeddings instead), so the writers reject it.

The drafters carry the target's tokenizer (the loaders size d2t, the shared
embeddings and the mask token against it). By default they have no
token_embd / output of their own and take the target's through the draft
context's `ctx_other` (llama_context_params.ctx_other must then be the target
context); `own_embeddings` / `own_head` make them self-contained.

Random weights test the plumbing, not quality: EAGLE-3 / DFlash / DFlash2
drafts are almost never accepted. DSpark's anchor slot is (the random tiny
targets act much like bigram models, which its residual and Markov bias
imitate), so it exercises partial acceptance.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

import gguf
import numpy as np

from tiny_models import add_hparams, add_tokenizer, write_llama

# write_llama is re-exported: a test writes a target and its drafter from one module
__all__ = ["write_eagle3", "write_dflash", "write_dspark", "write_dflash2", "write_gemma3", "write_llama"]

MASK_TOKEN_ID = 0
"""Default DFlash mask token: <unk> of the tiny vocabulary, which text never produces."""


class _Writer:
    """A GGUFWriter with the tiny models' conventions: random f32 weights
    scaled like write_llama and the tiny SPM tokenizer."""

    def __init__(self, path: Path, arch: str, seed: int, scale: float):
        self.path = Path(path)
        self.arch = arch
        self.rng = np.random.default_rng(seed)
        self.scale = scale
        self.w = gguf.GGUFWriter(str(path), arch)
        self.w.add_name(f"tiny-{arch}-{seed}")
        self.w.add_file_type(gguf.LlamaFileType.ALL_F32)

    def key(self, suffix: str) -> str:
        return f"{self.arch}.{suffix}"

    def tokenizer(self, vocab_variant: int, mask_token_id: int | None = None,
                  source: Path | None = None) -> int:
        """The same tokenizer metadata as write_llama (or, with `source`, every
        tokenizer.* key of that GGUF); returns the vocabulary size."""
        if source is not None:
            return self._copy_tokenizer(Path(source), mask_token_id)
        n_vocab = add_tokenizer(self.w, vocab_variant)
        if mask_token_id is not None:
            if not 0 <= mask_token_id < n_vocab:
                raise ValueError(f"mask_token_id {mask_token_id} outside the vocabulary of {n_vocab}")
            self.w.add_mask_token_id(mask_token_id)
        return n_vocab

    def _copy_tokenizer(self, source: Path, mask_token_id: int | None) -> int:
        """The tokenizer.* keys of the GGUF `source` (a real target's tokenizer), as
        pyspec train writes them; mask_token_id, when given, replaces the source's mask token."""
        from pyspec.train.gguf_io import copy_tokenizer
        return copy_tokenizer(self.w, source, mask_token_id)

    def hparams(self, *, n_ctx: int, n_embd: int, n_layer: int, n_ff: int, n_head: int, n_head_kv: int,
                head_dim: int) -> None:
        add_hparams(self.w, n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head,
                    n_head_kv=n_head_kv, n_rot=head_dim, head_dim=head_dim)

    def mat(self, name: str, ne0: int, ne1: int, scale: float | None = None) -> None:
        """A {ne0, ne1} matrix (ne0 = input columns), N(0, scale / sqrt(ne0))."""
        s = self.scale if scale is None else scale
        self.w.add_tensor(name, (self.rng.standard_normal((ne1, ne0)) * s / np.sqrt(ne0)).astype(np.float32))

    def decoder_layer(self, i: int, *, n_embd: int, n_head: int, n_head_kv: int, head_dim: int, n_ff: int,
                      post_norms: bool) -> None:
        """Block i of a q/k-normed attention + SwiGLU decoder (DFlash, Gemma 3);
        post_norms adds Gemma's post-attention and post-FFN norms."""
        n_kv = head_dim * n_head_kv
        self.norm(f"blk.{i}.attn_norm.weight", n_embd)
        self.mat(f"blk.{i}.attn_q.weight", n_embd, head_dim * n_head)
        self.mat(f"blk.{i}.attn_k.weight", n_embd, n_kv)
        self.mat(f"blk.{i}.attn_v.weight", n_embd, n_kv)
        self.mat(f"blk.{i}.attn_output.weight", head_dim * n_head, n_embd)
        self.norm(f"blk.{i}.attn_q_norm.weight", head_dim)
        self.norm(f"blk.{i}.attn_k_norm.weight", head_dim)
        self.norm(f"blk.{i}.ffn_norm.weight", n_embd)
        self.mat(f"blk.{i}.ffn_gate.weight", n_embd, n_ff)
        self.mat(f"blk.{i}.ffn_up.weight", n_embd, n_ff)
        self.mat(f"blk.{i}.ffn_down.weight", n_ff, n_embd)
        if post_norms:
            self.norm(f"blk.{i}.post_attention_norm.weight", n_embd)
            self.norm(f"blk.{i}.post_ffw_norm.weight", n_embd)

    def norm(self, name: str, n: int) -> None:
        self.w.add_tensor(name, (1.0 + 0.1 * self.rng.standard_normal(n)).astype(np.float32))

    def embeddings(self, name: str, n_vocab: int, n_embd: int) -> None:
        # N(0, 1) like write_llama, so that random models do not collapse to one token
        self.w.add_tensor(name, self.rng.standard_normal((n_vocab, n_embd)).astype(np.float32))

    def d2t(self, n_draft_vocab: int, n_vocab: int) -> None:
        """Reduced draft vocabulary: d2t holds the (absolute, I64) target id of every draft row."""
        if not 0 < n_draft_vocab <= n_vocab:
            raise ValueError(f"draft_vocab must be in [1, {n_vocab}], got {n_draft_vocab}")
        ids = np.sort(self.rng.choice(n_vocab, size=n_draft_vocab, replace=False)).astype(np.int64)
        self.w.add_tensor("d2t", ids)

    def close(self) -> Path:
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()
        return self.path


def _check_layer_ids(ids: Sequence[int], target_n_layer: int) -> list[int]:
    ids = [int(i) for i in ids]
    if not ids or any(not 0 <= i < target_n_layer for i in ids):
        raise ValueError(f"target_layer_ids {ids} must be non-empty, each in [0, {target_n_layer}) "
                         "(layer-input ids; the input of the output norm is not captured for llama targets)")
    return ids


def _head_dim(n_embd: int, n_head: int, head_dim: int | None) -> int:
    if head_dim is None:
        if n_embd % n_head:
            raise ValueError(f"n_embd {n_embd} is not a multiple of n_head {n_head}: pass head_dim")
        head_dim = n_embd // n_head
    return head_dim


def write_eagle3(path: Path, *, target_n_embd: int = 64, target_n_layer: int = 2,
                 target_layer_ids: Sequence[int] | None = None, n_embd: int | None = None, n_head: int = 4,
                 n_head_kv: int = 2, n_ff: int = 128, n_ctx: int = 2048, draft_vocab: int | None = None,
                 own_embeddings: bool = False, norm_before_fc: bool = False, vocab_variant: int = 0,
                 seed: int = 0, scale: float = 0.5, tokenizer_from: Path | None = None) -> Path:
    """Writes an EAGLE-3 head for a target of target_n_embd x target_n_layer.

    target_layer_ids: exactly 3 layer-input ids (low, mid, high); default
    [2, L/2, L-3] (the EAGLE-3 / converter default) for L >= 8 target layers,
    else [0, L/2, L-1].
    n_embd: the head's hidden size, default target_n_embd; it may differ from
    the target's, but then the head needs its own embeddings (own_embeddings).
    draft_vocab: None for a full-vocabulary lm head; k for a k-row head plus a
    d2t table mapping its rows to k random target token ids.
    own_embeddings: ship token_embd (else the target's is used through
    ctx_other). The lm head (output) is always the head's own, as in EAGLE-3
    checkpoints.
    norm_before_fc: EAGLE-3.1 style RMSNorm (enc.output_norm) on the fused features.
    tokenizer_from: a GGUF (the real target) whose tokenizer.* keys are copied
    instead of writing the tiny vocabulary (vocab_variant is then unused).

    Keys: eagle3.{context_length, embedding_length, block_count (1),
    feed_forward_length, attention.head_count[_kv], attention.key_length,
    attention.value_length, attention.layer_norm_rms_eps, rope.dimension_count,
    target_layers (i32[3]), target_hidden_size, norm_before_residual,
    norm_before_fc} and the tokenizer.
    Tensors: fc {3*target_n_embd, n_embd}, [enc.output_norm {3*target_n_embd}],
    output_norm {n_embd}, output {n_embd, n_draft_vocab}, [d2t i64 {n_draft_vocab}],
    [token_embd {n_embd, n_vocab}], blk.0.{attn_norm, attn_norm_2, ffn_norm} {n_embd},
    blk.0.attn_{q,k,v} {2*n_embd, ...} (input = [norm(embd); norm(g)]),
    blk.0.attn_output, blk.0.ffn_{gate,up,down}.
    """
    n_embd = target_n_embd if n_embd is None else n_embd
    if n_embd != target_n_embd and not own_embeddings:
        raise ValueError("an EAGLE-3 head narrower or wider than its target needs own_embeddings=True")
    if target_layer_ids is None:
        L = target_n_layer
        target_layer_ids = [2, L // 2, L - 3] if L >= 8 else [0, L // 2, L - 1]
    ids = _check_layer_ids(target_layer_ids, target_n_layer)
    if len(ids) != 3:
        raise ValueError(f"EAGLE-3 needs exactly 3 target layer ids, got {ids}")
    head_dim = _head_dim(n_embd, n_head, None)

    g = _Writer(path, "eagle3", seed, scale)
    g.hparams(n_ctx=n_ctx, n_embd=n_embd, n_layer=1, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv,
              head_dim=head_dim)
    g.w.add_layer_norm_rms_eps(1e-5)
    g.w.add_array(g.key("target_layers"), ids)
    g.w.add_uint32(g.key("target_hidden_size"), target_n_embd)
    g.w.add_bool(g.key("norm_before_residual"), False)
    g.w.add_bool(g.key("norm_before_fc"), norm_before_fc)
    n_vocab = g.tokenizer(vocab_variant, source=tokenizer_from)

    n_fused = len(ids) * target_n_embd
    g.mat("fc.weight", n_fused, n_embd)
    if norm_before_fc:
        g.norm("enc.output_norm.weight", n_fused)
    g.norm("output_norm.weight", n_embd)
    g.mat("output.weight", n_embd, n_vocab if draft_vocab is None else draft_vocab)
    if draft_vocab is not None:
        g.d2t(draft_vocab, n_vocab)
    if own_embeddings:
        g.embeddings("token_embd.weight", n_vocab, n_embd)
    n_kv = head_dim * n_head_kv
    g.norm("blk.0.attn_norm.weight", n_embd)
    g.norm("blk.0.attn_norm_2.weight", n_embd)
    g.mat("blk.0.attn_q.weight", 2 * n_embd, head_dim * n_head)
    g.mat("blk.0.attn_k.weight", 2 * n_embd, n_kv)
    g.mat("blk.0.attn_v.weight", 2 * n_embd, n_kv)
    g.mat("blk.0.attn_output.weight", head_dim * n_head, n_embd)
    g.norm("blk.0.ffn_norm.weight", n_embd)
    g.mat("blk.0.ffn_gate.weight", n_embd, n_ff)
    g.mat("blk.0.ffn_up.weight", n_embd, n_ff)
    g.mat("blk.0.ffn_down.weight", n_ff, n_embd)
    return g.close()


def write_eagle3_bigram(path: Path, target: Path, *, qk_scale: float = 8.0, head_noise: float = 0.0,
                        seed: int = 0) -> Path:
    """An EAGLE-3 head that drafts exactly what a write_llama(residual_only=True)
    target generates (a bigram table), for tests that need accepted drafts.

    At pair position p the decoder reads (token p+1, fused feature of p); here
    the fused feature is zeroed (fc = 0) and the residual is norm(g) scaled by
    zero, q and k are qk_scale copies of the normed token embedding in one
    head (each row attends to its own value), v and the attention output are
    identities and the FFN adds nothing: the hidden state is
    norm(embedding(token p+1)), and with the target's output_norm and
    output matrix the head predicts the target's next token. head_noise adds
    relative noise to the copied output matrix (drafts then miss sometimes).
    """
    src = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(target)).tensors}
    out, out_norm = src["output.weight"].astype(np.float32), src["output_norm.weight"].astype(np.float32)
    n_vocab, n_embd = out.shape
    g = _Writer(path, "eagle3", seed, 0.5)
    n_head = 1  # one head over the whole (normed, so fixed-length) embedding: self-attention dominates
    g.hparams(n_ctx=2048, n_embd=n_embd, n_layer=1, n_ff=2 * n_embd, n_head=n_head, n_head_kv=n_head,
              head_dim=n_embd // n_head)
    g.w.add_layer_norm_rms_eps(1e-5)
    g.w.add_array(g.key("target_layers"), [0, 0, 0])
    g.w.add_uint32(g.key("target_hidden_size"), n_embd)
    # the residual is the normed g (attn_norm_2, zero here): drafting steps feed
    # the previous hidden state as g, which must not leak into the prediction
    g.w.add_bool(g.key("norm_before_residual"), True)
    g.w.add_bool(g.key("norm_before_fc"), False)
    g.tokenizer(0)
    if head_noise:
        out = out + (g.rng.standard_normal(out.shape) * head_noise * out.std()).astype(np.float32)
    eye = np.eye(n_embd, dtype=np.float32)
    pick_token = np.concatenate([eye, np.zeros_like(eye)], axis=1)  # [embd | g] -> embd
    ones = np.ones(n_embd, dtype=np.float32)
    g.w.add_tensor("fc.weight", np.zeros((n_embd, 3 * n_embd), dtype=np.float32))
    g.w.add_tensor("output_norm.weight", out_norm)
    g.w.add_tensor("output.weight", out)
    g.w.add_tensor("blk.0.attn_norm.weight", ones)
    g.w.add_tensor("blk.0.attn_norm_2.weight", np.zeros(n_embd, dtype=np.float32))
    g.w.add_tensor("blk.0.ffn_norm.weight", ones)
    g.w.add_tensor("blk.0.attn_q.weight", qk_scale * pick_token)
    g.w.add_tensor("blk.0.attn_k.weight", qk_scale * pick_token)
    g.w.add_tensor("blk.0.attn_v.weight", pick_token)
    g.w.add_tensor("blk.0.attn_output.weight", eye)
    g.mat("blk.0.ffn_gate.weight", n_embd, 2 * n_embd)
    g.mat("blk.0.ffn_up.weight", n_embd, 2 * n_embd)
    g.w.add_tensor("blk.0.ffn_down.weight", np.zeros((n_embd, 2 * n_embd), dtype=np.float32))
    return g.close()


def _dflash(path: Path, *, target_n_embd: int, target_n_layer: int, target_layer_ids: Sequence[int] | None,
            block_size: int, mask_token_id: int, target_arch: str, n_layer: int, n_head: int, n_head_kv: int,
            head_dim: int | None, n_ff: int, n_ctx: int, causal: bool, own_embeddings: bool, own_head: bool,
            draft_vocab: int | None, vocab_variant: int, seed: int, scale: float,
            tokenizer_from: Path | None = None, extra_keys=None, extra_tensors=None, layer_tensors=None) -> Path:
    """The DFlash drafter shared by write_dflash / write_dspark / write_dflash2;
    the extra_* callbacks add a variant's keys and tensors."""
    if block_size < 2:
        raise ValueError("block_size must be >= 2 (the anchor plus at least one mask position)")
    if target_arch not in ("llama", "gemma3"):
        raise ValueError(f"target_arch must be 'llama' or 'gemma3', got {target_arch!r}")
    if draft_vocab is not None and not own_head:
        raise ValueError("a reduced draft vocabulary (draft_vocab) needs its own head (own_head=True)")
    if target_layer_ids is None:
        L = target_n_layer
        target_layer_ids = sorted({1, L // 2, L - 1}) if L > 1 else [0]
    ids = _check_layer_ids(target_layer_ids, target_n_layer)
    n_embd = target_n_embd  # the loader sizes fc as n_ids * (draft n_embd): the hidden sizes must match
    head_dim = _head_dim(n_embd, n_head, head_dim)

    g = _Writer(path, "dflash", seed, scale)
    g.hparams(n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv,
              head_dim=head_dim)
    g.w.add_layer_norm_rms_eps(1e-6)
    g.w.add_array(g.key("target_layers"), ids)
    g.w.add_uint32(g.key("block_size"), block_size)
    g.w.add_bool(g.key("attention.causal"), causal)
    if target_arch == "gemma3":
        # the shared gemma token embeddings are unscaled in the GGUF; gemma MLPs use tanh-GELU
        g.w.add_float32(g.key("embedding_scale"), float(np.sqrt(n_embd)))
        g.w.add_string(g.key("hidden_activation"), "gelu_pytorch_tanh")
    if extra_keys:
        extra_keys(g)
    n_vocab = g.tokenizer(vocab_variant, mask_token_id, source=tokenizer_from)
    n_draft_vocab = n_vocab if draft_vocab is None else draft_vocab

    g.mat("fc.weight", len(ids) * n_embd, n_embd)
    g.norm("enc.output_norm.weight", n_embd)  # hidden_norm after fc
    g.norm("output_norm.weight", n_embd)
    if own_embeddings:
        g.embeddings("token_embd.weight", n_vocab, n_embd)
    if own_head:
        g.mat("output.weight", n_embd, n_draft_vocab)
    if draft_vocab is not None:
        g.d2t(draft_vocab, n_vocab)
    if extra_tensors:
        extra_tensors(g, n_embd, n_vocab, n_draft_vocab)
    for i in range(n_layer):
        g.decoder_layer(i, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_ff=n_ff,
                        post_norms=target_arch == "gemma3")
        if layer_tensors:
            layer_tensors(g, i, n_embd)
    return g.close()


def write_dflash(path: Path, *, target_n_embd: int = 64, target_n_layer: int = 2,
                 target_layer_ids: Sequence[int] | None = None, block_size: int = 8,
                 mask_token_id: int = MASK_TOKEN_ID, target_arch: str = "llama", n_layer: int = 2,
                 n_head: int = 4, n_head_kv: int = 2, head_dim: int | None = None, n_ff: int = 128,
                 n_ctx: int = 2048, causal: bool = False, own_embeddings: bool = False,
                 own_head: bool = False, draft_vocab: int | None = None, vocab_variant: int = 0,
                 seed: int = 0, scale: float = 0.5, tokenizer_from: Path | None = None) -> Path:
    """Writes a DFlash block-diffusion drafter for a target of target_n_embd x
    target_n_layer (its hidden size is target_n_embd: the pin requires it).

    target_layer_ids: layer-input ids (HF target_layer_ids + 1), any number;
    default {1, L/2, L-1} ([1] for the 2-layer tiny target).
    block_size: dflash.block_size; drafts are at most block_size - 1 long
    (the pin clamps --spec-draft-n-max to it).
    mask_token_id: tokenizer.ggml.mask_token_id, fed at the masked block
    positions (default <unk>, id 0).
    target_arch: "llama", or "gemma3" for a drafter of a gemma3 target
    (embedding_scale sqrt(n_embd), tanh-GELU MLP, post-attention / post-FFN norms).
    causal: dflash.attention.causal (block-internal attention; DFlash is
    trained non-causal, the default).
    own_embeddings / own_head: ship token_embd / output instead of using the
    target's through ctx_other; draft_vocab (needs own_head) adds a d2t table.
    tokenizer_from: a GGUF (the real target) whose tokenizer.* keys are copied
    instead of writing the tiny vocabulary; pass that tokenizer's mask_token_id.

    Keys: dflash.{context_length, embedding_length, block_count,
    feed_forward_length, attention.head_count[_kv], attention.key_length,
    attention.value_length, attention.layer_norm_rms_eps, rope.dimension_count,
    target_layers (i32[]), block_size, attention.causal, [embedding_scale,
    hidden_activation]}, the tokenizer and tokenizer.ggml.mask_token_id.
    Tensors: fc {n_ids*n_embd, n_embd}, enc.output_norm {n_embd} (norm after fc),
    output_norm {n_embd}, [token_embd / output {n_embd, n_vocab}], [d2t],
    blk.i.{attn_norm, ffn_norm} {n_embd}, blk.i.attn_{q,k,v,output},
    blk.i.attn_{q,k}_norm {head_dim}, blk.i.ffn_{gate,up,down},
    [blk.i.post_attention_norm, blk.i.post_ffw_norm].
    """
    return _dflash(path, target_n_embd=target_n_embd, target_n_layer=target_n_layer,
                   target_layer_ids=target_layer_ids, block_size=block_size, mask_token_id=mask_token_id,
                   target_arch=target_arch, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                   head_dim=head_dim, n_ff=n_ff, n_ctx=n_ctx, causal=causal, own_embeddings=own_embeddings,
                   own_head=own_head, draft_vocab=draft_vocab, vocab_variant=vocab_variant, seed=seed,
                   scale=scale, tokenizer_from=tokenizer_from)


def write_dspark(path: Path, *, markov_rank: int = 16, confidence_head: bool = True,
                 sample_from_anchor: bool = True, **dflash_kwargs) -> Path:
    """Writes a DSpark drafter: a DFlash drafter (write_dflash's arguments)
    plus the semi-autoregressive Markov head and, optionally, the confidence
    head. llama.cpp detects it by markov_w1 (--spec-type draft-dspark).

    sample_from_anchor: true (DFlash lineage) drafts from the anchor slot on,
    block_size tokens per block; false is the EAGLE-3-style bonus-anchor layout.
    Without the confidence head, run with --spec-draft-p-min 0.

    Extra keys: dflash.sample_from_anchor, dflash.has_confidence_head.
    Extra tensors: markov_w1 {rank, n_vocab}, markov_w2 {rank, n_draft_vocab},
    [conf_proj {n_embd + rank, 1}, conf_proj.bias {1}].
    """
    def keys(g: _Writer) -> None:
        g.w.add_bool(g.key("sample_from_anchor"), sample_from_anchor)
        g.w.add_bool(g.key("has_confidence_head"), confidence_head)

    def tensors(g: _Writer, n_embd: int, n_vocab: int, n_draft_vocab: int) -> None:
        g.mat("markov_w1.weight", markov_rank, n_vocab, scale=1.0)  # an embedding table: rows of norm ~1
        g.mat("markov_w2.weight", markov_rank, n_draft_vocab)
        if confidence_head:
            g.mat("conf_proj.weight", n_embd + markov_rank, 1)
            g.w.add_tensor("conf_proj.bias", np.zeros(1, dtype=np.float32))

    return _dflash(path, **_dflash_args(dflash_kwargs), extra_keys=keys, extra_tensors=tensors)


def write_dflash2(path: Path, *, conv_kernel_size: int = 3, conv_group_size: int = 16, selector_rank: int = 16,
                  selector_top_k: int = 4, **dflash_kwargs) -> Path:
    """Writes a DFlash2 drafter: a DFlash drafter (write_dflash's arguments)
    plus dynamic grouped convolutions around attention and FFN and the
    top-k candidate selector (detected by selector_hidden; still
    --spec-type draft-dflash). Needs n_embd % conv_group_size == 0 and
    n_embd >= top_k * (top_k + 1).

    Extra keys: dflash.{conv_kernel_size, conv_group_size, selector_rank, selector_top_k}.
    Extra tensors: selector_predecessor / selector_successor {rank, n_vocab},
    selector_hidden {n_embd, rank}; per layer blk.i.{attn,ffn}_conv_base
    {n_embd, kernel, 2} (no .weight suffix) and blk.i.{attn,ffn}_conv_proj.weight
    {n_embd, 2 * kernel * n_embd / group}.
    """
    def keys(g: _Writer) -> None:
        g.w.add_uint32(g.key("conv_kernel_size"), conv_kernel_size)
        g.w.add_uint32(g.key("conv_group_size"), conv_group_size)
        g.w.add_uint32(g.key("selector_rank"), selector_rank)
        g.w.add_uint32(g.key("selector_top_k"), selector_top_k)

    def tensors(g: _Writer, n_embd: int, n_vocab: int, n_draft_vocab: int) -> None:
        g.mat("selector_predecessor.weight", selector_rank, n_vocab, scale=1.0)
        g.mat("selector_successor.weight", selector_rank, n_vocab, scale=1.0)
        g.mat("selector_hidden.weight", n_embd, selector_rank)

    def layer(g: _Writer, i: int, n_embd: int) -> None:
        projected = 2 * conv_kernel_size * (n_embd // conv_group_size)
        for part in ("attn", "ffn"):
            # base taps: identity at tap 0 (plus noise), small elsewhere
            base = 0.1 * g.rng.standard_normal((2, conv_kernel_size, n_embd))
            base[:, 0, :] += 1.0
            g.w.add_tensor(f"blk.{i}.{part}_conv_base", base.astype(np.float32))
            g.mat(f"blk.{i}.{part}_conv_proj.weight", n_embd, projected, scale=0.1)

    args = _dflash_args(dflash_kwargs)
    n_embd = args["target_n_embd"]
    if n_embd % conv_group_size or n_embd < selector_top_k * (selector_top_k + 1):
        raise ValueError(f"DFlash2 needs n_embd ({n_embd}) divisible by conv_group_size ({conv_group_size}) "
                         f"and >= selector_top_k * (selector_top_k + 1) (selector_top_k = {selector_top_k})")
    return _dflash(path, **args, extra_keys=keys, extra_tensors=tensors, layer_tensors=layer)


def _dflash_args(kwargs: dict) -> dict:
    """write_dflash's keyword defaults overridden by kwargs (unknown names are an error)."""
    defaults = {name: p.default for name, p in inspect.signature(write_dflash).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise TypeError(f"unexpected arguments: {sorted(unknown)}")
    return {**defaults, **kwargs}


def write_gemma3(path: Path, *, seed: int = 0, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
                 n_head_kv: int = 2, head_dim: int | None = None, n_ff: int = 128, n_ctx: int = 2048,
                 sliding_window: int = 16, swa_layers: Sequence[bool] | None = None, vocab_variant: int = 0,
                 scale: float = 0.5) -> Path:
    """Writes a random gemma3-architecture target on the tiny SPM vocabulary.

    sliding_window: gemma3.attention.sliding_window (tokens).
    swa_layers: gemma3.attention.sliding_window_pattern, one bool per layer
    (true = sliding); default gemma3's 5 sliding : 1 global, with the last
    layer global (so [True, False] for 2 layers).

    Keys: gemma3.{context_length, embedding_length, block_count,
    feed_forward_length, attention.head_count[_kv], attention.key_length,
    attention.value_length, attention.layer_norm_rms_eps, rope.freq_base,
    rope.freq_base_swa, attention.sliding_window,
    attention.sliding_window_pattern} and the tokenizer.
    Tensors: token_embd {n_embd, n_vocab} (scaled by sqrt(n_embd) in the graph),
    output_norm, output, blk.i.{attn_norm, post_attention_norm, ffn_norm,
    post_ffw_norm} {n_embd}, blk.i.attn_{q,k}_norm {head_dim},
    blk.i.attn_{q,k,v,output}, blk.i.ffn_{gate,up,down}.
    """
    head_dim = _head_dim(n_embd, n_head, head_dim)
    if swa_layers is None:
        swa_layers = [i % 6 != 5 for i in range(n_layer)]
        swa_layers[-1] = False
    swa_layers = [bool(s) for s in swa_layers]
    if len(swa_layers) != n_layer:
        raise ValueError(f"swa_layers needs {n_layer} entries, got {len(swa_layers)}")

    g = _Writer(path, "gemma3", seed, scale)
    g.hparams(n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv,
              head_dim=head_dim)
    g.w.add_layer_norm_rms_eps(1e-6)
    g.w.add_rope_freq_base(1_000_000.0)
    g.w.add_float32(g.key("rope.freq_base_swa"), 10_000.0)
    g.w.add_sliding_window(sliding_window)
    g.w.add_array(g.key("attention.sliding_window_pattern"), swa_layers)
    n_vocab = g.tokenizer(vocab_variant)

    # unit-variance rows after the graph's sqrt(n_embd) scale
    g.w.add_tensor("token_embd.weight",
                   (g.rng.standard_normal((n_vocab, n_embd)) / np.sqrt(n_embd)).astype(np.float32))
    for i in range(n_layer):
        g.decoder_layer(i, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_ff=n_ff,
                        post_norms=True)
    g.norm("output_norm.weight", n_embd)
    g.mat("output.weight", n_embd, n_vocab)
    return g.close()
