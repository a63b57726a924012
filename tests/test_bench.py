"""`pyspec bench` (pyspec/bench.py) and the llama.cpp anchors (pyspec/anchors.py), on tiny models."""
import importlib.util
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
DOC_KEYS = {"schema", "date", "settings", "build_info", "machine", "prompts", "methods", "labels",
            "token_exact_expected", "exact_outputs_equal", "results", "overall", "anchor", "anchor_ratios",
            "noisy_runs", "warmup_runs", "runs"}
SUMMARY_KEYS = {"tok_s", "speedup", "mean_acceptance_length", "acceptance_per_position", "draft_share",
                "verify_share", "equal_to_baseline", "n_runs"}


def bench_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pyspec", "bench", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_bench_cli_table_json_png(tiny_target, tiny_draft, tmp_path):
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    args = ["-m", tiny_target, "--spec-type", "ngram,draft", "-md", tiny_draft, "--prompts", "code-edit", "-n", 16,
            "--reps", 2, "--json", out_json, "--no-progress"]
    if HAS_MPL:
        args += ["--png", out_png]
    r = bench_cli(*args)
    assert r.returncode == 0, r.stderr
    # the table
    for s in ("| prompt", "tok/s", "speedup", "mean acc. len", "acceptance by position", "drafting", "verifying",
              "pyspec none", "pyspec ngram", "pyspec draft", "| overall"):
        assert s in r.stdout, s
    assert "Anchor" not in r.stdout
    # the JSON
    doc = json.loads(out_json.read_text())
    assert DOC_KEYS <= doc.keys()
    datetime.fromisoformat(doc["date"])
    assert doc["methods"] == ["none", "ngram", "draft"]
    s = doc["settings"]
    o = s["options"]
    assert (o["max_tokens"], s["reps"], s["warmup"], o["temperature"], s["prompts"]) == (16, 2, 1, 0.0, "code-edit")
    assert s["model"] == str(tiny_target) and s["draft_model"] == str(tiny_draft)
    assert doc["build_info"]["llama_cpp_commit"]
    names = [p["name"] for p in doc["prompts"]]
    assert 2 <= len(names) <= 3 and list(doc["results"]) == names
    assert all(p["n_tokens"] > 0 and p["kind"] == "text" for p in doc["prompts"])
    for row in list(doc["results"].values()) + [doc["overall"]]:
        assert set(row) == {"none", "ngram", "draft"}
        for m, summ in row.items():
            assert SUMMARY_KEYS <= summ.keys()
            assert summ["equal_to_baseline"] is True  # greedy, exact kernels
        # the perturbed draft model agrees with the target often, not always
        d = row["draft"]
        assert 0 < d["draft_n_accepted"] < d["draft_n"] and len(d["acceptance_per_position"]) >= 2
    assert doc["exact_outputs_equal"] is True and doc["anchor"] is None
    # raw runs: reps x prompts x methods, interleaved (the first method rotates)
    runs = doc["runs"]
    assert len(runs) == 2 * len(names) * 3 and len(doc["warmup_runs"]) == 3
    assert all(r["predicted_n"] == 16 and r["timed_n"] == 15 and len(r["tokens"]) == 16 for r in runs)
    firsts = {r["method"] for r in runs if r["order"] == 0}
    assert len(firsts) > 1
    # outliers are listed under the table
    from pyspec.bench_report import format_table
    doc["noisy_runs"] = [{"prompt": names[0], "method": "ngram", "rep": 1, "tok_s": 1.0, "median_tok_s": 50.0}]
    assert "warning: 1 run(s)" in format_table(doc) and f"{names[0]} pyspec ngram rep 2: 1.0 tok/s" in format_table(doc)
    # the PNG
    if HAS_MPL:
        data = out_png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Matplotlib" in data[:400]  # the Software tEXt chunk matplotlib writes
        assert f"wrote {out_png}" in r.stderr


def test_prompts_file(tiny_target, tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"name": "sorting", "prompt": "the sort of the list is the sort of the list"}) + "\n\n"
                 + json.dumps({"messages": [{"role": "user", "content": "x y z x y z"}]}) + "\n")
    out = tmp_path / "o.json"
    r = bench_cli("-m", tiny_target, "--spec-type", "ngram", "--prompts-file", f, "-n", 8, "--reps", 1,
                  "--warmup", 0, "--json", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert list(doc["results"]) == ["sorting", "mine-2"]
    assert [p["kind"] for p in doc["prompts"]] == ["text", "chat"]
    assert "<|im_start|>" in doc["prompts"][1]["text"]  # no template in the GGUF: chatml
    assert doc["settings"]["prompts"] == f"file:{f}"
    assert "sorting" in r.stdout and "mine-2" in r.stdout


@pytest.mark.parametrize("content,expect", [
    (None, "prompts file not found"),
    ('{"prompt": "a"}\n{"prompt": "b"\n', ":2: not valid JSON"),
    ('{"text": "a"}\n', ':1: expected an object with either "prompt"'),
    ('{"messages": [{"role": "user"}]}\n', 'messages[0] must be an object'),
    ("\n\n", "no prompts in"),
])
def test_bad_prompts_file(tiny_target, tmp_path, content, expect):
    f = tmp_path / "p.jsonl"
    if content is not None:
        f.write_text(content)
    r = bench_cli("-m", tiny_target, "--prompts-file", f, "--no-progress", timeout=60)
    assert r.returncode == 2
    assert expect in r.stderr and r.stderr.startswith("error: ")
    assert "Traceback" not in r.stderr


def test_anchor_without_a_source_checkout(tiny_target, tmp_path):
    import os
    env = {**os.environ, "PYSPEC_SOURCE_DIR": str(tmp_path)}  # not a checkout
    r = bench_cli("-m", tiny_target, "--anchor", "llama.cpp", "--prompts", "prose", "--no-progress", env=env,
                  timeout=60)
    assert r.returncode == 2, r.stderr
    assert "not a pyspec source checkout" in r.stderr
    assert "PYSPEC_SOURCE_DIR" in r.stderr and "pip install --no-build-isolation -e" in r.stderr
    assert "without --anchor" in r.stderr and "Traceback" not in r.stderr


def test_checkout_lookup(monkeypatch, tmp_path):
    from pyspec import anchors
    monkeypatch.setenv("PYSPEC_SOURCE_DIR", str(tmp_path))
    with pytest.raises(anchors.AnchorError, match="not a pyspec source checkout"):
        anchors.checkout_dir()
    (tmp_path / "llama.cpp").mkdir()
    (tmp_path / "llama.cpp" / "fetch.py").write_text("")
    (tmp_path / "llama.cpp" / "pin.json").write_text("{}")
    assert anchors.checkout_dir() == tmp_path.resolve()
    assert anchors.build_dir() == tmp_path.resolve() / "build" / "anchors"
    monkeypatch.setenv("PYSPEC_ANCHORS_DIR", str(tmp_path / "elsewhere"))
    assert anchors.build_dir() == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("PYSPEC_SOURCE_DIR")
    monkeypatch.setattr(anchors, "__file__", str(tmp_path / "nowhere" / "pyspec" / "anchors.py"))
    monkeypatch.setattr(anchors, "_installed_from", lambda: None)
    with pytest.raises(anchors.AnchorError, match="no pyspec source checkout found"):
        anchors.checkout_dir()


def test_bad_arguments(tiny_target):
    r = bench_cli("-m", tiny_target, "--spec-type", "draft", "--no-progress", timeout=60)
    assert r.returncode == 2 and "needs a draft model" in r.stderr
    r = bench_cli("-m", tiny_target, "--spec-type", "ngram,medusa", timeout=60)
    assert r.returncode == 2 and "invalid spec type 'medusa'" in r.stderr
    # mtp is a method, but this model has no MTP layers
    r = bench_cli("-m", tiny_target, "--spec-type", "ngram,mtp", timeout=60)
    assert r.returncode == 2 and "spec type 'mtp' is not available for this LLM; it has: none, ngram" in r.stderr
    r = bench_cli("-m", tiny_target, "--prompts", "poetry", timeout=60)
    assert r.returncode == 2 and "invalid prompt set 'poetry'" in r.stderr
    r = bench_cli("-m", tiny_target, "--prompts", "prose", "--prompts-file", "x.jsonl", timeout=60)
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_png_without_matplotlib(monkeypatch, capsys, tiny_target):
    from pyspec import bench_report
    from pyspec.cli import main
    from pyspec.errors import PyspecError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PyspecError, match=r"pip install 'pyspec\[bench\]'"):
        bench_report.require_matplotlib()
    # checked before any measuring
    assert main(["bench", "-m", str(tiny_target), "--png", "x.png", "--no-progress"]) == 2
    assert "pyspec[bench]" in capsys.readouterr().err
    assert not Path("x.png").exists()


def test_pooling():
    from pyspec.bench import summarise
    runs = [
        {"engine": "pyspec", "timed_n": 10, "timed_ms": 100.0, "tok_s": 100.0, "n_steps": 5, "predicted_ms": 100.0,
         "mean_acceptance_length": 2.0, "draft_n": 8, "draft_n_accepted": 5, "drafted_per_position": [5, 3],
         "accepted_per_position": [4, 1], "draft_ms": 10.0, "verify_ms": 80.0},
        {"engine": "pyspec", "timed_n": 30, "timed_ms": 100.0, "tok_s": 300.0, "n_steps": 10, "predicted_ms": 100.0,
         "mean_acceptance_length": 3.0, "draft_n": 20, "draft_n_accepted": 20, "drafted_per_position": [10, 10, 0],
         "accepted_per_position": [10, 10, 0], "draft_ms": 30.0, "verify_ms": 60.0},
    ]
    s = summarise(runs)
    assert s["tok_s"] == pytest.approx(200.0)  # 40 tokens / 200 ms, not the mean of the rates
    assert s["mean_acceptance_length"] == pytest.approx((2 * 5 + 3 * 10) / 15)
    assert s["acceptance_per_position"] == pytest.approx([14 / 15, 11 / 13])
    assert s["acceptance_rate"] == pytest.approx(25 / 28)
    assert (s["draft_share"], s["verify_share"]) == pytest.approx((0.2, 0.7))
    assert (s["tok_s_median"], s["tok_s_min"], s["tok_s_max"]) == (200.0, 100.0, 300.0)


def test_anchor_ratios():
    from pyspec.bench import _anchor_ratios
    py = {"none": {"tok_s": 50.0, "speedup": None}, "ngram": {"tok_s": 90.0, "speedup": 1.8, "acceptance_rate": 0.5}}
    ll = {"llama.cpp:none": {"tok_s": 40.0, "speedup": None},
          "llama.cpp:ngram": {"tok_s": 60.0, "speedup": 1.5, "acceptance_rate": 0.7}}
    r = _anchor_ratios(py, ll, ["none", "ngram", "draft"])  # draft: not run, not reported
    assert set(r) == {"none", "ngram"}
    assert r["none"]["tok_s_ratio"] == pytest.approx(1.25) and "speedup_ratio" not in r["none"]
    assert r["ngram"]["tok_s_ratio"] == pytest.approx(1.5) and r["ngram"]["speedup_ratio"] == pytest.approx(1.2)
    assert (r["ngram"]["pyspec_acceptance_rate"], r["ngram"]["llama_cpp_acceptance_rate"]) == (0.5, 0.7)


def test_progress_fallback_without_tqdm(monkeypatch, capsys):
    from pyspec.bench import _Progress
    monkeypatch.setitem(sys.modules, "tqdm", None)
    p = _Progress(2, enabled=True)
    p.start("rep 1/1 a pyspec none")
    p.done()
    p.start("rep 1/1 a pyspec ngram")
    p.done()
    p.close()
    err = capsys.readouterr().err
    assert "[bench 1/2] rep 1/1 a pyspec none" in err and "[bench 2/2]" in err
    _Progress(2, enabled=False).start("x")
    assert capsys.readouterr().err == ""


def test_builtin_prompt_sets():
    from pyspec.prompts import PROMPT_SETS, builtin_prompts
    assert set(PROMPT_SETS) == {"code-edit", "code-gen", "summarise", "prose", "chat"}
    assert all(2 <= len(v) <= 3 for v in PROMPT_SETS.values())
    allp = builtin_prompts("all")
    assert len({p["name"] for p in allp}) == len(allp) == sum(len(v) for v in PROMPT_SETS.values())
    assert all("messages" in p for p in builtin_prompts("chat"))
    assert [p["set"] for p in builtin_prompts("prose,chat")] == ["prose"] * 2 + ["chat"] * 2


def test_benchmarks_anchors_wrapper_keeps_its_names():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "anchors.py"
    spec = importlib.util.spec_from_file_location("bench_anchors_wrapper", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from pyspec import anchors
    for name in ("build", "completion", "speculative_ngram", "speculative_draft", "source_dir", "TOOLS"):
        assert getattr(mod, name) is getattr(anchors, name)


def test_anchor_on_tiny_models(tiny_target, tiny_draft, tmp_path):
    """Only when the anchors are already built (tests never build them)."""
    from pyspec import anchors
    if anchors.built_tools() is None:
        pytest.skip("llama.cpp anchors not built (python benchmarks/anchors.py)")
    out = tmp_path / "a.json"
    r = bench_cli("-m", tiny_target, "-md", tiny_draft, "--spec-type", "ngram,draft", "--prompts", "prose", "-n", 12,
                  "--reps", 1, "-t", 1, "--anchor", "llama.cpp", "--json", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "Anchor: llama.cpp" in r.stdout and "pyspec/llama.cpp" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["methods"] == ["none", "ngram", "draft", "llama.cpp:none", "llama.cpp:ngram", "llama.cpp:draft"]
    assert doc["anchor"]["llama_cpp_commit"] == doc["build_info"]["llama_cpp_commit"]
    assert set(doc["anchor_ratios"]["overall"]) == {"none", "ngram", "draft"}
    ll = [r for r in doc["runs"] if r["engine"] == "llama.cpp"]
    assert len(ll) == 2 * 3 and all(r["predicted_n"] >= 11 for r in ll)
    # the same prompt tokens as pyspec's (BOS included, special tokens parsed)
    n_tok = {p["name"]: p["n_tokens"] for p in doc["prompts"]}
    assert all(r["prompt_n"] == n_tok[r["prompt"]] and r["prompt_tokens_match"] for r in ll)


def test_n_gpu_layers_reaches_the_model(tiny_target, tmp_path):
    import pyspec
    out = tmp_path / "o.json"
    r = bench_cli("-m", tiny_target, "-ngl", 0, "--prompts", "prose", "-n", 4, "--reps", 1, "--warmup", 0,
                  "--json", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["settings"]["n_gpu_layers"] == 0
    if pyspec.build_info()["gpu_offload"]:
        pytest.skip("a GPU build: -ngl 1 would run")
    r = bench_cli("--n-gpu-layers", 1, "-m", tiny_target, "--prompts", "prose", "--no-progress", timeout=60)
    assert r.returncode == 2 and "n_gpu_layers=1 but this pyspec build has no GPU backend" in r.stderr, r.stderr


def test_chat_prompts_of_a_model_without_a_template(model_dir, tmp_path):
    """A base model's chat prompts are formatted with its family's template, and bench says so."""
    import tiny_draft_heads
    gemma3 = tiny_draft_heads.write_gemma3(model_dir / "b_gemma3.gguf")
    out = tmp_path / "o.json"
    r = bench_cli("-m", gemma3, "--prompts", "chat", "-n", 4, "--reps", 1, "--warmup", 0, "--json", out,
                  "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "has no chat template (a base model?)" in r.stderr and "'gemma' template" in r.stderr
    assert all("<start_of_turn>user" in p["text"] for p in json.loads(out.read_text())["prompts"])


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib is not installed (pip install '.[bench]')")
def test_train_curve_plot(tmp_path):
    """benchmarks/plot_train_curve.py: tau against tokens seen (blocks x block size) as a PNG; a
    report without evaluations is an error that says why."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    import plot_train_curve
    report = {"config": {"block_size": 16}, "curve": [[10, 100, 1.5], [20, 200, 2.25]], "eval": {"tau": 2.3}}
    assert plot_train_curve.points(report) == ([1600, 3200], [1.5, 2.25])
    # decode tau (the fourth entry) where the report has it
    assert plot_train_curve.points({**report, "curve": [[10, 100, 3.5, 1.5], [20, 200, 4.0, 2.0]]}) == \
        ([1600, 3200], [1.5, 2.0])
    (tmp_path / "d.gguf.json").write_text(json.dumps(report))
    png = tmp_path / "c.png"
    assert plot_train_curve.main([str(tmp_path / "d.gguf.json"), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "e.gguf.json").write_text(json.dumps({**report, "curve": []}))
    assert plot_train_curve.main([str(tmp_path / "e.gguf.json"), "--out", str(png)]) == 1
