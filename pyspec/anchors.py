"""llama.cpp's own tools as anchors: built once (cached) from the same pinned,
patched llama.cpp source as pyspec's engine, and run on the same prompts.

    >>> from pyspec import anchors
    >>> tools = anchors.build()                 # cmake + ninja, incremental after the first time
    >>> anchors.completion(tools, "model.gguf", prompt_file, n=64, threads=2)["predicted_per_second"]

The source comes from llama.cpp/fetch.py (pin + patches), which only a source
checkout of pyspec has. The checkout is found through $PYSPEC_SOURCE_DIR, else
next to the imported package (an editable install or the source tree), else
through the installation's direct_url.json (`pip install /path/to/pyspec`).
The tools are built into $PYSPEC_ANCHORS_DIR, else <checkout>/build/anchors
(gitignored), next to the source they are configured from.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Union
from urllib.parse import unquote, urlparse

from .errors import PyspecError

TOOLS = ("llama-completion", "llama-speculative-simple", "llama-bench")
PathLike = Union[str, os.PathLike]


class AnchorError(PyspecError):
    """llama.cpp's anchor tools cannot be built or run."""


HOW_TO_GET = (
    "The llama.cpp anchors are built from pyspec's source checkout (llama.cpp/fetch.py, the pin and the "
    "patches), which this installation does not include. Clone pyspec's repository, then either set "
    "PYSPEC_SOURCE_DIR=/path/to/the/checkout or install pyspec from it in editable mode "
    "(pip install --no-build-isolation -e /path/to/the/checkout); building needs cmake, ninja and a C++ "
    "compiler. Or run the benchmark without --anchor.")


def _is_checkout(p: Path) -> bool:
    return (p / "llama.cpp" / "fetch.py").is_file() and (p / "llama.cpp" / "pin.json").is_file()


def _installed_from() -> Optional[Path]:
    """The local directory pip installed pyspec from (direct_url.json), if any."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        text = distribution("pyspec").read_text("direct_url.json")
    except (ImportError, PackageNotFoundError, OSError):
        return None
    if not text:
        return None
    try:
        url = json.loads(text).get("url", "")
    except ValueError:
        return None
    if not url.startswith("file://"):
        return None
    return Path(unquote(urlparse(url).path))


def checkout_dir() -> Path:
    """pyspec's source checkout (see the module docstring); AnchorError when there is none."""
    env = os.environ.get("PYSPEC_SOURCE_DIR")
    if env is not None:  # explicit: authoritative, no fallback
        p = Path(env).expanduser().resolve()
        if not _is_checkout(p):
            raise AnchorError(f"PYSPEC_SOURCE_DIR={env!r} is not a pyspec source checkout "
                              f"(llama.cpp/fetch.py not found there). {HOW_TO_GET}")
        return p
    for cand in (Path(__file__).resolve().parents[1], _installed_from()):
        if cand is not None and _is_checkout(cand):
            return cand
    raise AnchorError(f"no pyspec source checkout found. {HOW_TO_GET}")


def build_dir(checkout: Optional[Path] = None) -> Path:
    env = os.environ.get("PYSPEC_ANCHORS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return (checkout or checkout_dir()) / "build" / "anchors"


def _run_checked(cmd: list, what: str, **kw) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, encoding="utf-8",
                           errors="replace", **kw)
    except FileNotFoundError as e:
        raise AnchorError(f"{what}: {e.filename or cmd[0]} not found; building the anchors needs cmake, ninja "
                          "and a C++ compiler") from None
    if r.returncode != 0:
        raise AnchorError(f"{what} failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return r


def source_dir(checkout: Optional[Path] = None) -> Path:
    """The pinned, patched llama.cpp source (downloaded and patched by llama.cpp/fetch.py on first use)."""
    checkout = checkout or checkout_dir()
    out = _run_checked([sys.executable, checkout / "llama.cpp" / "fetch.py"], "llama.cpp/fetch.py").stdout
    return Path(out.strip().splitlines()[-1])


def built_tools() -> Optional[dict]:
    """{tool name: path} when every anchor tool is already built, else None (builds nothing)."""
    try:
        d = build_dir()
    except AnchorError:
        return None
    tools = {t: d / "bin" / t for t in TOOLS}
    return tools if all(p.is_file() for p in tools.values()) else None


def build(jobs: Optional[int] = None, verbose: bool = True) -> dict:
    """Configures once and builds the anchor tools (incremental afterwards); {tool name: path}."""
    checkout = checkout_dir()
    for exe in ("cmake", "ninja"):
        if shutil.which(exe) is None:
            raise AnchorError(f"building the llama.cpp anchors needs {exe}, which is not on PATH "
                              f"(pip install {exe}, or your system's package)")
    src = source_dir(checkout)
    out = build_dir(checkout)
    tools = {t: out / "bin" / t for t in TOOLS}
    first = not (out / "CMakeCache.txt").exists()
    if first:
        if verbose:
            print(f"[pyspec anchors] configuring llama.cpp's tools in {out} (the first build takes minutes)",
                  file=sys.stderr, flush=True)
        _run_checked(["cmake", "-S", src, "-B", out, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                      "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_OPENSSL=OFF",
                      "-DLLAMA_BUILD_APP=OFF", "-DGGML_NATIVE=ON", "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=OFF"],
                     "cmake configure (llama.cpp anchors)")
    elif verbose and not all(p.is_file() for p in tools.values()):
        print(f"[pyspec anchors] building llama.cpp's tools in {out}", file=sys.stderr, flush=True)
    _run_checked(["cmake", "--build", out, "-j", jobs or os.cpu_count() or 2, "--target", *TOOLS],
                 "cmake build (llama.cpp anchors)")
    return tools


def write_prompt_file(text: str, path: PathLike) -> Path:
    """Writes a prompt for the tools' -f: they drop one trailing newline, so one is added."""
    p = Path(path)
    p.write_text(text + "\n", encoding="utf-8")
    return p


LOG_RETRIES = 10


def _run(cmd: list, timeout: int = 1200, require: Optional[str] = None) -> tuple:
    """Runs a tool; returns (output, attempts). llama.cpp's logger prints from a
    background thread and is deliberately not drained at exit (common/log.cpp,
    llama.cpp issue 22142), so on a busy machine a run can lose its last lines,
    the timings included: such a run is repeated (up to LOG_RETRIES times)."""
    # The tools are stock llama.cpp: they run its own (fast, not batch-invariant) kernels.
    env = {k: v for k, v in os.environ.items() if k not in ("GGML_CPU_BATCH_INVARIANT", "GGML_CUDA_BATCH_INVARIANT")}
    name = Path(str(cmd[0])).name
    for attempt in range(1, LOG_RETRIES + 1):
        try:
            r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, encoding="utf-8",
                               errors="replace", timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise AnchorError(f"{name} ran past {timeout} s") from None
        if r.returncode != 0:
            raise AnchorError(f"{name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
        out = r.stdout + r.stderr
        if require is None or re.search(require, out):
            return out, attempt
    raise AnchorError(f"{name}'s output lacks its timings (no match for {require!r}) in {LOG_RETRIES} runs: "
                      f"llama.cpp's logger drops its last lines when the process exits before the log thread "
                      f"catches up (a busy machine?). Last output:\n{out[-2000:]!r}")


def _sampling_args(temp: float, seed: Optional[int]) -> list:
    args = ["--temp", temp]
    if seed is not None:
        args += ["--seed", seed]
    return args


def _search(pattern: str, text: str, tool: str) -> re.Match:
    m = re.search(pattern, text)
    if m is None:
        raise AnchorError(f"could not parse {tool}'s output (no match for {pattern!r}):\n{text[-2000:]!r}")
    return m


def completion(tools: dict, model: PathLike, prompt_file: PathLike, n: int, threads: int, *, temp: float = 0.0,
               seed: Optional[int] = None, ctx: int = 4096, ignore_eos: bool = True) -> dict:
    """llama-completion (no speculation): decode tokens/s by its own eval timer (first token excluded)."""
    cmd = [tools["llama-completion"], "-m", model, "-f", prompt_file, "-n", n, "-t", threads, "-c", ctx,
           "-no-cnv", "--no-warmup", "--no-escape", *_sampling_args(temp, seed)]
    if ignore_eos:
        cmd.append("--ignore-eos")
    out, attempts = _run(cmd, require=r"\beval time =\s*[\d.]+ ms /\s*\d+ runs")
    tail = out.split("prompt eval time")
    pm = re.search(r"=\s*([\d.]+) ms /\s*(\d+) tokens", tail[-1]) if len(tail) > 1 else None
    m = _search(r"eval time =\s*([\d.]+) ms /\s*(\d+) runs", tail[-1], "llama-completion")
    ms, runs = float(m.group(1)), int(m.group(2))
    r = {"predicted_n": runs, "predicted_ms": ms, "predicted_per_second": 1e3 * runs / ms if ms > 0 else 0.0,
         "attempts": attempts}
    if pm:
        r.update(prompt_ms=float(pm.group(1)), prompt_n=int(pm.group(2)))
    return r


def _speculative(tools: dict, model: PathLike, prompt_file: PathLike, n: int, threads: int, extra: list, *,
                 temp: float, seed: Optional[int], ctx: int, ignore_eos: bool) -> dict:
    cmd = [tools["llama-speculative-simple"], "-m", model, "-f", prompt_file, "-n", n, "-t", threads, "-c", ctx,
           "--no-escape", *_sampling_args(temp, seed), *extra]
    if ignore_eos:
        cmd.append("--ignore-eos")
    out, attempts = _run(cmd, require=r"n_accept\s*=\s*\d+")
    tool = "llama-speculative-simple"
    m = _search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s*([\d.]+) t/s", out, tool)
    decoded, secs = int(m.group(1)), float(m.group(2))
    e = re.search(r"encoded\s+(\d+) tokens in\s+([\d.]+) seconds", out)
    drafted = int(_search(r"n_drafted\s*=\s*(\d+)", out, tool).group(1))
    accepted = int(_search(r"n_accept\s*=\s*(\d+)", out, tool).group(1))
    speed = float(m.group(3))
    # the speed has more digits than the printed seconds
    r = {"predicted_n": decoded, "predicted_ms": 1e3 * decoded / speed if speed > 0 else 1e3 * secs,
         "predicted_per_second": speed,
         "draft_n": drafted, "draft_n_accepted": accepted,
         "acceptance_rate": accepted / drafted if drafted else 0.0, "attempts": attempts}
    if e:
        r.update(prompt_n=int(e.group(1)), prompt_ms=1e3 * float(e.group(2)))
    return r


def speculative_ngram(tools: dict, model: PathLike, prompt_file: PathLike, n: int, threads: int, n_max: int = 16,
                      size_n: int = 3, size_m: Optional[int] = None, *, temp: float = 0.0,
                      seed: Optional[int] = None, ctx: int = 4096, ignore_eos: bool = True) -> dict:
    """llama-speculative-simple with its n-gram drafter (ngram-simple; draft length size_m, default n_max)."""
    extra = ["--spec-type", "ngram-simple", "--spec-draft-n-max", n_max, "--spec-ngram-simple-size-n", size_n,
             "--spec-ngram-simple-size-m", size_m if size_m is not None else n_max]
    return _speculative(tools, model, prompt_file, n, threads, extra, temp=temp, seed=seed, ctx=ctx,
                        ignore_eos=ignore_eos)


def speculative_draft(tools: dict, model: PathLike, draft_model: PathLike, prompt_file: PathLike, n: int,
                      threads: int, n_max: int = 16, n_min: int = 0, *, temp: float = 0.0,
                      seed: Optional[int] = None, ctx: int = 4096, ignore_eos: bool = True) -> dict:
    """llama-speculative-simple with a draft model (draft-simple; p_min 0 like pyspec's drafter)."""
    extra = ["-md", draft_model, "--spec-type", "draft-simple", "--spec-draft-n-max", n_max,
             "--spec-draft-n-min", n_min, "--spec-draft-p-min", 0, "-td", threads]
    return _speculative(tools, model, prompt_file, n, threads, extra, temp=temp, seed=seed, ctx=ctx,
                        ignore_eos=ignore_eos)


def speculative_dflash(tools: dict, model: PathLike, drafter: PathLike, prompt_file: PathLike, n: int,
                       threads: int, n_max: int = 15, *, temp: float = 0.0, seed: Optional[int] = None,
                       ctx: int = 4096, ignore_eos: bool = True) -> dict:
    """llama-speculative-simple with a DFlash drafter (draft-dflash), e.g. one pyspec train dflash wrote."""
    extra = ["-md", drafter, "--spec-type", "draft-dflash", "--spec-draft-n-max", n_max,
             "--spec-draft-p-min", 0, "-td", threads]
    return _speculative(tools, model, prompt_file, n, threads, extra, temp=temp, seed=seed, ctx=ctx,
                        ignore_eos=ignore_eos)


def main() -> int:
    try:
        for name, path in build().items():
            print(name, path)
    except AnchorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
