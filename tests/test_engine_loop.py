"""The engine's decode loop (csrc/engine/engine.cpp) at its edges: an
end-of-generation token inside an accepted draft, what drafters observe, the
recurrent-state checkpoint, feature export, interruption inside the prompt
and drafter contexts that cannot drop positions."""
import pytest

import pyspec
import tiny_draft_heads as heads
import tiny_models
import tiny_mtp_models as mtp_models
from conftest import PROMPTS
from pyspec import _core

PROMPT = PROMPTS[0]
N = 40


class Oracle(_core.Drafter):
    """Drafts a known continuation (the target's own greedy tokens, past any
    end-of-generation token) and records what the engine tells it."""

    def __init__(self, continuation, wrong_after=None):
        super().__init__()
        self.continuation = continuation
        self.wrong_after = wrong_after  # drafts from this index on are wrong
        self.accepts = []
        self.observed = []

    def begin(self, prompt):
        self.n = 0
        self.accepts.clear()
        self.observed.clear()

    def draft(self, n_max):
        d = list(self.continuation[self.n:self.n + n_max])
        if self.wrong_after is not None:
            d = d[:self.wrong_after] + [(t + 1) % 300 for t in d[self.wrong_after:]]
        return d

    def accept(self, n_accepted, emitted):
        self.n += len(emitted)
        self.accepts.append((n_accepted, list(emitted)))

    def observe(self, tokens, pos0, prompt):
        self.observed.append((pos0, list(tokens), prompt))


@pytest.fixture(scope="module")
def plain(tiny_target):
    """The target's greedy continuation of PROMPT, ignoring end-of-generation tokens."""
    llm = pyspec.LLM(tiny_target, n_ctx=512, n_threads=1)
    return llm.tokenize(PROMPT), llm.generate(PROMPT, max_tokens=N, ignore_eos=True).tokens


@pytest.fixture(scope="module")
def eos_target(model_dir, plain):
    """tiny_target's weights with a word piece it generates as its end-of-generation
    token: its greedy text ends at index k, where an oracle drafts past it."""
    _, ref = plain
    k = next(i for i in range(6, N) if ref[i] >= 259 and ref[i] not in ref[:i])
    path = tiny_models.write_llama(model_dir / "target_eos.gguf", seed=0, eos_id=ref[k])
    return path, k


def test_eos_inside_an_accepted_draft_ends_the_generation_there(eos_target, plain):
    path, k = eos_target
    prompt, ref = plain
    llm = pyspec.LLM(path, n_ctx=512, n_threads=1)
    assert llm.generate(prompt, max_tokens=N).tokens == ref[:k + 1]  # plain decoding stops at the EOS
    steps = []

    def on_step(tokens, n_from_draft):
        steps.append(list(tokens))
        return False if tokens[-1] == ref[k] else None  # a consumer that stops at the end anyway

    d = Oracle(ref)
    # the first token comes from the prompt, then one step drafts ref[1:17], the EOS at draft index k - 1
    r = llm._engine.generate(prompt, n_predict=N, draft_n_max=16, drafter=d, on_step=on_step)
    s = pyspec.Stats(**r["stats"])
    assert list(r["tokens"]) == ref[:k + 1]
    assert r["finish_reason"] == "stop"  # not "interrupted": the callback's False came with the EOS
    # only the emitted drafts (ref[1..k]) count as accepted, not the ones after the EOS
    assert s.n_steps == 1 and s.draft_n == 16
    assert s.draft_n_accepted == k and s.accepted_per_position == [1] * k + [0] * (16 - k)
    # the drafter is told what was emitted: k drafts, the EOS last, no bonus
    assert d.accepts[-1] == (k, ref[1:k + 1])
    # the memory holds the prompt and what was emitted before the EOS, and nothing past it
    assert llm._engine.n_past == len(prompt) + k
    assert steps[-1] == ref[1:k + 1]


def test_eos_inside_a_draft_model_draft(eos_target, plain):
    """The same through the public API: an identical draft model drafts through the EOS."""
    path, k = eos_target
    prompt, ref = plain
    llm = pyspec.LLM(path, n_ctx=512, n_threads=1, draft_model=path)
    g = llm.generate(prompt, max_tokens=N, spec_type="draft", draft_n_max=16)
    assert g.tokens == ref[:k + 1] and g.finish_reason == "stop"
    assert g.stats.draft_n_accepted == k  # every token after the first came from a draft
    assert llm._engine.n_past == len(prompt) + k


def test_drafters_observe_exactly_what_the_target_keeps(tiny_target, plain):
    """observe() sees every prompt chunk, then only the verify rows that were
    kept: concatenated, the rows are the memory's tokens, each position once."""
    prompt, ref = plain
    llm = pyspec.LLM(tiny_target, n_ctx=512, n_threads=1)
    for wrong_after in (0, 2, None):  # every draft rejected, two accepted, all accepted
        d = Oracle(ref, wrong_after=wrong_after)
        r = llm._engine.generate(prompt, n_predict=N, draft_n_max=5, ignore_eos=True, drafter=d)
        assert list(r["tokens"]) == ref
        seen = []
        for pos0, tokens, _ in d.observed:
            assert pos0 == len(seen)
            seen += tokens
        assert seen == prompt + ref[:-1]
        verify_rows = [len(t) for _, t, is_prompt in d.observed if not is_prompt]
        assert verify_rows == [1 + n for n, _ in d.accepts[1:]]
        assert max(verify_rows) == (1 if wrong_after == 0 else 3 if wrong_after == 2 else 6)


def test_interrupt_between_prompt_chunks(tiny_target):
    """interrupt() (a stream's consumer, another thread) stops a generation
    inside its prompt at the next chunk, not after the whole prompt."""
    model = _core.Model(str(tiny_target))
    engine = _core.Engine(model, n_ctx=1024, n_batch=100, n_threads=1)
    prompt = [1] + [259 + i % 40 for i in range(299)]

    class Interrupting(Oracle):
        def observe(self, tokens, pos0, is_prompt):
            super().observe(tokens, pos0, is_prompt)
            engine.interrupt()  # as if another thread asked during the first chunk

    ref = engine.generate(prompt, n_predict=8, ignore_eos=True)["tokens"]
    d = Interrupting([])
    with pytest.raises(pyspec.GenerationInterrupted, match="after 100 of its 300"):
        engine.generate(prompt, n_predict=8, ignore_eos=True, drafter=d)
    assert engine.n_past == 100 and len(d.observed) == 1
    # the request is spent: the engine is usable and gives the same tokens
    assert engine.generate(prompt, n_predict=8, ignore_eos=True)["tokens"] == ref


def test_features_are_exported_only_for_the_drafter_that_reads_them(model_dir):
    mtp = mtp_models.write_mtp_dense(model_dir / "loop_mtp.gguf", seed=1, n_layer=1, mimic=True)
    llm = pyspec.LLM(mtp, n_ctx=512, n_threads=1)
    nothing = {"hidden": False, "layer_inputs": []}
    ref = llm.generate(PROMPT, max_tokens=16, spec_type="none", ignore_eos=True).tokens
    assert llm._engine.exported_features == nothing  # a plain run computes no MTP features
    assert llm.generate(PROMPT, max_tokens=16, spec_type="mtp", ignore_eos=True).tokens == ref
    assert llm._engine.exported_features == {"hidden": True, "layer_inputs": []}
    assert llm.generate(PROMPT, max_tokens=16, spec_type="ngram", ignore_eos=True).tokens == ref
    assert llm._engine.exported_features == nothing

    target = tiny_models.write_llama(model_dir / "loop_target.gguf", seed=0)
    eagle3 = heads.write_eagle3(model_dir / "loop_eagle3.gguf")
    llm = pyspec.LLM(target, n_ctx=512, n_threads=1, draft_model=eagle3)
    ref = llm.generate(PROMPT, max_tokens=16, spec_type="none", ignore_eos=True).tokens
    assert llm._engine.exported_features == nothing
    assert llm.generate(PROMPT, max_tokens=16, spec_type="eagle3", ignore_eos=True).tokens == ref
    assert len(llm._engine.exported_features["layer_inputs"]) == 3  # the three target layers EAGLE-3 fuses
    assert llm.generate(PROMPT, max_tokens=16, spec_type="ngram", ignore_eos=True).tokens == ref
    assert llm._engine.exported_features == nothing


def test_the_mtp_head_is_built_when_first_used(model_dir, tiny_target, tiny_draft):
    """A target with MTP layers offers spec_type "mtp" (and auto picks it), but a plain or
    n-gram run does not allocate the MTP head's context; the first MTP run builds it."""
    mtp = mtp_models.write_mtp_dense(model_dir / "lazy_mtp.gguf", seed=1, n_layer=1, mimic=True)
    llm = pyspec.LLM(mtp, n_ctx=512, n_threads=1)
    assert llm.spec_types == ["auto", "none", "ngram", "mtp"] and llm.auto_spec_type() == "mtp"
    assert llm.built_drafters == []
    ref = llm.generate(PROMPT, max_tokens=16, spec_type="none", ignore_eos=True).tokens
    llm.generate(PROMPT, max_tokens=16, spec_type="ngram", ignore_eos=True)
    assert llm.memory("none")["draft_kv_bytes"] == 0
    assert llm.built_drafters == []
    assert llm.generate(PROMPT, max_tokens=16, ignore_eos=True).tokens == ref  # auto: mtp
    assert llm.built_drafters == ["mtp"] and llm.memory()["draft_kv_bytes"] > 0
    # a draft file's drafter is built at load (a file that does not fit is refused there)
    assert pyspec.LLM(tiny_target, n_ctx=256, n_threads=1, draft_model=tiny_draft).built_drafters == ["draft"]


def test_checkpoint_holds_the_recurrent_state_only(model_dir):
    """A hybrid target whose drafts exceed its recurrent snapshots rolls back
    through a checkpoint of its recurrent state: its size does not grow with
    the context (the attention KV is cut, not copied), and output is exact."""
    hybrid = mtp_models.write_mtp_hybrid(model_dir / "loop_hybrid.gguf")
    model = _core.Model(str(hybrid))
    engine = _core.Engine(model, n_ctx=1024, n_threads=1, n_rs_seq=0)
    sizes = []
    for n_prompt in (8, 400):
        prompt = [1] + [259 + (i * 7) % 40 for i in range(n_prompt - 1)]
        ref = engine.generate(prompt, n_predict=24, ignore_eos=True)["tokens"]
        r = engine.generate(prompt, n_predict=24, ignore_eos=True, draft_n_max=4,
                            drafter=_core.NgramDrafter(n=2, n_min=1))
        assert list(r["tokens"]) == list(ref)
        assert r["stats"]["draft_n"] > r["stats"]["draft_n_accepted"]  # rollbacks happened
        sizes.append(engine.checkpoint_bytes)
    assert sizes[0] > 0 and sizes[0] == sizes[1]


def test_recurrent_draft_model_rolls_back(tiny_target, model_dir, plain):
    """A draft model whose memory cannot drop a suffix (recurrent layers) is
    re-synchronised instead of drafting from a memory that kept rejected drafts."""
    prompt, ref = plain
    hybrid = mtp_models.write_mtp_hybrid(model_dir / "loop_hybrid_draft.gguf")
    llm = pyspec.LLM(tiny_target, n_ctx=512, n_threads=1, draft_model=hybrid)
    g = llm.generate(prompt, max_tokens=N, spec_type="draft", draft_n_max=4, ignore_eos=True)
    assert g.tokens == ref and g.stats.draft_n > g.stats.draft_n_accepted
