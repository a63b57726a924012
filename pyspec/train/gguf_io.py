"""Reading what a DFlash drafter needs from its target's GGUF, and writing the drafter as a GGUF
that the pinned llama.cpp's `dflash` loader accepts (keys and tensors as src/models/dflash.cpp
reads them; the token embeddings and LM head stay the target's, through ctx_other)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InvalidParameterError

try:
    import gguf
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(f"pyspec train needs the gguf package: pip install 'pyspec[train]' ({_e})") from _e

ARCHES = ("llama", "gemma3", "qwen2", "qwen3", "mistral")  # decoder targets whose layer inputs pyspec captures


@dataclass
class TargetInfo:
    path: str
    arch: str
    n_embd: int
    n_layer: int
    n_vocab: int
    n_ctx_train: int
    mask_token_id: int
    mask_token_source: str  # where the mask id came from, for the report


def _field(fields, key, default=None):
    f = fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def target_info(path: os.PathLike, mask_token_id: Optional[int] = None) -> TargetInfo:
    """The target's hidden size, layers, vocabulary and the mask token a drafter for it uses:
    mask_token_id, else the GGUF's tokenizer.ggml.mask_token_id, else a token spelled <mask>
    or [MASK], else <unk>."""
    r = gguf.GGUFReader(str(path))
    f = r.fields
    arch = _field(f, "general.architecture")
    if arch is None:
        raise InvalidParameterError(f"{path}: no general.architecture; expected a GGUF model")
    n_embd = _field(f, f"{arch}.embedding_length")
    n_layer = _field(f, f"{arch}.block_count")
    if n_embd is None or n_layer is None:
        raise InvalidParameterError(f"{path}: a '{arch}' GGUF without {arch}.embedding_length / block_count; "
                                    "expected a decoder model")
    tokens = _field(f, "tokenizer.ggml.tokens")
    if not tokens:
        raise InvalidParameterError(f"{path} has no tokenizer (tokenizer.ggml.tokens)")
    n_vocab = len(tokens)
    src = "--mask-token"
    if mask_token_id is None:
        mask_token_id, src = _field(f, gguf.Keys.Tokenizer.MASK_ID), "tokenizer.ggml.mask_token_id"
    if mask_token_id is None:
        for spelling in ("<mask>", "[MASK]", "<|mask|>"):
            if spelling in tokens:
                mask_token_id, src = tokens.index(spelling), f"the token {spelling}"
                break
    if mask_token_id is None:
        mask_token_id, src = _field(f, gguf.Keys.Tokenizer.UNK_ID), "tokenizer.ggml.unknown_token_id"
    if mask_token_id is None:
        raise InvalidParameterError(f"{path}: no mask token found (no tokenizer.ggml.mask_token_id, <mask> or "
                                    "<unk>); pass mask_token_id (--mask-token ID), a token the text never uses")
    mask_token_id = int(mask_token_id)
    if not 0 <= mask_token_id < n_vocab:
        raise InvalidParameterError(f"mask token id {mask_token_id} is outside the vocabulary [0, {n_vocab})")
    return TargetInfo(str(path), str(arch), int(n_embd), int(n_layer), n_vocab,
                      int(_field(f, f"{arch}.context_length", 2048)), mask_token_id, src)


def target_head(path: os.PathLike) -> tuple:
    """The target's token embeddings and LM head as float32 [n_vocab, n_embd] arrays (the same
    array twice when the head is tied to the embeddings)."""
    r = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in r.tensors}

    def load(name):
        t = by_name[name]
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        n_embd = int(t.shape[0])  # ggml order: {n_embd, n_vocab}
        return np.ascontiguousarray(a.reshape(-1, n_embd), dtype=np.float32)

    if "token_embd.weight" not in by_name:
        raise InvalidParameterError(f"{path} has no token_embd.weight; a DFlash drafter shares the target's "
                                    "token embeddings")
    emb = load("token_embd.weight")
    head = load("output.weight") if "output.weight" in by_name else emb
    return emb, head


def default_target_layers(n_layer: int, n: int = 5) -> list:
    """n layer-input ids spread over the target as DFlash does (from the second layer to the
    last one whose input llama.cpp exposes, n_layer - 1), ascending and distinct."""
    if n_layer < 2:
        return [0]
    lo, hi = 1, n_layer - 1
    n = max(1, min(n, hi - lo + 1))
    if n == 1:
        return [hi]
    return sorted({round(lo + i * (hi - lo) / (n - 1)) for i in range(n)})


def copy_tokenizer(w: "gguf.GGUFWriter", source: os.PathLike, mask_token_id: Optional[int] = None) -> int:
    """Copies every tokenizer.* key of the GGUF `source` into the writer; mask_token_id, when
    given, replaces the source's mask token. Returns the vocabulary size."""
    fields = gguf.GGUFReader(str(source)).fields
    if "tokenizer.ggml.tokens" not in fields:
        raise InvalidParameterError(f"{source} has no tokenizer (tokenizer.ggml.tokens)")
    n_vocab = len(fields["tokenizer.ggml.tokens"].data)
    for key, f in fields.items():
        if not key.startswith("tokenizer.") or (mask_token_id is not None and key == gguf.Keys.Tokenizer.MASK_ID):
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(key, f.contents(), f.types[0])
    if mask_token_id is not None:
        if not 0 <= mask_token_id < n_vocab:
            raise InvalidParameterError(f"mask_token_id {mask_token_id} outside the vocabulary of {n_vocab}")
        w.add_mask_token_id(int(mask_token_id))
    return n_vocab


def write_drafter(path: os.PathLike, cfg, tensors: dict, target: os.PathLike, *, dtype: str = "f16",
                  n_ctx: int = 0, description: str = "") -> Path:
    """Writes the drafter GGUF: cfg (DFlashConfig), tensors {name: float32 (out, in) array}.
    dtype: f32, f16 or q8_0 for the 2-D weights (norms stay f32). The tokenizer is the target's
    (every tokenizer.* key), with tokenizer.ggml.mask_token_id = cfg.mask_token_id."""
    if dtype not in ("f32", "f16", "q8_0"):
        raise InvalidParameterError(f"dtype must be f32, f16 or q8_0, got {dtype!r}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), "dflash")
    w.add_name("pyspec DFlash drafter")
    if description:
        w.add_description(description)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
    w.add_context_length(n_ctx or 8192)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.rms_eps)
    w.add_array("dflash.target_layers", [int(i) for i in cfg.target_layers])
    w.add_uint32("dflash.block_size", cfg.block_size)
    w.add_bool("dflash.attention.causal", False)
    if cfg.embedding_scale:
        w.add_float32("dflash.embedding_scale", float(cfg.embedding_scale))
    if cfg.gelu:
        w.add_string("dflash.hidden_activation", "gelu_pytorch_tanh")
    copy_tokenizer(w, target, cfg.mask_token_id)
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.ndim == 1 or dtype == "f32":
            w.add_tensor(name, a)
        elif dtype == "f16":
            w.add_tensor(name, a.astype(np.float16))
        elif a.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


def gemma_like(arch: str) -> bool:
    return arch.startswith("gemma")


def embedding_scale(info: TargetInfo) -> float:
    """Gemma graphs scale the (unscaled, in the GGUF) token embeddings by sqrt(n_embd)."""
    return float(math.sqrt(info.n_embd)) if gemma_like(info.arch) else 0.0
