#!/usr/bin/env python3
"""LLM(rpc=...) on the GPU host (run_h200.sh step "rpccheck"): a `pyspec rpc-server` lends the GPU (exact
CUDA kernels) and the client splits a model between it and its own GPU; greedy output, plain and n-gram,
against the same model in one process. Models load before numpy (the host's crash, BENCHMARKS.md "GPU")."""
import socket
import subprocess
import sys
import time

import pyspec

models = sys.argv[1:]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
srv = subprocess.Popen([sys.executable, "-m", "pyspec", "rpc-server", "--port", str(port)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        time.sleep(0.1)
ep = f"127.0.0.1:{port}"
prompts = ["def quicksort(arr):\n", "The history of the Roman Empire begins", "one two three four five six"]
ok = True
try:
    for m in models:
        local = pyspec.LLM(m, n_gpu_layers=-1, n_ctx=1024)
        remote = pyspec.LLM(m, n_gpu_layers=-1, n_ctx=1024, rpc=[ep])
        devs = sorted({b["device"] for b in remote._engine.memory_by_buffer() if b["model_bytes"] > 0})
        for p in prompts:
            want = local.generate(p, max_tokens=96, ignore_eos=True, spec_type="none").tokens
            got = remote.generate(p, max_tokens=96, ignore_eos=True, spec_type="none").tokens
            spec = remote.generate(p, max_tokens=96, ignore_eos=True, spec_type="ngram", draft_n_max=8).tokens
            ok &= got == want and spec == want
            print(f"{m.rsplit('/', 1)[-1]} weights on {devs}, {p[:20]!r}: rpc plain == local {got == want}, "
                  f"rpc ngram == local {spec == want}", flush=True)
        del remote
finally:
    srv.kill()
    print(srv.communicate()[0][-1500:])
print("all equal:", ok)
sys.exit(0 if ok else 1)
