#!/usr/bin/env python3
"""Write a tiny llama-architecture GGUF (F32 random weights, SPM byte vocab) for batch-invariance probes.

usage: make_tiny_llama.py OUT.gguf [--dim 256 --layers 2 --ffn 768 --heads 4 --kv-heads 2 --vocab 1024]
Quantize with: batch_invariance_probe --quantize OUT.gguf OUT-q4_0.gguf q4_0   (f16 q8_0 q4_0 q5_0 q4_k_m)
"""
import argparse

import gguf
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("tiny-llama-random")
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.dim)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_dimension_count(a.dim // a.heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(0)

    toks, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        toks.append(f"<0x{b:02X}>"); scores.append(0.0); types.append(6)
    i = 0
    while len(toks) < a.vocab:
        toks.append(f"\u2581t{i}"); scores.append(-float(i)); types.append(1); i += 1
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def t(name, *shape, scale=None):
        # gguf shape is reversed: numpy (rows, cols) -> ne = [cols, rows]
        s = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        w.add_tensor(name, (rng.standard_normal(shape) * s).astype(np.float32))

    d, f, hd = a.dim, a.ffn, a.dim // a.heads
    t("token_embd.weight", a.vocab, d, scale=1.0)
    for l in range(a.layers):
        w.add_tensor(f"blk.{l}.attn_norm.weight", (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32))
        w.add_tensor(f"blk.{l}.ffn_norm.weight", (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32))
        t(f"blk.{l}.attn_q.weight", d, d)
        t(f"blk.{l}.attn_k.weight", a.kv_heads * hd, d)
        t(f"blk.{l}.attn_v.weight", a.kv_heads * hd, d)
        t(f"blk.{l}.attn_output.weight", d, d)
        t(f"blk.{l}.ffn_gate.weight", f, d)
        t(f"blk.{l}.ffn_up.weight", f, d)
        t(f"blk.{l}.ffn_down.weight", d, f)
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    t("output.weight", a.vocab, d)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
