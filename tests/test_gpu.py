"""GPU-only checks; skipped on CPU builds (CI) and on machines without a GPU."""
import os
import subprocess
import sys

import pytest

import pyspec
from pyspec import _core

needs_gpu = pytest.mark.skipif(not _core.build_info()["gpu_offload"], reason="no GPU backend in this build")

PROMPT = "the of and to in is it"


def _gen(model, env_argmax):
    """Greedy tokens in a fresh process (the switch is read when the engine is made)."""
    code = ("import pyspec, json, sys; llm = pyspec.LLM(sys.argv[1], n_gpu_layers=-1, n_ctx=512); "
            f"print(json.dumps([llm.generate({PROMPT!r}, max_tokens=48, ignore_eos=True, spec_type=t).tokens "
            "for t in ('none', 'ngram')]))")
    env = dict(os.environ, PYSPEC_DEVICE_ARGMAX=env_argmax)
    out = subprocess.run([sys.executable, "-c", code, str(model)], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


@needs_gpu
def test_device_argmax_matches_host_argmax(tiny_target):
    # same logits, argmax taken on the device vs on the host: same tokens
    assert _gen(tiny_target, "1") == _gen(tiny_target, "0")


def test_device_argmax_off_without_gpu(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=256)
    assert llm._engine.device_argmax_available() is False
