"""pyspec: lossless speculative decoding for GGUF models.

A C++ engine over a pinned, patched llama.cpp drafts tokens cheaply (n-gram
lookup, a small draft model, ...) and verifies them in one forward pass of the
target model; exact (batch-invariant) kernels keep the output identical to the
target's own.

    >>> import pyspec
    >>> llm = pyspec.LLM()                                  # default model
    >>> out = llm.generate("def quicksort(arr):", spec_type="ngram")
    >>> out.text, out.stats.mean_acceptance_length
"""
try:
    from ._core import build_info
except ImportError as _e:  # the source tree without the compiled engine
    raise ImportError(
        f"pyspec's compiled engine (pyspec._core) is missing from {__path__[0]}. Install pyspec with "
        "`pip install .` (or `pip install --no-build-isolation -e .` for development); when running the tests "
        "from a checkout, use `pytest`, not `python -m pytest`, which puts the uninstalled source tree first "
        "on sys.path.") from _e
from .api import LLM, SPEC_TYPES, Chunk, Generation, Stats, default_threads, memory_report, model_info
from .batch import BatchLLM, BatchRequest
from .errors import (ContextOverflowError, DecodeError, DraftMismatchError, GenerationInterrupted,
                     InvalidParameterError, MemoryBudgetError, ModelFileNotFoundError, ModelLoadError, PyspecError,
                     RPCError, UnknownOptionError, UnsupportedError, VocabMismatchError)
from .models import default_model_path, shipped_drafter
from .options import GenerationOptions
from .plan import Plan, parse_size, plan

__version__ = "0.1.0"

__all__ = [
    "LLM", "BatchLLM", "BatchRequest", "GenerationOptions", "Generation", "Stats", "Chunk", "SPEC_TYPES", "build_info", "model_info", "memory_report", "plan", "Plan", "parse_size",
    "default_model_path", "shipped_drafter",
    "default_threads",
    "PyspecError", "ModelLoadError", "ModelFileNotFoundError", "VocabMismatchError", "DraftMismatchError",
    "ContextOverflowError", "InvalidParameterError", "MemoryBudgetError", "UnknownOptionError", "DecodeError", "UnsupportedError",
    "GenerationInterrupted", "RPCError",
]
