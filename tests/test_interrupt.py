"""Ctrl-C stops a generation cleanly and leaves the model usable; the GIL is
released while the engine works."""
import subprocess
import sys
import textwrap
import threading
import time

import pyspec

SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    import pyspec
    llm = pyspec.LLM(sys.argv[1], n_ctx=32768)
    ref = llm.generate("the sort of", max_tokens=20, ignore_eos=True).tokens
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.time()
    try:
        llm.generate("the sort of", max_tokens=30000, spec_type=sys.argv[2], ignore_eos=True)
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted after %.1f s" % (time.time() - t0))
    assert llm.generate("the sort of", max_tokens=20, ignore_eos=True).tokens == ref
    print("usable")
""")


def test_ctrl_c_stops_generation_and_model_stays_usable(tiny_target):
    for spec in ("none", "ngram"):
        r = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_target), spec], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "interrupted after" in r.stdout and "usable" in r.stdout, r.stdout


def test_gil_is_released_during_generation(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=8192, n_threads=1)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    t0 = time.perf_counter()
    llm.generate("the sort of", max_tokens=3000, ignore_eos=True)
    elapsed = time.perf_counter() - t0
    done.set()
    t.join()
    # a thread that needs the GIL kept running while the engine decoded
    during = [x for x in ticks if t0 < x < t0 + elapsed]
    assert elapsed > 0.2 and len(during) > 0.2 * elapsed / 0.001 * 0.1
