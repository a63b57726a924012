"""The command line: generate (text and --json), info, flags."""
import json
import subprocess
import sys

import pytest


def pyspec_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pyspec", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_generate_json_has_the_documented_keys(tiny_target):
    r = pyspec_cli("generate", "-m", tiny_target, "-p", "the sort of the list", "-n", 24, "--spec-type", "ngram",
                   "--spec-draft-n-max", 4, "-c", 256, "-t", 1, "--ignore-eos", "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert {"text", "tokens", "timings", "spec"} <= d.keys()
    assert {"prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms", "predicted_per_second",
            "draft_n", "draft_n_accepted"} <= d["timings"].keys()
    assert {"type", "n_steps", "mean_acceptance_length", "accepted_per_position"} <= d["spec"].keys()
    assert d["spec"]["type"] == "ngram" and len(d["tokens"]) == 24 == d["timings"]["predicted_n"]


def test_generate_json_matches_the_api(tiny_target):
    import pyspec
    r = pyspec_cli("-m", tiny_target, "-p", "x y z x y", "-n", 16, "-c", 256, "--json", "--ignore-eos")
    d = json.loads(r.stdout)
    assert d["tokens"] == pyspec.LLM(tiny_target, n_ctx=256).generate("x y z x y", max_tokens=16,
                                                                       ignore_eos=True).tokens
    assert d["spec"]["type"] == "none"


def test_generate_prints_text_then_summary(tiny_target, tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("the sort of the list")
    r = pyspec_cli("generate", "-m", tiny_target, "-f", prompt, "-n", 12, "--spec-type", "ngram", "-c", 256)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert "tok/s" in last and "spec ngram" in last and "accepted" in last


def test_draft_model_flags(tiny_target, tiny_draft):
    r = pyspec_cli("-m", tiny_target, "-md", tiny_draft, "-p", "the", "-n", 12, "--spec-draft-n-max", 3,
                   "--spec-draft-n-min", 1, "-c", 256, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spec"]["type"] == "draft"


def test_info(tiny_target):
    r = pyspec_cli("info", tiny_target, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["architecture"] == "llama" and d["n_vocab"] > 256 and d["n_layer"] == 2
    assert d["n_params"] > 0 and d["n_ctx_train"] == 2048
    assert d["spec_types"] == ["none", "ngram", "draft", "eagle3", "dflash"] and d["role"] == "target"
    assert d["memory"]["n_ctx"] == 4096 and d["memory"]["target_kv_bytes"] > 0
    text = pyspec_cli("info", tiny_target).stdout
    assert "architecture" in text and "spec_types" in text


def test_build_info():
    import pyspec
    b = pyspec.build_info()
    assert b["llama_cpp_commit"] == "0c1e57098bba"
    assert "CPU" in b["backends"]
    assert isinstance(b["cpu_features"], list)


@pytest.mark.gemma
def test_demo_on_the_default_model(gemma_path):
    r = pyspec_cli("demo", "-n", 32, "-t", 1, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "without speculation" in r.stdout and "with ngram" in r.stdout
    assert "output identical to plain decoding: yes" in r.stdout


def test_sampling_flags_match_the_api(tiny_target, tiny_draft):
    import pyspec
    r = pyspec_cli("-m", tiny_target, "-md", tiny_draft, "-p", "x y z x y", "-n", 20, "-c", 256, "--json",
                   "--ignore-eos", "--temp", 0.8, "--seed", 3, "--top-k", 5, "--repeat-penalty", 1.3,
                   "--repeat-last-n", 16, "--presence-penalty", 0.2, "--frequency-penalty", 0.1,
                   "--spec-sampling", "equal", "--spec-draft-n-max", 3)
    assert r.returncode == 0, r.stderr
    kw = dict(max_tokens=20, temperature=0.8, seed=3, top_k=5, repeat_penalty=1.3, penalty_last_n=16,
              presence_penalty=0.2, frequency_penalty=0.1, ignore_eos=True)
    llm = pyspec.LLM(tiny_target, n_ctx=256)
    assert json.loads(r.stdout)["tokens"] == llm.generate("x y z x y", **kw).tokens  # equal mode: plain tokens
    bad = pyspec_cli("-m", tiny_target, "-p", "x", "-n", 2, "--spec-sampling", "maybe")
    assert bad.returncode == 2 and "--spec-sampling" in bad.stderr


def test_version():
    import pyspec
    r = pyspec_cli("--version", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"pyspec {pyspec.__version__} (llama.cpp {pyspec.build_info()['llama_cpp_commit']}")


def test_demo_warms_up_and_measures_like_bench(tiny_target, monkeypatch, capsys):
    """A warm-up round, then interleaved measured runs, all on the same prompt tokens."""
    import pyspec.api
    from pyspec.cli import main
    calls = []
    real = pyspec.api.LLM.generate

    def spy(self, prompt, options=None, **kw):
        o = pyspec.GenerationOptions.build(options, **kw)
        calls.append((list(prompt), o.spec_type, o.max_tokens))
        return real(self, prompt, o)
    monkeypatch.setattr(pyspec.api.LLM, "generate", spy)
    assert main(["demo", "-m", str(tiny_target), "-p", "the sort of the list", "-n", "12", "-c", "256",
                 "--reps", "2", "--ignore-eos"]) == 0
    assert [c[1] for c in calls] == ["none", "ngram", "none", "ngram", "ngram", "none"]  # warm-up, then rotated
    assert len({tuple(c[0]) for c in calls}) == 1 and all(c[2] == 12 for c in calls)
    out = capsys.readouterr().out
    assert "with ngram" in out and "output identical to plain decoding: yes (exact kernels" in out


def test_demo_says_plainly_when_kernels_are_not_exact(tiny_target):
    r = pyspec_cli("demo", "-m", tiny_target, "-p", "the sort of the list", "-n", 12, "-c", 256, "--kernels", "fast",
                   "--ignore-eos")
    assert r.returncode == 0, r.stderr
    assert "The kernels are NOT exact (--kernels fast)" in r.stdout and "--kernels exact makes it lossless" in r.stdout


def test_demo_fails_when_exact_kernels_differ(tiny_target, monkeypatch, capsys):
    """With exact kernels a difference is a bug: said so, exit status 1."""
    import pyspec.bench
    from pyspec.cli import main
    real = pyspec.bench.measure

    def differing(llm, cfg, prompts, tools=None):
        doc = real(llm, cfg, prompts, tools)
        doc["overall"]["ngram"]["equal_to_baseline"] = False
        return doc
    monkeypatch.setattr(pyspec.bench, "measure", differing)
    assert main(["demo", "-m", str(tiny_target), "-p", "the sort of", "-n", "4", "-c", "256", "--warmup", "0"]) == 1
    assert "NO. With exact kernels it must be: this is a bug" in capsys.readouterr().out


def test_cache_dir_follows_the_documented_variables(monkeypatch, tmp_path):
    """README: the default model lives in $PYSPEC_CACHE/models, else $XDG_CACHE_HOME/pyspec/models,
    else ~/.cache/pyspec/models."""
    from pathlib import Path
    from pyspec.models import cache_dir
    monkeypatch.setenv("PYSPEC_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("PYSPEC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "pyspec"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "pyspec"


def test_generate_shows_the_prompt_progress(tiny_target):
    """A prompt of several batches: one progress line on stderr, rewritten per batch (--progress;
    by default only when stderr is a terminal), and nothing for a prompt of one batch."""
    import pyspec
    text = "the sort of the list " * 12
    n = len(pyspec.LLM(tiny_target, n_ctx=512).tokenize(text))
    assert 130 < n < 500
    args = ("-m", tiny_target, "-p", text, "-n", 4, "-c", 512, "-b", 64, "--json")
    r = pyspec_cli(*args, "--progress")
    assert r.returncode == 0, r.stderr
    # (text mode reads the line's "\r" rewrites as line ends)
    steps = [s.strip() for s in r.stderr.splitlines() if s.strip().startswith("prompt:")]
    assert steps[0] == f"prompt: 65/{n} tokens ({100 * 65 // n}%)"  # the batch holds a 64-token draft + 1
    assert steps[-1] == f"prompt: {n}/{n} tokens (100%)" and len(steps) == -(-n // 65)
    assert "prompt:" not in pyspec_cli(*args).stderr  # not a terminal
    assert "prompt:" not in pyspec_cli("-m", tiny_target, "-p", "x y z", "-n", 4, "-c", 512, "--json",
                                       "--progress").stderr  # one batch


def test_llm_reports_prompt_progress(tiny_target):
    import pyspec
    llm = pyspec.LLM(tiny_target, n_ctx=512, n_batch=100)
    toks = llm.tokenize("the sort of the list " * 12)
    seen = []
    llm.generate(toks, max_tokens=2, on_prompt=lambda done, total: seen.append((done, total)))
    assert seen == [(min(i, len(toks)), len(toks)) for i in range(100, len(toks) + 100, 100)]
    chunks = []
    with llm.stream(toks, max_tokens=2, on_prompt=lambda done, total: chunks.append(done)) as s:
        list(s)
    assert chunks == [d for d, _ in seen]
    # a reused prefix counts as done: the rest is one chunk
    llm._engine.reuse_prefix = True
    seen.clear()
    llm.generate(toks, max_tokens=2, on_prompt=lambda done, total: seen.append((done, total)))
    assert seen == [(len(toks), len(toks))] and llm._engine.n_prompt_reused == len(toks) - 1
