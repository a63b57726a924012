"""The `pyspec` command line (flag names follow llama.cpp's).

    pyspec generate -m model.gguf -p "text" -n 128 --spec-type ngram [--json]
    pyspec info model.gguf
    pyspec demo                     # default model: plain vs speculative, side by side
    pyspec bench ...                # pyspec/bench.py
    pyspec serve -m model.gguf      # OpenAI-compatible server (pyspec/server.py, pyspec[server])
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import PyspecError
from .prompts import DEMO_PROMPT

# How `pyspec serve` schedules requests (its --help and its 503 answers say it).
SERVE_STAGE_NOTE = ("pyspec serve runs -np generations at once (1 by default; -np N > 1 batches N sequences into "
                    "one forward pass per step, drafting with spec types none, ngram and draft only), and further "
                    "requests wait in a bounded queue for a free sequence")
MAX_PARALLEL = 64


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", help="target GGUF (default: Gemma 3 270M Q4_K_M from pyspec[models])")
    g.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size (default: %(default)s)")
    g.add_argument("-b", "--batch-size", type=int, default=512, help="prompt tokens per forward pass")
    g.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", type=int, default=0, help="layers on the GPU")
    g.add_argument("-t", "--threads", type=int, default=None,
                   help="CPU threads (default: $PYSPEC_THREADS, else the physical cores; use fewer when other "
                        "busy processes share them: llama.cpp's threads spin while they wait)")
    g.add_argument("-fa", "--flash-attn", choices=["on", "off", "auto"], default="auto")
    g.add_argument("-ctk", "--cache-type-k", default="f16", help="K cache type (f16, q8_0, ...)")
    g.add_argument("-ctv", "--cache-type-v", default="f16", help="V cache type (f16, q8_0, ...)")
    g.add_argument("-ctkd", "--cache-type-k-draft", default="f16", help="the drafter's K cache type (draft model, MTP, EAGLE-3, DFlash)")
    g.add_argument("-ctvd", "--cache-type-v-draft", default="f16", help="the drafter's V cache type")
    g.add_argument("--swa-full", action="store_true",
                   help="full-size cache for sliding-window layers (default: a window-sized ring, exact too)")
    g.add_argument("--kernels", choices=["exact", "fast"], default="exact",
                   help="exact: batch-invariant, lossless speculation (default); fast: NOT exact")
    g.add_argument("--rpc", default=None, metavar="SERVERS",
                   help="comma-separated HOST:PORT of `pyspec rpc-server`s that hold the model's layers "
                        "(all of them unless -ngl says how many)")
    g.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")


def _add_gen_args(p: argparse.ArgumentParser, prompt: bool = True) -> None:
    g = p.add_argument_group("generation")
    if prompt:
        g.add_argument("-p", "--prompt", help="prompt text")
        g.add_argument("-f", "--file", help="read the prompt from this file")
    g.add_argument("-n", "--n-predict", type=int, default=128, help="tokens to generate (default: %(default)s)")
    g.add_argument("--temp", type=float, default=0.0, help="temperature; 0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=40)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--min-p", type=float, default=0.05)
    g.add_argument("--repeat-penalty", type=float, default=1.0,
                   help="penalize repeated tokens (default: %(default)s, 1.0 = off)")
    g.add_argument("--repeat-last-n", type=int, default=64,
                   help="last n tokens the penalties look at (default: %(default)s, 0 = off, -1 = the context)")
    g.add_argument("--presence-penalty", type=float, default=0.0, help="default: %(default)s, 0.0 = off")
    g.add_argument("--frequency-penalty", type=float, default=0.0, help="default: %(default)s, 0.0 = off")
    g.add_argument("-s", "--seed", type=int, default=None, help="sampling seed (default: random)")
    g.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-generation tokens")
    if prompt:
        g.add_argument("--chat", action="store_true",
                       help="wrap the prompt as a user message in the model's chat template (an error when the "
                            "GGUF has none, as base models such as the default model do)")
    g.add_argument("--chat-template", default=None,
                   help="chat template for --chat (serve: for chat completions): a template or a built-in name "
                        "(gemma, chatml, llama3, ...); default: the GGUF's own")
    s = p.add_argument_group("speculation")
    s.add_argument("--spec-type", choices=["auto", "none", "ngram", "draft", "mtp", "eagle3", "dflash"],
                   default="auto",
                   help="drafter (default: auto = the kind of the -md file (draft model, eagle3 head, dflash "
                        "drafter), else mtp when the model has MTP layers, else none)")
    s.add_argument("--spec-sampling", choices=["rejection", "equal"], default="rejection",
                   help="at temperature > 0: rejection sampling (default; the output follows the target's "
                        "distribution) or accept-if-equal (the output equals plain sampling for the same seed)")
    s.add_argument("-md", "--spec-draft-model", "--model-draft", dest="draft_model",
                   help="draft GGUF: a draft model, an EAGLE-3 head or a DFlash drafter for the target")
    s.add_argument("--no-mtp", action="store_true", help="do not load the model's MTP layers")
    s.add_argument("--dflash-window", type=int, default=4096,
                   help="target positions a DFlash drafter keeps features of (default: %(default)s, 0 = all)")
    s.add_argument("--spec-draft-n-max", "--draft-max", type=int, default=16, dest="draft_n_max",
                   help="longest draft per step, 0..64 (default: %(default)s)")
    s.add_argument("--spec-draft-n-min", "--draft-min", type=int, default=0, dest="draft_n_min",
                   help="shorter drafts are not verified (default: %(default)s)")
    s.add_argument("--spec-ngram-size-n", "--spec-ngram-simple-size-n", type=int, default=3, dest="ngram_n",
                   help="n-gram lookup length (default: %(default)s)")
    s.add_argument("--spec-ngram-size-min", type=int, default=None, dest="ngram_n_min",
                   help="shortest n-gram tried when the longest has no match (default: the n-gram size)")


def _load(args):
    from .api import LLM
    from .threads import warn_if_cores_are_busy
    warn_if_cores_are_busy(args.threads)
    fa = {"on": True, "off": False, "auto": None}[args.flash_attn]
    draft = getattr(args, "draft_model", None)
    if draft is None and getattr(args, "spec_type", None) == "dflash":
        # --spec-type dflash without -md: the drafter pyspec ships for this model (an error naming
        # what to do when it ships none)
        from .models import shipped_drafter
        draft = str(shipped_drafter(args.model))
    return LLM(args.model, n_ctx=args.ctx_size, n_gpu_layers=args.n_gpu_layers, n_threads=args.threads,
               n_batch=args.batch_size, flash_attn=fa, type_k=args.cache_type_k, type_v=args.cache_type_v,
               kernels=args.kernels, draft_model=draft,
               mtp=False if getattr(args, "no_mtp", False) else None,
               dflash_window=getattr(args, "dflash_window", 4096),
               chat_template=getattr(args, "chat_template", None), swa_full=args.swa_full,
               type_k_draft=args.cache_type_k_draft, type_v_draft=args.cache_type_v_draft,
               rpc=getattr(args, "rpc", None), verbose=args.verbose)


def _gen_options(args):
    """The generation flags as a GenerationOptions (checked there: a wrong value is an error)."""
    from .options import GenerationOptions
    return GenerationOptions(max_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
                             min_p=args.min_p, seed=args.seed, spec_type=args.spec_type,
                             draft_n_max=args.draft_n_max, draft_n_min=args.draft_n_min, ngram_n=args.ngram_n,
                             ngram_n_min=args.ngram_n_min, ignore_eos=args.ignore_eos,
                             repeat_penalty=args.repeat_penalty, penalty_last_n=args.repeat_last_n,
                             presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                             spec_sampling=args.spec_sampling, parse_special=getattr(args, "chat", False))


def _prompt(args) -> str:
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise PyspecError(f"prompt file not found: '{path}'")
        return path.read_text(encoding="utf-8")
    if args.prompt is None:
        raise PyspecError("no prompt: give -p TEXT or -f FILE")
    return args.prompt


def summary_line(gen) -> str:
    s = gen.stats
    line = (f"[{s.predicted_n} tokens, {s.predicted_per_second:.1f} tok/s, prompt {s.prompt_n} tokens "
            f"{s.prompt_per_second:.1f} tok/s, spec {gen.spec_type}")
    if gen.spec_type != "none":
        line += (f", accepted {s.draft_n_accepted}/{s.draft_n} ({100 * s.acceptance_rate:.1f}%), "
                 f"mean acceptance length {s.mean_acceptance_length:.2f}")
    return line + "]"


def generation_json(gen) -> dict:
    s = gen.stats
    return {
        "text": gen.text,
        "tokens": gen.tokens,
        "finish_reason": gen.finish_reason,
        "seed": gen.seed,
        "timings": {
            "prompt_n": s.prompt_n, "prompt_ms": s.prompt_ms, "prompt_per_second": s.prompt_per_second,
            "predicted_n": s.predicted_n, "predicted_ms": s.predicted_ms,
            "predicted_per_second": s.predicted_per_second,
            "draft_n": s.draft_n, "draft_n_accepted": s.draft_n_accepted,
            "draft_ms": s.draft_ms, "verify_ms": s.verify_ms,
        },
        "spec": {
            "type": gen.spec_type, "n_steps": s.n_steps, "mean_acceptance_length": s.mean_acceptance_length,
            "acceptance_rate": s.acceptance_rate,
            "accepted_per_position": s.accepted_per_position,
            "drafted_per_position": s.drafted_per_position,
            "acceptance_per_position": s.acceptance_per_position,
        },
    }


class PromptProgress:
    """on_prompt for a long prompt: one line on `out` (stderr), rewritten after each chunk of
    n_batch tokens, for prompts of more than one chunk; ends with a newline."""

    def __init__(self, out):
        self.out = out
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if done == total and not self.shown:
            return  # one chunk (or a reused prefix and one chunk): nothing to wait for
        self.shown = True
        self.out.write(f"\rprompt: {done}/{total} tokens ({100 * done // total}%)"
                       + ("\n" if done == total else ""))
        self.out.flush()


def cmd_generate(args) -> int:
    opts = _gen_options(args)  # before loading: a wrong flag fails at once
    llm = _load(args)
    prompt = _prompt(args)
    if args.chat:
        prompt = llm.apply_chat_template([{"role": "user", "content": prompt}])
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    on_prompt = PromptProgress(sys.stderr) if show else None
    if args.json:
        gen = llm.generate(prompt, opts, on_prompt=on_prompt)
        print(json.dumps(generation_json(gen)))
        return 0
    stream = llm.stream(prompt, opts, on_prompt=on_prompt)
    try:
        for chunk in stream:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
    finally:
        stream.close()  # Ctrl-C: the engine stops at its next prompt chunk or step
    print()
    print(summary_line(stream.result))
    return 0


def cmd_info(args) -> int:
    from .api import memory_report, model_info
    info = model_info(args.model_file)
    if info["role"] == "target":
        mem = memory_report(args.model_file, draft_model=args.draft_model, n_ctx=args.ctx_size,
                            dflash_window=args.dflash_window)
        info["memory"] = mem
        if args.draft_model:
            dinfo = model_info(args.draft_model)
            info["draft"] = {k: dinfo[k] for k in ("path", "architecture", "role", "n_embd", "n_layer")}
    if args.json:
        print(json.dumps(info))
        return 0
    width = max(len(k) for k in info)
    for k, v in info.items():
        if k == "memory":
            continue
        if isinstance(v, list):
            v = ", ".join(map(str, v))
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        print(f"{k:<{width}}  {v}")
    if "memory" in info:
        m = info["memory"]
        print(f"\nmemory at n_ctx={m['n_ctx']} (spec_type {m['spec_type']}; computed, nothing allocated):")
        for k, v in m.items():
            if k.endswith("_bytes"):
                print(f"  {k[:-6]:<16} {v / 2**20:10.1f} MiB")
    return 0


def cmd_demo(args) -> int:
    """The main job: the default model, plain vs speculative decoding side by side, measured
    as `pyspec bench` measures (a warm-up round, then interleaved runs on the same tokens)."""
    from .bench import BenchConfig, measure
    opts = _gen_options(args)
    llm = _load(args)
    prompt = _prompt(args) if (args.prompt or args.file) else DEMO_PROMPT
    if args.chat:
        prompt = llm.apply_chat_template([{"role": "user", "content": prompt}])
    auto = llm.auto_spec_type()
    spec_type = args.spec_type if args.spec_type not in (None, "none", "auto") else (auto if auto != "none" else "ngram")
    cfg = BenchConfig(model=llm.model_path, draft_model=llm.draft_model_path, methods=["none", spec_type],
                      threads=llm.n_threads, ctx=args.ctx_size, n_gpu_layers=args.n_gpu_layers, reps=args.reps,
                      warmup=args.warmup, kernels=args.kernels, progress=False, prompts="demo",
                      options=opts)  # seed None: one random seed for both runs (BenchConfig.validate)
    doc = measure(llm, cfg, [{"name": "demo", "prompt": prompt}])
    base, spec = doc["overall"]["none"], doc["overall"][spec_type]
    first = next(r for r in doc["runs"] if r["method"] == spec_type)
    print(f"model: {llm.model_path} (kernels: {llm.kernels}, {llm.n_threads} threads"
          + (f", {args.n_gpu_layers} GPU layers" if args.n_gpu_layers else "") + ")")
    print("--- prompt ---")
    print(prompt.rstrip("\n"))
    print(f"--- generated (spec type {spec_type}) ---")
    print(llm.detokenize(first["tokens"]))
    print("---")
    print(f"without speculation: {base['tok_s']:7.1f} tok/s")
    print(f"with {spec_type:<14}: {spec['tok_s']:7.1f} tok/s  ({spec['speedup'] or 0:.2f}x), "
          f"accepted {spec['draft_n_accepted']}/{spec['draft_n']} drafted tokens "
          f"({100 * spec['acceptance_rate']:.1f}%), mean acceptance length {spec['mean_acceptance_length']:.2f}")
    print(f"(measured as `pyspec bench` does: {cfg.warmup} warm-up round(s), then {cfg.reps} interleaved run(s) "
          f"of each on the same prompt tokens; tok/s = generated tokens after the first / generation time)")
    same = spec["equal_to_baseline"]
    # Rejection sampling with a drafter that has a distribution keeps the
    # target's distribution, not its tokens for a given seed.
    token_exact = args.temp <= 0 or args.spec_sampling == "equal" or spec_type == "ngram"
    if not token_exact:
        print(f"output identical to plain decoding: {'yes' if same else 'no'} (rejection sampling: the same "
              "distribution as plain sampling, not the same tokens for a seed; --spec-sampling equal gives both)")
        return 0
    if llm.kernels != "exact":
        print(f"output identical to plain decoding: {'yes' if same else 'no'}. The kernels are NOT exact "
              "(--kernels fast): a token's logits change with the number of tokens in its forward pass, so "
              "speculative output may differ from plain decoding; --kernels exact makes it lossless.")
        return 0
    if same:
        print("output identical to plain decoding: yes (exact kernels: lossless)")
        return 0
    print("output identical to plain decoding: NO. With exact kernels it must be: this is a bug in pyspec; "
          "please report it with this command line and the output of `pyspec --version`.")
    return 1


def cmd_serve(args) -> int:
    """An OpenAI-compatible server (pyspec/server.py); -np generations at once, batched when > 1."""
    if not 1 <= args.parallel <= MAX_PARALLEL:
        raise PyspecError(f"-np must be in [1, {MAX_PARALLEL}] (the generations served at once, each in a "
                          f"sequence of -c / -np tokens); got {args.parallel}")
    if args.parallel > 1:
        if getattr(args, "draft_model", None):
            from . import _core
            from ._gguf import check_gguf
            from .api import HEAD_ARCHS
            arch = dict(_core.model_info(str(check_gguf(args.draft_model, what="draft model"))))["architecture"]
            if arch in HEAD_ARCHS:
                raise PyspecError(f"-np {args.parallel} batches several sequences, which draft with spec types "
                                  f"none, ngram and draft (a draft model) only, so -md (a {arch} head, which reads "
                                  "one sequence's features) would never be used; serve it with -np 1")
        if args.batch_size < args.parallel:
            raise PyspecError(f"-b {args.batch_size} (tokens per step) is smaller than -np {args.parallel}: each "
                              f"step holds at least one token of every sequence; use -b >= {args.parallel}")
        if args.ctx_size // args.parallel < 8:
            raise PyspecError(f"-c {args.ctx_size} split between -np {args.parallel} sequences leaves fewer than "
                              "8 tokens each; use a larger -c or a smaller -np")
        if args.spec_type not in (None, "auto", "none", "ngram", "draft"):
            raise PyspecError(f"--spec-type {args.spec_type}: -np {args.parallel} batches several sequences, "
                              "which draft with spec types none, ngram and draft only; use one of those or -np 1")
    if args.n_predict < -1 or args.n_predict == 0:
        raise PyspecError(f"-n must be -1 (up to the context) or >= 1, got {args.n_predict}")
    if args.max_queue < 0:
        raise PyspecError(f"--max-queue must be >= 0, got {args.max_queue}")
    if args.max_request_bytes < 1024:
        raise PyspecError(f"--max-request-bytes must be >= 1024, got {args.max_request_bytes}")
    try:
        from . import server
    except ImportError as e:
        raise PyspecError(str(e)) from None
    defaults = _gen_options(argparse.Namespace(**{**vars(args), "n_predict": 0}))  # max_tokens: per request
    if args.parallel > 1:
        # The batch has a context of its own (-c, split between the sequences); the LLM's engine only
        # tokenizes here: a small one (a sequence's share of the context, narrow batches) saves its memory.
        llm = _load(argparse.Namespace(**{**vars(args), "ctx_size": max(256, args.ctx_size // args.parallel),
                                          "batch_size": min(args.batch_size, 64)}))
    else:
        llm = _load(args)
    config = server.ServeConfig(model_name=args.alias or Path(llm.model_path).name, defaults=defaults,
                                default_max_tokens=args.n_predict, api_key=args.api_key, max_queue=args.max_queue,
                                max_request_bytes=args.max_request_bytes, parallel=args.parallel,
                                batch_n_ctx=args.ctx_size, batch_n_batch=args.batch_size)
    try:
        srv = server.Server(llm, config, host=args.host, port=args.port,
                            log_level="info" if args.verbose else "warning")
    except OSError as e:
        raise PyspecError(f"cannot listen on {args.host}:{args.port}: {e}") from None
    import signal
    caught = []

    def on_signal(sig, frame):  # SIGTERM / Ctrl-C: stop the running generation, answer 503, close
        caught.append(signal.Signals(sig).name)
        srv.shutdown()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        srv.start()
        at_once = ("one generation at a time" if args.parallel == 1 else
                   f"{args.parallel} generations at once in one batch, n_ctx {srv.state.n_ctx} each")
        types = llm.spec_types if args.parallel == 1 else ["none", "ngram"]
        print(f"pyspec serve: {config.model_name} on {srv.url} ({at_once}, up to "
              f"{config.max_queue} waiting; spec types {', '.join(types)}"
              + ("; API key required" if args.api_key else "") + ")", flush=True)
        srv.wait()
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    print(f"pyspec serve: stopped{' (' + caught[0] + ')' if caught else ''}", flush=True)
    return 0


def cmd_rpc_server(args) -> int:
    from .rpc import serve
    print(f"pyspec rpc-server: {args.host}:{args.port}, {args.kernels} kernels", flush=True)
    serve(args.host, args.port, n_threads=args.threads, kernels=args.kernels, cpu=args.cpu, cache_dir=args.cache)
    return 1  # serve() returns only by raising


def version_string() -> str:
    from . import __version__, build_info
    b = build_info()
    return (f"pyspec {__version__} (llama.cpp {b['llama_cpp_commit']}, backends {', '.join(b['backends'])}, "
            f"exact kernels on {', '.join(b['exact_backends']) or 'none'})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pyspec", description="Lossless speculative decoding for GGUF models.")
    ap.add_argument("--version", action="version", version=version_string())
    sub = ap.add_subparsers(dest="command")
    g = sub.add_parser("generate", help="generate text (the default command)")
    _add_model_args(g)
    _add_gen_args(g)
    g.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show the prompt's progress on stderr while a prompt of several batches is read "
                        "(default: when stderr is a terminal)")
    g.set_defaults(func=cmd_generate)
    i = sub.add_parser("info", help="describe a GGUF model and the speculation methods it supports")
    i.add_argument("model_file")
    i.add_argument("-md", "--spec-draft-model", dest="draft_model",
                   help="a draft GGUF to check against the model and size (draft model, eagle3, dflash)")
    i.add_argument("-c", "--ctx-size", type=int, default=4096, help="context size for the memory report")
    i.add_argument("--dflash-window", type=int, default=4096, help="DFlash feature window (0: the context)")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    d = sub.add_parser("demo", help="default model: plain vs speculative decoding, side by side")
    _add_model_args(d)
    _add_gen_args(d)
    d.add_argument("--reps", type=int, default=1, help="measured runs of each (default: %(default)s)")
    d.add_argument("--warmup", type=int, default=1, help="discarded warm-up rounds (default: %(default)s)")
    d.set_defaults(func=cmd_demo)
    sv = sub.add_parser(
        "serve", help="an OpenAI-compatible HTTP server (needs pyspec[server])",
        description="An OpenAI-compatible server: /v1/chat/completions, /v1/completions (streaming or not), "
                    "/v1/models, /health, /metrics (Prometheus). -np N generations run at once: with 1 (the "
                    "default) one at a time; with N > 1 in one batch, one forward pass per step over every "
                    "running request, each in a sequence of its own with -c / N tokens of context and "
                    "drafting with spec types none, ngram or draft (a draft model's context per sequence; "
                    "EAGLE-3 and DFlash heads need -np 1). Further requests wait in a "
                    "bounded FIFO queue for a free sequence (--max-queue; one more gets 503 at once). With "
                    "exact kernels (the default) each request gets exactly the tokens it would get alone "
                    "(with that context). The generation flags "
                    "below are the defaults of a request that leaves a field out; -n is max_tokens' default "
                    "(-1: up to the context).")
    _add_model_args(sv)
    _add_gen_args(sv, prompt=False)
    sv.set_defaults(n_predict=-1)
    s_ = sv.add_argument_group("server")
    s_.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: %(default)s, this machine only)")
    s_.add_argument("--port", type=int, default=8080, help="port (default: %(default)s; 0: a free one, printed)")
    s_.add_argument("-np", "--parallel", type=int, default=1,
                    help="generations at once (default: %(default)s; 2..64 batches them into one forward pass "
                         "per step, each with -c / N tokens of context, spec types none and ngram)")
    s_.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' on every route but /health")
    s_.add_argument("-a", "--alias", default=None, help="the model's id in /v1/models (default: the file name)")
    s_.add_argument("--max-queue", type=int, default=16,
                    help="requests that may wait for a free sequence; more get 503 at once "
                         "(default: %(default)s)")
    s_.add_argument("--max-request-bytes", type=int, default=4 * 2**20,
                    help="larger request bodies get 413 (default: %(default)s)")
    sv.set_defaults(func=cmd_serve)
    r = sub.add_parser(
        "rpc-server", help="lend this machine's GPUs (else its CPU) to LLM(rpc=...) / --rpc clients",
        description="A llama.cpp RPC server (the RPC backend of the pinned llama.cpp) that runs exact "
                    "(batch-invariant) kernels unless --kernels fast, so a model split over such servers gives "
                    "the output it gives in one process. It serves one client process at a time; Ctrl-C or "
                    "SIGTERM stop it. It runs whatever a client sends: bind it to addresses you trust.")
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    r.add_argument("-p", "--port", type=int, default=50052, help="port (default: %(default)s)")
    r.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: the physical cores)")
    r.add_argument("--kernels", choices=["exact", "fast"], default="exact",
                   help="exact (default): batch-invariant; fast: llama.cpp's kernels, refused by exact clients")
    r.add_argument("--cpu", action="store_true", help="serve the CPU even when there are GPUs")
    r.add_argument("-c", "--cache", default=None, metavar="DIR", help="cache tensors sent by clients in DIR")
    r.set_defaults(func=cmd_rpc_server)
    from .bench import add_bench_parser  # pyspec bench (pyspec/bench.py)
    add_bench_parser(sub)
    from .plan import add_plan_parser  # pyspec plan (pyspec/plan.py)
    add_plan_parser(sub)
    from .train.cli import add_train_parser  # pyspec train (pyspec/train/; PyTorch only when run)
    add_train_parser(sub)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "generate")  # llama.cpp style: `pyspec -m model.gguf -p ...`
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        return args.func(args)
    except PyspecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
