#!/usr/bin/env python3
"""Builds llama.cpp's own tools from the same pinned source pyspec uses, once,
into build/anchors (cached), and runs them for side-by-side measurements.

    python benchmarks/anchors.py            # build and print the tools' paths
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "anchors"
TOOLS = ("llama-completion", "llama-speculative-simple", "llama-bench")


def source_dir() -> Path:
    out = subprocess.run([sys.executable, str(ROOT / "llama.cpp" / "fetch.py")], check=True,
                         capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def build(jobs: int = 2) -> dict:
    """Configures once and builds the anchor tools (incremental afterwards)."""
    src = source_dir()
    if not (BUILD / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", str(src), "-B", str(BUILD), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_OPENSSL=OFF",
                        "-DLLAMA_BUILD_APP=OFF", "-DGGML_NATIVE=ON", "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=OFF"],
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(BUILD), "-j", str(jobs), "--target", *TOOLS], check=True,
                   stdout=subprocess.DEVNULL)
    return {t: BUILD / "bin" / t for t in TOOLS}


def _run(cmd: list, timeout: int = 1200) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GGML_CPU_BATCH_INVARIANT"}
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def completion(tools: dict, model: Path, prompt_file: Path, n: int, threads: int) -> dict:
    """llama-completion, greedy: decode tokens/s (its own eval timer)."""
    out = _run([tools["llama-completion"], "-m", model, "-f", prompt_file, "-n", n, "--temp", 0, "-t", threads,
                "-no-cnv", "--no-warmup", "-c", 4096, "--ignore-eos"])
    m = re.search(r"eval time =\s*([\d.]+) ms /\s*(\d+) runs", out.split("prompt eval time")[-1])
    ms, runs = float(m.group(1)), int(m.group(2))
    return {"predicted_n": runs, "predicted_ms": ms, "predicted_per_second": 1e3 * runs / ms}


def speculative_ngram(tools: dict, model: Path, prompt_file: Path, n: int, threads: int, n_max: int = 16,
                      size_n: int = 3, size_m: int = 16) -> dict:
    """llama-speculative-simple with its n-gram drafter (the ANCHORS.md settings)."""
    out = _run([tools["llama-speculative-simple"], "-m", model, "-f", prompt_file, "-n", n, "--temp", 0,
                "-t", threads, "-c", 4096, "--spec-type", "ngram-simple", "--spec-draft-n-max", n_max,
                "--spec-ngram-simple-size-n", size_n, "--spec-ngram-simple-size-m", size_m])
    speed = float(re.search(r"speed:\s*([\d.]+) t/s", out).group(1))
    decoded = int(re.search(r"decoded\s+(\d+) tokens", out).group(1))
    drafted = int(re.search(r"n_drafted\s*=\s*(\d+)", out).group(1))
    accepted = int(re.search(r"n_accept\s*=\s*(\d+)", out).group(1))
    return {"predicted_n": decoded, "predicted_per_second": speed, "draft_n": drafted, "draft_n_accepted": accepted}


if __name__ == "__main__":
    for name, path in build().items():
        print(name, path)
