"""Checks a file's GGUF header before llama.cpp sees it.

llama.cpp reports most bad files by returning NULL, but a clear Python error
that says what was expected is friendlier, and some header values (absurd
counts) are cheaper to reject here than to let the loader try to allocate.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

from .errors import ModelFileNotFoundError, ModelLoadError

GGUF_MAGIC = b"GGUF"
# Smallest possible encodings: a key-value is a u64 key length, >= 1 key byte,
# a u32 type and >= 1 value byte; a tensor info is a u64 name length, >= 1
# name byte, a u32 n_dims, >= 1 u64 dim, a u32 type and a u64 offset.
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8


def check_gguf(path: str | os.PathLike, what: str = "model") -> Path:
    """Returns the path if it looks like a readable GGUF file; raises otherwise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFileNotFoundError(
            f"{what} file not found: '{p}'. Expected a path to a .gguf file; check the path "
            "(or omit -m to use the default model).")
    if p.is_dir():
        raise ModelLoadError(f"{what} path '{p}' is a directory; expected a .gguf file inside it.")
    size = p.stat().st_size
    try:
        with p.open("rb") as f:
            head = f.read(24)
    except OSError as e:
        raise ModelLoadError(f"cannot read {what} file '{p}': {e}") from e
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        raise ModelLoadError(
            f"'{p}' is not a GGUF file: expected the magic bytes b'GGUF', found {head[:4]!r}. "
            "Convert the model to GGUF with llama.cpp's convert_hf_to_gguf.py.")
    if len(head) < 24:
        raise ModelLoadError(f"'{p}' is truncated: {size} bytes, shorter than a GGUF header (24 bytes).")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise ModelLoadError(f"'{p}': unsupported GGUF version {version} (expected 2 or 3).")
    need = 24 + n_tensors * _MIN_TENSOR_INFO_BYTES + n_kv * _MIN_KV_BYTES
    if need > size:
        raise ModelLoadError(
            f"'{p}' is corrupt or truncated: its header claims {n_tensors} tensors and {n_kv} "
            f"metadata keys, which need at least {need} bytes, but the file has {size} bytes. "
            "Re-download or re-convert the model.")
    return p
