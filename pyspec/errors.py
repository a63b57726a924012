"""pyspec's exception hierarchy. Every error the engine raises is a PyspecError."""


class PyspecError(Exception):
    """Base class of all pyspec errors."""


class ModelLoadError(PyspecError):
    """A model file is missing, not a GGUF, corrupt, or refused by llama.cpp."""


class ModelFileNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path does not exist or is not a file."""


class VocabMismatchError(PyspecError):
    """A draft model's vocabulary differs from the target's."""


class DraftMismatchError(PyspecError):
    """A drafter (EAGLE-3 head, DFlash drafter, MTP layers) does not fit the
    target: another hidden size, target layers it does not have, or a file
    that is not a drafter of the requested kind."""


class ContextOverflowError(PyspecError):
    """The request does not fit into the context window."""


class InvalidParameterError(PyspecError, ValueError):
    """A parameter is out of range or inconsistent with another."""


class MemoryBudgetError(InvalidParameterError):
    """No configuration fits the memory budget (LLM(memory_budget=...)); the message says the
    largest context that fits and what to change."""


class UnknownOptionError(InvalidParameterError, TypeError):
    """A keyword that is not a generation option (a GenerationOptions field); also a
    TypeError, as an unexpected keyword argument is in Python."""


class DecodeError(PyspecError):
    """llama.cpp failed while evaluating a batch."""


class UnsupportedError(PyspecError):
    """The model cannot run in the requested mode on this backend, e.g. exact
    (batch-invariant) kernels on a GPU for a weight type or an operation they
    do not cover. The message names the operation and what to use instead."""


class RPCError(PyspecError, ConnectionError):
    """An RPC server of LLM(rpc=[...]) cannot be reached or is not a llama.cpp RPC server; also a
    ConnectionError. The message names the endpoint and how to start a server there."""


class GenerationInterrupted(PyspecError):
    """A generation was stopped before it finished."""


__all__ = [
    "PyspecError", "ModelLoadError", "ModelFileNotFoundError", "VocabMismatchError",
    "DraftMismatchError", "ContextOverflowError", "InvalidParameterError", "UnknownOptionError", "DecodeError", "UnsupportedError", "GenerationInterrupted", "RPCError",
]
