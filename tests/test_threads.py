"""The default thread count and the hint when other processes keep the cores busy
(pyspec/threads.py): llama.cpp's threads spin while they wait for each other, so
more threads than free cores is many times slower."""
import os
import subprocess
import sys

import pytest

import pyspec
from pyspec import threads


def test_pyspec_threads_overrides_the_default(monkeypatch, tiny_target):
    monkeypatch.setenv("PYSPEC_THREADS", "3")
    assert pyspec.default_threads() == 3 and pyspec.LLM(tiny_target, n_ctx=64).n_threads == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("PYSPEC_THREADS", bad)
        with pytest.raises(pyspec.InvalidParameterError, match="PYSPEC_THREADS must be a whole number >= 1"):
            pyspec.default_threads()
    with pytest.raises(pyspec.InvalidParameterError, match="n_threads must be an integer >= 1"):
        pyspec.LLM(tiny_target, n_threads=0)


def test_the_engine_applies_the_same_default(monkeypatch, tiny_target):
    """_core.Engine and the draft-model drafter used directly (n_threads=0) follow the same rule,
    not one thread per hardware thread."""
    from pyspec import _core
    model = _core.Model(str(tiny_target))
    monkeypatch.setenv("PYSPEC_THREADS", "3")
    assert _core.Engine(model, n_ctx=64).n_threads == 3
    assert _core.DraftModelDrafter(model, model, n_ctx=64).n_threads == 3
    monkeypatch.setenv("PYSPEC_THREADS", "two")
    with pytest.raises(pyspec.InvalidParameterError, match="PYSPEC_THREADS must be a whole number >= 1"):
        _core.Engine(model, n_ctx=64)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a CPU affinity mask of 2+ CPUs")
def test_the_default_follows_the_cpus_this_process_may_use(tiny_target):
    """Not os.cpu_count(): a process pinned to one CPU (taskset, a container's cpuset) gets one thread."""
    env = {k: v for k, v in os.environ.items() if k != "PYSPEC_THREADS"}
    one = min(os.sched_getaffinity(0))
    r = subprocess.run([sys.executable, "-c", f"import os, pyspec; os.sched_setaffinity(0, {{{one}}}); "
                        f"print(pyspec.default_threads(), pyspec.LLM({str(tiny_target)!r}, n_ctx=64).n_threads, "
                        f"pyspec._core.Engine(pyspec._core.Model({str(tiny_target)!r}), n_ctx=64).n_threads)"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "1", "1"]


def test_busy_cpus_from_two_samples(tmp_path):
    stat = tmp_path / "stat"
    head = "cpu  1 2 3 4 5 6 7 8 0 0\n"
    # fields: user nice system idle iowait irq softirq steal
    stat.write_text(head + "cpu0 100 0 0 900 0 0 0 0 0 0\ncpu1 100 0 0 900 0 0 0 0 0 0\nintr 5\n")
    before = threads.read_cpu_times(str(stat))
    assert before == {0: (100, 1000), 1: (100, 1000)}
    # cpu0 fully busy (user 60, steal 40: another VM), cpu1 a quarter busy (system), iowait counts as idle
    stat.write_text(head + "cpu0 160 0 0 900 0 0 0 40 0 0\ncpu1 100 0 25 950 25 0 0 0 0 0\n")
    after = threads.read_cpu_times(str(stat))
    assert threads.busy_cpus(before, after, [0, 1]) == pytest.approx(1.25)
    assert threads.busy_cpus(before, after, [1]) == pytest.approx(0.25)
    assert threads.read_cpu_times(str(tmp_path / "missing")) == {}


def test_contention_hint():
    hint = threads.contention_hint(2, busy=1.8, n_cpus=2)
    assert "1.8 of the 2 CPUs busy" in hint and "-t 1" in hint and "PYSPEC_THREADS=1" in hint
    assert threads.contention_hint(8, busy=13.0, n_cpus=16) is not None  # 3 free cores for 8 threads
    assert "-t 3" in threads.contention_hint(8, busy=13.0, n_cpus=16)
    assert threads.contention_hint(2, busy=0.2, n_cpus=2) is None       # idle enough
    assert threads.contention_hint(8, busy=4.0, n_cpus=16) is None      # room to spare
    assert threads.contention_hint(1, busy=2.0, n_cpus=2) is None       # one thread waits for no other


def test_cli_prints_the_hint_before_loading(tiny_target, monkeypatch, capsys):
    from pyspec.cli import main
    monkeypatch.setattr(threads, "measure_busy_cpus", lambda cpus, sample_s: len(cpus))  # everything busy
    assert main(["-m", str(tiny_target), "-p", "the", "-n", "2", "-c", "64", "-t", "2", "--json"]) == 0
    assert "which spin while they wait for each other" in capsys.readouterr().err
    monkeypatch.setattr(threads, "measure_busy_cpus", lambda cpus, sample_s: 0.0)
    assert main(["-m", str(tiny_target), "-p", "the", "-n", "2", "-c", "64", "-t", "2", "--json"]) == 0
    assert capsys.readouterr().err == ""
