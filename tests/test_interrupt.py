"""Ctrl-C stops a generation cleanly and leaves the model usable; the GIL is
released while the engine works. No test here depends on the machine's speed:
the interrupt is raised after a given number of tokens, from the step callback."""
import subprocess
import sys
import textwrap
import threading

import pyspec
from pyspec import _core

SCRIPT = textwrap.dedent("""
    import signal, sys
    import pyspec
    # Explicitly: a child of a shell that ignores SIGINT (a background job) inherits SIG_IGN.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    llm = pyspec.LLM(sys.argv[1], n_ctx=4096)
    ref = llm.generate("the sort of", max_tokens=20, ignore_eos=True).tokens
    opts = pyspec.GenerationOptions(max_tokens=3000, spec_type=sys.argv[2], ignore_eos=True)
    seen = []

    def on_step(tokens, n_from_draft):
        seen.extend(tokens)
        if len(seen) >= 10:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does, at a known point
        return True
    try:
        g = llm._run(llm._prepare("the sort of", opts), on_step)
        print("not interrupted:", g.finish_reason, len(g.tokens))
    except KeyboardInterrupt:
        print("interrupted after", len(seen), "tokens")
    assert llm.generate("the sort of", max_tokens=20, ignore_eos=True).tokens == ref
    print("usable")
""")


def test_ctrl_c_stops_generation_and_model_stays_usable(tiny_target):
    for spec in ("none", "ngram"):
        # start_new_session: the child is not in the parent's process group, whatever SIGINT does there
        r = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_target), spec], capture_output=True, text=True,
                           timeout=300, start_new_session=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "interrupted after" in r.stdout and "usable" in r.stdout, r.stdout
        n = int(r.stdout.split("interrupted after")[1].split()[0])
        assert 10 <= n < 3000


def test_ctrl_c_lands_even_when_sigint_was_ignored_by_the_parent(tiny_target):
    """A background shell job ignores SIGINT; the script above installs its own handler."""
    import signal
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_target), "none"], capture_output=True, text=True,
                       timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "interrupted after" in r.stdout and "usable" in r.stdout, r.stdout


def test_gil_is_released_during_generation(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=4096, n_threads=1)
    ticks = [0]
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks[0] += 1
            done.wait(0)  # yields the GIL

    t = threading.Thread(target=ticker)
    t.start()
    before = ticks[0]
    llm.generate("the sort of", max_tokens=500, ignore_eos=True)
    during = ticks[0] - before
    done.set()
    t.join()
    # a thread that needs the GIL kept running while the engine decoded: with the GIL held,
    # it would get at most a slice at the call's edges
    assert during >= 100, during


def test_closing_a_stream_inside_its_prompt_stops_at_the_next_chunk(tiny_target):
    """close() interrupts the engine (Engine.interrupt), which stops between prompt chunks:
    a stream closed during a long prompt does not wait for the rest of it. The drafter holds the
    first chunk until close() has asked, so nothing here depends on timing."""
    llm = pyspec.LLM(tiny_target, n_ctx=1024, n_batch=100, n_threads=1)
    prompt = [1] + [259 + i % 40 for i in range(299)]  # three chunks of 100
    reached, ready, box = threading.Event(), threading.Event(), {}

    class HoldFirstChunk(_core.Drafter):
        chunks = []

        def begin(self, prompt):
            pass

        def draft(self, n_max):
            return []

        def accept(self, n_accepted, emitted):
            pass

        def observe(self, tokens, pos0, prompt):
            self.chunks.append(pos0)
            if len(self.chunks) == 1:
                reached.set()
                ready.wait()
                box["stream"]._stop.wait()  # set by close(), after its interrupt

    llm._drafters.add("draft", HoldFirstChunk())
    stream = llm.stream(prompt, max_tokens=8, spec_type="draft", ignore_eos=True)
    box["stream"] = stream
    ready.set()
    reached.wait()
    stream.close()
    assert HoldFirstChunk.chunks == [0] and llm._engine.n_past == 100  # the rest of the prompt never ran
    assert stream.result is None  # ended inside the prompt: no generation to report
    # the engine is usable, and a closed stream's interrupt does not reach the next generation
    assert len(llm.generate(prompt, max_tokens=8, spec_type="none", ignore_eos=True).tokens) == 8
