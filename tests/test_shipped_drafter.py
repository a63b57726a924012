"""The DFlash drafter pyspec ships for the default model (pyspec/drafters/): found, checked, loaded,
and it drafts tokens the target accepts, with the output still the target's own."""
import subprocess
import sys
from pathlib import Path

import pytest

import pyspec
from pyspec import models

import tiny_draft_heads as heads

CODE = "def binary_search(items, target):\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n"


def bench_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pyspec", "bench", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_the_shipped_file_is_a_dflash_drafter_for_the_default_model():
    name, sha = models.SHIPPED_DRAFTERS[models.DEFAULT_MODEL_SHA256]["dflash"]
    path = Path(models.__file__).parent / "drafters" / name
    assert models._sha256(path) == sha
    info = pyspec.model_info(path)
    assert (info["architecture"], info["role"], info["n_embd"]) == ("dflash", "drafter", 640)


def test_no_shipped_drafter_for_another_model(tiny_target):
    with pytest.raises(pyspec.InvalidParameterError, match="ships no 'dflash' drafter.*pyspec train dflash"):
        pyspec.shipped_drafter(tiny_target)
    with pytest.raises(pyspec.InvalidParameterError, match="ships no 'eagle3' drafter"):
        pyspec.shipped_drafter(tiny_target, kind="eagle3")
    with pytest.raises(pyspec.ModelFileNotFoundError, match="not found"):
        pyspec.shipped_drafter(tiny_target.parent / "missing.gguf")


@pytest.mark.gemma
def test_a_damaged_shipped_drafter_is_refused(gemma_path, monkeypatch):
    name, _ = models.SHIPPED_DRAFTERS[models.DEFAULT_MODEL_SHA256]["dflash"]
    monkeypatch.setitem(models.SHIPPED_DRAFTERS, models.DEFAULT_MODEL_SHA256, {"dflash": (name, "0" * 64)})
    with pytest.raises(pyspec.ModelLoadError, match="damaged"):
        pyspec.shipped_drafter(gemma_path)


@pytest.mark.gemma
def test_the_shipped_drafter_is_accepted_and_lossless(gemma_path):
    # A random DFlash head drafts nothing the target accepts (tests/test_heads.py); the trained one
    # (1.7-2.2 tokens a step on held-out code and prose, BENCHMARKS.md) must, with the output plain's.
    drafter = pyspec.shipped_drafter(gemma_path)
    llm = pyspec.LLM(gemma_path, n_ctx=512, draft_model=drafter)
    assert llm.auto_spec_type() == "dflash"
    plain = llm.generate(CODE, max_tokens=48, temperature=0.0, spec_type="none", ignore_eos=True)
    spec = llm.generate(CODE, max_tokens=48, temperature=0.0, spec_type="dflash", draft_n_max=3, ignore_eos=True)
    assert spec.tokens == plain.tokens
    s = spec.stats
    assert s.draft_n > 0 and s.draft_n_accepted >= 0.2 * s.draft_n, (s.draft_n, s.draft_n_accepted)
    assert s.mean_acceptance_length > 1.3


@pytest.mark.gemma
def test_bench_spec_type_dflash_uses_the_shipped_drafter(gemma_path):
    r = bench_cli("-m", gemma_path, "--spec-type", "dflash", "--spec-draft-n-max", 3, "-n", 16,
                  "--prompts", "code-edit", "--reps", 1, "--warmup", 0, "--no-progress", "-t", 1)
    assert r.returncode == 0, r.stderr
    assert "draft gemma-3-270m-q4_k_m.dflash.gguf" in r.stdout and "pyspec dflash" in r.stdout


def test_bench_spec_type_checks(tiny_target, tiny_draft, model_dir):
    r = bench_cli("-m", tiny_target, "--spec-type", "eagle3", "-n", 8, "--no-progress")
    assert r.returncode != 0 and "--spec-type eagle3 needs an EAGLE-3 head" in r.stderr
    r = bench_cli("-m", tiny_target, "-md", tiny_draft, "--spec-type", "draft,dflash", "-n", 8, "--no-progress")
    assert r.returncode != 0 and "one run loads one -md file" in r.stderr
    r = bench_cli("-m", tiny_target, "--spec-type", "dflash", "-n", 8, "--no-progress")
    assert r.returncode != 0 and "ships no 'dflash' drafter" in r.stderr


def test_bench_runs_the_kind_of_the_md_file(tiny_target, model_dir):
    # with -md and no --spec-type: ngram plus what the file is (here a DFlash drafter, not a draft model)
    d = heads.write_dflash(model_dir / "bench_dflash.gguf", block_size=8)
    r = bench_cli("-m", tiny_target, "-md", d, "-n", 8, "--prompts", "code-edit", "--reps", 1, "--warmup", 0,
                  "--no-progress", "-c", 512)
    assert r.returncode == 0, r.stderr
    assert "pyspec dflash" in r.stdout and "pyspec ngram" in r.stdout and "pyspec draft " not in r.stdout
