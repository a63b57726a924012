"""Exact mode: a token's logits are bitwise identical whatever batch computes them."""
import numpy as np
import pytest

import pyspec
from conftest import PROMPTS

WIDTHS = [1, 2, 5, 16, 64]


def logits_by_width(llm, prompt_tokens, follow, widths=WIDTHS):
    eng = llm._engine
    out = {}
    for w in widths:
        eng.reset()
        eng.decode(prompt_tokens, 64, False)
        out[w] = eng.decode(follow, w)
    return out


def assert_bitwise_equal(rows):
    """Every width's rows are bitwise the width-1 rows; the message lists each width that differs."""
    ref = rows[1]
    bad = [f"width {w}: max |diff| {float(np.abs(r - ref).max()):g}"
           for w, r in rows.items() if not np.array_equal(r.view(np.uint32), ref.view(np.uint32))]
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("fixture", ["tiny_target", "tiny_target_f16", "tiny_target_q8"])
@pytest.mark.parametrize("threads", [1, 2])
def test_tiny_logits_do_not_depend_on_the_batch(request, fixture, threads):
    # Two threads split each matrix between them: the same check on fewer rows and widths
    # (their threads spin, so on a busy machine every forward costs many times more).
    n, widths = (64, WIDTHS) if threads == 1 else (16, [1, 2, 5, 16])
    llm = pyspec.LLM(request.getfixturevalue(fixture), n_ctx=512, n_threads=threads)
    prompt = llm.tokenize(PROMPTS[0])
    follow = llm.generate(PROMPTS[0], max_tokens=n, ignore_eos=True).tokens
    assert_bitwise_equal(logits_by_width(llm, prompt, follow, widths))


def test_prompt_chunking_does_not_change_logits(tiny_target_q8):
    llm = pyspec.LLM(tiny_target_q8, n_ctx=512)
    toks = llm.tokenize(" ".join(PROMPTS) * 3)
    rows = {}
    for w in [1, 7, 64, 512]:
        llm._engine.reset()
        rows[w] = llm._engine.decode(toks, w)
    ref = rows[1]
    for w, r in rows.items():
        assert np.array_equal(r, ref), w


@pytest.mark.gemma
def test_gemma_logits_do_not_depend_on_the_batch(gemma):
    from pyspec.cli import DEMO_PROMPT
    prompt = gemma.tokenize(DEMO_PROMPT)
    follow = gemma.generate(DEMO_PROMPT, max_tokens=64, ignore_eos=True).tokens
    assert_bitwise_equal(logits_by_width(gemma, prompt, follow))


def test_exact_mode_belongs_to_the_context_not_the_process(tiny_target_q8, tiny_target_f16):
    # An exact LLM speculating beside a fast LLM in another thread (and a fast-kernel drafter
    # context of its own) keeps its solo output: the switch is per context (patches 0001, 0004),
    # where it used to be one process-wide flag that each forward set.
    import threading
    exact = pyspec.LLM(tiny_target_q8, n_ctx=512, n_threads=1, draft_model=tiny_target_f16)
    fast = pyspec.LLM(tiny_target_f16, n_ctx=512, n_threads=1, kernels="fast")
    solo = {p: exact.generate(p, max_tokens=48, ignore_eos=True).tokens for p in PROMPTS}
    fast_solo = {p: fast.generate(p, max_tokens=48, ignore_eos=True).tokens for p in PROMPTS}
    got, got_fast, errors = {}, {}, []

    def run_exact():
        try:
            for _ in range(3):
                for p in PROMPTS:
                    for t in ("ngram", "draft"):
                        got.setdefault((p, t), []).append(
                            exact.generate(p, max_tokens=48, ignore_eos=True, spec_type=t, draft_n_max=8).tokens)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def run_fast():
        try:
            for _ in range(6):
                for p in PROMPTS:
                    got_fast.setdefault(p, []).append(
                        fast.generate(p, max_tokens=48, ignore_eos=True, spec_type="ngram", draft_n_max=16).tokens)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run_exact), threading.Thread(target=run_fast)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert exact._engine.exact and not fast._engine.exact
    for (p, _), runs in got.items():
        assert all(r == solo[p] for r in runs), p
    assert all(len(r) == len(fast_solo[p]) for p, runs in got_fast.items() for r in runs)
