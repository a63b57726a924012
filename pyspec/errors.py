"""pyspec's exception hierarchy. Every error the engine raises is a PyspecError."""


class PyspecError(Exception):
    """Base class of all pyspec errors."""


class ModelLoadError(PyspecError):
    """A model file is missing, not a GGUF, corrupt, or refused by llama.cpp."""


class ModelFileNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path does not exist or is not a file."""


class VocabMismatchError(PyspecError):
    """A draft model's vocabulary differs from the target's."""


class ContextOverflowError(PyspecError):
    """The request does not fit into the context window."""


class InvalidParameterError(PyspecError, ValueError):
    """A parameter is out of range or inconsistent with another."""


class DecodeError(PyspecError):
    """llama.cpp failed while evaluating a batch."""


class GenerationInterrupted(PyspecError):
    """A generation was stopped before it finished."""


__all__ = [
    "PyspecError", "ModelLoadError", "ModelFileNotFoundError", "VocabMismatchError",
    "ContextOverflowError", "InvalidParameterError", "DecodeError", "GenerationInterrupted",
]
