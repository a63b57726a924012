#!/usr/bin/env python3
"""Packs the pinned llama.cpp source for the GPU host, which reaches no registry.

The full tree is 176 MB; the device tool carries at most 64 MiB. This keeps
what a CUDA build of pyspec and llama.cpp's tools needs, plus one vocabulary
(ggml-vocab-llama-bpe.gguf, 128256 tokens) for synthetic 8B-shape models:

    python benchmarks/gpu/pack_source.py      # -> build/gpu/llama-src.tar.gz
"""
from __future__ import annotations

import importlib.util
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "gpu" / "llama-src.tar.gz"
KEEP_BACKENDS = {"ggml-cpu", "ggml-cuda", "ggml-blas", "ggml-rpc"}
# (tests/, tools/server/, tools/ui/ and app/ are behind options pyspec turns off)
DROP_DIRS = ("docs/", "media/", "tests/", "tools/ui/", "tools/server/", "benches/", "app/", "skills/", "ci/",
             "requirements/")
KEEP_MODELS = {"models/ggml-vocab-llama-bpe.gguf"}


def keep(name: str) -> bool:
    if name.startswith("models/") and name not in KEEP_MODELS and name != "models":
        return False
    if any(name.startswith(d) or name == d.rstrip("/") for d in DROP_DIRS):
        return False
    parts = name.split("/")
    if len(parts) >= 3 and parts[0] == "ggml" and parts[1] == "src" and parts[2].startswith("ggml-") \
            and "." not in parts[2] and parts[2] not in KEEP_BACKENDS:
        return False
    return True


def main() -> int:
    spec = importlib.util.spec_from_file_location("fetch", ROOT / "llama.cpp" / "fetch.py")
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    sdist = fetch.download_sdist(ROOT / "llama.cpp" / "_cache" / "downloads")
    prefix = f"{sdist.name[:-len('.tar.gz')]}/{fetch.PIN['sdist_subdir']}/"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(sdist) as src, tarfile.open(OUT, "w:gz") as dst:
        for m in src.getmembers():
            if not m.name.startswith(prefix):
                continue
            rel = m.name[len(prefix):]
            if not rel or not keep(rel):
                continue
            f = src.extractfile(m) if m.isfile() else None
            m.name = "llama.cpp/" + rel
            m.pax_headers.pop("path", None)  # a long name's pax record would override the new name
            dst.addfile(m, f)
            n += 1
    print(f"{OUT}: {n} entries, {OUT.stat().st_size / 2**20:.1f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
