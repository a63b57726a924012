"""LLM(rpc=[...]): a model split over `pyspec rpc-server` processes (llama.cpp's RPC backend, patch 0011),
on localhost: the output equals the single-process output, bad or dead servers give clear errors."""
import json
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import pyspec
from conftest import PROMPTS

# subprocesses run `python -m pyspec` outside the checkout, so that they import the installed package
# (the checkout's pyspec/ has no compiled _core unless installed in place)
CWD = tempfile.gettempdir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*extra, threads: int = 1):
    """A `pyspec rpc-server` on a free localhost port; returns (process, "127.0.0.1:port") once it listens."""
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "pyspec", "rpc-server", "--port", str(port), "-t", str(threads),
                          *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=CWD)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert p.poll() is None, p.stdout.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise AssertionError("rpc-server did not start listening within 60 s")


def stop(p):
    p.kill()
    p.wait(timeout=30)


@pytest.fixture(scope="module")
def two_servers():
    servers = [start_server(), start_server()]
    yield [ep for _, ep in servers]
    for p, _ in servers:
        stop(p)


def weight_devices(llm) -> set:
    return {b["device"] for b in llm._engine.memory_by_buffer() if b["model_bytes"] > 0}


def test_split_over_two_servers_equals_one_process(tiny_target, two_servers):
    local = pyspec.LLM(tiny_target, n_ctx=512)
    remote = pyspec.LLM(tiny_target, n_ctx=512, rpc=two_servers)
    assert remote.rpc == two_servers
    # the layers' weights live on both servers' devices (split by their free memory)
    assert sum(d.startswith("RPC") for d in weight_devices(remote)) == 2, weight_devices(remote)
    for prompt in PROMPTS[:2]:
        want = local.generate(prompt, max_tokens=32, ignore_eos=True, spec_type="none").tokens
        assert remote.generate(prompt, max_tokens=32, ignore_eos=True, spec_type="none").tokens == want
        # speculation over RPC: verify widths 1..9, still the target's own greedy output
        spec = remote.generate(prompt, max_tokens=32, ignore_eos=True, spec_type="ngram", draft_n_max=8)
        assert spec.tokens == want


def test_rpc_as_a_comma_separated_string_and_on_the_cli(tiny_target, two_servers):
    want = pyspec.LLM(tiny_target, n_ctx=256).generate(PROMPTS[0], max_tokens=12, ignore_eos=True).text
    # one client at a time per server: the module's other LLMs are gone once collected
    import gc
    gc.collect()
    out = subprocess.run([sys.executable, "-m", "pyspec", "generate", "-m", str(tiny_target), "-c", "256",
                          "--rpc", ",".join(two_servers), "-p", PROMPTS[0], "-n", "12", "--ignore-eos", "--json"],
                         capture_output=True, text=True, timeout=300, cwd=CWD)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["text"] == want


def test_unreachable_server_is_a_clear_error(tiny_target):
    ep = f"127.0.0.1:{free_port()}"  # nothing listens there
    # refused by pyspec's own connect (with its timeout), before llama.cpp's RPC client, which would abort
    with pytest.raises(pyspec.RPCError, match=r"not reachable \(Connection refused\).*pyspec rpc-server --host 127.0.0.1") as e:
        pyspec.LLM(tiny_target, n_ctx=256, rpc=[ep])
    assert ep in str(e.value)
    assert isinstance(e.value, ConnectionError)


@pytest.mark.parametrize("bad", [["localhost"], ["host:port"], ["127.0.0.1:0"], ["127.0.0.1:70000"], [], 50052,
                                 ["127.0.0.1:1", "127.0.0.1:1"]])
def test_malformed_endpoints(tiny_target, bad):
    with pytest.raises(pyspec.InvalidParameterError, match="HOST:PORT|lists no server|twice"):
        pyspec.LLM(tiny_target, n_ctx=256, rpc=bad)


def test_something_else_listening_is_not_taken_for_a_server(tiny_target):
    with socket.socket() as s:  # a TCP listener that closes every connection without a word
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        ep = f"127.0.0.1:{s.getsockname()[1]}"
        import threading

        def refuse():
            for _ in range(4):
                try:
                    c, _ = s.accept()
                    c.close()
                except OSError:
                    return
        threading.Thread(target=refuse, daemon=True).start()
        with pytest.raises(pyspec.RPCError, match="not as a llama.cpp RPC server"):
            pyspec.LLM(tiny_target, n_ctx=256, rpc=[ep])


def test_exact_client_refuses_a_fast_kernel_server(tiny_target):
    p, ep = start_server("--kernels", "fast")
    try:
        with pytest.raises(pyspec.UnsupportedError, match="fast kernels.*pyspec rpc-server"):
            pyspec.LLM(tiny_target, n_ctx=256, rpc=[ep])
        fast = pyspec.LLM(tiny_target, n_ctx=256, rpc=[ep], kernels="fast")
        assert len(fast.generate(PROMPTS[0], max_tokens=8, ignore_eos=True).tokens) == 8
    finally:
        stop(p)


_LOST = """
import json, sys, pyspec
llm = pyspec.LLM(sys.argv[1], n_ctx=256, rpc=[sys.argv[2]])
first = llm.generate("hello", max_tokens=4, ignore_eos=True).tokens
print("READY", flush=True)
sys.stdin.readline()  # the test kills the server now
try:
    llm.generate("hello again", max_tokens=8, ignore_eos=True)
    err = None
except pyspec.DecodeError as e:
    err = str(e)
local = pyspec.LLM(sys.argv[1], n_ctx=256).generate("hello", max_tokens=4, ignore_eos=True).tokens
del llm
print(json.dumps({"error": err, "local_equal": local == first}), flush=True)
"""


def test_server_lost_mid_session_raises_and_the_process_lives_on(tiny_target):
    p, ep = start_server()
    c = subprocess.Popen([sys.executable, "-c", _LOST, str(tiny_target), ep], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=CWD)
    try:
        assert c.stdout.readline().strip() == "READY", c.stderr.read()[-2000:]
        stop(p)
        out, err = c.communicate("go\n", timeout=120)
    finally:
        if c.poll() is None:
            c.kill()
        if p.poll() is None:
            stop(p)
    assert c.returncode == 0, err[-2000:]  # no abort: the interpreter survived, and exited cleanly
    r = json.loads(out.strip().splitlines()[-1])
    assert r["error"] and ep in r["error"] and "stopped answering" in r["error"]
    assert r["local_equal"]  # the same process still runs models


@pytest.mark.gemma
def test_default_model_over_rpc_equals_one_process(gemma, gemma_path):
    # the real default model (Q4_K_M: Q4_K, Q6_K, Q5_0, Q8_0 matrices; Gemma 3's sliding-window layers),
    # all its layers on one exact server, n-gram speculation on top
    p, ep = start_server(threads=2)
    try:
        remote = pyspec.LLM(gemma_path, n_ctx=1024, rpc=[ep])
        prompt = PROMPTS[0]
        want = gemma.generate(prompt, max_tokens=24, ignore_eos=True, spec_type="none").tokens
        assert remote.generate(prompt, max_tokens=24, ignore_eos=True, spec_type="ngram", draft_n_max=4).tokens == want
        del remote
    finally:
        stop(p)


def test_planner_counts_the_servers_devices(tiny_target, two_servers):
    # pyspec.plan(rpc=...) simulates the allocation on the servers' devices: their rows are RPC0 / RPC1,
    # the budget counts them, and an LLM made from the plan allocates what it predicted, device by device
    import gc
    gc.collect()  # one client process per server: earlier LLMs of this module are gone
    from test_plan import _planned_parts, _real_parts
    big = pyspec.plan(tiny_target, budget="1TiB", n_ctx=8192, rpc=two_servers)
    assert big.fits and big.rpc == two_servers and big.llm_kwargs()["rpc"] == two_servers
    weights_on = {part.device for part in big.parts if part.part == "weights"}
    assert {"RPC0", "RPC1"} <= weights_on, big.parts
    tight = pyspec.plan(tiny_target, budget=big.total_bytes - 1, n_ctx=8192, rpc=two_servers)
    assert tight.fits and tight.total_bytes < big.total_bytes
    llm = pyspec.LLM(tiny_target, **tight.llm_kwargs())
    assert _planned_parts(tight) == _real_parts(llm)
    by_device = lambda bufs: sorted((b["device"], b["model_bytes"]) for b in bufs if b["device"])  # noqa: E731
    assert by_device(llm._engine.memory_by_buffer()) == sorted(
        (part.device, part.bytes) for part in tight.parts if part.part == "weights" and part.device.startswith("RPC"))
    del llm
    gc.collect()
    # LLM(memory_budget=..., rpc=...) plans the same way
    llm = pyspec.LLM(tiny_target, n_ctx=8192, memory_budget=tight.total_bytes, rpc=two_servers)
    assert llm.plan.llm_kwargs() == tight.llm_kwargs()
