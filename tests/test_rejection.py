"""Lossless speculative sampling: rejection sampling preserves the target's distribution.

The verifier's law is checked three ways:
- exactly: a Markov-chain target and drafter run through the verifier with
  every random choice enumerated (pyspec._core.rejection_exact); the first
  emitted tokens must have the target's joint distribution to 1e-9;
- by Monte Carlo: 200k seeded runs per case in C++ (rejection_counts), a
  chi-square test (Bonferroni over the cases) that the joint distribution of
  the first tokens, later ones conditioned on earlier ones, is the target's,
  with a deliberately wrong verifier (resampling from p instead of the
  residual) as a negative control that must fail the same test;
- end to end on a tiny model: the first tokens with speculation follow the
  same distribution as without (two-sample test), never leave the truncated
  support, and seeded runs repeat exactly.
"""
import math

import numpy as np
import pytest

import pyspec
from pyspec import _core
from conftest import PROMPTS


# ---------------------------------------------------------------- statistics
def _gammq(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (Numerical Recipes' gammq)."""
    if x <= 0:
        return 1.0
    gln = math.lgamma(a)
    if x < a + 1:  # series for P
        ap, s, d = a, 1.0 / a, 1.0 / a
        for _ in range(10000):
            ap += 1
            d *= x / ap
            s += d
            if abs(d) < abs(s) * 1e-15:
                break
        return max(0.0, 1.0 - s * math.exp(-x + a * math.log(x) - gln))
    b = x + 1 - a  # continued fraction for Q (Lentz)
    c, d = 1e300, 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - gln) * h


def chi2_sf(x: float, df: int) -> float:
    return _gammq(df / 2.0, x / 2.0)


def test_chi2_sf_matches_known_values():
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(30.0, 3) == pytest.approx(1.3800570312932553e-06, rel=1e-9)  # values from scipy.stats.chi2.sf
    assert chi2_sf(400.0, 255) == pytest.approx(1.6600025244123397e-08, rel=1e-9)
    assert chi2_sf(10.0, 20) == pytest.approx(0.9681719426937951, rel=1e-9)
    assert chi2_sf(1000.0, 255) == pytest.approx(9.37847734365788e-89, rel=1e-9)


def goodness_of_fit(counts: np.ndarray, probs: np.ndarray) -> float:
    """p-value of a chi-square test that `counts` were drawn from `probs`;
    0 when a zero-probability outcome occurred."""
    counts, probs = counts.ravel().astype(float), probs.ravel()
    if counts[probs <= 0].sum() > 0:
        return 0.0
    n = counts.sum()
    keep = probs > 0
    e = n * probs[keep]
    chi2 = float(((counts[keep] - e) ** 2 / e).sum())
    return chi2_sf(chi2, int(keep.sum()) - 1)


def two_sample(a: np.ndarray, b: np.ndarray, min_count: int = 10) -> float:
    """p-value of a chi-square test that two count vectors come from one distribution
    (categories with fewer than min_count observations in all are pooled)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rare = (a + b) < min_count
    a = np.append(a[~rare], a[rare].sum())
    b = np.append(b[~rare], b[rare].sum())
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    tot = a + b
    ea, eb = tot * a.sum() / tot.sum(), tot * b.sum() / tot.sum()
    chi2 = float(((a - ea) ** 2 / ea).sum() + ((b - eb) ** 2 / eb).sum())
    return chi2_sf(chi2, len(tot) - 1)


# ---------------------------------------------------------------- Markov cases
def dist(rng, v, support=None, zero=()):
    """A random distribution over v tokens on `support` random tokens (all by default), never on `zero`."""
    allowed = [t for t in range(v) if t not in zero]
    ids = rng.choice(allowed, size=min(support or v, len(allowed)), replace=False)
    p = np.zeros(v)
    p[ids] = rng.dirichlet(np.full(len(ids), 0.7))
    return p


def chain(rng, v, support=None):
    return dist(rng, v, support), np.stack([dist(rng, v, support) for _ in range(v)])


def make_case(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    kw = dict(draft_n=2, n_tokens=2)
    if name == "dense":  # generic p and q
        (p0, P), (q0, Q) = chain(rng, 6), chain(rng, 6)
    elif name == "truncated":  # p on 3 of 8 tokens (top-k): most drafts fall outside its support, p(x) = 0
        (p0, P), (q0, Q) = chain(rng, 8, support=3), chain(rng, 8)
        kw = dict(draft_n=3, n_tokens=3)
    elif name == "q_sparse":  # q on 2 tokens: q = 0 where p has mass, the residual carries it
        (p0, P), (q0, Q) = chain(rng, 6), chain(rng, 6, support=2)
        kw = dict(draft_n=3, n_tokens=3)
    elif name == "p_equals_q":  # p == q: every draft accepted, the residual never needed
        p0, P = chain(rng, 5)
        q0, Q = p0.copy(), P.copy()
    elif name == "single_support":  # one-token supports in p and in q, p(x) = 0 and q(x) = 0 mixed
        (p0, P), (q0, Q) = chain(rng, 6), chain(rng, 6)
        for t in (0, 2, 4):
            P[t] = np.eye(6)[(t + 1) % 6]
        for t in (1, 2, 5):
            Q[t] = np.eye(6)[t]
        p0 = np.eye(6)[3]
    elif name == "onehot_drafter":  # a drafter without a distribution (n-gram): q one-hot
        (p0, P), (q0, Q) = chain(rng, 6), chain(rng, 6)
        kw = dict(draft_n=3, n_tokens=3, draft_onehot=True)
    elif name == "vocab16":  # 16 tokens, top-4 target, top-6 drafter, long drafts
        (p0, P), (q0, Q) = chain(rng, 16, support=4), chain(rng, 16, support=6)
        kw = dict(draft_n=4, n_tokens=2)
    else:
        raise KeyError(name)
    return (p0, P, q0, Q), kw


CASES = ["dense", "truncated", "q_sparse", "p_equals_q", "single_support", "onehot_drafter", "vocab16"]
N_MC = 200_000
ALPHA = 1e-6 / len(CASES)  # Bonferroni over the cases


def target_joint(p0, P, n_tokens):
    """The target's distribution of its first n_tokens tokens, in float64."""
    joint = p0.copy()
    for _ in range(n_tokens - 1):
        joint = joint[..., :, None] * P  # P[last token, next token]
    return joint


@pytest.mark.parametrize("name", CASES)
def test_exact_distribution_equals_the_target(name):
    (p0, P, q0, Q), kw = make_case(name)
    for n_tokens in sorted({2, kw["n_tokens"]}):
        for draft_n in sorted({1, kw["draft_n"]}):
            got = _core.rejection_exact(p0, P, q0, Q, **{**kw, "n_tokens": n_tokens, "draft_n": draft_n})
            want = target_joint(p0, P, n_tokens)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=f"{name} {n_tokens=} {draft_n=}")


@pytest.mark.parametrize("name", ["dense", "truncated", "q_sparse", "single_support", "onehot_drafter", "vocab16"])
def test_exact_distribution_of_the_wrong_verifier_differs(name):
    (p0, P, q0, Q), kw = make_case(name)
    got = _core.rejection_exact(p0, P, q0, Q, **kw, wrong=True)
    assert np.abs(got - target_joint(p0, P, kw["n_tokens"])).max() > 1e-3


def test_draft_length_zero_is_plain_sampling():
    (p0, P, q0, Q), _ = make_case("dense")
    np.testing.assert_allclose(_core.rejection_exact(p0, P, q0, Q, draft_n=0, n_tokens=3),
                               target_joint(p0, P, 3), atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_monte_carlo_follows_the_target(name):
    (p0, P, q0, Q), kw = make_case(name)
    counts = _core.rejection_counts(p0, P, q0, Q, **kw, n_runs=N_MC)
    assert counts.sum() == N_MC
    pval = goodness_of_fit(counts, target_joint(p0, P, kw["n_tokens"]))
    assert pval > ALPHA, f"{name}: p = {pval:.3g}"


@pytest.mark.parametrize("name", ["dense", "truncated", "onehot_drafter"])
def test_monte_carlo_negative_control_fails(name):
    """Resampling from p instead of the residual over-produces drafted tokens:
    the same test must reject it."""
    (p0, P, q0, Q), kw = make_case(name)
    counts = _core.rejection_counts(p0, P, q0, Q, **kw, n_runs=N_MC, wrong=True)
    assert goodness_of_fit(counts, target_joint(p0, P, kw["n_tokens"])) < ALPHA


def test_monte_carlo_is_seeded():
    (p0, P, q0, Q), kw = make_case("dense")
    a = _core.rejection_counts(p0, P, q0, Q, **kw, n_runs=2000, seed0=5)
    b = _core.rejection_counts(p0, P, q0, Q, **kw, n_runs=2000, seed0=5)
    c = _core.rejection_counts(p0, P, q0, Q, **kw, n_runs=2000, seed0=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ---------------------------------------------------------------- the step
def test_acceptance_is_one_minus_total_variation():
    rng = np.random.default_rng(3)
    for _ in range(20):
        p, q = dist(rng, 8, support=5), dist(rng, 8, support=6)
        accept = sum(q[x] * _core.acceptance_probability(p, x, q) for x in range(8) if q[x] > 0)
        assert accept == pytest.approx(1 - 0.5 * np.abs(p - q).sum(), abs=1e-12)


def test_acceptance_rate_of_the_seeded_step():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    q = np.array([0.1, 0.2, 0.3, 0.4])
    n = 20000
    rng = np.random.default_rng(0)
    xs = rng.choice(4, size=n, p=q)
    accepted = sum(_core.rejection_step(p, int(x), q, seed=s, pos=3)[0] for s, x in enumerate(xs))
    assert accepted / n == pytest.approx(1 - 0.5 * np.abs(p - q).sum(), abs=0.015)


def test_step_edge_cases():
    p = np.array([0.6, 0.4, 0.0, 0.0])
    q = np.array([0.2, 0.0, 0.5, 0.3])
    # p(x) = 0: the draft lies outside the target's support, always rejected
    assert _core.acceptance_probability(p, 2, q) == 0.0
    assert all(not _core.rejection_step(p, 2, q, seed=s)[0] for s in range(200))
    assert {_core.rejection_step(p, 2, q, seed=s)[1] for s in range(200)} <= {0, 1}
    # q(x) = 0 for the drafted token: undefined ratio, rejected, resampled from the residual
    assert _core.acceptance_probability(p, 1, q) == 0.0
    np.testing.assert_allclose(_core.residual_distribution(p, q), [0.4 / 0.8, 0.4 / 0.8, 0, 0])
    # p >= q at x: always accepted
    assert _core.acceptance_probability(p, 0, q) == 1.0
    assert all(_core.rejection_step(p, 0, q, seed=s) == (True, 0) for s in range(200))
    # p == q: the residual has no mass; falls back to p
    np.testing.assert_allclose(_core.residual_distribution(p, p), p)
    assert _core.acceptance_probability(p, 1, p) == 1.0
    # a single-token support
    one = np.array([0.0, 0.0, 1.0, 0.0])
    assert _core.rejection_step(one, 2, q, seed=1) == (True, 2)
    assert all(_core.rejection_step(one, 0, q, seed=s) == (False, 2) for s in range(50))
    # no q: one-hot at x, the residual is p without x
    assert _core.acceptance_probability(p, 1) == pytest.approx(0.4)
    np.testing.assert_allclose(_core.residual_distribution(p, None, 0), [0, 1, 0, 0])


def test_one_hot_drafts_reproduce_plain_sampling():
    """Without q, the step uses the target's own draw: the emitted token is the
    one sample_token gives at that position, accepted iff it equals the draft."""
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((5, 40)).astype(np.float32)
    kw = dict(temperature=0.9, top_k=10, top_p=0.9, min_p=0.0, seed=11)
    plain = [_core.sample_token(logits[i], pos=50 + i, **kw) for i in range(5)]
    for draft in (plain[:4], [plain[0], plain[1], (plain[2] + 1) % 40, plain[3]], [39, 1, 2, 3]):
        n, toks = _core.verify_rejection(logits, draft, None, pos0=50, **kw)
        assert (n, toks) == _core.verify_accept_if_equal(logits, draft, pos0=50, **kw)
        assert toks == plain[:n + 1]


# ---------------------------------------------------------------- penalties
def reference_penalties(logits, context, repeat, freq, present, last_n):
    """llama.cpp's penalties sampler, in numpy float32."""
    out = logits.astype(np.float32).copy()
    window = list(context) if last_n < 0 else list(context)[len(context) - min(last_n, len(context)):]
    if last_n == 0:
        return out
    for t in set(window):
        c = window.count(t)
        out[t] = out[t] * np.float32(repeat) if out[t] <= 0 else out[t] / np.float32(repeat)
        out[t] -= np.float32(c * freq + present)
    return out


@pytest.mark.parametrize("last_n", [64, 3, 0, -1])
def test_penalties_follow_llama_cpp(last_n):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal(30).astype(np.float32) * 3
    context = [1, 5, 5, 7, 2, 5, 9, 1]
    pen = dict(repeat_penalty=1.3, frequency_penalty=0.2, presence_penalty=0.5, penalty_last_n=last_n)
    ids, probs = _core.sampling_distribution(logits, temperature=0.7, top_k=0, top_p=1.0, min_p=0.0,
                                             context=context, **pen)
    ref = reference_penalties(logits, context, 1.3, 0.2, 0.5, last_n)
    ref_ids, ref_probs = _core.sampling_distribution(ref, temperature=0.7, top_k=0, top_p=1.0, min_p=0.0)
    assert ids == ref_ids
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-12)
    # greedy: penalties act before the argmax
    assert _core.sample_token(logits, context=context, **pen) == int(np.argmax(ref))


def test_penalties_read_history_and_accepted_drafts_only():
    """Row i's distribution follows the history and drafts 0..i-1, never the
    rejected draft: the verifiers give exactly sample_token with that context."""
    rng = np.random.default_rng(6)
    v = 12
    logits = rng.standard_normal((4, v)).astype(np.float32)
    history = [3, 4, 3, 8]
    kw = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.8, presence_penalty=1.0,
              penalty_last_n=6)
    for seed in range(40):
        draft = [int(t) for t in rng.integers(0, v, size=3)]
        n, toks = _core.verify_accept_if_equal(logits, draft, seed=seed, pos0=4, history=history, **kw)
        want = [_core.sample_token(logits[i], seed=seed, pos=4 + i, context=history + draft[:i], **kw)
                for i in range(n + 1)]
        assert toks == want
        # rejection sampling: the distribution of a resampled row i ignores draft[i]
        q = [(list(range(v)), list(np.full(v, 1 / v)))] * 3
        n, toks = _core.verify_rejection(logits, draft, q, seed=seed, pos0=4, history=history, **kw)
        for i, t in enumerate(toks):
            ids, _ = _core.sampling_distribution(logits[i], context=history + draft[:i], **kw)
            assert t in ids


def test_bad_penalty_parameters():
    row = np.zeros(4, dtype=np.float32)
    for kw in (dict(repeat_penalty=0.0), dict(repeat_penalty=float("inf")), dict(penalty_last_n=-2),
               dict(frequency_penalty=float("nan"))):
        with pytest.raises(pyspec.InvalidParameterError):
            _core.sample_token(row, **kw)


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def llm(tiny_target, tiny_draft):
    return pyspec.LLM(tiny_target, n_ctx=512, draft_model=tiny_draft)


E2E = dict(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0, repeat_penalty=1.3, presence_penalty=0.3,
           ignore_eos=True)


def test_speculative_sampling_keeps_the_distribution_end_to_end(llm):
    """Two-sample test on the first 3 tokens (the 2nd and 3rd come out of a
    verify step): draft model + rejection sampling vs plain sampling."""
    n, k = 3000, 3
    eng, prompt = llm._engine, llm.tokenize("x y")
    v = llm.n_vocab

    def index(tokens):
        return (tokens[0] * v + tokens[1]) * v + tokens[2]

    plain, spec = {}, {}
    drafted = accepted = 0
    for s in range(n):
        r = eng.generate(prompt, n_predict=k, seed=s, **E2E)
        plain[index(r["tokens"])] = plain.get(index(r["tokens"]), 0) + 1
        r = eng.generate(prompt, n_predict=k, seed=n + s, draft_n_max=2, drafter=llm._drafters["draft"], **E2E)
        spec[index(r["tokens"])] = spec.get(index(r["tokens"]), 0) + 1
        drafted += r["stats"]["draft_n"]
        accepted += r["stats"]["draft_n_accepted"]
    assert 0.2 * drafted < accepted < 0.95 * drafted  # rejections and resamples happened
    keys = sorted(set(plain) | set(spec))
    pval = two_sample([plain.get(c, 0) for c in keys], [spec.get(c, 0) for c in keys])
    assert pval > 1e-4, f"p = {pval:.3g}"


def supports(llm, prompt_tokens, tokens, **kw):
    """The target's truncated support at each generated position (penalties included)."""
    eng = llm._engine
    eng.reset()
    rows = eng.decode(prompt_tokens + tokens[:-1], 64)[len(prompt_tokens) - 1:]
    sk = {k: kw[k] for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "presence_penalty")}
    ctx = prompt_tokens + tokens
    return [set(_core.sampling_distribution(rows[i], context=ctx[:len(prompt_tokens) + i], **sk)[0])
            for i in range(len(tokens))]


@pytest.mark.parametrize("trunc", [dict(top_k=3, top_p=1.0), dict(top_k=0, top_p=0.5)])
def test_tokens_outside_the_truncated_support_never_appear(llm, trunc):
    kw = {**E2E, **trunc}
    prompt = llm.tokenize(PROMPTS[1])
    for seed in range(6):
        g = llm.generate(prompt, max_tokens=40, spec_type="draft", draft_n_max=4, seed=seed, **kw)
        assert g.stats.draft_n_accepted < g.stats.draft_n
        for i, (t, support) in enumerate(zip(g.tokens, supports(llm, prompt, g.tokens, **kw))):
            assert t in support, f"seed {seed}: token {i} = {t} outside {support}"


@pytest.mark.parametrize("spec_type", ["draft", "ngram"])
def test_seeded_runs_repeat_exactly(llm, spec_type):
    kw = dict(max_tokens=48, temperature=0.9, top_k=0, top_p=1.0, min_p=0.0, seed=123, repeat_penalty=1.2,
              frequency_penalty=0.1, spec_type=spec_type, draft_n_max=5, ignore_eos=True)
    first = llm.generate(PROMPTS[0], **kw).tokens
    for _ in range(19):
        assert llm.generate(PROMPTS[0], **kw).tokens == first
    assert llm.generate(PROMPTS[0], **{**kw, "seed": 124}).tokens != first


@pytest.mark.parametrize("spec_type", ["ngram", "draft"])
def test_greedy_with_penalties_is_lossless(llm, spec_type):
    """The penalties see the same committed tokens with and without speculation,
    so greedy output stays identical (a rejected draft never enters them)."""
    kw = dict(max_tokens=64, repeat_penalty=1.5, frequency_penalty=0.3, presence_penalty=0.2, penalty_last_n=16,
              ignore_eos=True)
    for p in PROMPTS[:3]:
        base = llm.generate(p, spec_type="none", **kw)
        for mode in ("rejection", "equal"):
            g = llm.generate(p, spec_type=spec_type, draft_n_max=4, spec_sampling=mode, **kw)
            assert g.tokens == base.tokens
    assert base.tokens != llm.generate(p, spec_type="none", max_tokens=64, ignore_eos=True).tokens


def test_equal_mode_reproduces_plain_sampling_with_penalties(llm):
    kw = dict(max_tokens=64, temperature=0.5, top_k=4, top_p=1.0, min_p=0.0, seed=9, repeat_penalty=1.4,
              presence_penalty=0.2, penalty_last_n=-1, ignore_eos=True)
    base = llm.generate(PROMPTS[1], spec_type="none", **kw).tokens
    for spec_type in ("ngram", "draft"):
        g = llm.generate(PROMPTS[1], spec_type=spec_type, draft_n_max=4, spec_sampling="equal", **kw)
        assert g.tokens == base
    assert g.stats.draft_n_accepted > 0


def test_spec_sampling_is_checked(llm):
    with pytest.raises(pyspec.InvalidParameterError, match="spec_sampling"):
        llm.generate("x", spec_sampling="greedy")
    with pytest.raises(pyspec.InvalidParameterError, match="penalty_last_n"):
        llm.generate("x", penalty_last_n=-5)
    with pytest.raises(pyspec.InvalidParameterError, match="repeat_penalty"):
        llm.generate("x", repeat_penalty=0.0)
