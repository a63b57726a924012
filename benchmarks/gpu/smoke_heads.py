#!/usr/bin/env python3
"""GPU smoke test of the feature drafters (MTP, EAGLE-3, DFlash) and of the
device argmax, on tiny random models, each case in its own process.

The tiny GGUFs are written on the development machine and carried: written
on the H200 host (its Python and the pin's gguf-py), they crash llama.cpp's
loader there (not diagnosed yet).

    python benchmarks/gpu/smoke_heads.py --write build/gpu/tiny     # here
    bash benchmarks/gpu/run_h200.sh build smoke                      # there (carry build/gpu)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "the of and to"


def write(d: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_draft_heads as th
    import tiny_models as tl
    import tiny_mtp_models as tm
    d.mkdir(parents=True, exist_ok=True)
    tl.write_llama(d / "t.gguf")
    tm.write_mtp_dense(d / "m.gguf", seed=1, n_layer=1, mimic=True)
    tm.write_mtp_hybrid(d / "hy.gguf", mimic=True)
    th.write_eagle3_bigram(d / "eb.gguf", tl.write_llama(d / "bigram.gguf", n_layer=1, residual_only=True))
    th.write_dflash(d / "df.gguf", block_size=8)
    # Q8_0 copies for the GPU exactness matrix (exact_matrix.py): exact CUDA kernels refuse float weights
    from pyspec import _core
    for name in ("t", "bigram", "eb", "df"):
        _core.quantize(str(d / f"{name}.gguf"), str(d / f"{name}-q8_0.gguf"), "q8_0", 2)
    print(f"wrote {', '.join(p.name for p in sorted(d.glob('*.gguf')))} to {d}")


def case(d: Path, target: str, draft: str | None = None, k: int = 4, spec: str = "auto") -> str:
    dm = f", draft_model='{d / draft}'" if draft else ""
    return (f"import pyspec; llm = pyspec.LLM('{d / target}', n_gpu_layers=-1, n_ctx=256{dm}); "
            f"b = llm.generate({PROMPT!r}, max_tokens=32, spec_type='none', ignore_eos=True).tokens; "
            f"g = llm.generate({PROMPT!r}, max_tokens=32, spec_type={spec!r}, draft_n_max={k}, ignore_eos=True); "
            "print(g.spec_type, 'equal to plain:', g.tokens == b, 'accepted', g.stats.draft_n_accepted, '/', "
            "g.stats.draft_n)")


def run(d: Path) -> int:
    argmax = ("import os, pyspec; r = []\n"
              "for v in ('1', '0'):\n"
              "    os.environ['PYSPEC_DEVICE_ARGMAX'] = v\n"
              f"    llm = pyspec.LLM('{d / 't.gguf'}', n_gpu_layers=-1, n_ctx=256)\n"
              f"    r.append(llm.generate({PROMPT!r}, max_tokens=48, ignore_eos=True).tokens)\n"
              "print('device argmax == host argmax:', r[0] == r[1])")
    cases = {"argmax": argmax, "ngram": case(d, "t.gguf", spec="ngram"), "mtp": case(d, "m.gguf"),
             "mtp hybrid": case(d, "hy.gguf"), "eagle3 (bigram head)": case(d, "bigram.gguf", "eb.gguf"),
             "dflash": case(d, "t.gguf", "df.gguf", 7)}
    failed = 0
    for name, code in cases.items():
        r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True,
                           timeout=300, cwd="/tmp")
        print(f"{name}: rc {r.returncode}: {r.stdout.strip()[-400:]}", flush=True)
        if r.returncode:
            failed += 1
            print(r.stderr[-2000:])
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", type=Path, help="write the tiny models into this folder")
    g.add_argument("--run", type=Path, help="run the cases on the models in this folder")
    args = ap.parse_args()
    if args.write:
        write(args.write)
        return 0
    return run(args.run)


if __name__ == "__main__":
    sys.exit(main())
