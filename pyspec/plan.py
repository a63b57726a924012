"""The memory planner: chooses the KV cache types (the target's and a draft model's), the prompt
batch and the DFlash window that fit a memory budget, from llama.cpp's simulated allocations (no_alloc, as memory_report).

    >>> p = pyspec.plan("model.gguf", n_ctx=262144, budget="48GiB", draft_model="draft.gguf")
    >>> print(p.table())                  # by part and device; p.fits, p.max_n_ctx when not
    >>> llm = pyspec.LLM("model.gguf", n_ctx=262144, memory_budget="48GiB")   # runs plan() itself

`pyspec plan` on the command line prints the same table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence, Union

from . import _core
from ._gguf import check_gguf
from .errors import InvalidParameterError, MemoryBudgetError, PyspecError
from .models import default_model_path

# (K, V) from the most precise down; V is never more precise than K (K is the more sensitive to
# quantization: it goes through the softmax).
KV_CHOICES = (("f16", "f16"), ("f16", "q8_0"), ("f16", "q4_0"), ("q8_0", "q8_0"), ("q8_0", "q4_0"),
              ("q4_0", "q4_0"))
KV_RANK = {"f32": 0, "f16": 1, "bf16": 1, "q8_0": 2, "q4_0": 3}
MIN_BATCH = 64   # the engine's batch holds a 64-token draft + 1 whatever n_batch says
MIN_WINDOW = 512
VERIFY_ROWS = 65  # rows of logits a forward returns at most in generation: a 64-token draft + 1

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(size: Union[str, int]) -> int:
    """Bytes from "48GiB", "512MiB", "2GB", "1.5 GiB" or an int (bytes). GB/MB are powers of 10,
    GiB/MiB powers of 2. Raises InvalidParameterError on anything else."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise InvalidParameterError(f"a memory budget must be > 0 bytes, got {size} (or a size such as "
                                        "'48GiB', '512MiB', '2GB')")
        return size
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(size)) if isinstance(size, str) else None
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise InvalidParameterError(
            f"cannot read the memory budget {size!r}: expected a positive number and a unit, such as "
            "'48GiB', '512MiB', '2GB' (GiB/MiB/KiB: powers of 2; GB/MB/KB: powers of 10), or bytes as an int")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


@dataclass
class Part:
    """One line of a plan: bytes of one part on one device."""

    part: str     # "weights", "target KV", "recurrent state", "compute buffers", "drafter KV", ...
    device: str   # "host" or a device's name ("CUDA0"); "unsplit" where pyspec cannot tell yet
    bytes: int
    source: str = "simulated"  # "simulated" (llama.cpp's no_alloc) or "bound" (pyspec's own bound)


@dataclass
class Plan:
    """What plan() chose (or found nothing for). `parts` are for the chosen configuration, or,
    when nothing fits, for the smallest one at the n_ctx asked for."""

    fits: bool
    budget_bytes: int
    n_ctx: int                # the context sized: the n_ctx asked for, rounded up to 256 (llama.cpp)
    type_k: str
    type_v: str
    n_batch: int
    dflash_window: Optional[int]  # None: no DFlash drafter
    type_k_draft: Optional[str]   # a draft model's KV cache types (None: no draft model)
    type_v_draft: Optional[str]
    n_gpu_layers: int
    spec_type: str            # the drafter sized with the target ("none": no drafter)
    kernels: str
    swa_full: bool = False    # sliding-window layers sized for every position (LLM(swa_full=...))
    parts: list = field(default_factory=list)
    total_bytes: int = 0
    configurations_tried: int = 0
    max_n_ctx: Optional[int] = None   # when nothing fits: the largest context that does (0: none)
    message: str = ""
    notes: list = field(default_factory=list)
    rpc: Optional[list] = None  # RPC servers whose devices hold the layers (LLM(rpc=...))

    def llm_kwargs(self) -> dict:
        """The LLM keywords of the chosen configuration."""
        kw = dict(n_ctx=self.n_ctx, type_k=self.type_k, type_v=self.type_v, n_batch=self.n_batch,
                  n_gpu_layers=self.n_gpu_layers, kernels=self.kernels)
        if self.dflash_window is not None:
            kw["dflash_window"] = self.dflash_window
        if self.swa_full:
            kw["swa_full"] = True
        if self.type_k_draft is not None:
            kw.update(type_k_draft=self.type_k_draft, type_v_draft=self.type_v_draft)
        if self.rpc:
            kw["rpc"] = list(self.rpc)
        return kw

    def by_part(self) -> dict:
        """{part: bytes} over all devices."""
        out: dict = {}
        for p in self.parts:
            out[p.part] = out.get(p.part, 0) + p.bytes
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        head = (f"plan for n_ctx={self.n_ctx} in {format_bytes(self.budget_bytes)} "
                f"({self.configurations_tried} configuration(s) simulated): ")
        head += "fits" if self.fits else "does NOT fit"
        lines = [head,
                 f"  K cache {self.type_k}, V cache {self.type_v}, n_batch {self.n_batch}"
                 + (f", dflash window {self.dflash_window}" if self.dflash_window is not None else "")
                 + (f", draft K/V {self.type_k_draft}/{self.type_v_draft}" if self.type_k_draft is not None else "")
                 + f", {self.n_gpu_layers} GPU layers, spec_type {self.spec_type}, kernels {self.kernels}"
                 + ("" if self.fits else "  (the smallest configuration)"),
                 f"  {'part':<28} {'device':<8} {'bytes':>14}"]
        for p in self.parts:
            lines.append(f"  {p.part:<28} {p.device:<8} {p.bytes:>14,} {format_bytes(p.bytes):>12}"
                         + ("  (bound)" if p.source == "bound" else ""))
        lines.append(f"  {'total':<28} {'':<8} {self.total_bytes:>14,} {format_bytes(self.total_bytes):>12}"
                     f"  of {format_bytes(self.budget_bytes)}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


@dataclass(frozen=True)
class _Config:
    n_ctx: int
    type_k: str
    type_v: str
    n_batch: int
    dflash_window: int
    type_k_draft: str = "f16"
    type_v_draft: str = "f16"


def plan(model_path: Optional[Union[str, os.PathLike]] = None, *, budget: Union[str, int], n_ctx: int = 4096,
         draft_model: Optional[Union[str, os.PathLike]] = None, spec_type: Optional[str] = None,
         n_gpu_layers: int = 0, n_batch: int = 512, type_k: str = "f16", type_v: str = "f16",
         dflash_window: int = 4096, kernels: str = "exact", flash_attn: Optional[bool] = None,
         mtp: Optional[bool] = None, swa_full: bool = False, type_k_draft: str = "f16",
         type_v_draft: str = "f16", rpc: Optional[Union[Sequence[str], str]] = None) -> Plan:
    """Chooses the configuration of an LLM with these files and n_ctx that fits `budget`
    ("48GiB", "512MiB", "2GB" or bytes), from llama.cpp's simulated allocations: nothing is loaded.

    type_k / type_v, type_k_draft / type_v_draft, n_batch and dflash_window are the most the
    planner uses: it prefers, in this order, the most precise KV cache types of the target (f16,
    then q8_0, then q4_0; K and V separately, V never more precise than K), then those of a
    draft model (the same steps: they change how many drafts are accepted, never the output, so
    they go before the target's), then the largest DFlash window (halved down to 512; a draft
    model, MTP and EAGLE-3 head need the whole context), then the largest prompt batch (halved
    down to 64), and takes the first configuration whose total fits. When none fits, the Plan
    says the largest context that fits with the smallest configuration (max_n_ctx) and what to
    change (message). The drafter sized is the draft file's (built at load, whatever spec_type
    says), plus the target's MTP head when spec_type (None: the auto choice) is "mtp".

    n_gpu_layers is used as given (and must be 0 in a build without a GPU backend): choosing
    the layers on the GPU is the planner's GPU stage. The budget counts every device together.
    rpc: the LLM's RPC servers (LLM(rpc=...)), asked for their devices' allocation sizes like the
    local ones (the servers must be running): their rows are the RPCn devices, and the budget
    counts them with this machine's.
    """
    from .api import KV_TYPES, _open
    budget_bytes = parse_size(budget)
    if not isinstance(n_ctx, int) or n_ctx < 8:
        raise InvalidParameterError(f"n_ctx must be an integer >= 8, got {n_ctx!r}")
    if not isinstance(n_batch, int) or n_batch < 1:
        raise InvalidParameterError(f"n_batch must be an integer >= 1, got {n_batch!r}")
    for name, v in (("type_k", type_k), ("type_v", type_v), ("type_k_draft", type_k_draft),
                    ("type_v_draft", type_v_draft)):
        if v not in KV_TYPES:
            raise InvalidParameterError(f"{name} must be one of {', '.join(KV_TYPES)}; got {v!r}")
    if kernels not in ("exact", "fast"):
        raise InvalidParameterError(f"kernels must be 'exact' or 'fast', got {kernels!r}")
    gpu = bool(_core.build_info()["gpu_offload"])
    if rpc is not None:
        from .rpc import check_servers
        rpc = check_servers(rpc, exact=kernels == "exact")
    if n_gpu_layers != 0 and not gpu and not rpc:
        raise InvalidParameterError(
            f"n_gpu_layers={n_gpu_layers} but this pyspec build has no GPU backend; "
            "rebuild with PYSPEC_CUDA=1 (see README) or use n_gpu_layers=0")
    path = str(check_gguf(model_path) if model_path is not None else default_model_path())
    dpath = str(check_gguf(draft_model, what="draft model")) if draft_model is not None else None
    darch = dict(_core.model_info(dpath))["architecture"] if dpath else None
    tinfo = dict(_core.model_info(path))
    recurrent = tinfo["recurrent"] == "true"
    n_vocab = int(tinfo["n_vocab"])
    fa = -1 if flash_attn is None else int(bool(flash_attn))

    cache: dict = {}

    def simulate(c: _Config):
        """(parts, total, spec_type) of configuration c, or the PyspecError llama.cpp gave."""
        if c in cache:
            return cache[c]
        try:
            model, engine, dmodel, drafters = _open(
                path, dpath, mtp=mtp, n_ctx=c.n_ctx, n_batch=c.n_batch, n_threads=1, n_gpu_layers=n_gpu_layers,
                flash_attn=fa, type_k=c.type_k, type_v=c.type_v, kernels=kernels, dflash_window=c.dflash_window,
                swa_full=swa_full, no_alloc=True, draft_kv=(c.type_k_draft, c.type_v_draft), rpc=rpc)
            name = next(iter(drafters), "none") if spec_type in (None, "auto") else spec_type
            if name not in drafters and name not in ("none", "ngram"):
                raise InvalidParameterError(f"spec_type={name!r} is not available for these files; "
                                            f"have: {', '.join(['none', 'ngram', *drafters])}")
            sized = [n for n in drafters if n == name or (darch and n != "mtp")]
            recur = _recurrent_bytes(c) if recurrent else 0
            result = (_parts(engine, dmodel, {n: drafters[n] for n in sized}, recur, n_vocab), engine.n_ctx, name)
        except PyspecError as e:
            result = e
        cache[c] = result
        return result

    def _recurrent_bytes(c: _Config) -> int:
        # KV grows with the context and the recurrent state does not: two contexts give it.
        kv = []
        for n in (256, 512):
            _, e, _, _ = _open(path, None, mtp=False, n_ctx=n, n_batch=min(c.n_batch, n), n_threads=1,
                               n_gpu_layers=n_gpu_layers, flash_attn=fa, type_k=c.type_k, type_v=c.type_v,
                               kernels=kernels, dflash_window=0, swa_full=swa_full, no_alloc=True, rpc=rpc)
            kv.append(e.memory()["kv_bytes"])
        return max(2 * kv[0] - kv[1], 0)

    def kv_steps(k0: str, v0: str) -> list:
        start = (KV_RANK.get(k0, 1), KV_RANK.get(v0, 1))
        out = [kv for kv in KV_CHOICES if KV_RANK[kv[0]] >= start[0] and KV_RANK[kv[1]] >= start[1]]
        return out if (k0, v0) in out else [(k0, v0)] + out

    kvs = kv_steps(type_k, type_v)
    # the drafter file's context (a draft model, an EAGLE-3 or DFlash head) takes the draft KV types
    draft_kvs = [(type_k_draft, type_v_draft)]
    if dpath:
        draft_kvs = kv_steps(type_k_draft, type_v_draft)
    batches = _halvings(n_batch, MIN_BATCH)
    windows = _halvings(min(dflash_window or n_ctx, n_ctx), MIN_WINDOW) if darch == "dflash" else [dflash_window]
    def total_of(r) -> int:
        return sum(x.bytes for x in r[0])

    smallest, first_error = None, None
    for k, v in kvs:
        configs = [_Config(n_ctx, k, v, b, w, dk, dv) for dk, dv in draft_kvs for w in windows for b in batches]
        # A larger batch or window never needs less memory: when this KV type's smallest
        # configuration does not fit, none of its others does.
        r = simulate(configs[-1])
        if isinstance(r, PyspecError):
            first_error = first_error or r
            continue
        if total_of(r) > budget_bytes:
            if smallest is None or total_of(r) < smallest[1]:
                smallest = (configs[-1], total_of(r))
            continue
        for c in configs:  # the last one fits
            r = simulate(c)
            if not isinstance(r, PyspecError) and total_of(r) <= budget_bytes:
                return _make_plan(True, budget_bytes, c, r[1], r[2], r[0], total_of(r), len(cache), darch,
                                  n_gpu_layers, kernels, gpu, swa_full, rpc)
    if smallest is None:
        raise first_error  # every configuration was refused for a reason other than memory
    c, total = smallest
    parts, sized_ctx, name = simulate(c)
    p = _make_plan(False, budget_bytes, c, sized_ctx, name, parts, total, len(cache), darch, n_gpu_layers, kernels,
                   gpu, swa_full, rpc)

    # The largest context that fits with the smallest configuration: llama.cpp sizes contexts in
    # multiples of 256, and a larger context never needs less memory.
    def fits_at(n: int) -> bool:
        r = simulate(_Config(n, c.type_k, c.type_v, min(c.n_batch, n), min(c.dflash_window, n) or 0,
                             c.type_k_draft, c.type_v_draft))
        return not isinstance(r, PyspecError) and total_of(r) <= budget_bytes

    lo, hi = 0, (sized_ctx - 1) // 256  # in units of 256 tokens; fits_at(hi * 256 + 256) is False
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits_at(mid * 256):
            lo = mid
        else:
            hi = mid - 1
    p.max_n_ctx = lo * 256
    p.configurations_tried = len(cache)
    need = format_bytes(total)
    if p.max_n_ctx:
        p.message = (f"nothing fits: n_ctx={sized_ctx} needs at least {need} (K/V {c.type_k}/{c.type_v}, "
                     f"n_batch {c.n_batch}), more than the budget of {format_bytes(budget_bytes)}. "
                     f"The largest context that fits is n_ctx={p.max_n_ctx} (-c {p.max_n_ctx}) with that "
                     f"configuration. To run n_ctx={sized_ctx}: raise the budget to {need} or more, or use a "
                     f"smaller quantization of the model" + (" or a smaller drafter" if dpath else "") + ".")
    else:
        weights = sum(x.bytes for x in parts if x.part in ("weights", "drafter weights"))
        p.message = (f"nothing fits: even n_ctx=256 does not fit in {format_bytes(budget_bytes)} (the weights "
                     f"alone are {format_bytes(weights)}; n_ctx={sized_ctx} needs {need}). Raise the budget, or "
                     f"use a smaller quantization of the model" + (" or a smaller drafter" if dpath else "") + ".")
    return p


def _halvings(n: int, floor: int) -> list:
    out = [n]
    while out[-1] // 2 >= floor:
        out.append(out[-1] // 2)
    return out


def _device(b: dict) -> str:
    return b["device"] or ("host" if b["host"] else b["buffer"])


def _parts(engine, dmodel, drafters: dict, recurrent_bytes: int, n_vocab: int) -> list:
    bufs = engine.memory_by_buffer()
    devices = {_device(b) for b in bufs}
    parts = [Part("weights", _device(b), b["model_bytes"]) for b in bufs if b["model_bytes"]]
    rest = recurrent_bytes
    for b in bufs:
        if not b["context_bytes"]:
            continue
        r = min(rest, b["context_bytes"])  # the recurrent state sits with its layers' KV
        rest -= r
        parts.append(Part("target KV", _device(b), b["context_bytes"] - r))
        if r:
            parts.append(Part("recurrent state", _device(b), r))
    parts += [Part("compute buffers", _device(b), b["compute_bytes"]) for b in bufs if b["compute_bytes"]]
    # A drafter's context reports its totals only: on one device they are that device's.
    dev = next(iter(devices)) if len(devices) == 1 else "unsplit"
    if dmodel is not None:
        parts.append(Part("drafter weights", dev, dmodel.size_bytes))
    for name, d in drafters.items():
        m = d.memory()
        parts.append(Part(f"drafter KV ({name})", dev, m["kv_bytes"]))
        parts.append(Part(f"drafter compute ({name})", dev, m["compute_bytes"]))
        if m["buffer_bytes"]:
            parts.append(Part(f"drafter host buffers ({name})", "host", m["buffer_bytes"], "bound"))
    # llama.cpp allocates the output buffer on first use, outside its breakdown: a verify
    # step returns at most a 64-token draft + 1 rows of logits.
    parts.append(Part("host logits buffer", "host", VERIFY_ROWS * n_vocab * 4, "bound"))
    return parts


def _make_plan(fits, budget_bytes, c: _Config, sized_ctx, name, parts, total, tried, darch, n_gpu_layers, kernels,
               gpu, swa_full, rpc=None) -> Plan:
    notes = []
    if rpc:
        notes.append(f"RPC servers {', '.join(rpc)}: the RPCn rows are their devices (in the order given); the "
                     "budget counts them with this machine's; drafters stay on this machine")
    elif not gpu:
        notes.append("this build has no GPU backend: everything is in host memory")
    else:
        notes.append(f"n_gpu_layers={n_gpu_layers} as given: choosing the GPU layers is not done yet (the "
                     "planner's GPU stage); drafter parts are not split by device; the budget counts all devices")
    notes.append("host logits buffer: a bound (65 rows of logits), allocated by llama.cpp on first use")
    draft_model = darch is not None  # a drafter file: its context's KV types were chosen
    return Plan(fits=fits, budget_bytes=budget_bytes, n_ctx=sized_ctx, type_k=c.type_k, type_v=c.type_v,
                n_batch=c.n_batch, dflash_window=c.dflash_window if darch == "dflash" else None,
                type_k_draft=c.type_k_draft if draft_model else None,
                type_v_draft=c.type_v_draft if draft_model else None,
                n_gpu_layers=n_gpu_layers, spec_type=name, kernels=kernels, swa_full=swa_full, parts=parts,
                total_bytes=total,
                configurations_tried=tried, notes=notes, rpc=rpc or None)


def cmd_plan(args) -> int:
    p = plan(args.model, budget=args.budget, n_ctx=args.ctx_size, draft_model=args.draft_model,
             spec_type=args.spec_type, n_gpu_layers=args.n_gpu_layers, n_batch=args.batch_size,
             type_k=args.cache_type_k, type_v=args.cache_type_v, dflash_window=args.dflash_window,
             kernels=args.kernels, swa_full=args.swa_full, type_k_draft=args.cache_type_k_draft,
             type_v_draft=args.cache_type_v_draft, rpc=args.rpc)
    if args.json:
        print(json.dumps(p.to_dict()))
        return 0 if p.fits else 1
    print(p.table())
    if p.fits:
        kw = p.llm_kwargs()
        flags = (f"-c {kw['n_ctx']} -ctk {kw['type_k']} -ctv {kw['type_v']} -b {kw['n_batch']}"
                 + (f" --dflash-window {kw['dflash_window']}" if "dflash_window" in kw else "")
                 + (f" -ngl {kw['n_gpu_layers']}" if kw["n_gpu_layers"] else "")
                 + (" --swa-full" if kw.get("swa_full") else "")
                 + (f" -ctkd {kw['type_k_draft']} -ctvd {kw['type_v_draft']}" if "type_k_draft" in kw else "")
                 + (f" --rpc {','.join(kw['rpc'])}" if "rpc" in kw else ""))
        print(f"run it with: pyspec generate {flags} ...  (or LLM(..., n_ctx={args.ctx_size}, "
              f"memory_budget={args.budget!r}))")
    return 0 if p.fits else 1


def add_plan_parser(sub) -> argparse.ArgumentParser:
    """Registers `pyspec plan` on the CLI's subparsers."""
    from .options import SPEC_TYPES
    a = sub.add_parser("plan", help="choose KV cache types, batch and drafter window for a memory budget",
                       description="Chooses the most precise KV cache types (then the largest DFlash window, "
                                   "then the largest batch) whose memory fits --budget, from llama.cpp's "
                                   "simulated allocations (nothing is loaded), and prints it by part and device. "
                                   "Exit status 1 when nothing fits: it then says the largest context that does.")
    a.add_argument("-m", "--model", help="target GGUF (default: Gemma 3 270M Q4_K_M from pyspec[models])")
    a.add_argument("-md", "--spec-draft-model", "--model-draft", dest="draft_model",
                   help="a draft GGUF (draft model, eagle3, dflash)")
    a.add_argument("--spec-type", choices=SPEC_TYPES, default="auto", help="the drafter to size (default: auto)")
    a.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size (default: %(default)s)")
    a.add_argument("--budget", required=True, help="memory budget: 48GiB, 512MiB, 2GB, ...")
    a.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", type=int, default=0,
                   help="layers on the GPU, used as given (a GPU build)")
    a.add_argument("-b", "--batch-size", type=int, default=512, help="the largest prompt batch (default: %(default)s)")
    a.add_argument("-ctk", "--cache-type-k", default="f16", help="the most precise K cache type (default: f16)")
    a.add_argument("-ctv", "--cache-type-v", default="f16", help="the most precise V cache type (default: f16)")
    a.add_argument("-ctkd", "--cache-type-k-draft", default="f16",
                   help="the most precise K cache type of the drafter (default: f16)")
    a.add_argument("-ctvd", "--cache-type-v-draft", default="f16",
                   help="the most precise V cache type of the drafter (default: f16)")
    a.add_argument("--dflash-window", type=int, default=4096, help="the largest DFlash window (0: the context)")
    a.add_argument("--kernels", choices=["exact", "fast"], default="exact")
    a.add_argument("--rpc", default=None, metavar="SERVERS",
                   help="comma-separated HOST:PORT of running `pyspec rpc-server`s that hold the layers")
    a.add_argument("--swa-full", action="store_true",
                   help="size sliding-window layers for every position (default: a window-sized ring)")
    a.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    a.set_defaults(func=cmd_plan)
    return a
