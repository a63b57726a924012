"""GenerationOptions: one object with every generation setting, its default and its check,
that LLM.generate / stream / chat, the raw engine, the CLI and the bench all take."""
import dataclasses
import math
import subprocess
import sys

import pytest

import pyspec
from pyspec import GenerationOptions, _core
from pyspec.bench import BenchConfig

PROMPT = "the sort of the list is the sort of"


@pytest.fixture(scope="module")
def llm(tiny_target):
    return pyspec.LLM(tiny_target, n_ctx=256, n_threads=1)


def test_options_and_keywords_are_the_same_request(llm):
    kw = dict(max_tokens=24, temperature=0.7, top_k=5, top_p=0.9, min_p=0.0, seed=3, spec_type="ngram",
              draft_n_max=4, repeat_penalty=1.2, penalty_last_n=-1, ignore_eos=True)
    opts = GenerationOptions(**kw)
    a, b = llm.generate(PROMPT, opts), llm.generate(PROMPT, **kw)
    assert a.tokens == b.tokens and len(a.tokens) == 24 and a.seed == b.seed == 3
    # keywords override the options' fields
    c = llm.generate(PROMPT, opts, max_tokens=8, spec_type="none")
    assert c.tokens == a.tokens[:8] and c.spec_type == "none"
    assert [t for ch in llm.stream(PROMPT, opts) for t in ch.tokens] == a.tokens
    assert llm.generate(PROMPT, options=opts).tokens == a.tokens


def test_generate_shows_the_options_as_its_keywords():
    """help(LLM.generate) lists each option with its default: written once, in the dataclass."""
    import inspect
    params = inspect.signature(pyspec.LLM.generate).parameters
    for f in dataclasses.fields(GenerationOptions):
        assert params[f.name].default == f.default and params[f.name].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("call", ["generate", "stream", "chat", "chat_stream", "engine"])
def test_an_unknown_keyword_names_the_one_meant(llm, call):
    run = {"generate": lambda: llm.generate(PROMPT, max_token=4),
           "stream": lambda: llm.stream(PROMPT, max_token=4),
           "chat": lambda: llm.chat([{"role": "user", "content": "hi"}], max_token=4),
           "chat_stream": lambda: llm.chat_stream([{"role": "user", "content": "hi"}], max_token=4),
           "engine": lambda: llm._engine.generate([1, 300], max_token=4)}[call]
    llm.chat_template = "chatml"  # the tiny model has no template of its own
    try:
        with pytest.raises(pyspec.UnknownOptionError, match="'max_token'.*did you mean 'max_tokens'") as e:
            run()
    finally:
        llm.chat_template = None
    assert isinstance(e.value, TypeError) and isinstance(e.value, pyspec.InvalidParameterError)
    assert "ignore_eos" in str(e.value)  # the options are listed


@pytest.mark.parametrize("name, value, expected", [
    ("max_tokens", -1, "integer >= 0"),
    ("max_tokens", "8", "integer >= 0"),
    ("max_tokens", 8.0, "integer >= 0"),
    ("temperature", -0.1, ">= 0"),
    ("temperature", math.nan, ">= 0"),
    ("top_k", 1.5, "integer >= 0"),
    ("top_p", 0.0, "(0, 1]"),
    ("min_p", 1.0, "[0, 1)"),
    ("repeat_penalty", 0.0, "> 0"),
    ("frequency_penalty", math.inf, "finite"),
    ("penalty_last_n", -2, ">= -1"),
    ("seed", -1, "[0, 18446744073709551615]"),
    ("spec_type", "medusa", "'ngram'"),
    ("spec_sampling", "greedy", "'rejection', 'equal'"),
    ("draft_n_max", 65, "[0, 64]"),
    ("draft_n_min", 17, "[0, 16]"),
    ("ngram_n", 0, "[1, 64]"),
    ("ngram_n_min", 4, "[1, 3]"),
    ("ignore_eos", "yes", "True or False"),
    ("parse_special", 1, "True or False"),
])
def test_a_wrong_value_says_what_was_expected_and_found(llm, name, value, expected):
    for make in (lambda: GenerationOptions(**{name: value}), lambda: llm.generate(PROMPT, **{name: value}),
                 lambda: llm.stream(PROMPT, **{name: value}), lambda: GenerationOptions().replace(**{name: value})):
        with pytest.raises(pyspec.InvalidParameterError) as e:
            make()
        msg = str(e.value)
        assert msg.startswith(f"{name} must be") and expected in msg and repr(value) in msg, msg


def test_values_are_normalized():
    o = GenerationOptions(temperature=1, spec_type=None, seed=5)
    assert o.temperature == 1.0 and isinstance(o.temperature, float) and o.spec_type == "auto" and o.seed == 5
    assert GenerationOptions().replace(seed=2) == GenerationOptions(seed=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.max_tokens = 3


def test_options_must_be_generation_options(llm):
    with pytest.raises(pyspec.InvalidParameterError, match="must be a pyspec.GenerationOptions, got dict"):
        llm.generate(PROMPT, {"max_tokens": 4})


def test_the_raw_engine_takes_options(llm):
    toks = llm.tokenize(PROMPT)
    ref = llm.generate(toks, max_tokens=12, ignore_eos=True, spec_type="none").tokens
    r = llm._engine.generate(toks, GenerationOptions(max_tokens=12, ignore_eos=True))
    assert list(r["tokens"]) == ref
    # n_predict is the engine's (llama.cpp's) name for max_tokens
    assert list(llm._engine.generate(toks, n_predict=5, ignore_eos=True)["tokens"]) == ref[:5]
    assert list(llm._engine.generate(toks, GenerationOptions(ignore_eos=True), max_tokens=5)["tokens"]) == ref[:5]
    with pytest.raises(pyspec.InvalidParameterError, match="not both"):
        llm._engine.generate(toks, n_predict=5, max_tokens=5)
    # the drafter and the sampling settings reach the engine
    long = llm.generate(toks, max_tokens=64, ignore_eos=True, spec_type="none").tokens
    d = _core.NgramDrafter(3, 3)
    r = llm._engine.generate(toks, GenerationOptions(max_tokens=64, ignore_eos=True, draft_n_max=3), drafter=d)
    assert list(r["tokens"]) == long and r["stats"]["draft_n"] > 0 and len(r["stats"]["drafted_per_position"]) == 3
    hot = GenerationOptions(max_tokens=12, ignore_eos=True, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1)
    sampled = list(llm._engine.generate(toks, hot)["tokens"])
    assert sampled == llm.generate(toks, hot, spec_type="none").tokens != ref


def test_the_command_line_checks_options_before_loading(tmp_path):
    """A wrong flag value is refused with the option's message, before the model is even looked for."""
    r = subprocess.run([sys.executable, "-m", "pyspec", "-m", str(tmp_path / "missing.gguf"), "-p", "hi",
                        "--top-p", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "top_p must be" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "not found" not in r.stderr


def test_bench_takes_generation_options(tiny_target):
    cfg = BenchConfig(model=str(tiny_target), options=GenerationOptions(max_tokens=4, seed=None))
    cfg.validate()
    assert isinstance(cfg.options.seed, int)  # one seed drawn for every run, recorded
    with pytest.raises(pyspec.InvalidParameterError, match="must be a pyspec.GenerationOptions"):
        BenchConfig(options={"max_tokens": 4}).validate()
    with pytest.raises(pyspec.InvalidParameterError, match="max_tokens"):
        BenchConfig(options=GenerationOptions(max_tokens=1)).validate()
