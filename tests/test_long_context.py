"""Long context on the CPU: exact kernels keep speculation lossless with 16k tokens in an f16
KV cache and 8k in a q8_0 one (K and V), a token's logits do not depend on the batch width or
the thread count there, and the default model finds a fact placed that far back.

Each KV type's long prompt is read once (a module fixture) and the generations after it keep
it in the memory (Engine.reuse_prefix), computing only what they add. Measured with 2 threads
on 2 idle cores: 16k tokens with an f16 cache 96 s, 16k with q8_0 179 s (its attention kernel
is slower, hence 8k here); with another busy process on the cores, 2 threads took 751 s for
the f16 prompt, so the prompts are read with the tests' one thread (conftest) and only the
thread test runs forwards with 2. Marked slow; they run by default.
"""
import inspect
from types import SimpleNamespace

import numpy as np
import pytest

import pyspec
import tiny_models

N_LONG = 16384  # prompt tokens with an f16 cache
N_GEN = 64
NEEDLE = "# Note for maintainers: the access code for the vault is 48213.\n\n"
QUESTION = "\n\n# Question: what is the access code for the vault?\n# Answer: the access code for the vault is"


def filler_text() -> str:
    """Deterministic code to fill a long context with (the standard library's own source)."""
    import argparse
    import ast
    import collections
    import json.decoder
    return "".join(inspect.getsource(m) for m in (argparse, ast, json.decoder, collections, inspect))


def needle_prompt(llm, n: int) -> list:
    """n tokens: a fact, code, then a question about the fact. Gemma 3 270M is a base model: it
    answers by continuing the question's own sentence."""
    head, tail = llm.tokenize(NEEDLE), llm.tokenize(QUESTION, add_special=False)
    filler = llm.tokenize(filler_text(), add_special=False)
    assert len(filler) >= n, "not enough filler text for the long prompt"
    return head + filler[:n - len(head) - len(tail)] + tail


@pytest.fixture(scope="module", params=[("f16", N_LONG), ("q8_0", N_LONG // 2)], ids=["f16-16k", "q8_0-8k"])
def long_run(request, gemma_path):
    """The default model with n prompt tokens in the memory and its plain greedy continuation,
    for one KV cache type (K and V)."""
    kv, n = request.param
    llm = pyspec.LLM(gemma_path, n_ctx=n + 512, type_k=kv, type_v=kv)
    llm._engine.reuse_prefix = True
    toks = needle_prompt(llm, n)
    progress = []
    plain = llm.generate(toks, max_tokens=N_GEN, ignore_eos=True, on_prompt=lambda d, t: progress.append((d, t)))
    return SimpleNamespace(llm=llm, kv=kv, n=n, tokens=toks, plain=plain, progress=progress)


@pytest.mark.slow
@pytest.mark.gemma
def test_the_long_prompt_was_read_in_chunks_with_progress(long_run):
    n = long_run.n
    assert long_run.plain.stats.prompt_n == n
    done = [d for d, _ in long_run.progress]
    assert done == list(range(512, n + 1, 512)) and {t for _, t in long_run.progress} == {n}


@pytest.mark.slow
@pytest.mark.gemma
def test_the_model_finds_a_fact_far_back(long_run):
    # Measured: the default model answers with the number, f16 and q8_0 caches alike.
    assert long_run.plain.text.startswith(" 48213"), long_run.plain.text


@pytest.mark.slow
@pytest.mark.gemma
def test_ngram_speculation_equals_plain(long_run):
    llm = long_run.llm
    spec = llm.generate(long_run.tokens, max_tokens=N_GEN, ignore_eos=True, spec_type="ngram", draft_n_max=16)
    assert llm._engine.n_prompt_reused == long_run.n - 1 and spec.stats.prompt_n == 1
    assert spec.tokens == long_run.plain.tokens
    assert 0 < spec.stats.draft_n_accepted < spec.stats.draft_n  # accepted and rejected drafts: rollbacks


@pytest.mark.slow
@pytest.mark.gemma
def test_logits_do_not_depend_on_width_or_threads(long_run):
    # Attention over 8k-16k cells: the exact kernels' flash attention takes every query alone and
    # the KV cells in order on one thread (patch 0001: no split of the KV between threads, whose
    # partial sums would depend on the length and the thread count).
    e = long_run.llm._engine
    follow = long_run.plain.tokens[:17]
    rows = {}
    try:
        for threads, width in [(1, 17), (2, 17), (1, 1), (2, 5)]:
            e.set_n_threads(threads)
            e.rollback(long_run.n)
            rows[(threads, width)] = e.decode(follow, width)
    finally:
        e.set_n_threads(long_run.llm.n_threads)
    ref = rows[(1, 17)]
    bad = [k for k, r in rows.items() if not np.array_equal(r.view(np.uint32), ref.view(np.uint32))]
    assert not bad, f"(threads, width) whose logits differ from (1, 17): {bad}"
    # and they are the rows the plain generation chose its tokens from
    assert [int(t) for t in ref.argmax(axis=1)[:16]] == long_run.plain.tokens[1:17]


@pytest.mark.slow
def test_draft_model_speculation_equals_plain_at_4k(model_dir):
    # No smaller model shares Gemma's vocabulary, so the draft-model path runs on a tiny pair (its
    # draft context holds the long prompt too). 4k tokens: 16k took 220 s, exact attention being
    # one query at a time over every cell.
    n = 4096
    target = tiny_models.write_llama(model_dir / "long_target.gguf", seed=0, n_ctx=8192)
    draft = tiny_models.write_llama(model_dir / "long_draft.gguf", seed=0, perturb=0.6, n_ctx=8192)
    llm = pyspec.LLM(target, n_ctx=n + 512, draft_model=draft)
    llm._engine.reuse_prefix = True
    words = tiny_models.WORDS
    rng = np.random.default_rng(0)
    toks = llm.tokenize(" ".join(words[i] for i in rng.integers(0, len(words), 6000)))[:n]
    assert len(toks) == n
    plain = llm.generate(toks, max_tokens=N_GEN, ignore_eos=True)
    for spec_type in ("draft", "ngram"):
        spec = llm.generate(toks, max_tokens=N_GEN, ignore_eos=True, spec_type=spec_type, draft_n_max=8)
        assert spec.tokens == plain.tokens, spec_type
        assert spec.stats.draft_n_accepted > 0, spec_type


def test_exact_attention_sums_a_long_window_in_f32(model_dir):
    """A head that spreads its weight over n positions adds n values before dividing by the
    weights' sum. Exact mode's one-query flash-attention kernel kept that sum in f16 for an f16
    cache (patch 0008 makes it f32): it loses precision as the window grows and overflows past
    65504. Built to show it: queries of zero (every score equal, so attention averages the
    values), values of ~150 and one token repeated 3000 times, so every value is the same."""
    path = tiny_models.write_llama(model_dir / "flat_attention.gguf", seed=0, q_scale=0.0, v_scale=300.0,
                                   n_ctx=4096)
    rows = {}
    for kv in ("f16", "f32"):
        llm = pyspec.LLM(path, n_ctx=3072, type_k=kv, type_v=kv)
        rows[kv] = llm._engine.decode([llm.tokenize("x")[-1]] * 3000, 512)
    assert np.isfinite(rows["f16"]).all(), "non-finite logits with an f16 cache (an f16 accumulator overflowed)"
    # an f16 cache stores the values rounded to f16, nothing more: as an f32 cache
    np.testing.assert_allclose(rows["f16"], rows["f32"], rtol=0, atol=1e-2 * np.abs(rows["f32"]).max())


def test_a_reused_prefix_gives_what_a_fresh_prefill_gives(tiny_target):
    """Engine.reuse_prefix: a second prompt that shares a prefix with what the memory holds
    computes only the rest, and generates exactly what a fresh context does."""
    words = " ".join(tiny_models.WORDS)
    fresh = pyspec.LLM(tiny_target, n_ctx=1024, n_batch=64)
    llm = pyspec.LLM(tiny_target, n_ctx=1024, n_batch=64)
    llm._engine.reuse_prefix = True
    first = llm.tokenize(words * 4)
    second = first[:300] + llm.tokenize("x y z the sort", add_special=False)
    llm.generate(first, max_tokens=8, ignore_eos=True)
    assert llm._engine.n_prompt_reused == 0
    for spec_type in ("none", "ngram"):
        got = llm.generate(second, max_tokens=32, ignore_eos=True, spec_type=spec_type)
        want = fresh.generate(second, max_tokens=32, ignore_eos=True, spec_type=spec_type)
        assert got.tokens == want.tokens, spec_type
        assert llm._engine.n_prompt_reused >= 300 and got.stats.prompt_n == len(second) - llm._engine.n_prompt_reused
    # fast kernels: a different chunking changes the logits, so nothing is reused
    fast = pyspec.LLM(tiny_target, n_ctx=1024, kernels="fast")
    fast._engine.reuse_prefix = True
    fast.generate(first, max_tokens=4)
    fast.generate(first, max_tokens=4)
    assert fast._engine.n_prompt_reused == 0
