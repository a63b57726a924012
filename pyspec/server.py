"""`pyspec serve`: an OpenAI-compatible HTTP server over one pyspec.LLM, on FastAPI + uvicorn
(the pyspec[server] extra).

ServeConfig.parallel (-np) generations run at once. With 1 (the default) they run one at a time
on the LLM's own engine; with N > 1 on a pyspec.batch.BatchLLM: N sequences in one context, one
batched forward pass per step, each request's tokens streamed as its sequence commits them, each
exactly what it would be alone (exact kernels) with a context of n_ctx / N tokens; drafters
"none" and "ngram" only. Requests beyond the running ones wait in a bounded FIFO queue (more
than ServeConfig.max_queue waiting: 503 at once).

    srv = Server(pyspec.LLM("model.gguf"), ServeConfig(model_name="model"), port=8080)
    srv.start(); ...; srv.shutdown(); srv.wait()
"""
from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import hmac
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(f"pyspec serve needs the server extra: pip install 'pyspec[server]' ({_e})") from _e

from . import __version__
from .cli import SERVE_STAGE_NOTE, generation_json
from .errors import GenerationInterrupted, InvalidParameterError, PyspecError
from .api import _Interrupter
from .options import GenerationOptions

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
MAX_STOP = 16  # stop strings per request


@dataclass
class ServeConfig:
    """What a server answers with besides its LLM.

    model_name: the id /v1/models lists and responses carry (a request's `model` is ignored:
      requests never name files).
    defaults: the generation settings of a request that leaves a field out.
    default_max_tokens: max_tokens of a request that gives none (-1: up to the context).
    api_key: when set, every route but /health needs `Authorization: Bearer <api_key>`.
    max_queue: requests that may wait for a free sequence; one more gets 503 at once.
    max_request_bytes: a larger request body gets 413.
    parallel: generations at once (-np); > 1 runs them batched on a pyspec.batch.BatchLLM, whose
      context (split between the sequences) and step width are batch_n_ctx, batch_n_batch.
    """

    model_name: str
    defaults: GenerationOptions = field(default_factory=GenerationOptions)
    default_max_tokens: int = -1
    api_key: Optional[str] = None
    max_queue: int = 16
    max_request_bytes: int = 4 * 2**20
    parallel: int = 1
    batch_n_ctx: Optional[int] = None    # -np > 1: the batch's context (None: the LLM's n_ctx)
    batch_n_batch: Optional[int] = None  # and its tokens per step (None: the LLM's n_batch)


class APIError(Exception):
    """An error answered with OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


# ---- requests ----------------------------------------------------------------------------------

# Request fields that set a GenerationOptions field: name -> (option, JSON type). The values are
# then checked by GenerationOptions itself, as for the API and the CLI.
OPTION_FIELDS = {
    "temperature": ("temperature", "number"),
    "top_p": ("top_p", "number"),
    "top_k": ("top_k", "integer"),
    "min_p": ("min_p", "number"),
    "seed": ("seed", "integer"),
    "frequency_penalty": ("frequency_penalty", "number"),
    "presence_penalty": ("presence_penalty", "number"),
    "repeat_penalty": ("repeat_penalty", "number"),
    "repeat_last_n": ("penalty_last_n", "integer"),
    "ignore_eos": ("ignore_eos", "boolean"),
    "spec_type": ("spec_type", "string"),
    "spec_sampling": ("spec_sampling", "string"),
    "draft_n_max": ("draft_n_max", "integer"),
    "draft_n_min": ("draft_n_min", "integer"),
}
_FIELD_OF_OPTION = {opt: name for name, (opt, _) in OPTION_FIELDS.items()}

# OpenAI fields this stage does not implement: refused unless their value asks for nothing.
UNSUPPORTED = {
    "n": lambda v: v == 1,
    "best_of": lambda v: v == 1,
    "echo": lambda v: v is False,
    "suffix": lambda v: v == "",
    "logprobs": lambda v: v is False or v == 0,
    "top_logprobs": lambda v: v == 0,
    "logit_bias": lambda v: v == {},
    "tools": lambda v: v == [],
    "functions": lambda v: v == [],
    "response_format": lambda v: v == {"type": "text"},
}

_JSON_TYPES = {
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "string": (lambda v: isinstance(v, str), "a string"),
}


def _typed(body: dict, name: str, kind: str):
    """body[name] (None when absent or null), checked to be of JSON type `kind`."""
    v = body.get(name)
    if v is None:
        return None
    ok, what = _JSON_TYPES[kind]
    if not ok(v):
        raise APIError(400, f"'{name}' must be {what}; got {json.dumps(v)[:100]} ({_json_type(v)})", param=name)
    return v


def _json_type(v) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), type(v).__name__)


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object; got {_json_type(body)}")
    return body


def request_options(body: dict, defaults: GenerationOptions) -> GenerationOptions:
    """The GenerationOptions of a request: the server's defaults with the request's fields."""
    changes = {}
    for name, (opt, kind) in OPTION_FIELDS.items():
        v = _typed(body, name, kind)
        if v is None:
            continue
        if name == "seed" and v == -1:
            v = None  # llama-server's "random"
        changes[opt] = v
    try:
        return defaults.replace(**changes)
    except InvalidParameterError as e:
        msg = str(e).split(" Pass ")[0]  # GenerationOptions' hint names Python keywords
        opt = msg.split(" ", 1)[0]
        param = _FIELD_OF_OPTION.get(opt, opt)
        if param != opt:
            msg = f"{param} ({opt})" + msg[len(opt):]
        raise APIError(400, msg, param=param) from None


def _stops(body: dict) -> list:
    v = body.get("stop")
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, "'stop' must be a non-empty string or an array of non-empty strings; "
                            f"got {json.dumps(v)[:100]}", param="stop")
    if len(stops) > MAX_STOP:
        raise APIError(400, f"'stop' has {len(stops)} strings; at most {MAX_STOP} are accepted", param="stop")
    return stops


def _message_text(i: int, m) -> tuple:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise APIError(400, f"messages[{i}] must be an object with a string 'role' and a 'content'",
                       param="messages")
    c = m.get("content")
    if c is None:
        c = ""
    elif isinstance(c, list):  # content parts: only text ones
        parts = []
        for p in c:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise APIError(400, f"messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                                    "are supported", param="messages")
            parts.append(p["text"])
        c = "".join(parts)
    elif not isinstance(c, str):
        raise APIError(400, f"messages[{i}].content must be a string or an array of text parts; got "
                            f"{_json_type(c)}", param="messages")
    return m["role"], c


@dataclass
class Job:
    """A checked request, ready to run: what LLM._prepare returned, and how to answer."""

    chat: bool
    prepared: tuple  # (prompt tokens, GenerationOptions with a seed, spec_type, drafter)
    stops: list
    stream: bool
    include_usage: bool

    @property
    def prompt_tokens(self) -> int:
        return len(self.prepared[0])


# spec_types a batched server (-np > 1) runs: the drafters that hold one sequence's state apiece
# ("draft": a draft-model context per running sequence, when the server has a draft model)
BATCH_SPEC_TYPES = ("none", "ngram", "draft")


def parse_request(body: dict, llm, config: ServeConfig, chat: bool, n_ctx: Optional[int] = None) -> Job:
    """Checks a /v1/chat/completions (chat=True) or /v1/completions body against the model;
    raises APIError(400) for anything it cannot run as asked. n_ctx: the context of one request
    (None: the LLM's; a batched server's sequences have n_ctx / -np)."""
    n_ctx = llm.n_ctx if n_ctx is None else n_ctx
    ctx_flag = "-c" if config.parallel == 1 else f"-c (each of the -np {config.parallel} sequences has -c / -np)"
    for name, ok in UNSUPPORTED.items():
        if body.get(name) is not None and not ok(body[name]):
            raise APIError(400, f"'{name}'={json.dumps(body[name])[:100]} is not supported by pyspec serve",
                           param=name)
    stream = bool(_typed(body, "stream", "boolean"))
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
    include_usage = bool(_typed(so or {}, "include_usage", "boolean"))
    opts = request_options(body, config.defaults)
    stops = _stops(body)
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise APIError(400, "'messages' must be a non-empty array of {role, content} objects", param="messages")
        pairs = [_message_text(i, m) for i, m in enumerate(msgs)]
        if llm.chat_template is None and not llm.has_chat_template:
            raise APIError(400, f"the model '{config.model_name}' has no chat template (GGUF key "
                                "tokenizer.chat_template): it is most likely a base model, not tuned for chat. "
                                "Use /v1/completions with a plain prompt, or start pyspec serve with "
                                "--chat-template NAME (gemma, chatml, ...) if you know the model's format.",
                           param="messages")
        try:
            prompt = llm.apply_chat_template([{"role": r, "content": c} for r, c in pairs])
        except PyspecError as e:
            raise APIError(400, str(e), param="messages") from None
        opts = opts.replace(parse_special=True)  # the template's markup is special tokens
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # one prompt given as a batch of one
        is_ids = isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        if not (isinstance(prompt, str) or is_ids):
            raise APIError(400, "'prompt' must be a string or an array of token ids (one prompt: this stage "
                                "runs one generation per request)", param="prompt")
    if config.parallel > 1 and opts.spec_type == "auto":
        opts = opts.replace(spec_type="none")  # the batch's own choice: its drafters are not picked by "auto"
    try:
        prepared = llm._prepare(prompt, opts)
    except PyspecError as e:
        param = "spec_type" if "spec_type" in str(e) else ("messages" if chat else "prompt")
        raise APIError(400, str(e), param=param) from None
    if config.parallel > 1 and prepared[2] not in BATCH_SPEC_TYPES:
        raise APIError(400, f"spec_type={prepared[2]!r} cannot run here: this server batches -np "
                            f"{config.parallel} sequences, which draft with {', '.join(BATCH_SPEC_TYPES)} only "
                            "(a drafter per sequence); ask for one of those, or start the server with -np 1 for "
                            "the other drafters", param="spec_type")
    n_prompt = len(prepared[0])
    room = n_ctx - n_prompt  # what can still be generated
    if room < 1:
        raise APIError(400, f"the prompt has {n_prompt} tokens but the context holds n_ctx={n_ctx}, which "
                            f"leaves no room to generate; shorten the prompt (or start the server with a larger "
                            f"{ctx_flag})", param="messages" if chat else "prompt", code="context_length_exceeded")
    given = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _typed(body, given, "integer")
    if max_tokens is None:
        max_tokens = room if config.default_max_tokens < 0 else min(config.default_max_tokens, room)
    elif max_tokens < 1:
        raise APIError(400, f"'{given}' must be >= 1; got {max_tokens}", param=given)
    elif max_tokens > room:
        raise APIError(400, f"'{given}'={max_tokens} does not fit: the prompt has {n_prompt} tokens and the "
                            f"context holds n_ctx={n_ctx}, so at most {room} tokens can be generated",
                       param=given, code="context_length_exceeded")
    toks, o, spec_type, drafter = prepared
    return Job(chat=chat, prepared=(toks, o.replace(max_tokens=max_tokens), spec_type, drafter), stops=stops,
               stream=stream, include_usage=include_usage)


class StopMatcher:
    """Finds stop strings in text that arrives in pieces, also across the pieces: it holds back
    the end of the text that could begin a stop string until the next piece tells."""

    def __init__(self, stops):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple:
        """(the text that is final now, whether a stop string was found; the text ends before it)."""
        buf = self.pending + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return buf[:min(hits)], True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self.pending = buf[len(buf) - hold:]
        return buf[:len(buf) - hold], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


# ---- running a generation ------------------------------------------------------------------------

class Run:
    """One job on the model: the text it accepts reaches the event loop through `events` step by
    step, ("text", str), then ("done", pyspec.Generation or None when it was cancelled in its
    prompt) or ("error", exception), the last event. Without `batch` it runs in a worker thread
    of its own on the LLM's engine; with a pyspec.batch.BatchLLM it is one sequence of the batch,
    its steps reported from the batch's loop thread."""

    def __init__(self, llm, job: Job, loop: asyncio.AbstractEventLoop, batch=None):
        self.llm, self.job, self.loop, self.batch = llm, job, loop, batch
        self.events: asyncio.Queue = asyncio.Queue()
        self.n_tokens = 0       # completion tokens: up to the one that completed a stop string
        self.stopped = False    # a stop string ended it
        self._stops = StopMatcher(job.stops)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._req = None  # the batch's request
        if batch is None:
            self._stopper = _Interrupter(llm)
            self._cancel = self._stopper.stopped
            self._thread = threading.Thread(target=self._work, name="pyspec-serve-generation", daemon=True)
        else:
            self._cancel = threading.Event()

    def start(self) -> None:
        if self.batch is None:
            self._thread.start()
        else:
            self._req = self.batch.submit_prepared(self.job.prepared, self._on_step, self._batch_done)

    def join(self) -> None:
        if self.batch is None:
            self._thread.join()
        else:
            self._req.wait()

    def cancel(self) -> None:
        """Stops the generation at its next prompt chunk or step (thread-safe), as _Stream.close does:
        the engine's interrupt() only while this job holds the engine, the on_step stop for a cancel
        that lands before it has begun; in a batch, the sequence leaves before the next step."""
        if self.batch is None:
            self._stopper.stop()
        else:
            self._cancel.set()
            self._req.cancel()

    def _emit(self, kind: str, value) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._cancel.set()

    def _text(self, data: bytes, final: bool = False) -> bool:
        """Decodes, checks the stop strings, emits; True when a stop string was found."""
        text, hit = self._stops.feed(self._decoder.decode(data, final))
        if text:
            self._emit("text", text)
        return hit

    def _on_step(self, tokens, n_from_draft) -> bool:
        for t in tokens:
            self.n_tokens += 1
            if self._text(self.llm._continuation_bytes((t,))):
                self.stopped = True
                return False  # the engine stops here: nothing after the stop string is generated
        return not self._cancel.is_set()

    def _work(self) -> None:
        try:
            self._done(self.llm._run(self.job.prepared, self._on_step, inside=self._stopper.engine_call()))
        except GenerationInterrupted:
            self._emit("done", None)
        except BaseException as e:  # noqa: BLE001 - handed to the event loop
            self._emit("error", e)

    def _batch_done(self, req) -> None:
        if isinstance(req.error, GenerationInterrupted):
            self._emit("done", None)
        elif req.error is not None:
            self._emit("error", req.error)
        else:
            self._done(req.generation)

    def _done(self, gen) -> None:
        if not self.stopped:
            self.stopped = self._text(b"", final=True)
            if not self.stopped and self._stops.pending:
                self._emit("text", self._stops.flush())
        self._emit("done", gen)

    def finish_reason(self, gen) -> str:
        if self.stopped:
            return "stop"
        return "length" if gen.finish_reason in ("length", "context") else gen.finish_reason


class Metrics:
    """The server's Prometheus counters (vLLM's names, prefix pyspec:), in a registry of its own."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        p = "pyspec:"
        self.requests = Counter(p + "requests", "HTTP requests answered, by route and status code",
                                ["route", "code"], registry=r)
        self.success = Counter(p + "request_success", "Generations that ran to their end, by finish reason",
                               ["finished_reason"], registry=r)
        self.cancelled = Counter(p + "requests_cancelled", "Generations stopped early, by reason "
                                 "(disconnect: the client left; shutdown)", ["reason"], registry=r)
        self.prompt_tokens = Counter(p + "prompt_tokens", "Prompt tokens of the generations run", registry=r)
        self.generation_tokens = Counter(p + "generation_tokens", "Completion tokens generated (usage."
                                         "completion_tokens of the responses)", registry=r)
        self.running = Gauge(p + "num_requests_running", "Generations running on the model (at most -np)",
                             registry=r)
        self.waiting = Gauge(p + "num_requests_waiting", "Requests waiting in the queue for a free sequence",
                             registry=r)
        self.drafts = Counter(p + "spec_decode_num_drafts", "Drafts verified (steps with at least one "
                              "drafted token)", registry=r)
        self.draft_tokens = Counter(p + "spec_decode_num_draft_tokens", "Drafted tokens verified", registry=r)
        self.accepted_tokens = Counter(p + "spec_decode_num_accepted_tokens", "Drafted tokens accepted",
                                       registry=r)
        self.accepted_per_pos = Counter(p + "spec_decode_num_accepted_tokens_per_pos", "Drafted tokens accepted "
                                        "at each draft position (0: the first drafted token)", ["position"],
                                        registry=r)

    def record(self, job: Job, n_tokens: int, gen) -> None:
        """Counts one generation: `n_tokens` completion tokens, `gen` its pyspec.Generation (None
        when it was stopped in its prompt)."""
        self.prompt_tokens.inc(job.prompt_tokens)
        self.generation_tokens.inc(n_tokens)
        if gen is None:
            return
        s = gen.stats
        self.drafts.inc(s.drafted_per_position[0] if s.drafted_per_position else 0)
        self.draft_tokens.inc(s.draft_n)
        self.accepted_tokens.inc(s.draft_n_accepted)
        for i, a in enumerate(s.accepted_per_position):
            self.accepted_per_pos.labels(position=str(i)).inc(a)


class _Slot:
    """The model's `capacity` sequences (-np), handed to the waiting requests in FIFO order; at
    most `max_queue` wait."""

    def __init__(self, max_queue: int, metrics: Metrics, capacity: int = 1):
        self.max_queue = max_queue
        self.metrics = metrics
        self.capacity = capacity
        self.n_busy = 0
        self.waiters: collections.deque = collections.deque()

    async def acquire(self, *stop: asyncio.Future) -> bool:
        """True once this request holds a sequence; False when one of `stop` fired first.
        Raises APIError(503) when the queue is full."""
        if self.n_busy < self.capacity and not self.waiters:
            self._take()
            return True
        if len(self.waiters) >= self.max_queue:
            raise APIError(503, f"the server is busy: {len(self.waiters)} requests are waiting for a free "
                                f"sequence, the most it queues (--max-queue {self.max_queue}); {SERVE_STAGE_NOTE}. "
                                "Try again later.", type="server_error", code="queue_full")
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self.metrics.waiting.set(len(self.waiters))
        try:
            await asyncio.wait({fut, *stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: a model handed over meanwhile goes to the next one
            if fut.done() and not fut.cancelled():
                self.release()
            raise
        finally:
            if not fut.done():
                fut.cancel()
                self.waiters.remove(fut)
                self.metrics.waiting.set(len(self.waiters))
        if fut.cancelled():
            return False
        if any(s.done() for s in stop):  # handed over just as this request left: pass it on
            self.release()
            return False
        return True

    def _take(self) -> None:
        self.n_busy += 1
        self.metrics.running.set(self.n_busy)

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            self.metrics.waiting.set(len(self.waiters))
            if not fut.done():
                fut.set_result(True)  # the sequence passes to it; n_busy stays
                return
        self.n_busy -= 1
        self.metrics.running.set(self.n_busy)


async def _disconnected(receive) -> None:
    """Returns when the client has gone (the request body has been read by then)."""
    while True:
        if (await receive())["type"] == "http.disconnect":
            return


async def _read_body(request: Request, limit: int) -> bytes:
    cl = request.headers.get("content-length")
    too_big = APIError(413, f"the request body is larger than the server's limit of {limit} bytes "
                            "(--max-request-bytes)", code="request_too_large")
    if cl is not None and cl.isdigit() and int(cl) > limit:
        raise too_big
    chunks, n = [], 0
    async for c in request.stream():
        n += len(c)
        if n > limit:
            raise too_big
        chunks.append(c)
    return b"".join(chunks)


class _State:
    """What the app shares between requests: the model, its queue, the metrics, shutdown."""

    def __init__(self, llm, config: ServeConfig):
        self.llm, self.config = llm, config
        self.metrics = Metrics()
        self.slot = _Slot(config.max_queue, self.metrics, config.parallel)
        self.batch = None  # -np > 1: the BatchLLM every generation runs in
        if config.parallel > 1:
            from .batch import BatchLLM
            self.batch = BatchLLM(llm, config.parallel, n_ctx=config.batch_n_ctx, n_batch=config.batch_n_batch)
        self.n_ctx = llm.n_ctx if self.batch is None else self.batch.n_ctx  # the context of one request
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.stopping: Optional[asyncio.Event] = None
        self._stopping_wait: Optional[asyncio.Future] = None
        self.created = int(time.time())

    async def started(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self._stopping_wait = asyncio.ensure_future(self.stopping.wait())

    def begin_shutdown(self) -> None:
        """On the event loop: new and waiting requests get 503, running generations are stopped."""
        if self.stopping is not None:
            self.stopping.set()

    def close(self) -> None:
        """Stops the batch's loop thread (its sequences are cancelled)."""
        if self.batch is not None:
            self.batch.close()

    @property
    def shutting_down(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()


class _Completion(Response):
    """The answer to a checked completion request, produced when Starlette sends it: waits for the
    model (503 when the queue is full), runs the generation and writes JSON or an SSE stream. A
    client that leaves, or the server's shutdown, stops the generation at its next step."""

    def __init__(self, state: _State, job: Job):
        super().__init__(status_code=200)
        self.state, self.job = state, job
        self._holds = False  # whether this request holds the model

    def _release(self) -> None:
        if self._holds:
            self._holds = False
            self.state.slot.release()

    async def __call__(self, scope, receive, send) -> None:
        st = self.state
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            if st.shutting_down:
                raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
            if not await st.slot.acquire(gone, st._stopping_wait):
                if st.shutting_down and not gone.done():
                    raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
                return
            self._holds = True
            try:
                await self._run(send, gone)
            finally:
                self._release()
        except APIError as e:
            await _send_json(send, e.status, e.body())
        finally:
            gone.cancel()

    async def _run(self, send, gone) -> None:
        st, job = self.state, self.job
        gen = Run(st.llm, job, st.loop, st.batch)
        rid = ("chatcmpl-" if job.chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        head = {"id": rid, "object": ("chat.completion" if job.chat else "text_completion") +
                (".chunk" if job.stream and job.chat else ""), "created": created, "model": st.config.model_name,
                "system_fingerprint": f"pyspec-{__version__}"}
        pieces, cancel = [], None
        sending = job.stream
        gen.start()
        try:
            if job.stream:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no")]})
                if job.chat:
                    role = {"role": "assistant", "content": ""}
                    sending = await _sse(send, {**head, "choices": [_choice(job, role)]})
            while True:
                get = asyncio.ensure_future(gen.events.get())
                waits = {get} if cancel else {get, gone, st._stopping_wait}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    cancel = "disconnect" if gone.done() else "shutdown"
                    gen.cancel()
                    continue
                kind, value = get.result()
                if kind == "text":
                    pieces.append(value)
                    if sending and not cancel:
                        sending = await _sse(send, {**head, "choices": [_choice(job, value)]})
                        if not sending:
                            cancel = "disconnect"
                            gen.cancel()
                    continue
                break
        except BaseException:  # cancelled by uvicorn (forced shutdown): the engine must stop too
            gen.cancel()
            await asyncio.shield(asyncio.to_thread(gen.join))
            raise
        await asyncio.to_thread(gen.join)
        self._release()  # the engine is free: the next request may start while this one is written
        if kind == "error":
            err = value if isinstance(value, APIError) else APIError(
                400 if isinstance(value, InvalidParameterError) else 500, f"{type(value).__name__}: {value}",
                type="invalid_request_error" if isinstance(value, InvalidParameterError) else "server_error")
            if job.stream:
                if sending:
                    await _sse(send, err.body())
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await _send_json(send, err.status, err.body())
            return
        st.metrics.record(job, gen.n_tokens, value)
        if cancel:
            st.metrics.cancelled.labels(reason=cancel).inc()
            if cancel == "shutdown":  # a client that left hears nothing more
                err = APIError(503, "the server is shutting down: the generation was stopped",
                               type="server_error", code="shutting_down")
                if not job.stream:
                    await _send_json(send, err.status, err.body())
                elif sending:
                    await _sse(send, err.body())
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        reason = gen.finish_reason(value)
        st.metrics.success.labels(finished_reason=reason).inc()
        usage = {"prompt_tokens": job.prompt_tokens, "completion_tokens": gen.n_tokens,
                 "total_tokens": job.prompt_tokens + gen.n_tokens}
        extra = _timings(value)
        if job.stream:
            if sending:
                last = {**head, "choices": [_choice(job, None, reason)], **extra}
                if job.include_usage:
                    await _sse(send, last)
                    last = {**head, "choices": [], "usage": usage}
                await _sse(send, last)
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        else:
            text = "".join(pieces)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                       "finish_reason": reason} if job.chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": reason})
            await _send_json(send, 200, {**head, "choices": [choice], "usage": usage, **extra})


def _choice(job: Job, text, finish_reason=None) -> dict:
    if job.chat:
        delta = text if isinstance(text, dict) else ({} if text is None else {"content": text})
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}


def _timings(gen) -> dict:
    """llama.cpp's `timings` object (with the draft counters) and pyspec's `spec` block, as
    `pyspec generate --json` prints them."""
    d = generation_json(gen)
    return {"timings": d["timings"], "spec": d["spec"]}


async def _sse(send, obj) -> bool:
    """Sends one server-sent event; False when the client has gone."""
    try:
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(obj).encode() + b"\n\n",
                    "more_body": True})
        return True
    except OSError:
        return False


async def _send_json(send, status: int, obj) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Guard:
    """ASGI middleware: the API key (every route but /health) and the requests counter."""

    def __init__(self, app, state: _State):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "other"
        metrics = self.state.metrics

        async def counted(message):
            if message["type"] == "http.response.start":
                metrics.requests.labels(route=route, code=str(message["status"])).inc()
            await send(message)

        key = self.state.config.api_key
        if key and path != "/health":
            auth = b""
            for k, v in scope["headers"]:
                if k == b"authorization":
                    auth = v
            if not hmac.compare_digest(auth, b"Bearer " + key.encode()):
                err = APIError(401, "a valid API key is needed: send the header 'Authorization: Bearer <key>' "
                                    "with the key the server was started with (--api-key)",
                               type="authentication_error", code="invalid_api_key")
                return await _send_json(counted, 401, err.body())
        return await self.app(scope, receive, counted)


def create_app(llm, config: ServeConfig, state: Optional[_State] = None):
    """The ASGI app serving `llm` (a pyspec.LLM): FastAPI routes behind the API-key guard."""
    state = state or _State(llm, config)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await state.started()
        yield
        state.begin_shutdown()
        await asyncio.to_thread(state.close)

    app = FastAPI(title="pyspec serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.pyspec = state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; the routes are "
                                         f"{', '.join(ROUTES)}", code=str(exc.status_code)).response()

    @app.exception_handler(Exception)
    async def server_error(request, exc):
        return APIError(500, f"{type(exc).__name__}: {exc}", type="server_error").response()

    async def completion(request: Request, chat: bool):
        try:
            body = parse_json(await _read_body(request, config.max_request_bytes))
            return _Completion(state, parse_request(body, llm, config, chat, state.n_ctx))
        except APIError as e:
            return e.response()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await completion(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await completion(request, chat=False)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": config.model_name, "object": "model", "created": state.created, "owned_by": "pyspec",
            "meta": {"n_ctx": state.n_ctx, "n_vocab": llm.n_vocab,
                     "spec_types": llm.spec_types if state.batch is None else
                     [t for t in llm.spec_types if t in BATCH_SPEC_TYPES],
                     "chat_template": llm.chat_template is not None or llm.has_chat_template,
                     "parallel": config.parallel, "max_queue": config.max_queue}}]}

    @app.get("/health")
    async def health():
        if state.shutting_down:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return _Guard(app, state)


class Server:
    """`create_app` on a socket bound at once (port 0: a free one; `port` says which), served by
    uvicorn in a thread. shutdown() stops the running generation and answers 503 to the waiting
    requests; wait() returns when uvicorn has closed every connection."""

    def __init__(self, llm, config: ServeConfig, host: str = "127.0.0.1", port: int = 8080,
                 log_level: str = "info"):
        self.state = _State(llm, config)
        self.app = create_app(llm, config, self.state)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.sock = socket.create_server((host, port), family=family)
        self.host, self.port = host, self.sock.getsockname()[1]
        self._uvicorn = uvicorn.Server(uvicorn.Config(self.app, log_level=log_level, lifespan="on",
                                                      timeout_graceful_shutdown=10))
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self.sock]},
                                        name="pyspec-serve", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Thread-safe (a signal handler may call it). A second call forces uvicorn out."""
        if self._uvicorn.should_exit:
            self._uvicorn.force_exit = True
        loop = self.state.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.state.begin_shutdown)
        self._uvicorn.should_exit = True

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True when the server has stopped."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True
