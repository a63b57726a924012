"""pyspec's Python API: load a GGUF model, generate with or without speculation.

    >>> import pyspec
    >>> llm = pyspec.LLM()                       # the default model (pyspec[models])
    >>> out = llm.generate("def fib(n):", max_tokens=64, spec_type="ngram")
    >>> print(out.text, out.stats.predicted_per_second, out.stats.mean_acceptance_length)

Everything heavy runs in the C++ engine (pyspec._core) with the GIL released.
"""
from __future__ import annotations

import codecs
import contextlib
import os
import queue
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

from . import _core
from ._gguf import check_gguf
from .errors import InvalidParameterError, MemoryBudgetError
from .models import default_model_path
from .options import SPEC_TYPES, GenerationOptions, with_option_keywords
from .threads import default_threads

# drafters that a draft file's GGUF architecture selects; any other architecture is a draft model
HEAD_ARCHS = ("eagle3", "dflash")
KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")

Prompt = Union[str, Sequence[int]]


@dataclass
class Stats:
    """Counters of one generation (llama.cpp's field names where it has one)."""

    prompt_n: int = 0
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    n_steps: int = 0
    draft_n: int = 0
    draft_n_accepted: int = 0
    drafted_per_position: list = field(default_factory=list)
    accepted_per_position: list = field(default_factory=list)
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    forward_ms: float = 0.0
    mean_acceptance_length: float = 0.0

    @property
    def overhead_ms(self) -> float:
        """Generation time outside the drafter and the target's forward passes (the engine's own cost)."""
        return max(self.predicted_ms - self.draft_ms - self.forward_ms, 0.0)

    @property
    def prompt_per_second(self) -> float:
        return 1e3 * self.prompt_n / self.prompt_ms if self.prompt_ms > 0 else 0.0

    @property
    def predicted_per_second(self) -> float:
        """Generated tokens per second (the first token, sampled from the prompt's logits, excluded)."""
        n = self.predicted_n - 1
        return 1e3 * n / self.predicted_ms if self.predicted_ms > 0 and n > 0 else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens (0 when nothing was drafted)."""
        return self.draft_n_accepted / self.draft_n if self.draft_n else 0.0

    @property
    def acceptance_per_position(self) -> list:
        """Acceptance rate at each draft position."""
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_position, self.drafted_per_position)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(prompt_per_second=self.prompt_per_second, predicted_per_second=self.predicted_per_second,
                 acceptance_rate=self.acceptance_rate)
        return d


@dataclass
class Generation:
    """The result of LLM.generate / LLM.chat."""

    text: str
    tokens: list
    stats: Stats
    finish_reason: str  # "stop", "length", "context" or "interrupted"
    spec_type: str
    seed: int


@dataclass
class Chunk:
    """Tokens committed by one engine step, as LLM.stream yields them."""

    text: str
    tokens: list
    from_draft: list  # [bool] per token: True when the drafter proposed it

    @property
    def n_from_draft(self) -> int:
        return sum(self.from_draft)


class LLM:
    """A GGUF model with a context, ready to generate with speculative decoding.

    Arguments:
      model_path: GGUF file; None loads the default model (Gemma 3 270M Q4_K_M
        from the `pyspec[models]` extra).
      n_ctx: context size in tokens.
      n_gpu_layers: layers to offload to a GPU (-1: all; needs a CUDA build).
      n_threads: CPU threads (None: $PYSPEC_THREADS, else the physical cores
        this process may run on; see default_threads). llama.cpp's threads
        spin while they wait for each other: with another busy process on
        the same cores, generation gets many times slower; use fewer.
      n_batch: prompt tokens per forward pass.
      flash_attn: None (llama.cpp's choice), True or False. Exact kernels use
        their own setting.
      type_k, type_v: KV cache types ("f16", "q8_0", ...).
      type_k_draft, type_v_draft: the drafter's KV cache types (a draft model's, an MTP,
        EAGLE-3 or DFlash drafter's context). They change how many drafts are accepted,
        never the output.
      swa_full: sliding-window layers (Gemma 3's local layers) keep every position, as
        llama.cpp's swa_full. False (default): a ring of n_swa + n_batch cells each, several
        times less KV at long context; exact too (rollback reuses only cells the window
        hides, and each position has a fixed cell: patches/0007).
      kernels: "exact" (default): a token's logits do not depend on the batch
        that computes them, so speculation is lossless. "fast": llama.cpp's
        fastest kernels (weight repacking, batched GEMM); NOT exact: speculative
        output may differ from plain output.
      draft_model: a draft GGUF: a smaller model with the same vocabulary
        (spec_type="draft"), an EAGLE-3 head (architecture eagle3,
        spec_type="eagle3") or a DFlash drafter (architecture dflash,
        spec_type="dflash") built for this target; the kind is read from the
        file. A head built for another target raises DraftMismatchError.
      mtp: load the target's MTP (next-token-prediction) layers for
        spec_type="mtp". None: when the GGUF has them.
      dflash_window: target positions whose features a DFlash drafter keeps
        in its KV cache (0: the whole context).
      chat_template: a chat template or the name of one of llama.cpp's built-in
        templates ("chatml", "gemma", "llama3", ...); None: the GGUF's own
        (tokenizer.chat_template). A GGUF without one is most likely a base
        model: chat() then raises instead of guessing a format.
      memory_budget: "48GiB", "512MiB", "2GB" or bytes: pyspec.plan() chooses type_k,
        type_v, n_batch and dflash_window (the values given are the most it uses) so
        that the memory fits, from simulated allocations; the Plan is `LLM.plan`.
        MemoryBudgetError when nothing fits (it says the largest n_ctx that does).
      rpc: llama.cpp RPC servers, ["host:port", ...] or "host:port,host:port" (`pyspec rpc-server`
        on this or other machines): the target's layers go to their devices, split by free memory
        (n_gpu_layers: how many; 0, the default, means all with rpc). Each server is checked first:
        RPCError when one cannot be reached (within 5 s) or is no RPC server, UnsupportedError when
        exact kernels were asked for and it runs the fast ones. Drafters stay in this process. A
        server lost mid-generation raises DecodeError; make a new LLM then.
      verbose: echo llama.cpp's log.

    Example:
      >>> llm = pyspec.LLM("model.gguf", draft_model="small.gguf")
      >>> llm.generate("Hello", spec_type="draft", draft_n_max=8).text
    """

    def __init__(self, model_path: Optional[Union[str, os.PathLike]] = None, *, n_ctx: int = 4096,
                 n_gpu_layers: int = 0, n_threads: Optional[int] = None, n_batch: int = 512,
                 flash_attn: Optional[bool] = None, type_k: str = "f16", type_v: str = "f16",
                 kernels: str = "exact", draft_model: Optional[Union[str, os.PathLike]] = None,
                 mtp: Optional[bool] = None, dflash_window: int = 4096,
                 chat_template: Optional[str] = None, memory_budget: Optional[Union[str, int]] = None,
                 swa_full: bool = False, type_k_draft: str = "f16", type_v_draft: str = "f16",
                 rpc: Optional[Union[Sequence[str], str]] = None, verbose: bool = False):
        if kernels not in ("exact", "fast"):
            raise InvalidParameterError(f"kernels must be 'exact' or 'fast', got {kernels!r}")
        for name, v in (("type_k", type_k), ("type_v", type_v), ("type_k_draft", type_k_draft),
                        ("type_v_draft", type_v_draft)):
            if v not in KV_TYPES:
                raise InvalidParameterError(f"{name} must be one of {', '.join(KV_TYPES)}; got {v!r}")
        if not isinstance(n_ctx, int) or n_ctx < 8:
            raise InvalidParameterError(f"n_ctx must be an integer >= 8, got {n_ctx!r}")
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise InvalidParameterError(f"n_threads must be an integer >= 1 (or None: default_threads()), "
                                        f"got {n_threads!r}")
        self.rpc = None
        if rpc is not None:
            from .rpc import check_servers
            self.rpc = check_servers(rpc, exact=kernels == "exact")
        if n_gpu_layers != 0 and not self.rpc and not _core.build_info()["gpu_offload"]:
            raise InvalidParameterError(
                f"n_gpu_layers={n_gpu_layers} but this pyspec build has no GPU backend; "
                "rebuild with PYSPEC_CUDA=1 (see README) or use n_gpu_layers=0")
        if not isinstance(dflash_window, int) or dflash_window < 0:
            raise InvalidParameterError(f"dflash_window must be an integer >= 0 (0: the whole context), "
                                        f"got {dflash_window!r}")
        if not isinstance(swa_full, bool):
            raise InvalidParameterError(f"swa_full must be True or False, got {swa_full!r}")
        _core.set_verbose(verbose)
        path = check_gguf(model_path) if model_path is not None else default_model_path()
        self.plan = None
        if memory_budget is not None:
            from .plan import plan
            self.plan = plan(path, budget=memory_budget, n_ctx=n_ctx, draft_model=draft_model,
                             n_gpu_layers=n_gpu_layers, n_batch=n_batch, type_k=type_k, type_v=type_v,
                             dflash_window=dflash_window, kernels=kernels, flash_attn=flash_attn, mtp=mtp,
                             swa_full=swa_full, type_k_draft=type_k_draft, type_v_draft=type_v_draft,
                             rpc=self.rpc)
            if not self.plan.fits:
                raise MemoryBudgetError(self.plan.message)
            type_k, type_v, n_batch = self.plan.type_k, self.plan.type_v, self.plan.n_batch
            dflash_window = self.plan.dflash_window if self.plan.dflash_window is not None else dflash_window
            if self.plan.type_k_draft is not None:
                type_k_draft, type_v_draft = self.plan.type_k_draft, self.plan.type_v_draft
        self.model_path = str(path)
        self.kernels = kernels
        self.chat_template = chat_template
        self.n_threads = n_threads or default_threads()
        self._lock = threading.Lock()
        self.draft_model_path = str(check_gguf(draft_model, what="draft model")) if draft_model is not None else None
        fa = -1 if flash_attn is None else int(bool(flash_attn))
        # what a draft-model drafter per sequence of a BatchLLM is made with (beside its n_ctx)
        self._draft_args = dict(n_threads=self.n_threads, exact=kernels == "exact", flash_attn=fa,
                                type_k=type_k_draft, type_v=type_v_draft)
        # what another context on this model (pyspec.batch.BatchLLM) is made with
        self._context_args = dict(n_ctx=n_ctx, n_batch=n_batch, n_threads=self.n_threads, flash_attn=fa,
                                  type_k=type_k, type_v=type_v, exact=kernels == "exact", swa_full=swa_full)
        self._model, self._engine, self._draft_model, self._drafters = _open(
            self.model_path, self.draft_model_path, mtp=mtp, n_ctx=n_ctx, n_batch=n_batch,
            n_threads=self.n_threads, n_gpu_layers=n_gpu_layers, flash_attn=fa, type_k=type_k, type_v=type_v,
            kernels=kernels, dflash_window=dflash_window, swa_full=swa_full, no_alloc=False,
            draft_kv=(type_k_draft, type_v_draft), rpc=self.rpc)
        self.has_chat_template = bool(self._model.meta("tokenizer.chat_template"))

    # ---- tokenizer ----
    @property
    def n_vocab(self) -> int:
        return self._model.n_vocab

    @property
    def n_ctx(self) -> int:
        return self._engine.n_ctx

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list:
        """Text to token ids (add_special: BOS as the model wants it)."""
        return self._model.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids to text (special tokens are not rendered)."""
        return self._model.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def _continuation_bytes(self, tokens: Sequence[int]) -> bytes:
        """The bytes generated tokens add to the text, piece by piece: unlike detokenize(), a
        continuation keeps its leading space, and end-of-generation tokens add nothing. A
        Generation's text and its stream's chunks are both made from these, so the chunks'
        texts add up to Generation.text."""
        return b"".join(self._model.token_to_bytes(t) for t in tokens if not self._model.is_eog(t))

    def _continuation_text(self, tokens: Sequence[int]) -> str:
        # decoded as a stream's chunks are: an incomplete UTF-8 character at the end (a token
        # that carries only part of it, then the generation stopped) is left out
        return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(self._continuation_bytes(tokens))

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """Formats [{"role": ..., "content": ...}, ...] with the GGUF's own chat template (or
        the chat_template given to the LLM). Raises InvalidParameterError when there is neither:
        a GGUF without a template is most likely a base model, which does not follow a chat
        format (the default model, Gemma 3 270M, is one)."""
        if self.chat_template is None and not self.has_chat_template:
            raise InvalidParameterError(
                f"'{self.model_path}' has no chat template (GGUF key tokenizer.chat_template), and no "
                "chat_template was given: it is most likely a base model, not tuned for chat, and any chat "
                "format would make it continue the markup rather than answer. Use generate() with a plain "
                "prompt (CLI: leave out --chat), use an instruction-tuned GGUF, or pass "
                "chat_template= (CLI: --chat-template) with a template or a built-in name such as 'gemma' "
                "or 'chatml' if you know the format the model was tuned with.")
        pairs = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise InvalidParameterError(f"messages[{i}] must be a dict with 'role' and 'content'; got {m!r}")
            pairs.append((str(m["role"]), str(m["content"])))
        return self._model.apply_chat_template(pairs, add_generation_prompt, self.chat_template or "")

    # ---- generation ----
    @property
    def spec_types(self) -> list:
        """The spec_type values this LLM can generate with; "auto" picks the first drafter of
        draft, eagle3, dflash (from the draft file) or mtp (the target's own layers), else none."""
        return ["auto", "none", "ngram"] + list(self._drafters)

    def memory(self, spec_type: Optional[str] = None) -> dict:
        """Bytes this LLM holds, by part: weights, the target's KV cache and compute buffers, and
        for the drafter of `spec_type` (None: the auto choice) its weights (0 for mtp: its layers
        are in the target's weights), KV cache, compute buffers and host feature buffers (a bound).
        A drafter not built yet (the MTP head before its first use) is built to be measured.
        """
        name = self.auto_spec_type() if spec_type in (None, "auto") else spec_type
        return _memory_dict(self._model, self._engine, name, self._drafters.get(name), self._draft_model,
                            self.n_ctx)

    @property
    def built_drafters(self) -> list:
        """The spec_types whose drafter exists now (its context allocated). A draft file's drafter
        is built at load; the target's MTP head when it is first used (generate, memory)."""
        return self._drafters.built

    def auto_spec_type(self) -> str:
        """What spec_type="auto" (the default) resolves to."""
        return next(iter(self._drafters), "none")

    def _drafter(self, spec_type: str, ngram_n: int, ngram_n_min: Optional[int]):
        """(the spec_type that runs, its drafter or None); spec_type is a checked option."""
        if spec_type == "auto":
            spec_type = self.auto_spec_type()
        if spec_type == "none":
            return spec_type, None
        if spec_type == "ngram":
            return spec_type, _core.NgramDrafter(ngram_n, ngram_n if ngram_n_min is None else ngram_n_min)
        if spec_type not in self._drafters:
            how = {"draft": "a draft model: LLM(..., draft_model='small.gguf') (-md small.gguf)",
                   "eagle3": "an EAGLE-3 head GGUF built for this target: LLM(..., draft_model='eagle3.gguf')",
                   "dflash": "a DFlash drafter GGUF built for this target: LLM(..., draft_model='dflash.gguf')",
                   "mtp": "a target with MTP layers (<arch>.nextn_predict_layers > 0), loaded with mtp=None/True"}
            have = ", ".join(self.spec_types)
            raise InvalidParameterError(f"spec_type={spec_type!r} needs {how[spec_type]}; this LLM has: {have}")
        return spec_type, self._drafters[spec_type]

    def _prompt_tokens(self, prompt: Prompt, add_special: bool, parse_special: bool) -> list:
        if isinstance(prompt, str):
            toks = self.tokenize(prompt, add_special, parse_special)
        else:
            toks = [int(t) for t in prompt]
        if not toks:
            raise InvalidParameterError("the prompt is empty; give some text or token ids")
        bad = [t for t in toks if t < 0 or t >= self.n_vocab]
        if bad:
            raise InvalidParameterError(f"token id {bad[0]} is outside the vocabulary [0, {self.n_vocab})")
        return toks

    def _prepare(self, prompt: Prompt, opts: GenerationOptions):
        """What a generation runs with: (prompt tokens, options with a concrete seed, spec_type,
        drafter). Raises for a wrong prompt or a spec_type this LLM lacks, before anything runs."""
        spec_type, drafter = self._drafter(opts.spec_type, opts.ngram_n, opts.ngram_n_min)
        toks = self._prompt_tokens(prompt, opts.add_special, opts.parse_special)
        if opts.seed is None:
            opts = opts.replace(seed=random.getrandbits(63))
        return toks, opts, spec_type, drafter

    def _run(self, prepared, on_step=None, inside=None, on_prompt=None) -> Generation:
        """Runs a _prepare()d generation. inside: a context manager held around the engine call,
        within the LLM's lock (a stream's: its interrupt() then reaches this generation only)."""
        toks, opts, spec_type, drafter = prepared
        with self._lock, (inside or contextlib.nullcontext()):
            r = self._engine.generate(toks, opts, drafter=drafter, on_step=on_step, on_prompt=on_prompt)
        return Generation(text=self._continuation_text(r["tokens"]), tokens=list(r["tokens"]), stats=Stats(**r["stats"]),
                          finish_reason=r["finish_reason"], spec_type=spec_type, seed=opts.seed)

    @with_option_keywords
    def generate(self, prompt: Prompt, options: Optional[GenerationOptions] = None, *,
                 on_prompt: Optional[Callable[[int, int], None]] = None, **kwargs) -> Generation:
        """Generates a continuation of `prompt` (text or token ids).

        Arguments:
          options: a pyspec.GenerationOptions (None: the defaults).
          on_prompt: called as on_prompt(done, total) after each prompt chunk (n_batch
            tokens): progress for a long prompt.
          **kwargs: GenerationOptions fields (max_tokens, temperature, seed,
            spec_type, draft_n_max, ...), over `options`; see GenerationOptions
            for each one and its default. An unknown name raises
            UnknownOptionError, a wrong value InvalidParameterError.

        With kernels="exact": greedy output (temperature 0) is identical to
        spec_type="none", whatever the drafter. Sampled output is reproducible
        for a given seed and settings (drafter and draft length included); it
        is identical to spec_type="none" for the same seed with
        spec_sampling="equal", or with a drafter without a distribution (ngram),
        and otherwise has the same distribution.

        Example:
          >>> llm.generate("def fib(n):", max_tokens=64, spec_type="ngram").text
          >>> opts = pyspec.GenerationOptions(temperature=0.8, seed=1)
          >>> llm.generate("Once upon a time", opts, max_tokens=32)
        """
        return self._run(self._prepare(prompt, GenerationOptions.build(options, "generate()", **kwargs)),
                         on_prompt=on_prompt)

    @with_option_keywords
    def stream(self, prompt: Prompt, options: Optional[GenerationOptions] = None, *,
               on_prompt: Optional[Callable[[int, int], None]] = None, **kwargs) -> Iterator[Chunk]:
        """Like generate(), but yields a Chunk per engine step as tokens are accepted
        (on_prompt is called in the generation's worker thread).

        close() (or leaving a `with llm.stream(...) as s:` block, Ctrl-C while
        waiting for a chunk, or dropping the iterator) stops the generation at its
        next prompt chunk or step; a `break` alone leaves it running. The finished
        Generation is available as the iterator's `.result` once it ends.
        """
        return _Stream(self, self._prepare(prompt, GenerationOptions.build(options, "stream()", **kwargs)),
                       on_prompt=on_prompt)

    @with_option_keywords
    def chat(self, messages: Sequence[dict], options: Optional[GenerationOptions] = None, **kwargs) -> Generation:
        """Generates the assistant's reply to `messages` using the GGUF's chat template
        (special tokens in it parsed, unless parse_special=False is given)."""
        opts = GenerationOptions.build(options, "chat()", **{"parse_special": True, **kwargs})
        return self.generate(self.apply_chat_template(messages), opts)

    @with_option_keywords
    def chat_stream(self, messages: Sequence[dict], options: Optional[GenerationOptions] = None,
                    **kwargs) -> Iterator[Chunk]:
        """stream() for a chat."""
        opts = GenerationOptions.build(options, "chat_stream()", **{"parse_special": True, **kwargs})
        return self.stream(self.apply_chat_template(messages), opts)

    def info(self) -> dict:
        """Model metadata (architecture, parameters, vocabulary, ...) and supported speculation methods."""
        return model_info(self.model_path)


class _Interrupter:
    """Stops one generation that runs in a worker thread, from any thread, for _Stream and the server.

    The engine's interrupt() is seen between prompt chunks, so a long prompt is not finished
    first; it is sent only while this generation holds the engine (inside engine_call()), never
    to a later one. `stopped` tells the step callback to end the generation: it covers a stop
    that lands before the engine has begun (generate() drops an earlier interrupt() request
    when it starts). interrupt() goes first, so that whoever waits for `stopped` finds it sent."""

    def __init__(self, llm: "LLM"):
        self._llm = llm
        self._state = threading.Lock()
        self._in_engine = False
        self.stopped = threading.Event()

    @contextlib.contextmanager
    def engine_call(self):
        with self._state:
            self._in_engine = True
        try:
            yield
        finally:
            with self._state:
                self._in_engine = False

    def stop(self) -> None:
        with self._state:
            if self._in_engine:
                self._llm._engine.interrupt()
        self.stopped.set()


class _Stream:
    """Iterator over a generation running in a worker thread."""

    _DONE = object()

    def __init__(self, llm: LLM, prepared, on_prompt=None):
        self.result: Optional[Generation] = None
        self._q: queue.Queue = queue.Queue()
        self._stopper = _Interrupter(llm)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._llm = llm

        def on_step(tokens, n_from_draft):
            self._q.put((list(tokens), n_from_draft))
            return not self._stopper.stopped.is_set()

        def work():
            try:
                self.result = llm._run(prepared, on_step, inside=self._stopper.engine_call(), on_prompt=on_prompt)
                self._q.put(self._DONE)
            except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
                self._q.put(e)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __next__(self) -> Chunk:
        try:
            item = self._q.get()
        except BaseException:
            self.close()
            raise
        if item is self._DONE:
            self._thread.join()
            raise StopIteration
        if isinstance(item, BaseException):
            self._thread.join()
            raise item
        tokens, n_from_draft = item
        return Chunk(text=self._decoder.decode(self._llm._continuation_bytes(tokens)), tokens=tokens,
                     from_draft=[i < n_from_draft for i in range(len(tokens))])

    def close(self) -> None:
        """Stops the generation at its next prompt chunk or step and waits for it. A stream
        closed inside its prompt ends without a result (GenerationInterrupted is dropped)."""
        self._interrupt()
        self._thread.join()

    def _interrupt(self) -> None:
        self._stopper.stop()

    def __del__(self):
        if getattr(self, "_thread", None) is not None and self._thread.is_alive():
            self._interrupt()


def _open(path: str, draft_path: Optional[str], *, mtp: Optional[bool], n_ctx: int, n_batch: int,
          n_threads: int, n_gpu_layers: int, flash_attn: int, type_k: str, type_v: str, kernels: str,
          dflash_window: int, no_alloc: bool, swa_full: bool = False, draft_kv: tuple = ("f16", "f16"),
          rpc: Optional[list] = None):
    """The target Model and Engine, the draft file's Model (or None) and the drafters, as
    {spec_type: drafter}: the draft file's kind (from its GGUF architecture) first, then mtp
    when the target has MTP layers; the first is what spec_type="auto" picks. no_alloc: the
    allocations are simulated (memory reports). rpc: the target's layers go to these servers (all of
    them unless n_gpu_layers says how many); the drafters stay here."""
    meta = dict(_core.model_info(path))
    if meta["architecture"] in HEAD_ARCHS:
        raise InvalidParameterError(
            f"'{path}' is a {meta['architecture']} drafter, not a model that generates on its own; "
            f"pass it as draft_model= (-md) beside its target")
    has_mtp = int(meta["n_layer_nextn"]) > 0
    if mtp and not has_mtp:
        raise InvalidParameterError(f"mtp=True but '{path}' has no MTP layers "
                                    f"({meta['architecture']}.nextn_predict_layers is 0)")
    load_mtp = has_mtp and mtp is not False
    repack, exact = kernels == "fast", kernels == "exact"
    model = _core.Model(path, n_gpu_layers=-1 if rpc and n_gpu_layers == 0 else n_gpu_layers, repack=repack,
                        load_mtp=load_mtp, no_alloc=no_alloc, rpc=rpc or [])
    engine = _core.Engine(model, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, flash_attn=flash_attn,
                          type_k=type_k, type_v=type_v, exact=exact, swa_full=swa_full)
    drafters, dmodel = _Drafters(), None
    if draft_path is not None:
        darch = dict(_core.model_info(draft_path))["architecture"]
        # The drafter runs with the same kernels as the target: then a draft
        # model identical to the target agrees with it on every token.
        dmodel = _core.Model(draft_path, n_gpu_layers=n_gpu_layers, repack=repack, no_alloc=no_alloc)
        # Built now: a draft file that does not fit the target is refused at load.
        if darch == "eagle3":
            drafters.add("eagle3", _core.Eagle3Drafter(engine, dmodel, n_threads=n_threads, flash_attn=flash_attn,
                                                       type_k=draft_kv[0], type_v=draft_kv[1]))
        elif darch == "dflash":
            drafters.add("dflash", _core.DFlashDrafter(engine, dmodel, n_threads=n_threads, flash_attn=flash_attn,
                                                       window=dflash_window, type_k=draft_kv[0], type_v=draft_kv[1]))
        else:
            drafters.add("draft", _core.DraftModelDrafter(dmodel, model, n_ctx=n_ctx, n_threads=n_threads,
                                                          exact=exact, flash_attn=flash_attn,
                                                          type_k=draft_kv[0], type_v=draft_kv[1]))
    if load_mtp:
        # Built on first use: its context is not allocated for runs that do not draft with it.
        drafters.add_lazy("mtp", lambda: _core.MtpDrafter(engine, n_threads=n_threads, flash_attn=flash_attn,
                                                          type_k=draft_kv[0], type_v=draft_kv[1]))
    return model, engine, dmodel, drafters


class _Drafters:
    """An LLM's drafters by spec_type, in the order spec_type="auto" picks from; a lazy one is
    built when it is first asked for (drafters[name], get)."""

    def __init__(self):
        self._make, self._built = {}, {}
        self._lock = threading.Lock()

    def add(self, name: str, drafter) -> None:
        self._make[name] = None
        self._built[name] = drafter

    def add_lazy(self, name: str, make) -> None:
        self._make[name] = make

    def __contains__(self, name) -> bool:
        return name in self._make

    def __iter__(self):
        return iter(self._make)

    def __len__(self) -> int:
        return len(self._make)

    def __getitem__(self, name: str):
        with self._lock:
            if name not in self._built:
                self._built[name] = self._make[name]()  # KeyError for a name it does not have
            return self._built[name]

    def get(self, name: str, default=None):
        return self[name] if name in self else default

    @property
    def built(self) -> list:
        return [n for n in self._make if n in self._built]


def _memory_dict(model, engine, spec_type: str, drafter, draft_model, n_ctx: int) -> dict:
    em = engine.memory()
    r = {"n_ctx": n_ctx, "spec_type": spec_type, "weights_bytes": model.size_bytes,
         "target_kv_bytes": em["kv_bytes"], "target_compute_bytes": em["compute_bytes"],
         "draft_weights_bytes": 0, "draft_kv_bytes": 0, "draft_compute_bytes": 0, "draft_buffer_bytes": 0}
    if drafter is not None:
        dm = drafter.memory()
        r.update(draft_kv_bytes=dm["kv_bytes"], draft_compute_bytes=dm["compute_bytes"],
                 draft_buffer_bytes=dm["buffer_bytes"])
        if spec_type in ("draft", "eagle3", "dflash") and draft_model is not None:
            r["draft_weights_bytes"] = draft_model.size_bytes
    r["total_bytes"] = sum(v for k, v in r.items() if k.endswith("_bytes"))
    return r


def memory_report(model_path: Optional[Union[str, os.PathLike]] = None, *,
                  draft_model: Optional[Union[str, os.PathLike]] = None, n_ctx: int = 4096, n_batch: int = 512,
                  type_k: str = "f16", type_v: str = "f16", dflash_window: int = 4096,
                  spec_type: Optional[str] = None, swa_full: bool = False, type_k_draft: str = "f16",
                  type_v_draft: str = "f16") -> dict:
    """The memory an LLM with these settings would hold (LLM.memory's figures), computed by
    llama.cpp from the files' metadata with simulated allocations: nothing is loaded, so any
    n_ctx can be asked for. spec_type: which drafter to size (None: the auto choice)."""
    if not isinstance(n_ctx, int) or n_ctx < 8:
        raise InvalidParameterError(f"n_ctx must be an integer >= 8, got {n_ctx!r}")
    path = str(check_gguf(model_path) if model_path is not None else default_model_path())
    dpath = str(check_gguf(draft_model, what="draft model")) if draft_model is not None else None
    model, engine, dmodel, drafters = _open(path, dpath, mtp=None, n_ctx=n_ctx, n_batch=n_batch, n_threads=1,
                                            n_gpu_layers=0, flash_attn=-1, type_k=type_k, type_v=type_v,
                                            kernels="exact", dflash_window=dflash_window, swa_full=swa_full,
                                            no_alloc=True, draft_kv=(type_k_draft, type_v_draft))
    name = next(iter(drafters), "none") if spec_type in (None, "auto") else spec_type
    if name not in drafters and name not in ("none", "ngram"):
        raise InvalidParameterError(f"spec_type={name!r} is not available for these files; "
                                    f"have: {', '.join(['none', 'ngram', *drafters])}")
    return _memory_dict(model, engine, name, drafters.get(name), dmodel, engine.n_ctx)  # rounded as the LLM's


def model_info(path: Union[str, os.PathLike]) -> dict:
    """A GGUF's metadata without loading its weights, plus the speculation methods it supports."""
    p = check_gguf(path)
    info = dict(_core.model_info(str(p)))
    for k in ("n_params", "size_bytes", "n_ctx_train", "n_embd", "n_layer", "n_layer_nextn", "n_head",
              "n_head_kv", "n_vocab"):
        info[k] = int(info[k])
    info["recurrent"] = info["recurrent"] == "true"
    info["chat_template"] = info["chat_template"] == "true"
    info["path"] = str(p)
    info["file_bytes"] = p.stat().st_size
    # As a target, any model can use n-gram lookup, a separate draft model,
    # or an EAGLE-3 / DFlash drafter built for it; MTP needs the model's own
    # next-token-prediction layers. An eagle3 / dflash file is a drafter.
    if info["architecture"] in HEAD_ARCHS:
        info["role"] = "drafter"
        info["spec_types"] = [info["architecture"]]
    else:
        info["role"] = "target"
        info["spec_types"] = ["none", "ngram", "draft", "eagle3", "dflash"] + (["mtp"] if info["n_layer_nextn"] else [])
    return info
