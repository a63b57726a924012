"""Writes tiny random GGUF models (llama architecture, a ~300-token SPM
vocabulary) with the `gguf` package, in well under a second each.

Random weights give deterministic, repetitive text: good for exactness and
acceptance tests, meaningless for quality.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

# A small SentencePiece-style vocabulary: specials, 256 byte-fallback tokens,
# then a few hundred word pieces.
WORDS = ("the of and to in is it that for on with as at by this be are from or an was but not have "
         "one all can will def return if else for while import class print self x y z arr left right "
         "pivot middle sort quick list int str len none true false").split()


def vocab(variant: int = 0, n_vocab: int = 0):
    """The tokens, scores and types; n_vocab > the natural size pads with
    filler word pieces (for realistic LM-head sizes in benchmarks)."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{i:02X}>" for i in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = list(dict.fromkeys(["\u2581" + w for w in WORDS] + list("abcdefghijklmnopqrstuvwxyz") + ["\u2581"]))
    if variant:
        pieces = [p + "s" if i % 7 == 0 else p for i, p in enumerate(pieces)]  # a different tokenizer
    pieces += [f"\u2581w{i:05d}" for i in range(max(0, n_vocab - len(tokens) - len(pieces)))]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, types


def add_tokenizer(w: gguf.GGUFWriter, variant: int = 0, n_vocab: int = 0, eos_id: int = 2) -> int:
    """Writes the tokenizer metadata of vocab(variant, n_vocab); returns the vocabulary size.
    eos_id: the end-of-generation token (another id makes a word piece end the text)."""
    tokens, scores, types = vocab(variant, n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(eos_id)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    return len(tokens)


def add_hparams(w: gguf.GGUFWriter, *, n_ctx: int, n_embd: int, n_layer: int, n_ff: int, n_head: int,
                n_head_kv: int, n_rot: int, head_dim: int | None = None) -> None:
    """The decoder hyperparameters every tiny writer sets (head_dim: also the
    key/value lengths, for architectures that read them)."""
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    if head_dim is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_dimension_count(n_rot)


def write_llama(path: Path, *, seed: int = 0, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
                n_head_kv: int = 2, n_ff: int = 128, n_ctx: int = 2048, dtype: str = "f32",
                vocab_variant: int = 0, arch: str = "llama", scale: float = 0.5, perturb: float = 0.0,
                perturb_seed: int = 1234, residual_only: bool = False, eos_id: int = 2,
                chat_template: str | None = None, q_scale: float = 1.0, v_scale: float = 1.0) -> Path:
    """Writes a random llama-architecture GGUF; dtype of the 2-D weights: f32, f16 or q8_0.

    residual_only: zero attention and FFN outputs, so the model is a bigram
    table (next token = argmax output(norm(embedding(token)))): heads that
    reproduce it can be built exactly (tiny_draft_heads.write_eagle3_bigram).
    perturb > 0 adds noise of that relative size to every weight matrix: the same
    seed with a small perturbation gives a "draft model" that mostly agrees with
    the unperturbed target.
    eos_id: the end-of-generation token; a token the random model does produce
    makes its greedy text end there (the weights do not depend on it).
    chat_template: written as tokenizer.chat_template (the weights do not depend on it).
    q_scale, v_scale: factors on the attention's query and value weights (q_scale=0: every
    position gets the same attention score, so attention averages the values).
    """
    rng = np.random.default_rng(seed)
    noise = np.random.default_rng(perturb_seed)
    n_vocab = len(vocab(vocab_variant)[0])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}-{seed}")
    add_hparams(w, n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv,
                n_rot=n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    add_tokenizer(w, vocab_variant, eos_id=eos_id)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    def mat(name: str, rows: int, cols: int, factor: float = 1.0) -> None:
        a = (rng.standard_normal((rows, cols)) * scale * factor / np.sqrt(cols)).astype(np.float32)
        if residual_only and (name.endswith("attn_output.weight") or name.endswith("ffn_down.weight")):
            a[:] = 0.0
        if perturb:
            a = a + (noise.standard_normal((rows, cols)) * perturb * scale / np.sqrt(cols)).astype(np.float32)
        if dtype == "f32":
            w.add_tensor(name, a)
        elif dtype == "f16":
            w.add_tensor(name, a.astype(np.float16))
        elif dtype == "q8_0":
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            raise ValueError(dtype)

    def norm(name: str) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32))

    n_embd_kv = n_embd // n_head * n_head_kv
    # token embeddings are scaled up so that random models do not collapse to one token
    w.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, n_embd)).astype(np.float32))
    for i in range(n_layer):
        norm(f"blk.{i}.attn_norm.weight")
        mat(f"blk.{i}.attn_q.weight", n_embd, n_embd, q_scale)
        mat(f"blk.{i}.attn_k.weight", n_embd_kv, n_embd)
        mat(f"blk.{i}.attn_v.weight", n_embd_kv, n_embd, v_scale)
        mat(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        norm(f"blk.{i}.ffn_norm.weight")
        mat(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        mat(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        mat(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    norm("output_norm.weight")
    mat("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
