"""GenerationOptions: every generation setting, its default and its check, in one place.

LLM.generate / stream / chat / chat_stream take one (or its fields as keywords),
the CLI and `pyspec bench` build one, and the binding (csrc/bindings/engine.cpp)
maps it onto the engine's GenerateParams.

    >>> opts = pyspec.GenerationOptions(max_tokens=64, spec_type="ngram")
    >>> llm.generate("def fib(n):", opts)            # or llm.generate("def fib(n):", max_tokens=64, ...)
    >>> llm.generate("def fib(n):", opts, seed=1)    # keywords override the options' fields
"""
from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, fields, replace
from numbers import Integral, Real
from typing import Optional

from .errors import InvalidParameterError, UnknownOptionError

SPEC_TYPES = ("auto", "none", "ngram", "draft", "mtp", "eagle3", "dflash")
SPEC_SAMPLING = ("rejection", "equal")
DRAFT_N_MAX_LIMIT = 64
NGRAM_N_LIMIT = 64


@dataclass(frozen=True)
class GenerationOptions:
    """How one generation runs. Checked when made: a wrong value raises
    InvalidParameterError, an unknown name UnknownOptionError.

    Arguments:
      max_tokens: tokens to generate at most (>= 0).
      temperature: 0 is greedy; above 0 samples after top_k / top_p / min_p.
      top_k, top_p, min_p: truncation before sampling (0, 1.0, 0.0: off).
      repeat_penalty, frequency_penalty, presence_penalty, penalty_last_n:
        llama.cpp's penalties over the last penalty_last_n tokens (prompt
        included; 0: off, -1: the whole context); 1.0 / 0.0 / 0.0 are off.
      seed: the sampling seed (None: random; the one used is in the result).
      spec_type: "none", "ngram", "draft", "mtp", "eagle3", "dflash" or
        "auto" (None is "auto", the default: the draft file's kind when one
        is loaded, else "mtp" when the target has MTP layers, else "none";
        see LLM.spec_types).
      spec_sampling: how drafts are verified when temperature > 0:
        "rejection" (default): rejection sampling; the drafter samples from
        its own distribution q and a draft is accepted with probability
        min(1, p/q). The tokens follow the target's distribution exactly.
        "equal": accept-if-equal; a draft is kept when it equals the
        target's own sample, so the tokens equal spec_type="none" for the
        same seed.
      draft_n_max, draft_n_min: longest draft per step (0..64); shorter
        drafts than draft_n_min are not verified.
      ngram_n, ngram_n_min: the n-gram drafter looks up the last ngram_n
        tokens, then shorter suffixes down to ngram_n_min (None: ngram_n, no
        fallback).
      ignore_eos: keep generating past end-of-generation tokens.
      add_special, parse_special: how a text prompt is tokenized (BOS as the
        model wants it; special tokens such as <start_of_turn> parsed).

    Example:
      >>> opts = GenerationOptions(max_tokens=256, temperature=0.8, seed=1, spec_type="ngram")
      >>> opts.replace(seed=2).seed
      2
    """

    max_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: Optional[int] = None
    spec_type: str = "auto"
    spec_sampling: str = "rejection"
    draft_n_max: int = 16
    draft_n_min: int = 0
    ngram_n: int = 3
    ngram_n_min: Optional[int] = None
    ignore_eos: bool = False
    add_special: bool = True
    parse_special: bool = False

    def __post_init__(self):
        if self.spec_type is None:
            object.__setattr__(self, "spec_type", "auto")
        _int(self, "max_tokens", lo=0)
        _real(self, "temperature", "a finite number >= 0 (0 = greedy)", lambda v: v >= 0)
        _int(self, "top_k", lo=0, note="0 = off")
        _real(self, "top_p", "a number in (0, 1] (1 = off)", lambda v: 0 < v <= 1)
        _real(self, "min_p", "a number in [0, 1) (0 = off)", lambda v: 0 <= v < 1)
        _real(self, "repeat_penalty", "a finite number > 0 (1 = off)", lambda v: v > 0)
        _real(self, "frequency_penalty", "a finite number (0 = off)", lambda v: True)
        _real(self, "presence_penalty", "a finite number (0 = off)", lambda v: True)
        _int(self, "penalty_last_n", lo=-1, note="0 = off, -1 = the whole context")
        if self.seed is not None:
            _int(self, "seed", lo=0, hi=2**64 - 1, note="or None: a random seed")
        _choice(self, "spec_type", SPEC_TYPES)
        _choice(self, "spec_sampling", SPEC_SAMPLING)
        _int(self, "draft_n_max", lo=0, hi=DRAFT_N_MAX_LIMIT, note="the longest draft per step")
        _int(self, "draft_n_min", lo=0, hi=self.draft_n_max, note=f"at most draft_n_max={self.draft_n_max}")
        _int(self, "ngram_n", lo=1, hi=NGRAM_N_LIMIT)
        if self.ngram_n_min is not None:
            _int(self, "ngram_n_min", lo=1, hi=self.ngram_n,
                 note=f"at most ngram_n={self.ngram_n}, or None: no shorter lookups")
        for name in ("ignore_eos", "add_special", "parse_special"):
            if not isinstance(getattr(self, name), bool):
                _bad(name, "True or False", getattr(self, name))

    @classmethod
    def names(cls) -> tuple:
        """The field names: the keywords LLM.generate and friends take."""
        return tuple(f.name for f in fields(cls))

    def replace(self, **changes) -> "GenerationOptions":
        """A copy with some fields changed (checked like a new one)."""
        check_names(changes, "GenerationOptions.replace()")
        return replace(self, **changes)

    @classmethod
    def build(cls, options: Optional["GenerationOptions"] = None, where: str = "generate()",
              **changes) -> "GenerationOptions":
        """`options` (None: the defaults) with `changes` applied: what LLM.generate(prompt,
        options, **changes) runs with. `where` names the caller in error messages."""
        if options is None:
            check_names(changes, where)
            return cls(**changes)
        if not isinstance(options, cls):
            raise InvalidParameterError(
                f"{where}: options must be a pyspec.GenerationOptions, got {type(options).__name__} "
                f"{options!r}; build one with pyspec.GenerationOptions(max_tokens=..., ...) or pass the "
                "settings as keywords")
        check_names(changes, where)
        return replace(options, **changes) if changes else options


def check_names(changes: dict, where: str) -> None:
    """UnknownOptionError for a keyword that is not a GenerationOptions field."""
    names = GenerationOptions.names()
    unknown = [k for k in changes if k not in names]
    if not unknown:
        return
    k = unknown[0]
    close = difflib.get_close_matches(k, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownOptionError(
        f"{where} got an unknown generation option {k!r}; {hint}the options are GenerationOptions' fields: "
        f"{', '.join(names)}")


def with_option_keywords(func):
    """Shows GenerationOptions' fields as keyword-only parameters in func's signature (help(),
    inspect, IDEs), so that generate()'s keywords are written once, in the dataclass."""
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
               for f in fields(GenerationOptions)]
    func.__signature__ = sig.replace(parameters=params)
    return func


def _bad(name: str, expected: str, got) -> None:
    raise InvalidParameterError(f"{name} must be {expected}; got {got!r} ({type(got).__name__}). "
                                f"Pass {name}= with such a value (pyspec.GenerationOptions lists every option "
                                "and its default).")


def _int(o, name: str, lo: int, hi: Optional[int] = None, note: str = "") -> None:
    v = getattr(o, name)
    rng = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
    expected = f"{rng} ({note})" if note else rng
    if isinstance(v, bool) or not isinstance(v, Integral):
        _bad(name, expected, v)
    if v < lo or (hi is not None and v > hi):
        _bad(name, expected, v)
    object.__setattr__(o, name, int(v))


def _real(o, name: str, expected: str, ok) -> None:
    v = getattr(o, name)
    if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or not ok(v):
        _bad(name, expected, v)
    object.__setattr__(o, name, float(v))


def _choice(o, name: str, choices: tuple) -> None:
    v = getattr(o, name)
    if v not in choices:
        _bad(name, "one of " + ", ".join(repr(c) for c in choices), v)
