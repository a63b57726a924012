#!/usr/bin/env python3
"""Server benchmark: aggregate generated tokens/s, time to first token and p50/p99 inter-token
latency at 1, 4 and 16 concurrent streams, `pyspec serve -np N` (plain and n-gram, exact kernels)
beside llama.cpp's llama-server built from the same pinned source (-np N, same model, context
per sequence and threads), in one run. Every stream sends its requests one after another
(streaming completions, greedy, ignore_eos, fixed max_tokens) over plain HTTP on localhost.

    python benchmarks/bench_server.py                      # writes benchmarks/out/server.json
    python benchmarks/bench_server.py --update-md BENCHMARKS.md
    python benchmarks/bench_server.py --llama-server PATH  # a llama-server binary already built
    python benchmarks/bench_server.py --soak 600 --soak-streams 64 --update-md BENCHMARKS.md
                                                           # 64 streams for 10 minutes: errors and memory

Inter-token latency is the gap between two streamed tokens: pyspec sends every token of a step at
the step's end (accepted drafts come in a burst), llama-server one token per step.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pyspec
from pyspec.prompts import PROMPT_SETS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from bench_cpu import update_markdown  # noqa: E402

PROMPTS = [p["prompt"] for v in PROMPT_SETS.values() for p in v if "prompt" in p]


def build_llama_server(jobs: int) -> Path:
    """llama-server from the pinned, patched source that pyspec's build fetched (llama.cpp/_cache/src),
    built once into build/anchors-server (its patches only add modes that are off by default)."""
    src = ROOT / "llama.cpp" / "_cache" / "src"
    if not (src / "tools" / "server").is_dir():
        raise SystemExit(f"no pinned llama.cpp source at {src}: build pyspec from this checkout first "
                         "(pip install --no-build-isolation -e .), or pass --llama-server PATH / --no-llama-server")
    out = ROOT / "build" / "anchors-server"
    exe = out / "bin" / "llama-server"
    if not (out / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", src, "-B", out, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_EXAMPLES=OFF",
                        "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_APP=OFF", "-DGGML_NATIVE=ON",
                        "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=OFF"], check=True)
    subprocess.run(["cmake", "--build", out, "-j", str(jobs), "--target", "llama-server"], check=True)
    return exe


class ServerProc:
    """A server subprocess on a free port, ready once /health answers 200."""

    def __init__(self, cmd: list, log: Path, env=None):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.port = int(cmd[cmd.index("--port") + 1])
        deadline = time.monotonic() + 600
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited with {self.proc.returncode}; see {log}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{cmd[0]} did not become ready; see {log}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_completion(port: int, body: dict) -> dict:
    """One streaming /v1/completions request: send time, token arrival times, texts."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    times, text = [], []
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        ev = json.loads(line[6:])
        if "error" in ev:
            raise RuntimeError(str(ev["error"]))
        for ch in ev.get("choices") or []:
            if ch.get("text"):
                times.append(time.perf_counter())
                text.append(ch["text"])
    c.close()
    return {"t0": t0, "times": times, "text": "".join(text)}


def busy_jiffies() -> int:
    """CPU time (all cores, clock ticks) the machine has spent busy since boot (/proc/stat)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f) - f[3] - f[4]  # all but idle and iowait


def proc_jiffies(pid: int) -> int:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime, the process's threads included


def load(port: int, streams: int, requests: int, max_tokens: int, extra: dict, server_pid: int = 0) -> dict:
    """`streams` clients, each sending `requests` requests in turn; the figures of the whole run."""
    results, errors = [], []

    def client(i):
        for j in range(requests):
            body = {"prompt": PROMPTS[(i * requests + j) % len(PROMPTS)], "max_tokens": max_tokens, "stream": True,
                    "temperature": 0, "ignore_eos": True, **extra}
            try:
                results.append({**stream_completion(port, body), "prompt": body["prompt"]})
            except Exception as e:  # noqa: BLE001 - counted, reported
                errors.append(str(e))
    t0 = time.perf_counter()
    b0, s0, m0 = busy_jiffies(), proc_jiffies(server_pid) if server_pid else 0, sum(os.times()[:2])
    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    hz = os.sysconf("SC_CLK_TCK")
    ours = (proc_jiffies(server_pid) - s0 if server_pid else 0) / hz + sum(os.times()[:2]) - m0
    other = max((busy_jiffies() - b0) / hz - ours, 0.0) / wall  # cores kept busy by other processes
    # pieces are tokens for both servers (pyspec sends one event per token piece, as llama-server)
    n_tokens = sum(len(r["times"]) for r in results)
    ttft = [r["times"][0] - r["t0"] for r in results if r["times"]]
    itl = [b - a for r in results for a, b in zip(r["times"], r["times"][1:])]
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) >= 2 else (xs[0] if xs else 0.0)  # noqa: E731
    return {"streams": streams, "requests": len(results), "other_cpu_cores": other, "errors": errors, "tokens": n_tokens, "wall_s": wall,
            "tok_s": n_tokens / wall, "ttft_p50_ms": 1e3 * statistics.median(ttft) if ttft else 0.0,
            "itl_p50_ms": 1e3 * q(itl, 50), "itl_p99_ms": 1e3 * q(itl, 99),
            "texts": {r["prompt"]: r["text"] for r in results}}


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def soak(model: str, streams: int, seconds: float, max_tokens: int, ctx_per_seq: int, threads: int, logs: Path,
         env: dict) -> dict:
    """`pyspec serve -np streams`, `streams` clients each sending streaming requests back to back (greedy, every
    other one with n-gram speculation, prompts in turn) for `seconds`; the server's resident memory sampled
    every 5 s. Returns the counts, the errors and the memory curve."""
    port = free_port()
    cmd = [sys.executable, "-m", "pyspec", "serve", "-m", model, "-c", str(ctx_per_seq * streams), "-np", str(streams),
           "-t", str(threads), "-b", "512", "--max-queue", str(streams), "--port", str(port)]
    srv = ServerProc(cmd, logs / f"pyspec-soak-np{streams}.log", env=env)
    done, errors, tokens, texts, rss = [], [], [0], {}, []
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()

    def client(i):
        j = 0
        while time.monotonic() < stop_at:
            prompt = PROMPTS[(i + j) % len(PROMPTS)]
            spec = "ngram" if (i + j) % 2 else "none"
            body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, "temperature": 0, "ignore_eos": True,
                    "spec_type": spec}
            try:
                r = stream_completion(port, body)
                with lock:
                    done.append(spec)
                    tokens[0] += len(r["times"])
                    texts.setdefault(prompt, set()).add(r["text"])
            except Exception as e:  # noqa: BLE001 - counted, reported
                with lock:
                    errors.append(str(e)[:300])
            j += 1

    def sampler():
        t0 = time.monotonic()
        while time.monotonic() < stop_at + 1:
            rss.append((round(time.monotonic() - t0, 1), rss_bytes(srv.proc.pid)))
            time.sleep(5)
    t0 = time.perf_counter()
    threads_ = [threading.Thread(target=client, args=(i,)) for i in range(streams)] + [threading.Thread(target=sampler)]
    try:
        for t in threads_:
            t.start()
        for t in threads_:
            t.join()
    finally:
        srv.stop()
    wall = time.perf_counter() - t0
    after_warmup = [b for s, b in rss if s >= min(60.0, seconds / 4)] or [b for _, b in rss]
    return {"streams": streams, "seconds": seconds, "wall_s": wall, "requests": len(done), "tokens": tokens[0],
            "tok_s": tokens[0] / wall, "errors": errors, "texts_agree": all(len(v) == 1 for v in texts.values()),
            "rss_start_mib": rss[0][1] / 2**20 if rss else 0.0,
            "rss_after_warmup_mib": after_warmup[0] / 2**20 if after_warmup else 0.0,
            "rss_end_mib": rss[-1][1] / 2**20 if rss else 0.0,
            "rss_max_mib": max(b for _, b in rss) / 2**20 if rss else 0.0, "rss_curve": rss}


def soak_markdown(r: dict, model: str, threads: int, max_tokens: int) -> str:
    return "\n".join([
        f"{date.today().isoformat()}, {Path(model).name}, {os.cpu_count()} CPUs, {threads} threads: `python "
        f"benchmarks/bench_server.py --soak {r['seconds']:.0f} --soak-streams {r['streams']}`, one run. "
        f"`pyspec serve -np {r['streams']}` and {r['streams']} clients on localhost, each sending streaming "
        f"requests of {max_tokens} greedy tokens back to back (every other one with n-gram speculation) for "
        f"{r['seconds']:.0f} s.", "",
        "| streams | requests | errors | tokens | tok/s | outputs per prompt | RSS start | RSS after warm-up | "
        "RSS end | RSS max |", "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        f"| {r['streams']} | {r['requests']} | {len(r['errors'])} | {r['tokens']} | {r['tok_s']:.1f} | "
        f"{'one (identical)' if r['texts_agree'] else 'DIFFER (a bug)'} | {r['rss_start_mib']:.0f} MiB | "
        f"{r['rss_after_warmup_mib']:.0f} MiB | {r['rss_end_mib']:.0f} MiB | {r['rss_max_mib']:.0f} MiB |"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="GGUF (default: the default model, Gemma 3 270M Q4_K_M)")
    ap.add_argument("--streams", default="1,4,16", help="concurrent streams, comma-separated")
    ap.add_argument("--requests", type=int, default=2, help="requests per stream")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--ctx-per-seq", type=int, default=1024, help="context of one sequence (-c = this x -np)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--llama-server", default=None, help="a llama-server binary (default: build it)")
    ap.add_argument("--no-llama-server", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "server.json"))
    ap.add_argument("--update-md", default=None)
    ap.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                    help="instead: one soak run of --soak-streams streams for SECONDS (errors, memory over time)")
    ap.add_argument("--soak-streams", type=int, default=64)
    args = ap.parse_args()
    model = args.model or str(pyspec.default_model_path())
    if args.soak:
        logs = Path(args.out).parent / "server-logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYSPEC_THREADS": str(args.threads)}
        r = soak(model, args.soak_streams, args.soak, args.max_tokens, args.ctx_per_seq, args.threads, logs, env)
        out = Path(args.out).with_name("server-soak.json")
        out.write_text(json.dumps(r, indent=1))
        md = soak_markdown(r, model, args.threads, args.max_tokens)
        print(md)
        if args.update_md:
            update_markdown(Path(args.update_md), md, name="bench_server_soak",
                            heading="## Server: a soak of pyspec serve -np 64 (errors, memory)")
        return 0 if not r["errors"] and r["texts_agree"] else 1
    streams = [int(s) for s in args.streams.split(",")]
    exe = None
    if not args.no_llama_server:
        exe = Path(args.llama_server) if args.llama_server else build_llama_server(args.threads)
    logs = Path(args.out).parent / "server-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYSPEC_THREADS": str(args.threads)}
    runs = []
    for n in streams:
        ctx = str(args.ctx_per_seq * n)
        pyspec_cmd = [sys.executable, "-m", "pyspec", "serve", "-m", model, "-c", ctx, "-np", str(n),
                      "-t", str(args.threads), "-b", "512", "--max-queue", "64"]
        servers = [("pyspec", pyspec_cmd, ["none", "ngram"])]  # spec_type per request
        if exe is not None:
            ls = [str(exe), "-m", model, "-c", ctx, "-np", str(n), "-t", str(args.threads), "-b", "512"]
            servers += [("llama-server", ls, ["none"]),
                        ("llama-server", ls + ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3",
                                               "--spec-draft-n-max", "16"], ["ngram"])]
        for server, cmd, specs in servers:
            port = free_port()
            print(f"[bench_server] {server} -np {n} {specs}", file=sys.stderr, flush=True)
            srv = ServerProc(cmd + ["--port", str(port)], logs / f"{server}-{specs[-1]}-np{n}.log", env=env)
            try:
                for sp in specs:
                    extra = {"spec_type": sp} if server == "pyspec" else {}
                    warm = {"prompt": "Warm-up: count from one to ten.", "max_tokens": 8, "stream": True, **extra}
                    stream_completion(port, warm)  # a prompt of its own: no server reuses it as a cached prefix
                    r = load(port, n, args.requests, args.max_tokens, extra, srv.proc.pid)
                    r.update(server=server, spec=sp)
                    runs.append(r)
                    print(f"  {sp}: {r['tok_s']:.1f} tok/s, TTFT p50 {r['ttft_p50_ms']:.0f} ms, ITL p50/p99 "
                          f"{r['itl_p50_ms']:.1f}/{r['itl_p99_ms']:.1f} ms, errors {len(r['errors'])}",
                          file=sys.stderr, flush=True)
            finally:
                srv.stop()
    # pyspec's outputs depend neither on the concurrency nor on n-gram speculation: one text per prompt
    by_prompt = {}
    for r in runs:
        if r["server"] == "pyspec":
            for prompt, text in r["texts"].items():
                by_prompt.setdefault(prompt, set()).add(text)
    same = all(len(v) == 1 for v in by_prompt.values())
    results = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "model": Path(model).name, "threads": args.threads,
               "max_tokens": args.max_tokens, "requests_per_stream": args.requests, "ctx_per_seq": args.ctx_per_seq,
               "llama_server": str(exe) if exe else None, "pyspec_texts_agree": same, "runs": [{k: v for k, v in r.items() if k != "texts"}
                                                                  for r in runs]}
    Path(args.out).write_text(json.dumps(results, indent=1))
    md = to_markdown(results, runs)
    print(md)
    if args.update_md:
        update_markdown(Path(args.update_md), md, name="bench_server",
                        heading="## Server: concurrent streams, pyspec serve -np N vs llama-server")
    return 0


def to_markdown(res: dict, runs: list) -> str:
    L = [f"{res['date']}, {res['model']}, {res['cpus']} CPUs ({res['machine']}), {res['threads']} threads, "
         f"{res['requests_per_stream']} requests per stream of {res['max_tokens']} tokens (greedy, ignore_eos), "
         f"{res['ctx_per_seq']} tokens of context per sequence; `python benchmarks/bench_server.py`, one run. "
         "pyspec: exact kernels; llama-server: its own (fast) kernels. Tokens/s: all streams' tokens over the "
         "run's wall time. pyspec's output for each prompt was "
         + ("the same" if res["pyspec_texts_agree"] else "NOT the same (a bug)")
         + " at every concurrency, with and without n-gram speculation.",
         "", "other CPU: cores kept busy by other processes on the machine during the run (0 on an idle machine; "
         "llama.cpp's threads spin while they wait for each other, so with 2 threads on 2 cores any other load "
         "slows a run by much more than its share).", "",
         "| streams | server | spec | tok/s | TTFT p50 ms | ITL p50 ms | ITL p99 ms | errors | other CPU |",
         "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        L.append(f"| {r['streams']} | {r['server']} | {r['spec']} | {r['tok_s']:.1f} | {r['ttft_p50_ms']:.0f} "
                 f"| {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | {len(r['errors'])} | {r['other_cpu_cores']:.2f} |")
    if not res["llama_server"]:
        L += ["", "llama-server was not run (--no-llama-server)."]
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
