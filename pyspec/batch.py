"""BatchLLM: many concurrent requests over one model, batched into one forward pass per step.

One thread runs the step loop of a _core.BatchEngine (the GIL released inside each step); any
thread or async task submits requests and reads their tokens as their sequences produce them.
Requests beyond the engine's slots wait in a FIFO and join as slots free up (continuous
batching). With exact kernels every request's tokens are those of the same request run alone
by pyspec.LLM with n_ctx = BatchLLM.n_ctx (a sequence's share of the context).

    >>> llm = pyspec.LLM("model.gguf", n_ctx=4096)
    >>> with pyspec.batch.BatchLLM(llm, n_parallel=4) as b:       # 4 sequences of 1024 tokens
    ...     futures = [b.submit(p, max_tokens=64, spec_type="ngram") for p in prompts]
    ...     texts = [f.result().text for f in futures]
    ...     for chunk in b.stream("def fib(n):", max_tokens=32): print(chunk.text, end="")

Drafters with several sequences: "none", "ngram" (one n-gram drafter per request) and "draft" (the
LLM's draft model, one drafter context per running sequence, made when first needed and reused by
later requests); the feature drafters (mtp, eagle3, dflash) read the features of one sequence and
raise InvalidParameterError here.
"""
from __future__ import annotations

import codecs
import collections
import queue
import threading
from typing import Callable, Iterator, Optional

from . import _core
from .api import LLM, Chunk, Generation, Prompt, Stats
from .errors import GenerationInterrupted, InvalidParameterError, PyspecError
from .options import GenerationOptions, with_option_keywords

MAX_PARALLEL = 64

# on_step(tokens, n_from_draft) -> False to stop the request; on_done(request)
StepFn = Callable[[list, int], Optional[bool]]


class BatchRequest:
    """One submitted request: result() waits for its Generation, cancel() stops it at the next
    step (thread-safe). Its callbacks run on the BatchLLM's loop thread: keep them short."""

    def __init__(self, batch: "BatchLLM", prepared, on_step: Optional[StepFn], on_done):
        self._batch = batch
        self.prepared = prepared  # (prompt tokens, GenerationOptions with a seed, spec_type, drafter)
        self.on_step, self.on_done = on_step, on_done
        self.id: Optional[int] = None  # the engine's sequence id once it has a slot
        self.cancelled = False
        self.generation: Optional[Generation] = None
        self._draft = None  # the draft-model drafter lent to it while it runs (spec_type "draft")
        self.error: Optional[BaseException] = None
        self._done = threading.Event()

    def cancel(self) -> None:
        """Stops the request before its next step: it ends with finish_reason "interrupted", or
        result() raises GenerationInterrupted when it had not finished its prompt."""
        self._batch._cancel(self)

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    def result(self, timeout: Optional[float] = None) -> Generation:
        """The finished Generation; raises what stopped it (GenerationInterrupted, a PyspecError)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the request did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.generation

    def _end(self, generation: Optional[Generation] = None, error: Optional[BaseException] = None) -> None:
        self.generation, self.error = generation, error
        self._done.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:  # noqa: BLE001 - a callback's failure must not stop the other requests
                pass


class BatchLLM:
    """Serves requests on `llm`'s model in a BatchEngine of `n_parallel` sequences.

    Arguments:
      llm: a pyspec.LLM; its model, tokenizer and context settings are used (its own context
        stays for single-sequence calls). Exact kernels (the default) make each request's
        output independent of the others.
      n_parallel: sequences at once (1..64); each gets n_ctx / n_parallel tokens of context.
      n_ctx: the context shared by the sequences (None: the LLM's n_ctx).
      n_batch: tokens per step over all sequences (None: the LLM's n_batch), >= n_parallel.
    """

    def __init__(self, llm: LLM, n_parallel: int = 4, *, n_ctx: Optional[int] = None,
                 n_batch: Optional[int] = None):
        if isinstance(n_parallel, bool) or not isinstance(n_parallel, int) or not 1 <= n_parallel <= MAX_PARALLEL:
            raise InvalidParameterError(f"n_parallel must be an integer in [1, {MAX_PARALLEL}] (the sequences "
                                        f"served at once); got {n_parallel!r}")
        args = dict(llm._context_args)
        if n_ctx is not None:
            args["n_ctx"] = n_ctx
        if n_batch is not None:
            args["n_batch"] = n_batch
        if args["n_batch"] < n_parallel:
            raise InvalidParameterError(
                f"n_batch={args['n_batch']} (tokens per step) is smaller than n_parallel={n_parallel}: a step "
                f"holds at least one token of each sequence; use n_batch >= {n_parallel} (-b) or fewer sequences")
        self.llm = llm
        self.n_parallel = n_parallel
        self._engine = _core.BatchEngine(llm._model, n_seq_max=n_parallel, **args)
        self._cv = threading.Condition()
        self._pending: collections.deque = collections.deque()  # waiting for a slot
        self._cancels: list = []
        self._running: dict = {}  # engine id -> BatchRequest (touched by the loop thread only)
        self._draft_free: list = []  # draft-model drafters not drafting for a sequence now (loop thread)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="pyspec-batch", daemon=True)
        self._thread.start()

    # ---- state ----
    @property
    def n_ctx(self) -> int:
        """The context of one request: n_ctx / n_parallel, rounded up to 256 by llama.cpp."""
        return self._engine.n_ctx_seq

    @property
    def n_steps(self) -> int:
        """Forward passes run so far."""
        return self._engine.n_steps

    @property
    def n_waiting(self) -> int:
        """Requests waiting for a slot."""
        with self._cv:
            return len(self._pending)

    def memory(self) -> dict:
        return self._engine.memory()

    # ---- requests ----
    def submit_prepared(self, prepared, on_step: Optional[StepFn] = None,
                        on_done: Optional[Callable[[BatchRequest], None]] = None) -> BatchRequest:
        """Queues what LLM._prepare returned; returns at once."""
        req = BatchRequest(self, prepared, on_step, on_done)
        with self._cv:
            if self._closed:
                raise PyspecError("this BatchLLM is closed; make a new one")
            self._pending.append(req)
            self._cv.notify()
        return req

    @with_option_keywords
    def submit(self, prompt: Prompt, options: Optional[GenerationOptions] = None, *,
               on_step: Optional[StepFn] = None, **kwargs) -> BatchRequest:
        """Queues a generation (LLM.generate's arguments); returns a BatchRequest at once.
        on_step(tokens, n_from_draft) is called on the loop thread with every step's tokens;
        returning False stops the request."""
        opts = GenerationOptions.build(options, "submit()", **kwargs)
        return self.submit_prepared(self.llm._prepare(prompt, opts), on_step)

    @with_option_keywords
    def generate(self, prompt: Prompt, options: Optional[GenerationOptions] = None, **kwargs) -> Generation:
        """LLM.generate, run in the batch beside the other requests."""
        req = self.submit(prompt, GenerationOptions.build(options, "generate()", **kwargs))
        try:
            req.wait()
        except BaseException:
            req.cancel()
            raise
        return req.result()

    @with_option_keywords
    def stream(self, prompt: Prompt, options: Optional[GenerationOptions] = None, **kwargs) -> Iterator[Chunk]:
        """LLM.stream, run in the batch: yields a Chunk per step of this request; close() (or
        leaving a `with` block) cancels it. The Generation is `.result` once it ends."""
        return _BatchStream(self, self.llm._prepare(prompt, GenerationOptions.build(options, "stream()", **kwargs)))

    def close(self) -> None:
        """Cancels every request (running ones end "interrupted") and stops the loop thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()

    def __enter__(self) -> "BatchLLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the loop thread ----
    def _cancel(self, req: BatchRequest) -> None:
        with self._cv:
            req.cancelled = True
            self._cancels.append(req)
            self._cv.notify()

    def _loop(self) -> None:
        eng = self._engine
        while True:
            with self._cv:
                while not (self._closed or self._pending or self._cancels or eng.n_active):
                    self._cv.wait()
                closed = self._closed
                cancels, self._cancels = self._cancels, []
                admit = []
                if closed:
                    admit, self._pending = list(self._pending), collections.deque()
                else:
                    while self._pending and eng.n_free > len(admit):
                        admit.append(self._pending.popleft())
                    for req in cancels:  # a waiting request that is cancelled leaves the queue now
                        if req in self._pending:
                            self._pending.remove(req)
                            admit.append(req)
            for req in cancels:
                if req.id is not None and not req.done():
                    eng.cancel(req.id)
            for req in admit:
                if req.cancelled or closed:
                    req._end(error=GenerationInterrupted("cancelled while waiting for a free sequence"))
                    continue
                toks, opts, spec_type, drafter = req.prepared
                try:
                    if spec_type == "draft":  # one draft context per running sequence
                        drafter = req._draft = self._draft_drafter()
                    req.id = eng.add(toks, opts, drafter=drafter)
                except PyspecError as e:
                    self._release(req)
                    req._end(error=e)
                    continue
                self._running[req.id] = req
            if closed:
                for rid in self._running:
                    eng.cancel(rid)
            if not eng.n_active:
                if closed:
                    return
                continue
            try:
                events = eng.step()
            except Exception as e:  # noqa: BLE001 - a failed forward ends every running request
                for rid in list(self._running):
                    eng.cancel(rid)
                eng.step()  # retires them (a step with nothing to run does not decode)
                for rid, req in list(self._running.items()):
                    eng.take(rid)  # forgotten: the request ends with the error
                    self._release(req)
                    req._end(error=e)
                self._running.clear()
                continue
            for rid, tokens, n_from_draft, finished, reason in events:
                req = self._running[rid]
                if tokens and req.on_step is not None and not req.cancelled:
                    try:
                        keep = req.on_step(list(tokens), n_from_draft)
                    except BaseException as e:  # noqa: BLE001 - the request ends with it
                        keep, req.error = False, e
                    if keep is False and not finished:
                        req.cancelled = True
                        eng.cancel(rid)
                if finished:
                    del self._running[rid]
                    self._finish(req, eng.take(rid))

    def _draft_drafter(self):
        """A draft-model drafter for a sequence about to run: a free one, else a new one with the
        LLM's draft model and a sequence's context (at most n_parallel are ever made)."""
        if self._draft_free:
            return self._draft_free.pop()
        llm = self.llm  # it has a draft model: _prepare gave spec_type "draft"
        return _core.DraftModelDrafter(llm._draft_model, llm._model, n_ctx=self.n_ctx, **llm._draft_args)

    def _release(self, req: BatchRequest) -> None:
        d, req._draft = req._draft, None
        if d is not None:
            self._draft_free.append(d)

    def _finish(self, req: BatchRequest, r: dict) -> None:
        self._release(req)
        if req.error is not None:  # its on_step raised
            req._end(error=req.error)
            return
        toks, opts, spec_type, _ = req.prepared
        if r["in_prompt"] and r["finish_reason"] == "interrupted":
            req._end(error=GenerationInterrupted(
                f"interrupted in the prompt (its {len(toks)} tokens were not all processed)"))
            return
        gen = Generation(text=self.llm._continuation_text(r["tokens"]), tokens=list(r["tokens"]),
                         stats=Stats(**r["stats"]), finish_reason=r["finish_reason"], spec_type=spec_type,
                         seed=opts.seed)
        req._end(generation=gen)


class _BatchStream:
    """Iterator over one request of a BatchLLM."""

    _DONE = object()

    def __init__(self, batch: BatchLLM, prepared):
        self.result: Optional[Generation] = None
        self._q: queue.Queue = queue.Queue()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._llm = batch.llm
        self._req = batch.submit_prepared(prepared, on_step=lambda t, n: self._q.put((t, n)),
                                          on_done=lambda r: self._q.put(self._DONE))

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
            self._q.put(self._DONE)  # a later next() stops too
            if self._req.error is not None and not isinstance(self._req.error, GenerationInterrupted):
                raise self._req.error
            self.result = self._req.generation
            raise StopIteration
        tokens, n_from_draft = item
        return Chunk(text=self._decoder.decode(self._llm._continuation_bytes(tokens)), tokens=tokens,
                     from_draft=[i < n_from_draft for i in range(len(tokens))])

    def close(self) -> None:
        """Cancels the request (if still running) and waits for it to end."""
        if not self._req.done():
            self._req.cancel()
        self._req.wait()
        if self.result is None:
            self.result = self._req.generation
