"""The pure pieces: sampler, verifier and n-gram matcher, on hand-built logits."""
import numpy as np
import pytest

from pyspec import _core
from pyspec.errors import InvalidParameterError

V = 10


def onehot_rows(tokens, v=V, hi=5.0):
    rows = np.zeros((len(tokens), v), dtype=np.float32)
    for i, t in enumerate(tokens):
        rows[i, t] = hi
    return rows


def test_greedy_perfect_match_gives_all_plus_bonus():
    logits = onehot_rows([3, 4, 5, 6])
    n, toks = _core.verify_accept_if_equal(logits, [3, 4, 5])
    assert n == 3 and toks == [3, 4, 5, 6]


def test_greedy_early_mismatch_stops_with_target_token():
    logits = onehot_rows([3, 4, 5, 6])
    n, toks = _core.verify_accept_if_equal(logits, [3, 9, 5])
    assert n == 1 and toks == [3, 4]


def test_greedy_all_rejected():
    logits = onehot_rows([3, 4])
    n, toks = _core.verify_accept_if_equal(logits, [7])
    assert n == 0 and toks == [3]


def test_empty_draft_gives_bonus_only():
    n, toks = _core.verify_accept_if_equal(onehot_rows([8]), [])
    assert n == 0 and toks == [8]


def test_argmax_ties_pick_lowest_id():
    row = np.zeros(V, dtype=np.float32)
    row[[2, 5]] = 1.0
    assert _core.sample_token(row) == 2


def test_verify_shape_is_checked():
    with pytest.raises(InvalidParameterError):
        _core.verify_accept_if_equal(onehot_rows([1, 2]), [1, 2])


def test_sampled_verify_equals_per_position_sampling():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 50)).astype(np.float32)
    kw = dict(temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    target = [_core.sample_token(logits[i], pos=100 + i, **kw) for i in range(6)]
    n, toks = _core.verify_accept_if_equal(logits, target[:5], pos0=100, **kw)
    assert n == 5 and toks == target
    wrong = list(target[:5])
    wrong[2] = (wrong[2] + 1) % 50
    n, toks = _core.verify_accept_if_equal(logits, wrong, pos0=100, **kw)
    assert n == 2 and toks == target[:3]


def test_sampling_is_seeded_and_position_keyed():
    row = np.random.default_rng(1).standard_normal(100).astype(np.float32)
    kw = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = [_core.sample_token(row, seed=7, pos=p, **kw) for p in range(200)]
    b = [_core.sample_token(row, seed=7, pos=p, **kw) for p in range(200)]
    c = [_core.sample_token(row, seed=8, pos=p, **kw) for p in range(200)]
    assert a == b and a != c


def test_sampling_follows_the_distribution():
    row = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    ids, probs = _core.sampling_distribution(row, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    assert ids == [0, 1, 2, 3]
    np.testing.assert_allclose(probs, [0.5, 0.3, 0.15, 0.05], rtol=1e-6)
    n = 20000
    counts = np.bincount([_core.sample_token(row, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=3, pos=p)
                          for p in range(n)], minlength=4)
    expected = n * np.array([0.5, 0.3, 0.15, 0.05])
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 30.0  # df=3: p ~ 1e-6


def test_truncation_top_k_top_p_min_p_and_temperature():
    row = np.log(np.array([0.4, 0.3, 0.2, 0.06, 0.04], dtype=np.float32))
    ids, _ = _core.sampling_distribution(row, temperature=1.0, top_k=2, top_p=1.0, min_p=0.0)
    assert ids == [0, 1]
    ids, _ = _core.sampling_distribution(row, temperature=1.0, top_k=0, top_p=0.85, min_p=0.0)
    assert ids == [0, 1, 2]
    ids, _ = _core.sampling_distribution(row, temperature=1.0, top_k=0, top_p=1.0, min_p=0.2)
    assert ids == [0, 1, 2]
    _, p_cold = _core.sampling_distribution(row, temperature=0.5, top_k=0, top_p=1.0, min_p=0.0)
    _, p_warm = _core.sampling_distribution(row, temperature=2.0, top_k=0, top_p=1.0, min_p=0.0)
    assert p_cold[0] > 0.4 > p_warm[0]
    for p in range(300):  # tokens outside the truncated support never appear
        assert _core.sample_token(row, temperature=1.5, top_k=3, top_p=1.0, min_p=0.0, seed=1, pos=p) in (0, 1, 2)


@pytest.mark.parametrize("kw", [dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=1.0),
                                dict(top_k=-3)])
def test_bad_sampling_parameters(kw):
    with pytest.raises(InvalidParameterError):
        _core.sample_token(np.zeros(4, dtype=np.float32), **kw)


def test_ngram_lookup_latest_match():
    h = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert _core.ngram_lookup(h, n=3, n_min=3, n_max=4) == [7, 8, 5, 1]
    assert _core.ngram_lookup(h, n=3, n_min=3, n_max=2) == [7, 8]


def test_ngram_lookup_falls_back_to_shorter_ngrams():
    h = [4, 5, 6, 1, 7, 8, 5, 6]
    assert _core.ngram_lookup(h, n=3, n_min=3, n_max=3) == []
    assert _core.ngram_lookup(h, n=3, n_min=2, n_max=3) == [1, 7, 8]


def test_ngram_lookup_no_match_and_short_history():
    assert _core.ngram_lookup([1, 2, 3, 4], n=2, n_min=1, n_max=5) == []
    assert _core.ngram_lookup([1], n=3, n_min=1, n_max=5) == []
    assert _core.ngram_lookup([], n=3, n_min=1, n_max=5) == []


def test_ngram_drafter_parameters_are_checked():
    with pytest.raises(InvalidParameterError):
        _core.NgramDrafter(0, 1)
    with pytest.raises(InvalidParameterError):
        _core.NgramDrafter(3, 4)


def test_ngram_lookup_prefers_a_match_that_fills_the_draft():
    # the latest match of [5, 5, 5] is at the end of a run of 5s: its
    # continuation is one token; an older match is followed by a full draft
    h = [5, 5, 5, 1, 2, 3, 4, 9, 5, 5, 5, 5]
    assert _core.ngram_lookup(h, n=3, n_min=3, n_max=4) == [1, 2, 3, 4]
    # only short continuations: the longest one, if at least n long
    assert _core.ngram_lookup([7, 8, 9, 7, 8, 9, 1, 7, 8, 9], n=3, n_min=3, n_max=8) == [7, 8, 9, 1, 7, 8, 9]
    assert _core.ngram_lookup([7, 8, 9, 1, 7, 8, 9], n=3, n_min=3, n_max=8) == [1, 7, 8, 9]
    assert _core.ngram_lookup([7, 8, 9, 7, 8, 9], n=3, n_min=3, n_max=8) == [7, 8, 9]
    assert _core.ngram_lookup([1, 7, 8, 1, 7, 8], n=2, n_min=2, n_max=8) == [1, 7, 8]
    assert _core.ngram_lookup([9, 7, 8, 7, 8], n=2, n_min=2, n_max=8) == [7, 8]
    assert _core.ngram_lookup([9, 9, 7, 8, 1, 7, 8], n=2, n_min=2, n_max=8) == [1, 7, 8]
    assert _core.ngram_lookup([3, 7, 8, 4, 7, 8], n=2, n_min=2, n_max=8) == [4, 7, 8]


def test_ngram_drafter_adapts_its_length():
    """Shorter after a rejection, longer again after full acceptances, never past n_max nor
    under the n-gram's own length; without adaptation always n_max. (The step sizes are the
    drafter's tuning, not its contract.)"""
    a = list(range(1, 61))
    n_max = 16

    def accept_all(d, draft, pos):  # the target agreed with the whole draft, + its bonus token
        d.accept(len(draft), a[pos:pos + len(draft) + 1])
        return pos + len(draft) + 1

    d = _core.NgramDrafter(3, 3, True)
    d.begin(a + a)
    first = d.draft(n_max)
    assert len(first) == n_max
    d.accept(0, [1])  # rejected at its first token
    short = d.draft(n_max)
    assert 3 <= len(short) < n_max
    lengths, pos = [len(short)], 1
    draft = short
    for _ in range(10):
        pos = accept_all(d, draft, pos)
        draft = d.draft(n_max)
        lengths.append(len(draft))
    assert lengths == sorted(lengths) and lengths[1] > lengths[0]  # grows back ...
    assert lengths[-1] == n_max  # ... up to n_max, never past it

    fixed = _core.NgramDrafter(3, 3, False)
    fixed.begin(a + a)
    got = [len(fixed.draft(n_max))]
    fixed.accept(0, [1])
    got.append(len(fixed.draft(n_max)))
    assert got == [n_max, n_max]
