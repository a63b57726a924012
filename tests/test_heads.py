"""MTP, EAGLE-3 and DFlash drafters (csrc/drafters/heads.*) on tiny random
models that follow the pinned llama.cpp's tensor names and metadata:
lossless output over draft lengths and prompts, hybrid-target rollback,
auto-detection, wrong pairings, and the drafters' memory."""
import json
import subprocess
import sys

import pytest

import pyspec
import tiny_draft_heads as heads
import tiny_models
import tiny_mtp_models as mtp_models
from conftest import PROMPTS, greedy_runs
from pyspec import _core

DRAFT_LENGTHS = [1, 2, 4, 8, 15]
N = 48


@pytest.fixture(scope="module")
def files(model_dir):
    d = model_dir
    bigram = tiny_models.write_llama(d / "h_bigram.gguf", n_layer=1, residual_only=True)
    return {
        # a bigram-table target and EAGLE-3 heads that reproduce it (exactly, or with noise)
        "bigram": bigram,
        "eagle3_bigram": heads.write_eagle3_bigram(d / "h_eagle3_bigram.gguf", bigram),
        "eagle3_noisy": heads.write_eagle3_bigram(d / "h_eagle3_noisy.gguf", bigram, head_noise=0.3),
        "target": tiny_models.write_llama(d / "h_target.gguf", seed=0),
        "eagle3": heads.write_eagle3(d / "h_eagle3.gguf"),
        "dflash": heads.write_dflash(d / "h_dflash.gguf", block_size=16),
        "dspark": heads.write_dspark(d / "h_dspark.gguf", block_size=16),
        "gemma3": heads.write_gemma3(d / "h_gemma3.gguf"),
        "dflash_gemma3": heads.write_dflash(d / "h_dflash_g3.gguf", target_arch="gemma3", block_size=16),
        # the MTP head copies the trunk: drafts are often right (partial accepts)
        "mtp": mtp_models.write_mtp_dense(d / "h_mtp.gguf", seed=1, n_layer=1, mimic=True, head_noise=0.3),
        "mtp_random": mtp_models.write_mtp_dense(d / "h_mtp_rand.gguf", seed=2),
        "hybrid": mtp_models.write_mtp_hybrid(d / "h_hybrid.gguf", mimic=True),
    }


def _llm(files, target, draft=None, **kw):
    return pyspec.LLM(files[target], n_ctx=1024, draft_model=files[draft] if draft else None, **kw)


CASES = {  # spec_type -> (target, draft file)
    "mtp": ("mtp", None),
    "eagle3": ("target", "eagle3"),
    "eagle3-noisy": ("bigram", "eagle3_noisy"),
    "dflash": ("target", "dflash"),
    "dflash-gemma3": ("gemma3", "dflash_gemma3"),
    "dflash-dspark": ("target", "dspark"),
    "mtp-hybrid": ("hybrid", None),
}


@pytest.fixture(scope="module")
def llms(files):
    return {name: _llm(files, t, d) for name, (t, d) in CASES.items()}


@pytest.fixture(scope="module")
def baselines(llms):
    return {(name, p): llm.generate(p, max_tokens=N, spec_type="none", ignore_eos=True).tokens
            for name, llm in llms.items() for p in PROMPTS}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n_max", DRAFT_LENGTHS)
def test_greedy_output_equals_plain(llms, baselines, case, n_max):
    llm = llms[case]
    spec_type = case.split("-")[0]
    drafted = accepted = 0
    for p in PROMPTS:
        g = llm.generate(p, max_tokens=N, draft_n_max=n_max, ignore_eos=True)  # auto
        assert g.spec_type == spec_type
        assert g.tokens == baselines[(case, p)], f"{case} n_max={n_max} prompt={p!r}"
        drafted += g.stats.draft_n
        accepted += g.stats.draft_n_accepted
    assert drafted > 0
    if spec_type == "mtp" or case in ("dflash-dspark", "eagle3-noisy"):
        # the copied-trunk MTP head, and DSpark's Markov head on this nearly
        # bigram-like random target, draft right often but not always: partial
        # accepts and rollbacks of the target (and of the hybrid's recurrent state)
        assert 0 < accepted < drafted


@pytest.mark.parametrize("target, draft", [("bigram", "eagle3_noisy"), ("mtp", None), ("target", "dflash")])
def test_device_argmax_drafts_what_the_host_drafts(files, target, draft):
    """Greedy picks on the device (the target's verify rows and every drafter step: only token
    ids leave the device) give the host's tokens and the same drafts: equal acceptance counts,
    partial ones for the noisy heads (a wrong row would change them)."""
    prompts = PROMPTS[:2]
    host = greedy_runs(files[target], draft and files[draft], 6, prompts, device_argmax=False)
    dev = greedy_runs(files[target], draft and files[draft], 6, prompts, device_argmax=True)
    assert dev["available"] and not host["available"]
    assert dev["runs"] == host["runs"]
    assert sum(r[1] for r in dev["runs"]) > 0


def test_mtp_drafts_with_the_target_hidden_states(files):
    # Without noise, a one-layer target's copied head reproduces it exactly:
    # every draft is accepted, which only holds if the head reads the right
    # hidden state at the right position after every accept.
    path = mtp_models.write_mtp_dense(files["mtp"].parent / "h_mtp_exact.gguf", seed=1, n_layer=1, mimic=True)
    llm = pyspec.LLM(path, n_ctx=512)
    g = llm.generate(PROMPTS[0], max_tokens=64, draft_n_max=4, ignore_eos=True)
    assert g.stats.draft_n > 0 and g.stats.draft_n_accepted == g.stats.draft_n


@pytest.mark.parametrize("n_max", [1, 4, 15])
def test_eagle3_head_reading_the_right_rows_drafts_a_bigram_target_exactly(files, n_max):
    # The head predicts the target's next token from (token p+1) alone: every
    # draft is accepted only if each pair is decoded at the right position and
    # the logits read are the last pair's (the pin's EAGLE-3 graph does not
    # prune its rows to the outputs).
    llm = _llm(files, "bigram", "eagle3_bigram")
    for p in PROMPTS[:2]:
        base = llm.generate(p, max_tokens=N, spec_type="none", ignore_eos=True).tokens
        g = llm.generate(p, max_tokens=N, draft_n_max=n_max, ignore_eos=True)
        assert g.tokens == base
        assert g.stats.draft_n > 0 and g.stats.draft_n_accepted == g.stats.draft_n


def test_dflash_reads_the_same_rows_through_the_pruned_and_the_full_output(files, model_dir):
    # patches/0003 makes the DFlash graph return only the slots read; drafts
    # must equal those read from every row up to the last slot (a varied,
    # non-degenerate random drafter, so that a shifted row would show).
    drafter_path = heads.write_dflash(model_dir / "h_dflash_varied.gguf", block_size=8, own_head=True, scale=3.0,
                                      seed=5)
    model = _core.Model(str(files["target"]))
    drafts = []
    for all_outputs in (False, True):
        eng = _core.Engine(model, n_ctx=512, n_threads=1)
        d = _core.DFlashDrafter(eng, _core.Model(str(drafter_path)), all_outputs=all_outputs)
        toks = model.tokenize(PROMPTS[0])
        seen = []
        for n in (2, 5, 9):
            eng.generate(toks, n_predict=n, draft_n_max=0, ignore_eos=True, drafter=d)
            seen.append([d.draft(7), d.draft(2), d.draft(5)])
        drafts.append(seen)
    assert drafts[0] == drafts[1]
    assert len({t for step in drafts[0] for block in step for t in block}) > 2  # not one repeated token
    assert all(block[:2] == step[1] for step in drafts[0] for block in (step[0], step[2]))


def test_hybrid_target_rolls_back_exactly_through_snapshots_and_checkpoints(files):
    prompt = PROMPTS[1]
    model = _core.Model(str(files["hybrid"]), load_mtp=True)
    outs = {}
    for label, kw, force in (("snapshots", {}, False), ("checkpoints", {"n_rs_seq": 0}, False),
                             ("forced", {}, True)):
        eng = _core.Engine(model, n_ctx=512, n_threads=1, **kw)
        eng.force_checkpoints = force
        toks = model.tokenize(prompt)
        base = list(eng.generate(toks, n_predict=64, draft_n_max=0, ignore_eos=True)["tokens"])
        r = eng.generate(toks, n_predict=64, draft_n_max=8, ignore_eos=True, drafter=_core.MtpDrafter(eng))
        st = r["stats"]
        assert st["draft_n"] - st["draft_n_accepted"] > 20, label  # many rejected drafts, each one a rollback
        outs[label] = (list(r["tokens"]), base)
    for label, (spec, base) in outs.items():
        assert spec == base, label


def test_random_mtp_head_rejects_everything_and_stays_exact(files):
    llm = _llm(files, "mtp_random")
    base = llm.generate(PROMPTS[2], max_tokens=N, spec_type="none", ignore_eos=True).tokens
    g = llm.generate(PROMPTS[2], max_tokens=N, spec_type="mtp", draft_n_max=8, ignore_eos=True)
    assert g.tokens == base and g.stats.draft_n > 0


@pytest.mark.parametrize("case", ["mtp", "eagle3", "dflash"])
def test_sampled_accept_if_equal_reproduces_plain_sampling(llms, case):
    llm = llms[case]
    kw = dict(max_tokens=40, temperature=0.9, seed=7, ignore_eos=True)
    base = llm.generate(PROMPTS[0], spec_type="none", **kw).tokens
    assert llm.generate(PROMPTS[0], draft_n_max=4, spec_sampling="equal", **kw).tokens == base
    # rejection sampling (drafts sampled from the head's q): reproducible for a seed
    a = llm.generate(PROMPTS[0], draft_n_max=4, **kw)
    b = llm.generate(PROMPTS[0], draft_n_max=4, **kw)
    assert a.tokens == b.tokens and a.stats.draft_n > 0


@pytest.mark.parametrize("case", ["mtp", "eagle3", "dflash"])
def test_prompt_longer_than_a_batch_is_observed_in_chunks(files, case):
    t, d = CASES[case]
    llm = pyspec.LLM(files[t], n_ctx=1024, n_batch=8, draft_model=files[d] if d else None)
    prompt = " ".join(PROMPTS)  # several chunks of 8 tokens
    base = llm.generate(prompt, max_tokens=32, spec_type="none", ignore_eos=True).tokens
    g = llm.generate(prompt, max_tokens=32, draft_n_max=4, ignore_eos=True)
    assert g.tokens == base and g.stats.draft_n > 0


def test_auto_spec_type_and_info(files):
    assert _llm(files, "target", "dflash").auto_spec_type() == "dflash"
    assert _llm(files, "target", "eagle3").auto_spec_type() == "eagle3"
    assert _llm(files, "mtp").auto_spec_type() == "mtp"
    assert _llm(files, "mtp", mtp=False).auto_spec_type() == "none"
    assert _llm(files, "target").auto_spec_type() == "none"
    assert "mtp" in pyspec.model_info(files["mtp"])["spec_types"]
    assert "mtp" not in pyspec.model_info(files["target"])["spec_types"]
    info = pyspec.model_info(files["dflash"])
    assert info["role"] == "drafter" and info["spec_types"] == ["dflash"]


def test_cli_info_reports_memory_for_a_pairing(files):
    out = subprocess.run([sys.executable, "-m", "pyspec", "info", str(files["target"]), "-md",
                          str(files["dflash"]), "-c", "65536", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    m = info["memory"]
    assert m["n_ctx"] == 65536 and m["spec_type"] == "dflash"
    assert m["draft_kv_bytes"] > 0 and m["target_kv_bytes"] > 0
    assert info["draft"]["architecture"] == "dflash"
    text = subprocess.run([sys.executable, "-m", "pyspec", "info", str(files["mtp"]), "-c", "2048"],
                          capture_output=True, text=True, check=True).stdout
    assert "memory at n_ctx=2048 (spec_type mtp" in text and "draft_kv" in text


def test_dflash_memory_is_a_window_not_a_second_context(files):
    small = pyspec.memory_report(files["target"], draft_model=files["dflash"], n_ctx=8192, dflash_window=256)
    large = pyspec.memory_report(files["target"], draft_model=files["dflash"], n_ctx=131072, dflash_window=256)
    assert large["target_kv_bytes"] >= 8 * small["target_kv_bytes"]
    assert large["draft_kv_bytes"] == small["draft_kv_bytes"]  # bounded by the window, not n_ctx
    whole = pyspec.memory_report(files["target"], draft_model=files["dflash"], n_ctx=131072, dflash_window=0)
    assert whole["draft_kv_bytes"] > 10 * large["draft_kv_bytes"]


@pytest.mark.parametrize("case", ["mtp", pytest.param("eagle3", marks=pytest.mark.xfail(
    strict=True, reason="known: the target's compute buffer is 401312 bytes on the tiny target with no capture "
    "and 434592 while EAGLE-3 captures the input of layer 0 (the token-embedding rows become a graph output, which "
    "the allocator keeps to the end of the graph instead of reusing; capturing layer 1 alone adds nothing); "
    "llama.cpp reserves again only at the next decode after llama_set_embeddings_layer_inp and has no public "
    "call that reserves, so a no_alloc context "
    "(memory_report) cannot size it: needs a llama.cpp patch (a reserve call). DFlash's tiny file reads layer 1 "
    "only")),
    "dflash"])
def test_memory_report_predicts_what_the_llm_holds(files, case):
    """memory_report (simulated allocations, nothing loaded) gives the live LLM's figures, and
    they still hold after a generation whose prompt spans several batches and whose drafts are
    the longest: no buffer grows past what was reported."""
    t, d = CASES[case]
    kw = dict(draft_model=files[d] if d else None, n_ctx=2048, n_batch=64, dflash_window=128)
    reported = pyspec.memory_report(files[t], **kw)
    llm = pyspec.LLM(files[t], **kw)
    assert llm.memory() == reported and reported["spec_type"] == case and reported["draft_kv_bytes"] > 0
    prompt = " ".join(PROMPTS * 8)
    assert len(llm.tokenize(prompt)) > 8 * 64
    llm.generate(prompt, max_tokens=64, draft_n_max=15, ignore_eos=True)
    assert llm.memory() == reported
    m = llm._drafters[case].memory()
    assert 0 < m["buffer_bytes_used"] <= m["buffer_bytes"] == reported["draft_buffer_bytes"]


def test_wrong_pairings_raise_clear_errors(files, model_dir):
    wide = heads.write_eagle3(model_dir / "h_eagle3_96.gguf", target_n_embd=96)
    with pytest.raises(pyspec.DraftMismatchError, match="hidden size 96"):
        pyspec.LLM(files["target"], draft_model=wide)
    deep = heads.write_dflash(model_dir / "h_dflash_deep.gguf", target_n_layer=8, target_layer_ids=[1, 6])
    with pytest.raises(pyspec.DraftMismatchError, match="target layer 6"):
        pyspec.LLM(files["target"], draft_model=deep)
    other_vocab = tiny_models.write_llama(model_dir / "h_other_vocab.gguf", vocab_variant=1)
    with pytest.raises(pyspec.VocabMismatchError):
        pyspec.LLM(other_vocab, draft_model=files["eagle3"])
    dflash2 = heads.write_dflash2(model_dir / "h_dflash2.gguf")
    with pytest.raises(pyspec.DraftMismatchError, match="DFlash2"):
        pyspec.LLM(files["target"], draft_model=dflash2)
    with pytest.raises(pyspec.InvalidParameterError, match="drafter"):
        pyspec.LLM(files["dflash"])  # a drafter is not a target
    with pytest.raises(pyspec.InvalidParameterError, match="no MTP layers"):
        pyspec.LLM(files["target"], mtp=True)
    llm = _llm(files, "target", "eagle3")
    with pytest.raises(pyspec.InvalidParameterError, match="spec_type='mtp' needs"):
        llm.generate("the", spec_type="mtp")
    with pytest.raises(pyspec.InvalidParameterError, match="spec_type='dflash' needs"):
        llm.generate("the", spec_type="dflash")
    # the LLM is still usable after the errors
    assert len(llm.generate("the of", max_tokens=8, ignore_eos=True).tokens) == 8


@pytest.fixture(scope="module")
def files32(model_dir, files):
    """Heads with 32-wide attention heads: quantized KV caches need head sizes of whole 32-value blocks."""
    d = model_dir
    return {**files,
            "mtp32": mtp_models.write_mtp_dense(d / "h_mtp32.gguf", seed=1, n_layer=1, mimic=True, head_noise=0.3,
                                                n_head=2, n_head_kv=1),
            "dflash32": heads.write_dflash(d / "h_dflash32.gguf", block_size=16, n_head=2, n_head_kv=1)}


@pytest.mark.parametrize("spec_type, target, draft", [("mtp", "mtp32", None), ("eagle3", "bigram", "eagle3_noisy"),
                                                      ("dflash", "target", "dflash32")])
def test_drafter_kv_types_shrink_its_cache_and_keep_the_output(files32, spec_type, target, draft):
    # type_k_draft / type_v_draft reach the feature drafters' contexts too: a q8_0 KV cache is smaller
    # than the f16 one, the drafts still come (and are accepted), the output is still the target's own
    f16 = _llm(files32, target, draft)
    quant = _llm(files32, target, draft, type_k_draft="q8_0", type_v_draft="q8_0")
    kv = lambda llm: llm._drafters[spec_type].memory()["kv_bytes"]  # noqa: E731
    assert 0 < kv(quant) < kv(f16)
    drafted = accepted = 0
    for p in PROMPTS:
        g = quant.generate(p, max_tokens=N, draft_n_max=4, ignore_eos=True, spec_type=spec_type)
        assert g.tokens == f16.generate(p, max_tokens=N, ignore_eos=True, spec_type="none").tokens, p
        drafted, accepted = drafted + g.stats.draft_n, accepted + g.stats.draft_n_accepted
    assert drafted > 0
    assert accepted > 0 or spec_type == "dflash"  # the random DFlash head accepts nothing either way
    with pytest.raises(pyspec.InvalidParameterError, match="type_k_draft must be one of"):
        _llm(files32, target, draft, type_k_draft="q3")
