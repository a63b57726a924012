"""The memory planner (pyspec.plan, LLM(memory_budget=...), `pyspec plan`): its prediction
against the real allocation of the configuration it chose, the choice order, the "largest
context that fits" answer, and that the chosen configuration loads and generates."""
import json
import subprocess
import sys

import pytest

import pyspec
import tiny_draft_heads as heads
import tiny_models
import tiny_mtp_models as mtp_models

N_CTX = 8192


@pytest.fixture(scope="module")
def files(model_dir):
    # head dimension 32: quantized KV blocks (32 values) divide it
    return {
        "target": tiny_models.write_llama(model_dir / "p_target.gguf", seed=0, dtype="q8_0", n_embd=128, n_ff=256),
        "draft": tiny_models.write_llama(model_dir / "p_draft.gguf", seed=0, dtype="q8_0", n_embd=128, n_ff=256,
                                         perturb=0.6),
        "dflash": heads.write_dflash(model_dir / "p_dflash.gguf", target_n_embd=128, block_size=16),
        "hybrid": mtp_models.write_mtp_hybrid(model_dir / "p_hybrid.gguf", head_dim=32, mimic=True),
    }


def _real_parts(llm) -> dict:
    """The live LLM's figures under the planner's part names (what it reports as simulated)."""
    m = llm.memory()
    bufs = llm._engine.memory_by_buffer()
    r = {"weights": sum(b["model_bytes"] for b in bufs), "target KV+recurrent": m["target_kv_bytes"],
         "compute buffers": m["target_compute_bytes"]}
    if m["draft_weights_bytes"]:
        r["drafter weights"] = m["draft_weights_bytes"]
    if m["spec_type"] not in ("none", "ngram"):
        r[f"drafter KV ({m['spec_type']})"] = m["draft_kv_bytes"]
        r[f"drafter compute ({m['spec_type']})"] = m["draft_compute_bytes"]
    return r


def _planned_parts(p) -> dict:
    r = {k: v for k, v in p.by_part().items() if not k.startswith("drafter host") and k != "host logits buffer"}
    r["target KV+recurrent"] = r.pop("target KV") + r.pop("recurrent state", 0)
    return r


def _smallest_total(files, name, **kw) -> int:
    """Budget just under what f16/f16 needs with the smallest batch (and DFlash window): the
    planner must quantize."""
    p = pyspec.plan(files[name], budget="1TiB", n_ctx=N_CTX, n_batch=64, dflash_window=512, **kw)
    assert p.fits and (p.type_k, p.type_v, p.n_batch) == ("f16", "f16", 64)
    return p.total_bytes - 1


@pytest.mark.parametrize("target,draft", [("target", None), ("target", "draft"), ("target", "dflash"),
                                          ("hybrid", None)])
def test_prediction_equals_the_real_allocation(files, target, draft):
    """Under a budget that f16 KV does not fit, the planner picks a quantized KV cache, and what
    it predicts (simulated, nothing loaded) is what the LLM of that configuration allocates."""
    kw = {"draft_model": files[draft]} if draft else {}
    budget = _smallest_total(files, target, **kw)
    p = pyspec.plan(files[target], budget=budget, n_ctx=N_CTX, **kw)
    if draft in ("draft", "dflash"):  # the drafter's KV is quantized first: it never changes the output
        assert p.fits and p.total_bytes <= budget and (p.type_k, p.type_v) == ("f16", "f16")
        assert (p.type_k_draft, p.type_v_draft) != ("f16", "f16")
    else:
        assert p.fits and p.total_bytes <= budget and (p.type_k, p.type_v) != ("f16", "f16")
    if target == "hybrid":
        assert p.spec_type == "mtp" and p.by_part()["recurrent state"] > 0
    llm = pyspec.LLM(files[target], **p.llm_kwargs(), **kw)
    assert llm.n_ctx == p.n_ctx == N_CTX
    assert _planned_parts(p) == _real_parts(llm)


def test_prefers_the_most_precise_kv_then_the_largest_batch(files):
    big = pyspec.plan(files["target"], budget="1GiB", n_ctx=N_CTX)
    assert big.fits and (big.type_k, big.type_v, big.n_batch) == ("f16", "f16", 512)
    # f16 with a smaller batch fits before any quantized KV
    just = pyspec.plan(files["target"], budget=big.total_bytes - 1, n_ctx=N_CTX)
    assert just.fits and (just.type_k, just.type_v) == ("f16", "f16") and just.n_batch < 512
    # below every f16 configuration: K stays more precise than V as long as it can
    q = pyspec.plan(files["target"], budget=_smallest_total(files, "target"), n_ctx=N_CTX)
    assert (q.type_k, q.type_v) == ("f16", "q8_0")
    # the values given are the most the planner uses
    p = pyspec.plan(files["target"], budget="1GiB", n_ctx=N_CTX, type_k="q8_0", type_v="q4_0", n_batch=128)
    assert (p.type_k, p.type_v, p.n_batch) == ("q8_0", "q4_0", 128)


def test_dflash_window_shrinks_before_kv_precision(files):
    kw = dict(draft_model=files["dflash"], n_ctx=N_CTX, dflash_window=4096, n_batch=64)
    wide = pyspec.plan(files["target"], budget="1GiB", **kw)
    assert wide.dflash_window == 4096 and wide.spec_type == "dflash"
    narrow = pyspec.plan(files["target"], budget=wide.total_bytes - 1, **kw)
    assert narrow.fits and (narrow.type_k, narrow.type_v) == ("f16", "f16") and narrow.dflash_window < 4096
    assert narrow.by_part()["drafter KV (dflash)"] < wide.by_part()["drafter KV (dflash)"]


def test_draft_model_kv_is_quantized_before_the_targets(files):
    kw = dict(draft_model=files["draft"], n_ctx=N_CTX, n_batch=64)
    full = pyspec.plan(files["target"], budget="1TiB", **kw)
    assert (full.type_k, full.type_v, full.type_k_draft, full.type_v_draft) == ("f16",) * 4
    p = pyspec.plan(files["target"], budget=full.total_bytes - 1, **kw)
    assert p.fits and (p.type_k, p.type_v) == ("f16", "f16") and (p.type_k_draft, p.type_v_draft) == ("f16", "q8_0")
    assert p.by_part()["drafter KV (draft)"] < full.by_part()["drafter KV (draft)"]
    assert p.llm_kwargs()["type_v_draft"] == "q8_0"
    llm = pyspec.LLM(files["target"], **p.llm_kwargs(), draft_model=files["draft"])
    assert llm.memory("draft")["draft_kv_bytes"] == p.by_part()["drafter KV (draft)"]
    # without a draft model there is nothing to choose
    assert pyspec.plan(files["target"], budget="1TiB", n_ctx=N_CTX).type_k_draft is None
    with pytest.raises(pyspec.InvalidParameterError, match="type_k_draft must be one of"):
        pyspec.plan(files["target"], budget="1TiB", n_ctx=N_CTX, type_k_draft="q3")
    with pytest.raises(pyspec.InvalidParameterError, match="type_v_draft must be one of"):
        pyspec.LLM(files["target"], n_ctx=256, type_v_draft="f8")


def test_too_small_budget_says_the_largest_context_that_fits(files):
    smallest = pyspec.plan(files["target"], budget="1TiB", n_ctx=N_CTX, n_batch=64, type_k="q4_0", type_v="q4_0")
    budget = smallest.total_bytes - 1
    p = pyspec.plan(files["target"], budget=budget, n_ctx=N_CTX)
    assert not p.fits and 0 < p.max_n_ctx < N_CTX and p.max_n_ctx % 256 == 0
    assert f"largest context that fits is n_ctx={p.max_n_ctx}" in p.message
    assert "raise the budget" in p.message
    assert pyspec.plan(files["target"], budget=budget, n_ctx=p.max_n_ctx).fits
    assert not pyspec.plan(files["target"], budget=budget, n_ctx=p.max_n_ctx + 256).fits
    with pytest.raises(pyspec.MemoryBudgetError, match=f"largest context that fits is n_ctx={p.max_n_ctx}"):
        pyspec.LLM(files["target"], n_ctx=N_CTX, memory_budget=budget)
    # not even the weights
    w = pyspec.plan(files["target"], budget="100KiB", n_ctx=N_CTX)
    assert not w.fits and w.max_n_ctx == 0 and "even n_ctx=256 does not fit" in w.message


def test_the_chosen_configuration_loads_and_generates(files):
    """LLM(memory_budget=...) runs the plan, holds what it predicted, and generates: greedy
    speculative output equals plain output with the quantized KV cache it chose."""
    kw = {"draft_model": files["draft"]}
    # below the target's f16 KV with the smallest drafter KV: the target's KV is quantized too
    budget = _smallest_total(files, "target", type_k_draft="q4_0", type_v_draft="q4_0", **kw)
    llm = pyspec.LLM(files["target"], n_ctx=N_CTX, memory_budget=budget, **kw)
    assert llm.plan.fits and (llm.plan.type_k, llm.plan.type_v) != ("f16", "f16")
    assert _planned_parts(llm.plan) == _real_parts(llm)
    plain = llm.generate("the sort of the list", max_tokens=24, spec_type="none", ignore_eos=True)
    spec = llm.generate("the sort of the list", max_tokens=24, spec_type="draft", draft_n_max=4, ignore_eos=True)
    assert len(plain.tokens) == 24 and spec.tokens == plain.tokens and spec.stats.draft_n > 0


@pytest.mark.parametrize("text,expected", [("48GiB", 48 * 2**30), ("512MiB", 512 * 2**20), ("2GB", 2 * 10**9),
                                           ("1.5 GiB", 3 * 2**29), ("4096", 4096), (123, 123)])
def test_parse_size(text, expected):
    assert pyspec.parse_size(text) == expected


@pytest.mark.parametrize("bad", ["48 potatoes", "GiB", "-1GiB", "0GB", "", None, 0])
def test_parse_size_refuses_with_a_clear_error(bad):
    with pytest.raises(pyspec.InvalidParameterError, match="48GiB"):
        pyspec.parse_size(bad)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pyspec", "plan", *map(str, args)], capture_output=True, text=True)


def test_cli_plan(files):
    r = _cli("-m", files["target"], "-md", files["draft"], "-c", N_CTX, "--budget", "1GiB")
    assert r.returncode == 0, r.stderr
    for part in ("weights", "target KV", "compute buffers", "drafter weights", "drafter KV (draft)",
                 "host logits buffer", "fits", "no GPU backend", "-ctk f16 -ctv f16 -b 512"):
        assert part in r.stdout
    r = _cli("-m", files["target"], "-c", N_CTX, "--budget", "1MiB", "--json")
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert not d["fits"] and d["max_n_ctx"] > 0 and "largest context that fits" in d["message"]
    r = _cli("-m", files["target"], "--budget", "lots")
    assert r.returncode == 2 and "cannot read the memory budget 'lots'" in r.stderr
