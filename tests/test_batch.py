"""The batch engine (_core.BatchEngine, pyspec.batch.BatchLLM): several sequences in one context,
one forward pass per step. Every check is against the same request run alone by the single-sequence
Engine / LLM, with the context a sequence gets (n_ctx_seq): with exact kernels the batch must not
change a single bit of a sequence's logits, whatever runs beside it."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pyspec
from pyspec import _core
from pyspec.batch import BatchLLM

PROMPTS = [
    "def quicksort(arr): return the list",
    "the sort of the list is the sort of the list",
    "x y z x y z x y",
    "import self class print len int str",
    "if left else right pivot middle",
    "the list is the list is the",
    "for x in arr: print x",
    "return self sort left right",
]


@pytest.fixture(scope="module")
def model(tiny_target):
    return _core.Model(str(tiny_target))


def toks(model, text):
    return model.tokenize(text, True, False)


def run_all(be):
    """Steps until every sequence has finished; returns the events of every step."""
    steps = []
    while be.n_active:
        steps.append(be.step())
    return steps


def solo_rows(engine, prompt, tokens):
    """The single-sequence Engine's logits for the rows each generated token was chosen from."""
    engine.reset()
    return engine.decode(prompt + tokens[:-1], chunk=7)[len(prompt) - 1:]


# ---- the engine ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pad", [0, 1])
def test_a_sequences_logits_are_bitwise_equal_with_and_without_neighbours(model, pad):
    be = _core.BatchEngine(model, n_seq_max=4, n_ctx=1024, n_batch=48, pad_rows=pad)
    p = toks(model, PROMPTS[0])
    # alone in the batch
    a = be.add(p, max_tokens=40, ignore_eos=True, record_logits=True)
    run_all(be)
    alone = be.recorded_logits(a)
    alone_tokens = be.take(a)["tokens"]
    # with three neighbours: one prefilling a long prompt in chunks, one speculating, one joining later
    b = be.add(p, max_tokens=40, ignore_eos=True, record_logits=True)
    be.add(toks(model, " ".join(PROMPTS)), max_tokens=30, ignore_eos=True)
    be.add(toks(model, PROMPTS[1]), max_tokens=25, ignore_eos=True, drafter=_core.NgramDrafter(3, 3))
    be.step(), be.step()
    be.add(toks(model, PROMPTS[2]), max_tokens=10, ignore_eos=True, drafter=_core.NgramDrafter(2, 1))
    run_all(be)
    beside = be.recorded_logits(b)
    assert be.take(b)["tokens"] == alone_tokens
    assert alone.shape == (40, model.n_vocab)
    assert np.array_equal(alone, beside)  # bitwise: the same float32 values
    # and both equal the single-sequence engine's rows
    assert np.array_equal(alone, solo_rows(_core.Engine(model, n_ctx=be.n_ctx_seq), p, alone_tokens))
    assert be.pad_rows == bool(pad) and (be.n_pad_rows > 0) == bool(pad)


_DEVICE_BATCH = """
import json, sys
from pyspec import _core
model = _core.Model(sys.argv[1])
be = _core.BatchEngine(model, n_seq_max=6, n_ctx=1536, n_batch=64, pad_rows=int(sys.argv[2]))
ids = [be.add(model.tokenize(t, True, False), max_tokens=20 + i, ignore_eos=True,
              drafter=_core.NgramDrafter(3, 2) if i % 2 else None) for i, t in enumerate(json.loads(sys.argv[3]))]
while be.n_active:
    be.step()
print(json.dumps({"available": be.device_argmax_available, "host_rows": be.device_rows_with_host_logits,
                  "tokens": [be.take(i)["tokens"] for i in ids], "steps": be.n_steps,
                  "counts": _core.device_argmax_counts()}))
"""


@pytest.mark.parametrize("pad", [0, 1])
def test_device_argmax_in_the_batch_picks_what_the_host_picks(model, tiny_target, pad):
    """Greedy sequences taking their argmax on the device (a backend sampler per slot; forced on
    for the CPU backend here), speculating or not, emit the tokens the host argmax gives alone."""
    import json
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYSPEC_DEVICE_ARGMAX="1")
    p = subprocess.run([sys.executable, "-c", _DEVICE_BATCH, str(tiny_target), str(pad), json.dumps(PROMPTS[:6])],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["available"]
    # only the picked token ids left the device, no row of logits (llama.cpp's greedy sampler copies them)
    assert r["host_rows"] == 0
    # the rows of a step share one argmax op (ggml-cuda scans a row per thread block: one op per
    # row was one serial scan of the vocabulary per row)
    c = r["counts"]
    assert c["ops"] <= r["steps"] and c["rows"] > 2 * c["ops"], (c, r["steps"])
    solo = _core.Engine(model, n_ctx=256)
    assert not solo.device_argmax_available()
    for i, (text, got) in enumerate(zip(PROMPTS[:6], r["tokens"])):
        assert got == solo.generate(toks(model, text), max_tokens=20 + i, ignore_eos=True)["tokens"], text


@pytest.mark.parametrize("spec,pad", [(None, 0), ("ngram", 0), ("ngram", 1)])
def test_concurrent_greedy_sequences_each_equal_their_solo_output(model, spec, pad):
    be = _core.BatchEngine(model, n_seq_max=8, n_ctx=2048, n_batch=96, pad_rows=pad)
    solo = _core.Engine(model, n_ctx=be.n_ctx_seq)
    ids = {}
    for i, text in enumerate(PROMPTS):
        d = _core.NgramDrafter(3, 3 - i % 2) if spec else None
        ids[be.add(toks(model, text), max_tokens=24 + 3 * i, ignore_eos=True, drafter=d, record_logits=True)] = text
    run_all(be)
    drafted = 0
    for sid, text in ids.items():
        rows = be.recorded_logits(sid)
        r = be.take(sid)
        want = solo.generate(toks(model, text), max_tokens=24 + 3 * list(ids).index(sid), ignore_eos=True)
        assert r["tokens"] == want["tokens"], text
        assert r["finish_reason"] == "length"
        assert np.array_equal(rows, solo_rows(solo, toks(model, text), r["tokens"]))
        drafted += r["stats"]["draft_n"]
        assert r["stats"]["predicted_n"] == len(r["tokens"])
    assert (drafted > 0) == (spec == "ngram")
    assert (be.n_pad_rows > 0) == bool(pad)  # the drafts differ in length: padding evens them out
    assert be.n_steps < sum(24 + 3 * i for i in range(len(PROMPTS)))  # batched: far fewer steps than tokens


def test_sampled_sequences_repeat_for_a_seed_and_equal_solo(model):
    be = _core.BatchEngine(model, n_seq_max=4, n_ctx=1024)
    solo = _core.Engine(model, n_ctx=be.n_ctx_seq)
    opts = pyspec.GenerationOptions(max_tokens=30, temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, ignore_eos=True)
    p = toks(model, PROMPTS[3])
    ids = [be.add(p, opts, seed=7), be.add(p, opts, seed=7, drafter=_core.NgramDrafter(2, 1)),
           be.add(p, opts, seed=8), be.add(p, opts, seed=7, spec_sampling="equal", drafter=_core.NgramDrafter(2, 1))]
    run_all(be)
    out = [be.take(i)["tokens"] for i in ids]
    want = solo.generate(p, opts, seed=7)["tokens"]
    assert out[0] == out[1] == out[3] == want
    assert out[2] != out[0]  # the seed matters


@pytest.mark.parametrize("pad", [0, 1])
def test_requests_join_and_leave_between_steps(model, pad):
    be = _core.BatchEngine(model, n_seq_max=3, n_ctx=768, n_batch=32, pad_rows=pad)
    solo = _core.Engine(model, n_ctx=be.n_ctx_seq)
    a = be.add(toks(model, PROMPTS[0]), max_tokens=60, ignore_eos=True)
    b = be.add(toks(model, PROMPTS[1]), max_tokens=3, ignore_eos=True)
    finished, added = [], {}
    while be.n_active:
        for sid, tokens, _, done, reason in be.step():
            if done:
                finished.append(sid)
        if finished == [b] and not added:  # b has left, its slot is free: c and d join while a runs
            assert be.n_free == 2
            added[be.add(toks(model, PROMPTS[2]), max_tokens=12, ignore_eos=True,
                         drafter=_core.NgramDrafter(3, 3))] = (PROMPTS[2], 12)
            added[be.add(toks(model, PROMPTS[3]), max_tokens=5, ignore_eos=True)] = (PROMPTS[3], 5)
            assert be.n_free == 0
            with pytest.raises(pyspec.PyspecError, match="busy"):
                be.add(toks(model, PROMPTS[4]), max_tokens=5)
    assert len(added) == 2 and finished[-1] == a
    for sid, (text, n_max) in [(a, (PROMPTS[0], 60)), (b, (PROMPTS[1], 3)), *added.items()]:
        assert be.take(sid)["tokens"] == solo.generate(toks(model, text), max_tokens=n_max, ignore_eos=True)["tokens"]


@pytest.mark.parametrize("pad", [0, 1])
def test_a_long_prompt_is_prefilled_in_chunks_without_stalling_the_others(model, pad):
    be = _core.BatchEngine(model, n_seq_max=2, n_ctx=2048, n_batch=16, pad_rows=pad)
    a = be.add(toks(model, PROMPTS[0]), max_tokens=400, ignore_eos=True, drafter=_core.NgramDrafter(2, 1))
    while not be.step():  # a's prompt, in chunks of 16
        pass
    long_prompt = toks(model, " ".join(PROMPTS * 2))
    assert len(long_prompt) > 100
    b = be.add(long_prompt, max_tokens=4, ignore_eos=True)
    steps = []
    while True:
        ev = {e[0]: e for e in be.step()}
        steps.append(ev)
        if b in ev:
            break
    # a committed a token in every step of b's prompt: the prompt took several steps of at most 16 tokens
    assert len(steps) >= len(long_prompt) // 16
    assert all(a in ev and ev[a][1] for ev in steps)
    run_all(be)
    solo = _core.Engine(model, n_ctx=be.n_ctx_seq)
    assert be.take(b)["tokens"] == solo.generate(long_prompt, max_tokens=4, ignore_eos=True)["tokens"]
    assert be.take(a)["tokens"] == solo.generate(toks(model, PROMPTS[0]), max_tokens=400, ignore_eos=True)["tokens"]


def test_cancel_ends_a_sequence_at_the_next_step_and_frees_its_slot(model):
    be = _core.BatchEngine(model, n_seq_max=2, n_ctx=1024, n_batch=16)
    solo = _core.Engine(model, n_ctx=be.n_ctx_seq)
    p = toks(model, PROMPTS[1])
    a = be.add(p, max_tokens=50, ignore_eos=True)
    b = be.add(toks(model, " ".join(PROMPTS)), max_tokens=50, ignore_eos=True)  # in its prompt throughout
    n_a = 0
    while n_a < 3:
        n_a += sum(len(e[1]) for e in be.step() if e[0] == a)
    be.cancel(a)
    be.cancel(b)
    be.cancel(12345)  # unknown: ignored
    ev = be.step()
    assert sorted((e[0], e[3], e[4]) for e in ev) == [(a, True, "interrupted"), (b, True, "interrupted")]
    assert be.n_active == 0 and be.n_free == 2
    ra, rb = be.take(a), be.take(b)
    assert 0 < len(ra["tokens"]) < 50 and not ra["in_prompt"]
    assert ra["tokens"] == solo.generate(p, max_tokens=len(ra["tokens"]), ignore_eos=True)["tokens"]
    assert rb["tokens"] == [] and rb["in_prompt"]
    with pytest.raises(pyspec.InvalidParameterError, match="has not finished"):
        be.take(a)
    c = be.add(p, max_tokens=8, ignore_eos=True)  # the freed slots serve the next requests as alone
    run_all(be)
    assert be.take(c)["tokens"] == solo.generate(p, max_tokens=8, ignore_eos=True)["tokens"]


def test_end_of_generation_and_context_limits(model):
    be = _core.BatchEngine(model, n_seq_max=2, n_ctx=512)  # 256 tokens per sequence
    solo = _core.Engine(model, n_ctx=be.n_ctx_seq)
    p = toks(model, PROMPTS[2])
    a = be.add(p, max_tokens=1000, ignore_eos=True, drafter=_core.NgramDrafter(3, 3))
    z = be.add(p, max_tokens=0)
    run_all(be)
    ra, want = be.take(a), solo.generate(p, max_tokens=1000, ignore_eos=True)
    assert ra["finish_reason"] == want["finish_reason"] == "context" and ra["tokens"] == want["tokens"]
    assert be.take(z)["tokens"] == [] and solo.generate(p, max_tokens=0)["tokens"] == []


def test_bad_settings_say_what_to_do(model, tiny_draft):
    for n in (0, 65):
        with pytest.raises(pyspec.InvalidParameterError, match=r"n_seq_max .* must be in \[1, 64\]"):
            _core.BatchEngine(model, n_seq_max=n)
    with pytest.raises(pyspec.InvalidParameterError, match="give n_batch >= n_seq_max"):
        _core.BatchEngine(model, n_seq_max=8, n_batch=4)
    with pytest.raises(pyspec.InvalidParameterError, match="fewer than 8 tokens each"):
        _core.BatchEngine(model, n_seq_max=4, n_ctx=16)
    be = _core.BatchEngine(model, n_seq_max=2, n_ctx=512)
    class Own(_core.Drafter):  # a drafter whose state the engine cannot know to be one sequence's
        def begin(self, prompt): pass
        def draft(self, n_max): return []
        def accept(self, n, emitted): pass
    with pytest.raises(pyspec.InvalidParameterError, match="'none', 'ngram' or 'draft' only.*pyspec serve -np 1"):
        be.add(toks(model, "the"), drafter=Own())
    shared = _core.NgramDrafter(3, 3)
    be.add(toks(model, "the"), max_tokens=2, drafter=shared)
    with pytest.raises(pyspec.InvalidParameterError, match="a drafter of its own"):
        be.add(toks(model, "the"), drafter=shared)
    run_all(be)
    with pytest.raises(pyspec.ContextOverflowError, match="n_ctx_seq=256"):
        be.add(list(range(3, 259)) * 1)
    with pytest.raises(pyspec.InvalidParameterError, match="outside the vocabulary"):
        be.add([1, 99999])
    with pytest.raises(pyspec.InvalidParameterError, match="the prompt is empty"):
        be.add([])
    with pytest.raises(pyspec.UnknownOptionError):
        be.add([1, 5], max_tokenz=3)
    assert be.n_active == 0 and be.n_free == 2  # nothing was queued by the failed adds


# ---- BatchLLM: the step loop on a thread of its own ---------------------------------------------------

@pytest.fixture(scope="module")
def llm(tiny_target):
    return pyspec.LLM(tiny_target, n_ctx=2048, n_batch=64)


def test_batchllm_serves_many_threads_each_as_alone(llm, tiny_target):
    with BatchLLM(llm, n_parallel=4) as b:
        solo = pyspec.LLM(tiny_target, n_ctx=b.n_ctx)
        jobs = [(PROMPTS[i % 8], ("none", "ngram")[i % 2], 20 + i) for i in range(12)]  # 12 requests, 4 slots

        def one(job):
            text, spec, n = job
            if spec == "ngram":
                with b.stream(text, max_tokens=n, ignore_eos=True, spec_type=spec) as s:
                    chunks = list(s)
                assert sum(len(c.tokens) for c in chunks) == n
                return s.result
            return b.generate(text, max_tokens=n, ignore_eos=True, spec_type=spec)
        with ThreadPoolExecutor(12) as ex:
            outs = list(ex.map(one, jobs))
        for (text, spec, n), g in zip(jobs, outs):
            want = solo.generate(text, max_tokens=n, ignore_eos=True)
            assert g.tokens == want.tokens and g.text == want.text and g.spec_type == spec
        assert b.n_waiting == 0


def test_batchllm_cancel_and_stop_from_on_step(llm):
    with BatchLLM(llm, n_parallel=2) as b:
        seen = []
        started = threading.Event()

        def on_step(tokens, n_from_draft):
            seen.extend(tokens)
            started.set()
            return len(seen) < 5  # stop after five tokens or more
        g = b.submit(PROMPTS[0], max_tokens=200, ignore_eos=True, on_step=on_step).result(120)
        assert g.finish_reason == "interrupted" and g.tokens == seen and 5 <= len(seen) < 200
        # cancelled while it waits for a slot: the two slots are held by long requests
        long = [b.submit(PROMPTS[1], max_tokens=2000, ignore_eos=True) for _ in range(2)]
        waiting = b.submit(PROMPTS[2], max_tokens=5)
        waiting.cancel()
        with pytest.raises(pyspec.GenerationInterrupted):
            waiting.result(120)
        for r in long:
            r.cancel()
            assert r.result(120).finish_reason in ("interrupted", "context")
        with pytest.raises(pyspec.InvalidParameterError, match="draft"):  # this LLM has no draft model
            b.generate(PROMPTS[0], spec_type="draft")
    with pytest.raises(pyspec.PyspecError, match="closed"):
        b.submit(PROMPTS[0])
    for n in (0, 65, 2.0):
        with pytest.raises(pyspec.InvalidParameterError, match=r"n_parallel must be an integer in \[1, 64\]"):
            BatchLLM(llm, n_parallel=n)
    with pytest.raises(pyspec.InvalidParameterError, match="n_batch >= 8"):
        BatchLLM(llm, n_parallel=8, n_batch=4)


@pytest.mark.gemma
@pytest.mark.slow
def test_gemma_concurrent_requests_equal_solo_bitwise(gemma_path):
    llm = pyspec.LLM(gemma_path, n_ctx=2048, n_batch=64)
    prompts = ["def fibonacci(n):", "The capital of France is", "1, 2, 3, 4, 5,", "Once upon a time",
               "import numpy as np\nimport", "The quick brown fox"]
    with BatchLLM(llm, n_parallel=len(prompts)) as b:
        reqs = [b.submit(p, max_tokens=16, spec_type=("none", "ngram")[i % 2], ignore_eos=True)
                for i, p in enumerate(prompts)]
        outs = [r.result(600) for r in reqs]
        n_ctx = b.n_ctx
    solo = pyspec.LLM(gemma_path, n_ctx=n_ctx)
    for p, g in zip(prompts, outs):
        assert g.tokens == solo.generate(p, max_tokens=16, ignore_eos=True).tokens, p
    # the logits, bitwise, of one sequence beside the others
    be = _core.BatchEngine(llm._model, n_seq_max=3, n_ctx=768, n_batch=32, pad_rows=1)
    p = llm.tokenize(prompts[0])
    a = be.add(p, max_tokens=8, ignore_eos=True, record_logits=True)
    be.add(llm.tokenize(prompts[1] * 8), max_tokens=8, ignore_eos=True)
    be.add(llm.tokenize(prompts[2]), max_tokens=8, ignore_eos=True, drafter=_core.NgramDrafter(2, 1))
    run_all(be)
    rows = be.recorded_logits(a)
    tokens = be.take(a)["tokens"]
    assert np.array_equal(rows, solo_rows(_core.Engine(llm._model, n_ctx=be.n_ctx_seq), p, tokens))


def test_draft_model_per_sequence_equals_solo(tiny_target, tiny_draft):
    # spec_type="draft" in a batch: a draft-model context per running sequence, lent to the next
    # request when one finishes; greedy output is each request's solo output
    llm = pyspec.LLM(tiny_target, n_ctx=1024, draft_model=tiny_draft)
    prompts = [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(7)]
    with BatchLLM(llm, n_parallel=3, n_ctx=768) as b:
        solo_llm = pyspec.LLM(tiny_target, n_ctx=b.n_ctx, draft_model=tiny_draft)
        reqs = [b.submit(p, max_tokens=40, ignore_eos=True, spec_type="draft", draft_n_max=4) for p in prompts]
        gens = [r.result(300) for r in reqs]
        assert len(b._draft_free) <= 3  # at most one drafter per slot was ever made
    for p, g in zip(prompts, gens):
        assert g.spec_type == "draft"
        assert g.tokens == solo_llm.generate(p, max_tokens=40, ignore_eos=True, spec_type="none").tokens
    assert sum(g.stats.draft_n for g in gens) > 0 and sum(g.stats.draft_n_accepted for g in gens) > 0
