"""How many CPU threads to use, and a hint when other processes already keep the
cores busy: llama.cpp's threads spin while they wait for each other, so sharing
cores with a busy process makes generation many times slower, not just slower."""
from __future__ import annotations

import os
import sys
import time
from typing import Optional



def default_threads() -> int:
    """The CPU threads an LLM uses when n_threads is None: $PYSPEC_THREADS, else the
    physical cores among the CPUs this process may run on (its affinity mask, e.g.
    `taskset`), as llama.cpp counts them: hyperthreads of one core share its units.
    The engine's own rule (_core.default_threads), which _core.Engine and the drafters
    apply to n_threads=0 too. InvalidParameterError for a bad $PYSPEC_THREADS."""
    from . import _core
    return _core.default_threads()


def _cpus() -> list:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def read_cpu_times(path: str = "/proc/stat") -> dict:
    """{cpu: (busy, total)} in clock ticks since boot, from Linux's /proc/stat ({} elsewhere)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                name, *vals = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                v = [int(x) for x in vals[:8]] + [0] * max(0, 8 - len(vals))
                idle = v[3] + v[4]  # idle, iowait
                out[int(name[3:])] = (sum(v) - idle, sum(v))
    except (OSError, ValueError):
        return {}
    return out


def busy_cpus(before: dict, after: dict, cpus: list) -> float:
    """How many of `cpus` were busy between two read_cpu_times() samples (0..len(cpus))."""
    busy = 0.0
    for c in cpus:
        if c in before and c in after and after[c][1] > before[c][1]:
            busy += (after[c][0] - before[c][0]) / (after[c][1] - before[c][1])
    return busy


def measure_busy_cpus(cpus: list, sample_s: float) -> Optional[float]:
    """How many of `cpus` are busy, over sample_s seconds from now (None where /proc/stat is missing)."""
    before = read_cpu_times()
    if not before:
        return None
    time.sleep(sample_s)
    return busy_cpus(before, read_cpu_times(), cpus)


def contention_hint(n_threads: int, busy: Optional[float] = None, n_cpus: Optional[int] = None,
                    sample_s: float = 0.1) -> Optional[str]:
    """A one-line note when other processes leave fewer free CPUs than n_threads, else None.
    busy, n_cpus: the busy CPUs and the CPUs this process may use; measured now (over sample_s
    seconds) when None, so call it before this process starts working: it must see the others."""
    if n_threads <= 1:  # one thread waits for no other
        return None
    if busy is None or n_cpus is None:
        cpus = _cpus()
        n_cpus = len(cpus)
        busy = measure_busy_cpus(cpus, sample_s)
        if busy is None:
            return None
    free = n_cpus - busy
    if free >= n_threads - 0.5:
        return None
    fewer = max(1, int(free + 0.5))
    return (f"note: other processes keep {busy:.1f} of the {n_cpus} CPUs busy, and pyspec is about to run "
            f"{n_threads} threads, which spin while they wait for each other: generation can be many times "
            f"slower than on an idle machine; -t {fewer} (n_threads={fewer}, or PYSPEC_THREADS={fewer}) "
            "leaves the busy cores alone")


def warn_if_cores_are_busy(n_threads: Optional[int]) -> None:
    """The CLI's check before it loads a model: contention_hint on stderr."""
    hint = contention_hint(n_threads or default_threads())
    if hint:
        print(hint, file=sys.stderr)
