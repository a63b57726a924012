"""The pinned-source acquisition (llama.cpp/fetch.py) and build facts."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyspec
from pyspec import _core

ROOT = Path(__file__).resolve().parents[1]
FETCH = ROOT / "llama.cpp" / "fetch.py"
PIN = json.loads((ROOT / "llama.cpp" / "pin.json").read_text())


def run_fetch(tmp_path, **env):
    e = {**os.environ, "PYSPEC_LLAMA_CACHE": str(tmp_path / "cache"), **env}
    e.pop("LLAMA_CPP_SOURCE_DIR", None) if "LLAMA_CPP_SOURCE_DIR" not in env else None
    return subprocess.run([sys.executable, str(FETCH)], capture_output=True, text=True, env=e, timeout=300)


def test_pin_is_the_documented_one():
    assert PIN["commit"] == "0c1e57098bba"
    assert PIN["sdist_package"] == "llama-cpp-python" and PIN["sdist_version"] == "0.3.36"
    assert PIN["sdist_sha256"] == "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
    assert pyspec.build_info()["llama_cpp_commit"] == PIN["commit"]


def test_patches_carry_a_reason_line():
    patches = sorted((ROOT / "llama.cpp" / "patches").glob("*.patch"))
    assert patches
    for p in patches:
        assert p.read_text().splitlines()[0].startswith("# reason:"), p.name


def test_wrong_hash_is_refused(tmp_path):
    bogus = tmp_path / PIN["sdist_file"]
    bogus.write_bytes(b"not the sdist")
    r = run_fetch(tmp_path, PYSPEC_LLAMA_SDIST=str(bogus))
    assert r.returncode == 1
    assert hashlib.sha256(b"not the sdist").hexdigest() in r.stderr
    assert "LLAMA_CPP_SOURCE_DIR" in r.stderr


def test_failed_download_names_the_escape_hatch(tmp_path):
    r = run_fetch(tmp_path, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_NO_INDEX="0", PIP_RETRIES="0",
                  PIP_TIMEOUT="2", PIP_FIND_LINKS="")
    assert r.returncode == 1
    assert "could not download" in r.stderr and "LLAMA_CPP_SOURCE_DIR" in r.stderr


def test_local_source_dir_must_be_a_checkout(tmp_path):
    r = run_fetch(tmp_path, LLAMA_CPP_SOURCE_DIR=str(tmp_path))
    assert r.returncode == 1 and "include/llama.h" in r.stderr


def test_build_info_reports_backends_and_features():
    b = pyspec.build_info()
    assert "CPU" in b["backends"] and "RPC" in b["backends"]  # RPC: LLM(rpc=[...]), pyspec rpc-server
    assert "CPU" in b["exact_backends"] and "RPC" not in b["exact_backends"]  # RPC's kernels are the server's
    assert isinstance(b["cuda"], bool) and "CPU" in b["system_info"]


@pytest.mark.parametrize("amx_env", [None, "1"])
def test_build_info_says_whether_fast_kernels_repack(amx_env):
    """README: fast kernels repack weights except where the CPU backend offers its AMX buffer
    (it crashed the pin), unless PYSPEC_AMX=1; exact kernels never repack."""
    env = {k: v for k, v in os.environ.items() if k != "PYSPEC_AMX"} | ({"PYSPEC_AMX": amx_env} if amx_env else {})
    code = "import json, pyspec; print(json.dumps(pyspec.build_info()))"
    b = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                  timeout=120, check=True).stdout)
    assert isinstance(b["amx_buffer"], bool)
    assert b["repack"] is (amx_env == "1" or not b["amx_buffer"])
    assert b["amx_buffer"] is False or "AMX_INT8" in b["cpu_features"]
    assert ("exact_cuda_kernels" in b) is b["cuda"]


def test_stub_covers_the_extension():
    from pyspec import _core
    stub = (ROOT / "pyspec" / "_core.pyi").read_text()
    public = [n for n in dir(_core) if not n.startswith("_")]
    missing = [n for n in public if f"def {n}(" not in stub and f"class {n}" not in stub]
    assert not missing, f"pyspec/_core.pyi lacks {missing}; regenerate it with pybind11-stubgen"


@pytest.mark.parametrize("qtype", ["bf16", "q8_0"])
def test_quantize_writes_a_loadable_model(tiny_target, tmp_path, qtype):
    out = tmp_path / f"t-{qtype}.gguf"
    _core.quantize(str(tiny_target), str(out), qtype, 1)
    assert 0 < out.stat().st_size < tiny_target.stat().st_size
    assert pyspec.LLM(out, n_ctx=128).generate("the of", max_tokens=4, ignore_eos=True).tokens


def test_quantize_names_the_known_types(tiny_target, tmp_path):
    with pytest.raises(pyspec.InvalidParameterError, match="bf16"):
        _core.quantize(str(tiny_target), str(tmp_path / "x.gguf"), "q9_9", 1)
