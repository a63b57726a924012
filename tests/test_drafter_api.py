"""Drafters written in Python (subclasses of pyspec._core.Drafter) and the
engine's timing hooks."""
import os
import sys

import pytest

import pyspec
from pyspec import _core
from conftest import PROMPTS


class Replay(_core.Drafter):
    """Proposes a known continuation: every draft should be accepted."""

    def __init__(self, reference):
        super().__init__()
        self.reference = reference
        self.calls = []

    def begin(self, prompt):
        self.n = 0
        self.calls.append(("begin", len(prompt)))

    def draft(self, n_max):
        return self.reference[self.n:self.n + n_max]

    def accept(self, n_accepted, emitted):
        self.n += len(emitted)
        self.calls.append(("accept", n_accepted, len(emitted)))


def run(llm, drafter, n=40, n_max=4):
    r = llm._engine.generate(llm.tokenize(PROMPTS[0]), n_predict=n, draft_n_max=n_max, ignore_eos=True,
                             drafter=drafter)
    return list(r["tokens"]), pyspec.Stats(**r["stats"])


def test_python_drafter_replaying_the_target_is_always_accepted(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=512)
    ref = llm.generate(PROMPTS[0], max_tokens=1 + 9 * 5, ignore_eos=True).tokens
    d = Replay(ref)
    tokens, s = run(llm, d, n=len(ref))  # the first token, then 9 steps of 4 drafts + 1 bonus
    assert tokens == ref
    assert s.acceptance_rate == 1.0 and s.mean_acceptance_length == 5.0 and s.n_steps == 9
    assert d.calls[0] == ("begin", len(llm.tokenize(PROMPTS[0])))
    assert d.calls[1] == ("accept", 0, 1)  # the first token, sampled from the prompt
    assert all(c[0] == "accept" for c in d.calls[1:])


def test_python_drafter_with_wrong_tokens_changes_nothing(tiny_target):
    class Wrong(Replay):
        def draft(self, n_max):
            return [(t + 1) % 300 for t in super().draft(n_max)]

    llm = pyspec.LLM(tiny_target, n_ctx=512)
    ref = llm.generate(PROMPTS[0], max_tokens=40, ignore_eos=True).tokens
    tokens, s = run(llm, Wrong(ref))
    assert tokens == ref and s.draft_n > 0 and s.draft_n_accepted == 0


def test_python_drafter_errors_propagate_and_the_model_stays_usable(tiny_target):
    class Broken(Replay):
        def draft(self, n_max):
            raise RuntimeError("drafter exploded")

    class Incomplete(_core.Drafter):
        def begin(self, prompt):
            pass

    llm = pyspec.LLM(tiny_target, n_ctx=512)
    ref = llm.generate(PROMPTS[0], max_tokens=20, ignore_eos=True).tokens
    with pytest.raises(RuntimeError, match="drafter exploded"):
        run(llm, Broken(ref))
    with pytest.raises(pyspec.PyspecError, match="draft"):
        run(llm, Incomplete())
    assert llm.generate(PROMPTS[0], max_tokens=20, ignore_eos=True).tokens == ref


def test_timing_breakdown(tiny_target, tiny_draft):
    llm = pyspec.LLM(tiny_target, n_ctx=512, draft_model=tiny_draft)
    s = llm.generate(PROMPTS[1], max_tokens=48, spec_type="draft", draft_n_max=4, ignore_eos=True).stats
    # the parts nest (forward passes inside verification inside generation) and do not overlap
    # (drafting and the target's forward passes both fit in the generation time)
    assert 0 < s.forward_ms <= s.verify_ms <= s.predicted_ms
    assert 0 < s.draft_ms and s.draft_ms + s.forward_ms <= s.predicted_ms
    plain = llm.generate(PROMPTS[1], max_tokens=48, spec_type="none", ignore_eos=True).stats
    assert plain.draft_ms == 0 and plain.forward_ms <= plain.predicted_ms  # no drafter, no drafting time


def test_engine_forward_and_rollback(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=256)
    eng = llm._engine
    eng.reset()
    eng.decode([1, 5, 6, 7], 4, False)
    eng.forward([8, 9, 10])
    assert eng.n_past == 7
    eng.rollback(4)
    assert eng.n_past == 4
    with pytest.raises(pyspec.InvalidParameterError):
        eng.forward([])


_FORWARD_PICKS = """
import json, sys, numpy as np, pyspec
llm = pyspec.LLM(sys.argv[1], n_ctx=256)
eng = llm._engine
eng.reset()
eng.decode([1, 5, 6, 7], 4, False)
picks = eng.forward([8, 9, 10, 11, 12], True)
eng.rollback(4)
rows = eng.decode([8, 9, 10, 11, 12], 5, True)
print(json.dumps({"device": eng.device_argmax_available(), "picks": picks,
                  "host": [int(np.argmax(r)) for r in rows], "n_past": eng.n_past}))
"""


@pytest.mark.parametrize("device", [False, True])
def test_engine_forward_returns_each_rows_greedy_pick(tiny_target, device):
    # forward(tokens, argmax=True) is the verify step as a greedy verify runs it (the GPU verify curve
    # times it): its picks are the argmax of each row's logits, from the device sampler (forced on the
    # CPU backend with PYSPEC_DEVICE_ARGMAX=1) or from the host rows
    import json
    import subprocess
    env = dict(os.environ, PYSPEC_DEVICE_ARGMAX="1" if device else "0")
    p = subprocess.run([sys.executable, "-c", _FORWARD_PICKS, str(tiny_target)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["device"] is device
    assert r["picks"] == r["host"] and len(r["picks"]) == 5
    assert r["n_past"] == 9
    llm = pyspec.LLM(tiny_target, n_ctx=256)
    llm._engine.reset()
    assert llm._engine.forward([3, 4]) is None  # without argmax: the logits rows, no picks
    with pytest.raises(pyspec.InvalidParameterError, match="outside the vocabulary"):
        llm._engine.forward([llm.n_vocab], True)
