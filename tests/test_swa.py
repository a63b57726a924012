"""Sliding-window layers without swa_full (the default): Gemma 3's local layers keep a ring of
n_swa + n_batch cells, and speculative rollback stays bitwise exact beyond the window and
across the ring's wrap (patches/0007 places each position at cell pos % size)."""
import numpy as np
import pytest

import pyspec

# Gemma 3 270M: a window of 512 positions. With n_batch=64 (a batch of 65: a 64-token draft + 1)
# its SWA cache has pad(512 + 65, 256) = 768 cells; positions 768.. reuse cells 0..
WINDOW, N_BATCH, RING = 512, 64, 768


@pytest.fixture(scope="module")
def swa_llm(gemma_path):
    return pyspec.LLM(gemma_path, n_ctx=1024, n_batch=N_BATCH)


@pytest.fixture(scope="module")
def swa_prompt(swa_llm):
    import inspect
    import json.decoder
    toks = swa_llm.tokenize(inspect.getsource(json.decoder) * 3)
    assert len(toks) > RING
    return toks[:RING - 8]  # generation crosses the ring's wrap (position 768 -> cell 0)


def plain_rows(llm, prompt, n):
    """Greedy continuation of `prompt`, one token per forward: (tokens, their logits rows)."""
    e = llm._engine
    e.reset()
    row = e.decode(prompt, N_BATCH, False)[-1]
    toks, rows = [], []
    for _ in range(n):
        toks.append(int(np.argmax(row)))
        row = e.decode([toks[-1]], 1)[0]
        rows.append(row)
    return toks, np.stack(rows)


@pytest.mark.gemma
def test_rollback_across_the_ring_wrap_is_bitwise_exact(swa_llm, swa_prompt):
    # A verify batch that runs over the wrap (cells 765..767, then 0..), most of it rejected:
    # its cells are freed, and the next token must land in the cell plain decoding gives it
    # (stock llama.cpp restarts from the lowest freed cell, 0, and the window's cells then come
    # in another order: the logits differ in their last bits).
    e = swa_llm._engine
    toks, ref = plain_rows(swa_llm, swa_prompt, 24)
    p = len(swa_prompt)
    e.reset()
    e.decode(swa_prompt, N_BATCH, False)
    # position p holds toks[0]; draft toks[1..] with a wrong token after two good ones
    batch = toks[:3] + [(toks[3] + 1) % swa_llm.n_vocab] + toks[4:16]
    rows = e.decode(batch, len(batch))
    np.testing.assert_array_equal(rows[:3], ref[:3])
    e.rollback(p + 3)  # keeps toks[0..2]
    got = [e.decode([t], 1)[0] for t in toks[3:20]]
    for i, r in enumerate(got):
        assert np.array_equal(r.view(np.uint32), ref[3 + i].view(np.uint32)), f"position {p + 3 + i}"


@pytest.mark.gemma
def test_ngram_equals_plain_beyond_the_window(swa_llm, swa_prompt, gemma_path):
    plain = swa_llm.generate(swa_prompt, max_tokens=96, ignore_eos=True)
    spec = swa_llm.generate(swa_prompt, max_tokens=96, ignore_eos=True, spec_type="ngram", draft_n_max=16)
    assert spec.tokens == plain.tokens
    assert 0 < spec.stats.draft_n_accepted < spec.stats.draft_n  # accepted and rejected drafts: rollbacks


def test_swa_full_is_an_option(tiny_target):
    with pytest.raises(pyspec.InvalidParameterError, match="swa_full must be True or False"):
        pyspec.LLM(tiny_target, n_ctx=256, swa_full="yes")


@pytest.mark.gemma
def test_memory_report_shows_the_smaller_cache(gemma_path):
    ring = pyspec.memory_report(gemma_path, n_ctx=16384)
    full = pyspec.memory_report(gemma_path, n_ctx=16384, swa_full=True)
    # 18 layers of 1 KV head x 256 (K and V, f16): 3 global layers keep 16384 cells, 15 local
    # layers 1024 (n_swa 512 + a 512-token batch) instead of 16384
    per_cell = 2 * 256 * 2
    assert full["target_kv_bytes"] == 18 * 16384 * per_cell
    assert ring["target_kv_bytes"] == (3 * 16384 + 15 * 1024) * per_cell
    llm = pyspec.LLM(gemma_path, n_ctx=2048)
    assert llm.memory()["target_kv_bytes"] == (3 * 2048 + 15 * 1024) * per_cell
