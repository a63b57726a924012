"""Writes tiny random GGUF targets that carry MTP ("nextn") layers, for the
pinned llama.cpp's `draft-mtp` speculation, with the `gguf` package in well
under a second each. They share the llama-SPM vocabulary of tiny_models.

An MTP target is one GGUF: `<arch>.block_count` counts the trunk layers plus
the appended nextn blocks, and `<arch>.nextn_predict_layers` says how many of
the last blocks are nextn blocks, so their tensors are `blk.{n_layer + k}.*`
(`llama_model_n_layer()` returns only the trunk count,
`llama_model_n_layer_nextn()` the nextn count). A nextn block is an ordinary
decoder block of the architecture plus `nextn.eh_proj` (2*n_embd -> n_embd,
applied to concat(enorm(embed(x_{t+1})), hnorm(h_t))), `nextn.enorm`,
`nextn.hnorm` and optionally `nextn.shared_head_norm` (falls back to
`output_norm`); the LM head and token embeddings are shared with the trunk.
The nextn tensors load only with `llama_model_params.load_mtp = true`, and run
only in a second context on the same model created with
`ctx_type = LLAMA_CONTEXT_TYPE_MTP`.

- write_mtp_dense: arch `hy_v3` (Hunyuan V3), the simplest non-recurrent MTP
  architecture of the pin: GQA attention with q/k RMS norms, a plain KV cache
  (no sliding window) and dense SwiGLU FFNs (its MoE tensors are optional);
  it takes any number of nextn blocks, which llama.cpp chains one head per
  draft step when there are several.
- write_mtp_hybrid: arch `qwen35` (Qwen 3.5 dense): gated-DeltaNet linear
  attention layers with a full-attention layer every `full_attention_interval`
  layers, dense FFNs, and exactly one nextn block (a full-attention block).

Architectures whose loader and graph run nextn blocks in the pin (an
LLM_GRAPH_TYPE_DECODER_MTP graph): bailingmoe3, cohere2moe, deepseek2,
deepseek32, deepseek4, glm4moe, glm-dsa, hy_v3, mimo2, nemotron_h_moe,
qwen3next, qwen35, qwen35moe, step35. Only hy_v3, mimo2 and step35 take more
than one nextn block. gemma4 has no nextn blocks of its own: its MTP drafter
is the separate gemma4-assistant model, which shares the target's KV cache.
bailingmoe2, dots3note, exaone4, exaone-moe, glm4 and nemotron_h keep nextn
tensors in the GGUF but have no MTP graph, glm5-next's MTP graph is not
implemented yet, and graniteswitch reuses nextn_predict_layers for something
else.

mimic=True makes each nextn block a copy of trunk layer 0 (for the hybrid: of
its first full-attention layer) whose eh_proj passes the token embedding
through and ignores the hidden state (token embedding rows have unit RMS, so
enorm(embed(x)) == embed(x)). A dense target with n_layer=1 then drafts
exactly the target's greedy tokens, so drafts are accepted (nearly) always;
more trunk layers, the hybrid's recurrent layers, or head_noise > 0 (relative
noise on the copied matrices) make the head agree less often. Without mimic,
random heads are (almost) never accepted.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from tiny_models import add_hparams, add_tokenizer, vocab


class _Writer:
    """A GGUFWriter with the shared tokenizer, common metadata and
    random-weight helpers; tensors are kept until finish() so that nextn blocks
    can copy trunk weights."""

    def __init__(self, path: Path, arch: str, *, seed: int, scale: float, n_embd: int, n_layer: int,
                 n_nextn: int, n_head: int, n_head_kv: int, head_dim: int, n_rot: int, n_ff: int,
                 n_ctx: int, n_vocab: int = 0) -> None:
        self.path = path
        self.rng = np.random.default_rng(seed)
        self.scale = scale
        self.tensors: dict[str, np.ndarray] = {}
        self.n_vocab = len(vocab(0, n_vocab)[0])
        w = self.w = gguf.GGUFWriter(str(path), arch)
        w.add_name(f"tiny-mtp-{arch}-{seed}")
        add_hparams(w, n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer + n_nextn, n_ff=n_ff, n_head=n_head,
                    n_head_kv=n_head_kv, n_rot=n_rot, head_dim=head_dim)
        w.add_nextn_predict_layers(n_nextn)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_vocab_size(self.n_vocab)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        add_tokenizer(w, 0, n_vocab)

    def mat(self, name: str, rows: int, cols: int) -> None:
        """A (rows, cols) matrix, i.e. ggml ne = {cols, rows}, ~N(0, scale^2/cols)."""
        self.tensors[name] = (self.rng.standard_normal((rows, cols)) * self.scale / np.sqrt(cols)).astype(np.float32)

    def norm(self, name: str, n: int) -> None:
        self.tensors[name] = (1.0 + 0.1 * self.rng.standard_normal(n)).astype(np.float32)

    def ones(self, name: str, n: int) -> None:
        self.tensors[name] = np.ones(n, dtype=np.float32)

    def embeddings(self, n_embd: int) -> None:
        """Token embeddings with unit-RMS rows (large enough that random models
        do not collapse to one token, and unchanged by an all-ones RMS norm)."""
        e = self.rng.standard_normal((self.n_vocab, n_embd))
        self.tensors["token_embd.weight"] = (e / np.sqrt(np.mean(e * e, axis=1, keepdims=True))).astype(np.float32)

    def copy_block(self, src: int, dst: int, noise: float) -> None:
        """Copies every blk.{src}.* tensor to blk.{dst}.*, adding relative noise to matrices."""
        prefix = f"blk.{src}."
        for name, a in list(self.tensors.items()):
            if name.startswith(prefix):
                if noise and a.ndim == 2:
                    a = a + (self.rng.standard_normal(a.shape) * noise * a.std()).astype(np.float32)
                self.tensors[f"blk.{dst}." + name[len(prefix):]] = a.copy()

    def nextn(self, il: int, n_embd: int, mimic: bool) -> None:
        """The nextn-specific tensors of block il."""
        if mimic:
            eh = np.zeros((n_embd, 2 * n_embd), dtype=np.float32)
            eh[:, :n_embd] = np.eye(n_embd, dtype=np.float32)  # pass enorm(embed(x)) through, drop h
            self.tensors[f"blk.{il}.nextn.eh_proj.weight"] = eh
            self.tensors[f"blk.{il}.nextn.shared_head_norm.weight"] = self.tensors["output_norm.weight"].copy()
        else:
            self.mat(f"blk.{il}.nextn.eh_proj.weight", n_embd, 2 * n_embd)
            self.norm(f"blk.{il}.nextn.shared_head_norm.weight", n_embd)
        self.ones(f"blk.{il}.nextn.enorm.weight", n_embd)
        self.ones(f"blk.{il}.nextn.hnorm.weight", n_embd)

    def finish(self) -> Path:
        for name, a in self.tensors.items():
            self.w.add_tensor(name, a)
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()
        return self.path


def write_mtp_dense(path: Path, *, seed: int = 0, n_nextn: int = 1, n_layer: int = 2, n_embd: int = 64,
                    n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, n_ctx: int = 2048,
                    scale: float = 0.5, mimic: bool = False, head_noise: float = 0.0, n_vocab: int = 0) -> Path:
    """Writes a random hy_v3 target: n_layer dense trunk layers plus n_nextn
    nextn blocks (blk.{n_layer}..blk.{n_layer + n_nextn - 1}); n_vocab pads
    the tiny vocabulary to that size (0: no padding)."""
    head_dim = n_embd // n_head
    t = _Writer(path, "hy_v3", seed=seed, scale=scale, n_embd=n_embd, n_layer=n_layer, n_nextn=n_nextn,
                n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_rot=head_dim, n_ff=n_ff, n_ctx=n_ctx,
                n_vocab=n_vocab)
    t.w.add_expert_feed_forward_length(0)  # required key; no experts

    def block(i: int) -> None:
        t.norm(f"blk.{i}.attn_norm.weight", n_embd)
        t.mat(f"blk.{i}.attn_q.weight", n_head * head_dim, n_embd)
        t.mat(f"blk.{i}.attn_k.weight", n_head_kv * head_dim, n_embd)
        t.mat(f"blk.{i}.attn_v.weight", n_head_kv * head_dim, n_embd)
        t.norm(f"blk.{i}.attn_q_norm.weight", head_dim)
        t.norm(f"blk.{i}.attn_k_norm.weight", head_dim)
        t.mat(f"blk.{i}.attn_output.weight", n_embd, n_head * head_dim)
        t.norm(f"blk.{i}.ffn_norm.weight", n_embd)
        t.mat(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t.mat(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t.mat(f"blk.{i}.ffn_down.weight", n_embd, n_ff)

    t.embeddings(n_embd)
    t.norm("output_norm.weight", n_embd)
    t.mat("output.weight", t.n_vocab, n_embd)
    for i in range(n_layer):
        block(i)
    for il in range(n_layer, n_layer + n_nextn):
        if mimic:
            t.copy_block(0, il, head_noise)
        else:
            block(il)
        t.nextn(il, n_embd, mimic)
    return t.finish()


def write_mtp_hybrid(path: Path, *, seed: int = 0, n_layer: int = 4, full_attention_interval: int = 2,
                     n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 16, n_rot: int = 8,
                     n_ff: int = 128, ssm_d_state: int = 16, ssm_n_k_heads: int = 2, ssm_n_v_heads: int = 4,
                     ssm_d_conv: int = 4, n_ctx: int = 2048, scale: float = 0.5, mimic: bool = False,
                     head_noise: float = 0.0) -> Path:
    """Writes a random qwen35 target: n_layer trunk layers, where layer i is
    full attention iff (i + 1) % full_attention_interval == 0 and gated
    DeltaNet otherwise, plus one nextn block (blk.{n_layer}). mimic copies the
    first full-attention layer into the nextn block (the head then agrees
    with the target only partly, since the trunk is deeper than one layer)."""
    if mimic and full_attention_interval > n_layer:
        raise ValueError("mimic needs a full-attention trunk layer to copy")
    t = _Writer(path, "qwen35", seed=seed, scale=scale, n_embd=n_embd, n_layer=n_layer, n_nextn=1,
                n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_rot=n_rot, n_ff=n_ff, n_ctx=n_ctx)
    # interleaved M-RoPE over n_rot/2 frequency pairs (text positions are equal in every section)
    sections = [n_rot // 4, n_rot // 2 - n_rot // 4, 0, 0]
    t.w.add_rope_dimension_sections(sections)
    t.w.add_full_attention_interval(full_attention_interval)
    t.w.add_ssm_conv_kernel(ssm_d_conv)
    t.w.add_ssm_state_size(ssm_d_state)  # head_k_dim == head_v_dim
    t.w.add_ssm_group_count(ssm_n_k_heads)
    t.w.add_ssm_time_step_rank(ssm_n_v_heads)
    t.w.add_ssm_inner_size(ssm_d_state * ssm_n_v_heads)
    key_dim = ssm_d_state * ssm_n_k_heads
    value_dim = ssm_d_state * ssm_n_v_heads
    conv_dim = 2 * key_dim + value_dim

    def common(i: int) -> None:
        t.norm(f"blk.{i}.attn_norm.weight", n_embd)
        t.norm(f"blk.{i}.post_attention_norm.weight", n_embd)
        t.mat(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t.mat(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t.mat(f"blk.{i}.ffn_down.weight", n_embd, n_ff)

    def full_attention(i: int) -> None:
        common(i)
        t.mat(f"blk.{i}.attn_q.weight", 2 * n_head * head_dim, n_embd)  # per head: query then output gate
        t.mat(f"blk.{i}.attn_k.weight", n_head_kv * head_dim, n_embd)
        t.mat(f"blk.{i}.attn_v.weight", n_head_kv * head_dim, n_embd)
        t.norm(f"blk.{i}.attn_q_norm.weight", head_dim)
        t.norm(f"blk.{i}.attn_k_norm.weight", head_dim)
        t.mat(f"blk.{i}.attn_output.weight", n_embd, n_head * head_dim)

    def linear_attention(i: int) -> None:
        common(i)
        t.mat(f"blk.{i}.attn_qkv.weight", conv_dim, n_embd)
        t.mat(f"blk.{i}.attn_gate.weight", value_dim, n_embd)  # z, gates the output norm
        t.mat(f"blk.{i}.ssm_beta.weight", ssm_n_v_heads, n_embd)
        t.mat(f"blk.{i}.ssm_alpha.weight", ssm_n_v_heads, n_embd)
        t.mat(f"blk.{i}.ssm_conv1d.weight", conv_dim, ssm_d_conv)  # ggml ne = {d_conv, conv_dim}
        # as converted from a checkpoint: ssm_a = -exp(A_log) with A in [1, 16), dt_bias = 1,
        # so every head decays by exp(ssm_a * softplus(alpha + dt_bias)) < 1 per token
        t.tensors[f"blk.{i}.ssm_a"] = -t.rng.uniform(1.0, 16.0, ssm_n_v_heads).astype(np.float32)
        t.tensors[f"blk.{i}.ssm_dt.bias"] = np.ones(ssm_n_v_heads, dtype=np.float32)
        t.norm(f"blk.{i}.ssm_norm.weight", ssm_d_state)
        t.mat(f"blk.{i}.ssm_out.weight", n_embd, value_dim)

    t.embeddings(n_embd)
    t.norm("output_norm.weight", n_embd)
    t.mat("output.weight", t.n_vocab, n_embd)
    for i in range(n_layer):
        (full_attention if (i + 1) % full_attention_interval == 0 else linear_attention)(i)
    if mimic:
        t.copy_block(full_attention_interval - 1, n_layer, head_noise)
    else:
        full_attention(n_layer)
    t.nextn(n_layer, n_embd, mimic)
    return t.finish()
