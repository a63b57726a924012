"""Training curves of `pyspec train dflash`: held-out tau from the trainer's evaluations against
the training tokens seen, one line per report (OUT.json of each run), into a PNG: decode tau
(tokens per step of pyspec's greedy decode loop on the held-out responses) where the report has
it, else (reports written before it) the per-anchor tau, teacher-forced at uniformly drawn
anchors, which overstates it. Needs matplotlib (pip install '.[bench]').

    python benchmarks/plot_train_curve.py D1.gguf.json [D2.gguf.json ...] --out curve.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def points(report: dict) -> tuple:
    """(tokens seen, tau) per evaluation: blocks seen x the block size; decode tau where the
    curve has it (entries step, blocks, per-anchor tau, decode tau), else the per-anchor tau."""
    block = int(report["config"]["block_size"])
    xs = [int(e[1]) * block for e in report["curve"]]
    ys = [float(e[3] if len(e) > 3 else e[2]) for e in report["curve"]]
    return xs, ys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="OUT.json files written by pyspec train dflash")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--title", default="pyspec train dflash: held-out tau while training")
    a = ap.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: pip install '.[bench]'", file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(7, 4))
    for path in a.reports:
        r = json.loads(Path(path).read_text())
        if not r.get("curve"):
            print(f"{path}: no evaluations in its curve (was the run shorter than one evaluation period?)",
                  file=sys.stderr)
            return 1
        xs, ys = points(r)
        final = r.get("eval") or {}
        label = Path(path).name.replace(".gguf.json", "").replace(".json", "")
        label += ": decode tau" if all(len(e) > 3 for e in r["curve"]) else ": per-anchor tau"
        if final.get("decode_tau"):
            label += f" (final {final['decode_tau']:.2f})"
        elif final:
            label += f" (final {final['tau']:.2f})"
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("training tokens seen (blocks x block size)")
    ax.set_ylabel("held-out tau")
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
