#!/usr/bin/env python3
"""llama.cpp's own tools as anchors, built once (cached) from the same pinned
source pyspec uses. A thin wrapper: the code lives in pyspec/anchors.py (also
used by `pyspec bench --anchor llama.cpp`).

    python benchmarks/anchors.py            # build and print the tools' paths
"""
from __future__ import annotations

import sys

from pyspec.anchors import (TOOLS, AnchorError, build, build_dir, checkout_dir, completion,  # noqa: F401
                            main, source_dir, speculative_draft, speculative_ngram, write_prompt_file)

if __name__ == "__main__":
    sys.exit(main())
