"""Models for the GPU tests (tests/test_gpu.py) and the GPU runner.

Tiny random llama models whose shapes the exact CUDA kernels cover (head
size 128, rows a multiple of 256 for the K-quants) in the weight types of
common GGUF files, one whose head size (16) they do not cover, a tiny MTP
target, and a random DFlash head of the real Gemma 3 270M shape.

``write_all(folder)`` writes them all (seconds); the GPU runner writes them on
the development machine and carries the folder (``PYSPEC_GPU_MODELS``),
since the GPU host has no registry to install ``gguf`` from.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# weight types of the exact CUDA path that a tiny llama exercises (Q4_K_M mixes Q4_K and Q6_K)
QUANTS = ("q8_0", "q4_0", "q5_0", "q4_k_m", "q6_k")
SHAPE = dict(n_embd=256, n_head=2, n_head_kv=1, n_ff=512, n_layer=2)


# prompts of the GPU end-to-end checks (tests/test_gpu.py, benchmarks/gpu/exact_matrix.py):
# code, prose, code, chat-like, repetitive
PROMPTS = [
    "def quicksort(arr):\n    if len(arr) <= 1:\n        return arr\n",
    "The history of the Roman Empire begins",
    "import numpy as np\nimport torch\n\nclass Model(torch.nn.Module):\n",
    "Q: What is the capital of France?\nA:",
    "one two three four five six seven eight nine ten one two three",
]


class _NoisyOracleBase:
    """Drafts the target's own continuation with every third draft corrupted at a random
    position: exercises every verify width, full and partial acceptance (a _core.Drafter:
    noisy_oracle() makes one)."""

    def begin(self, prompt):
        self.n = 0

    def accept(self, n_accepted, emitted):
        self.n += len(emitted)

    def draft(self, n_max):
        d = list(self.reference[self.n:self.n + n_max])
        if d and self.rng.random() < 1 / 3:
            d[self.rng.randrange(len(d))] = self.rng.randrange(3, self.n_vocab)
        return d


def noisy_oracle(reference, n_vocab, seed=0):
    """A NoisyOracle drafter replaying `reference` (the plain output)."""
    import random
    from pyspec import _core

    class NoisyOracle(_NoisyOracleBase, _core.Drafter):
        def __init__(self):
            _core.Drafter.__init__(self)
            self.reference, self.n_vocab, self.rng = reference, n_vocab, random.Random(seed)
    return NoisyOracle()


def first_diff(a, b):
    """The first position where two token lists differ (None when equal)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def folder() -> Path | None:
    d = os.environ.get("PYSPEC_GPU_MODELS")
    return Path(d) if d else None


def llama_f32(d: Path) -> Path:
    import tiny_models
    return tiny_models.write_llama(d / "llama256-f32.gguf", seed=0, **SHAPE)


def write_all(d: Path, gemma: Path | None = None) -> list[Path]:
    """Writes every model into d; with gemma (the default model's path), also random heads for it."""
    import tiny_models
    import tiny_mtp_models
    from pyspec import _core
    d.mkdir(parents=True, exist_ok=True)
    f32 = llama_f32(d)
    out = [f32]
    for q in QUANTS:
        p = d / f"llama256-{q}.gguf"
        _core.quantize(str(f32), str(p), q, 2)
        out.append(p)
    out.append(tiny_models.write_llama(d / "llama64-q8_0.f32.gguf", seed=0))
    small = d / "llama64-q8_0.gguf"
    _core.quantize(str(out[-1]), str(small), "q8_0", 2)
    out[-1].unlink()
    out[-1] = small
    mtp = tiny_mtp_models.write_mtp_dense(d / "mtp256-f32.gguf", seed=1, n_layer=2, n_embd=256, n_head=2,
                                          n_head_kv=1, n_ff=512, mimic=True)
    _core.quantize(str(mtp), str(d / "mtp256-q8_0.gguf"), "q8_0", 2)
    mtp.unlink()
    out.append(d / "mtp256-q8_0.gguf")
    if gemma is not None:
        sys.path.insert(0, str(HERE.parent / "benchmarks"))
        import bench_heads
        # (the random EAGLE-3 head is 31 MiB even in q4_0, too much to travel beside the rest)
        for kind, make in (("dflash", bench_heads.dflash_path),):
            # q4_0: a third of the bf16 file
            dst = d / f"gemma-{kind}-random-q4_0.gguf"
            if not dst.exists():
                _core.quantize(str(make(gemma)), str(dst), "q4_0", 2)
            out.append(dst)
    return out


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--gemma", action="store_true", help="also a random DFlash head for the default model")
    a = ap.parse_args()
    g = None
    if a.gemma:
        import pyspec
        g = pyspec.default_model_path()
    for p in write_all(a.folder, g):
        print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p}")
