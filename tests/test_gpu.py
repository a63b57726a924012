"""GPU checks: exact (batch-invariant) CUDA kernels and lossless speculation on the GPU.

Skipped on CPU builds and on machines without a GPU (CI). On the GPU host they
run through benchmarks/gpu/run_h200.sh (step `test`), with the models of
tests/gpu_models.py written on the development machine and carried there
(PYSPEC_GPU_MODELS); elsewhere the tests write them themselves.
"""
import os
import random
import subprocess
import sys

import pytest

import pyspec
from pyspec import _core

import gpu_models
from test_exactness import assert_bitwise_equal, logits_by_width as rows_by_width

needs_gpu = pytest.mark.skipif(not _core.build_info()["gpu_offload"], reason="no GPU backend in this build")

PROMPT = "the of and to in is it"
# 1..17 (every verify of up to 16 drafts), then the chunked widths up to the exact maximum (65)
WIDTHS = list(range(1, 18)) + [24, 32, 64, 65]
# prompts for the end-to-end checks: code, prose, code, chat-like, repetitive
PROMPTS = gpu_models.PROMPTS


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = gpu_models.folder()
    if d is None or not (d / "llama256-q8_0.gguf").exists():
        d = tmp_path_factory.mktemp("gpu_models")
        gpu_models.write_all(d)
    return d


def gpu_llm(path, **kw):
    kw.setdefault("n_ctx", 1024)
    return pyspec.LLM(path, n_gpu_layers=-1, **kw)


@needs_gpu
def test_build_reports_exact_cuda():
    assert "CUDA" in _core.build_info()["exact_backends"]


@needs_gpu
def test_build_reports_pyspec_exact_cuda_kernels():
    # csrc/cuda/exact_mmv.cu is linked in and registered with ggml-cuda (patch 0006)
    assert "exact_mmv" in _core.build_info()["exact_cuda_kernels"]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@needs_gpu
@pytest.mark.skipif(subprocess.run(["which", "nvcc"], capture_output=True).returncode != 0, reason="no nvcc")
def test_exact_mmv_kernels_against_reference_and_across_widths(tmp_path):
    # benchmarks/gpu/exact_mmv_check.cu: every covered weight type against a float64 reference over the
    # same quantized values, and widths 1..33 bitwise equal to width 1 with a poisoned output
    exe = tmp_path / "mmv"
    subprocess.run(["nvcc", "-O3", "-std=c++17", "-arch=native", "-I" + os.path.join(ROOT, "csrc", "cuda"),
                    os.path.join(ROOT, "benchmarks", "gpu", "exact_mmv_check.cu"),
                    os.path.join(ROOT, "csrc", "cuda", "exact_mmv.cu"), "-o", str(exe)], check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ALL OK" in r.stdout, r.stdout + r.stderr


@needs_gpu
@pytest.mark.parametrize("name", [f"llama256-{q}" for q in gpu_models.QUANTS] + ["llama64-q8_0"])
def test_cuda_exact_logits_do_not_depend_on_width(models, name):
    # llama64: head size 16 has no CUDA attention kernel, so llama.cpp runs attention on the CPU
    # backend, whose exact kernels keep it invariant too
    llm = gpu_llm(models / f"{name}.gguf")
    assert llm._engine.exact
    prompt = llm.tokenize(PROMPT)
    follow = llm.generate(PROMPT, max_tokens=65, ignore_eos=True).tokens
    assert_bitwise_equal(rows_by_width(llm, prompt, follow))


@needs_gpu
def test_cuda_exact_with_quantized_kv_cache(models):
    llm = gpu_llm(models / "llama256-q4_k_m.gguf", type_k="q8_0", type_v="q8_0")
    prompt = llm.tokenize(PROMPT)
    follow = llm.generate(PROMPT, max_tokens=33, ignore_eos=True).tokens
    assert_bitwise_equal(rows_by_width(llm, prompt, follow, [1, 2, 5, 8, 9, 16, 17, 33]))


@needs_gpu
def test_cuda_exact_across_kv_padding(models):
    # a verify batch that crosses a 256-cell boundary of the KV cache sees more (masked) cells
    # than the decode of the same tokens did; the fixed KV split keeps the rows equal
    llm = gpu_llm(models / "llama256-q8_0.gguf")
    rng = random.Random(0)
    prompt = [rng.randrange(3, llm.n_vocab) for _ in range(250)]
    follow = [rng.randrange(3, llm.n_vocab) for _ in range(17)]
    assert_bitwise_equal(rows_by_width(llm, prompt, follow, [1, 3, 8, 17]))


@needs_gpu
@pytest.mark.parametrize("name", ["llama256-f32.gguf"])
def test_cuda_exact_refuses_what_it_does_not_cover(models, name):
    # f32 weights (no exact mat-vec kernel): a clear error at load, never a silent fallback to
    # kernels that depend on the batch
    with pytest.raises(pyspec.UnsupportedError, match="exact"):
        gpu_llm(models / name)
    fast = gpu_llm(models / name, kernels="fast")
    assert not fast._engine.exact
    assert len(fast.generate(PROMPT, max_tokens=8, ignore_eos=True).tokens) == 8


def NoisyOracle(reference, n_vocab, seed=0):
    return gpu_models.noisy_oracle(reference, n_vocab, seed)


def _generate_with(llm, prompt, n, drafter, k):
    r = llm._engine.generate(llm.tokenize(prompt), n_predict=n, draft_n_max=k, ignore_eos=True, drafter=drafter)
    return list(r["tokens"])


_first_diff = gpu_models.first_diff


def spec(llm, spec_type):
    """A run of check_speculative_equals_plain with one of the LLM's own drafters."""
    return lambda p, base, k: llm.generate(p, max_tokens=len(base), ignore_eos=True, spec_type=spec_type,
                                           draft_n_max=k).tokens


def check_speculative_equals_plain(llm, drafters, n=256, ks=(1, 3, 7, 8, 15), prompts=PROMPTS):
    bad = []
    for p in prompts:
        base = llm.generate(p, max_tokens=n, ignore_eos=True, spec_type="none").tokens
        for name, run in drafters.items():
            for k in ks:
                got = run(p, base, k)
                if got != base:
                    bad.append(f"{name} k={k} prompt {p[:16]!r}: first difference at {_first_diff(got, base)}")
    assert not bad, "\n".join(bad)


@needs_gpu
def test_cuda_speculative_equals_plain_tiny(models):
    llm = gpu_llm(models / "llama256-q4_k_m.gguf")
    check_speculative_equals_plain(llm, {
        "ngram": spec(llm, "ngram"),
        "oracle": lambda p, base, k: _generate_with(llm, p, len(base), NoisyOracle(base, llm.n_vocab), k),
    }, n=128, prompts=["the of and to", "x y z x y z", "def sort(arr): return"])


@needs_gpu
def test_cuda_speculative_equals_plain_draft_model(models):
    llm = gpu_llm(models / "llama256-q4_k_m.gguf", draft_model=models / "llama256-q4_0.gguf")
    check_speculative_equals_plain(llm, {
        "draft": spec(llm, "draft"),
    }, n=128, prompts=["the of and to", "def sort(arr): return"])


@needs_gpu
def test_cuda_speculative_equals_plain_mtp(models):
    llm = gpu_llm(models / "mtp256-q8_0.gguf")
    check_speculative_equals_plain(llm, {
        "mtp": spec(llm, "mtp"),
    }, n=96, prompts=["the of and to", "def sort(arr): return"])


@pytest.fixture(scope="module")
def gemma_gpu(gemma_path):
    return gpu_llm(gemma_path, n_ctx=2048)


@needs_gpu
@pytest.mark.gemma
def test_cuda_exact_gemma_logits_do_not_depend_on_width(gemma_gpu):
    prompt = gemma_gpu.tokenize(PROMPTS[0])
    follow = gemma_gpu.generate(PROMPTS[0], max_tokens=65, ignore_eos=True).tokens
    assert_bitwise_equal(rows_by_width(gemma_gpu, prompt, follow))


@needs_gpu
@pytest.mark.gemma
def test_cuda_speculative_equals_plain_gemma(gemma_gpu, models):
    llm = gemma_gpu
    drafters = {
        "ngram": spec(llm, "ngram"),
        "oracle": lambda p, base, k: _generate_with(llm, p, len(base), NoisyOracle(base, llm.n_vocab), k),
    }
    check_speculative_equals_plain(llm, drafters)


@needs_gpu
@pytest.mark.gemma
def test_cuda_speculative_equals_plain_gemma_dflash(gemma_path, models):
    head = models / "gemma-dflash-random-q4_0.gguf"
    if not head.exists():
        pytest.skip("the random DFlash head for the default model is written by gpu_models.py --gemma")
    llm = gpu_llm(gemma_path, n_ctx=2048, draft_model=head)
    check_speculative_equals_plain(llm, {
        "dflash": spec(llm, "dflash"),
    }, ks=(1, 7, 15))


@needs_gpu
def test_device_argmax_matches_host_argmax(models):
    # same logits, argmax taken on the device vs on the host: same tokens (each in a fresh
    # process: the switch is read when the engine is made)
    code = ("import pyspec, json, sys; llm = pyspec.LLM(sys.argv[1], n_gpu_layers=-1, n_ctx=512); "
            f"print(json.dumps([llm.generate({PROMPT!r}, max_tokens=48, ignore_eos=True, spec_type=t).tokens "
            "for t in ('none', 'ngram')]))")
    # decode() detaches the device sampler; the next generate() attaches a fresh chain (a chain
    # is initialised for the backend once)
    code = code.replace("llm = pyspec.LLM(sys.argv[1], n_gpu_layers=-1, n_ctx=512); ",
                        "llm = pyspec.LLM(sys.argv[1], n_gpu_layers=-1, n_ctx=512); llm.generate('x', max_tokens=2); "
                        "llm._engine.reset(); llm._engine.decode(llm.tokenize('x y'), 2, False); ")
    outs = []
    for v in ("1", "0"):
        r = subprocess.run([sys.executable, "-c", code, str(models / "llama256-q8_0.gguf")],
                           env=dict(os.environ, PYSPEC_DEVICE_ARGMAX=v), capture_output=True, text=True, check=True)
        outs.append(r.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1]


def test_device_argmax_off_without_gpu(tmp_path):
    import tiny_models
    llm = pyspec.LLM(tiny_models.write_llama(tmp_path / "t.gguf"), n_ctx=256)
    assert llm._engine.device_argmax_available() is False
