#!/usr/bin/env python3
"""Where one target forward spends its GPU time: a per-kernel table of decode (k = 1) and verify (k = 16)
from Nsight Compute, for the whole model (run_h200.sh step "profile").

    # one process per width, only the measured forward profiled (cuProfilerStart/Stop around it):
    ncu --profile-from-start off --csv --page raw --print-units base --cache-control none --clock-control none \\
        --metrics gpu__time_duration.sum,dram__bytes_read.sum \\
        python3 benchmarks/gpu/profile_forward.py run --model M.gguf --k 16 --json run-16.json > ncu-16.csv
    # then the table (markdown), kernels grouped by name, k = 1 beside k = 16:
    python3 benchmarks/gpu/profile_forward.py table --label "Gemma 3 270M" --csv ncu-1.csv ncu-16.csv \\
        --wall run-1.json run-16.json --curve curve.json

`run` prefills 512 random tokens, warms the width up and profiles one forward the way a greedy verify runs
it (each row's argmax on the device, token ids back). ncu runs each kernel alone, so the kernel sum is the
GPU's busy time; with --curve (verify_curve.py's curve.json from a run without ncu, which slows the process
down) the table adds the forward's wall time and wall - sum, what launches, gaps and host work add.
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import io
import json
import random
import re
import sys
import time
from pathlib import Path


def run(args) -> int:
    import pyspec  # before numpy (see BENCHMARKS.md, "GPU": the host's load-after-numpy crash)
    llm = pyspec.LLM(args.model, n_ctx=4096, n_gpu_layers=-1, flash_attn=True, kernels=args.kernels)
    eng = llm._engine
    rng = random.Random(0)
    draw = lambda n: [rng.randrange(min(1000, llm.n_vocab // 2), llm.n_vocab) for _ in range(n)]  # noqa: E731
    eng.reset()
    eng.decode(draw(args.depth), 512, False)
    toks = draw(args.k)
    for _ in range(3):
        eng.forward(toks, True)
        eng.rollback(args.depth)
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuProfilerStart()
    eng.forward(toks, True)
    cuda.cuProfilerStop()
    eng.rollback(args.depth)
    wall = {"model": Path(args.model).name, "k": args.k, "kernels": args.kernels, "depth": args.depth}
    if args.json:
        Path(args.json).write_text(json.dumps(wall))
    print(json.dumps(wall), file=sys.stderr)
    return 0


def family(name: str) -> str:
    """A kernel's name without its argument list ("void f<(ggml_type)12, 1>(const void *, ...)" -> "f<12, 1>")."""
    name = re.sub(r"^void ", "", name.replace("(ggml_type)", "").replace("(anonymous namespace)::", ""))
    name = name.split("(")[0]
    return (name[:90] + "...") if len(name) > 93 else name


UNITS = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6,  # to µs
         "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def read_ncu(path: Path) -> list[dict]:
    """Kernel rows of an ncu --csv --page raw report: name, microseconds, DRAM bytes read."""
    text = path.read_text(errors="replace")
    start = text.find('"ID"')
    if start < 0:
        raise SystemExit(f"{path}: no ncu CSV header (\"ID\", ...) found: was the forward profiled?")
    rows, units = [], {}
    for r in csv.DictReader(io.StringIO(text[start:])):
        if not (r.get("ID") or "").isdigit():
            units = r  # the units row comes first
            continue
        num = lambda key: float((r.get(key) or "0").replace(",", "")) * UNITS.get(units.get(key) or "", 1.0)  # noqa: E731
        rows.append({"name": r["Kernel Name"], "us": num("gpu__time_duration.sum"), "bytes": num("dram__bytes_read.sum")})
    return rows


def table(args) -> int:
    runs = [read_ncu(Path(p)) for p in args.csv]
    walls = [json.loads(Path(p).read_text()) for p in args.wall] if args.wall else [{} for _ in runs]
    if args.curve:  # wall times from verify_curve.py's run (under ncu the process runs far slower)
        curve = json.loads(Path(args.curve).read_text())["models"]
        for w in walls:
            w["wall_ms"] = curve[w["model"]][w["kernels"]][str(w["k"])]
    ks = [w.get("k", i) for i, w in enumerate(walls)]
    fams: dict[str, list] = {}
    for i, rows in enumerate(runs):
        for r in rows:
            f = fams.setdefault(family(r["name"]), [[0, 0.0, 0.0] for _ in runs])
            f[i][0] += 1
            f[i][1] += r["us"]
            f[i][2] += r["bytes"]
    total = [sum(r["us"] for r in rows) for rows in runs]
    order = sorted(fams, key=lambda n: -max(f[1] for f in fams[n]))
    small = {n for n in order if max(f[1] for f in fams[n]) < args.min_share * max(total)}
    head = "| kernel | " + " | ".join(f"k={k}: n | µs | share | GB/s" for k in ks) + " |"
    out = [f"**{args.label}**, {walls[0].get('kernels', 'exact')} kernels, context depth "
           f"{walls[0].get('depth', 512)} (ncu, each kernel alone, clocks and caches as they are)", "",
           head, "|---|" + "---:|---:|---:|---:|" * len(runs)]

    def cells(n_us_bytes):
        return " | ".join(f"{c} | {us:.1f} | {100 * us / t:.1f}% | {b / us / 1e3 if us else 0:.0f}"
                          for (c, us, b), t in zip(n_us_bytes, total))
    for n in order:
        if n not in small:
            out.append(f"| `{n}` | {cells(fams[n])} |")
    if small:
        out.append(f"| ({len(small)} other kernels) | " + cells(
            [[sum(fams[n][i][j] for n in small) for j in range(3)] for i in range(len(runs))]) + " |")
    out.append("| **kernels, sum** | " + cells(
        [[len(rows), t, sum(r["bytes"] for r in rows)] for rows, t in zip(runs, total)]) + " |")
    if all("wall_ms" in w for w in walls):
        out.append("| **forward, wall (verify_curve.py, median of 10)** | " + " | ".join(
            f"– | {1e3 * w['wall_ms']:.1f} | – | –" for w in walls) + " |")
        out.append("| wall - kernel sum (launches, gaps, host) | " + " | ".join(
            f"– | {1e3 * w['wall_ms'] - t:.1f} | – | –" for w, t in zip(walls, total)) + " |")
    text = "\n".join(out) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one process: time, then profile one forward of k tokens")
    r.add_argument("--model", required=True)
    r.add_argument("--k", type=int, default=1)
    r.add_argument("--depth", type=int, default=512)
    r.add_argument("--kernels", default="exact", choices=["exact", "fast"])
    r.add_argument("--json")
    t = sub.add_parser("table", help="markdown table from ncu CSVs (one per width)")
    t.add_argument("--csv", nargs="+", required=True)
    t.add_argument("--wall", nargs="*")
    t.add_argument("--curve", help="verify_curve.py's curve.json: the forwards' wall times (--wall names the models)")
    t.add_argument("--label", default="")
    t.add_argument("--min-share", type=float, default=0.01)
    t.add_argument("--out")
    args = ap.parse_args()
    return run(args) if args.cmd == "run" else table(args)


if __name__ == "__main__":
    sys.exit(main())
