"""`pyspec serve`, the OpenAI-compatible server, against live servers on free localhost ports: one
started as `python -m pyspec serve` (the CLI) for the module, others in this process
(pyspec.server.Server) where a test holds a generation on purpose (Gate). No test depends on the
machine's speed: a held generation waits for an event, not for a clock."""
from __future__ import annotations

import contextlib
import http.client
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest

import tiny_models

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
openai = pytest.importorskip("openai")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import pyspec  # noqa: E402
from pyspec import server as pserver  # noqa: E402

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
N_CTX = 512
MSGS = [{"role": "user", "content": "sort the list"}]


@pytest.fixture(scope="module")
def chat_target(model_dir):
    """tiny_target's weights (so tiny_draft drafts for it) with a chat template."""
    return tiny_models.write_llama(model_dir / "chat_target.gguf", seed=0, chat_template=CHATML)


@pytest.fixture(scope="module")
def ref(chat_target):
    """The library itself on the same file: what the server must answer."""
    return pyspec.LLM(chat_target, n_ctx=N_CTX)


# ---- helpers ------------------------------------------------------------------------------------

def lib(llm, prompt, chat=False, **kw):
    """The library's own answer, as its stream gives it: (text, Generation). Its pieces keep a
    continuation's leading space, as the server's do (generate().text detokenizes the tokens as a
    whole text, which drops it)."""
    with (llm.chat_stream(prompt, **kw) if chat else llm.stream(prompt, **kw)) as s:
        text = "".join(c.text for c in s)
    return text, s.result


def start_cli(cwd, *args):
    """`python -m pyspec serve --port 0 ARGS`; returns (process, url, its stdout lines)."""
    log = open(cwd / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pyspec", "serve", "--port", "0", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=cwd, start_new_session=True)
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=read, daemon=True).start()
    line = lines.get(timeout=180)
    assert line and line.startswith("pyspec serve:"), (cwd / "serve.log").read_text()[-3000:]
    return proc, re.search(r"http://[^\s)]+", line).group(0), lines


def stop_cli(proc, lines, sig=signal.SIGTERM) -> str:
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    rest = []
    while (line := lines.get(timeout=60)) is not None:
        rest.append(line)
    assert rc == 0, (rc, rest)
    return "".join(rest)


def request(url, method, path, body=None, headers=None, stream=False):
    """(status, parsed JSON body) or, with stream=True, (status, the open response, the connection)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    if stream:
        return r.status, r, conn
    raw = r.read()
    conn.close()
    return r.status, (json.loads(raw) if raw and r.headers.get("content-type", "").startswith("application/json")
                      else raw.decode())


def post(url, path, body, **kw):
    return request(url, "POST", path, body, **kw)


def sse_events(resp) -> list:
    """The data of each server-sent event until the stream ends."""
    out = []
    for line in resp:
        line = line.decode().strip()
        if line.startswith("data: "):
            out.append(line[6:])
    return out


def metrics(url, headers=None) -> dict:
    status, text = request(url, "GET", "/metrics", headers=headers)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def wait_for(cond, what: str, limit: float = 120.0):
    """Polls `cond` until true; the limit only turns a hang into a failure."""
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def client(url, key="none"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


class Gate:
    """Holds an LLM's next generation after its first step until the test opens the gate or the
    server interrupts the engine (which opens it too): the generation is seen running, and the
    server's interrupt() is seen, without any timing assumption."""

    def __init__(self, llm):
        self.armed = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.interrupted = threading.Event()
        engine, gate = llm._engine, self

        class Engine:  # the LLM's engine, with interrupt() observed
            def __getattr__(self, name):
                return getattr(engine, name)

            def interrupt(self):
                engine.interrupt()
                gate.interrupted.set()
                gate.release.set()

        llm._engine = Engine()
        run = llm._run

        def gated(prepared, on_step=None, inside=None, on_prompt=None):
            hold, self.armed = self.armed, False
            on_step = on_step or (lambda tokens, n_from_draft: True)

            def step(tokens, n_from_draft):
                nonlocal hold
                go_on = on_step(tokens, n_from_draft)
                if hold:
                    hold = False
                    self.held.set()
                    self.release.wait(300)
                return go_on
            return run(prepared, step, inside, on_prompt)
        llm._run = gated


@contextlib.contextmanager
def in_process(llm, **config):
    srv = pserver.Server(llm, pserver.ServeConfig(model_name="tiny", **config), port=0, log_level="warning").start()
    try:
        yield srv
    finally:
        srv.shutdown()
        assert srv.wait(120), "the server did not stop"


@pytest.fixture(scope="module")
def live(chat_target, tiny_draft, tmp_path_factory):
    """`pyspec serve` with a draft model, a 512-token context and a 64 KiB body limit."""
    d = tmp_path_factory.mktemp("serve")
    proc, url, lines = start_cli(d, "-m", chat_target, "-md", tiny_draft, "-c", N_CTX, "-a", "tiny",
                                 "--max-request-bytes", 65536)
    yield url
    stop_cli(proc, lines)


# ---- the OpenAI client ----------------------------------------------------------------------------

def test_openai_client_completions_and_chat(live, ref):
    c = client(live)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    text, want = lib(ref, "the sort of", max_tokens=24, ignore_eos=True)
    r = c.completions.create(model="tiny", prompt="the sort of", max_tokens=24, extra_body={"ignore_eos": True})
    assert r.choices[0].text == text and r.choices[0].finish_reason == "length" and r.model == "tiny"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (want.stats.prompt_n, 24)
    t = r.model_extra["timings"]
    assert t["predicted_n"] == 24 and t["prompt_n"] == want.stats.prompt_n
    assert r.model_extra["spec"]["type"] == "draft"  # auto: the -md file's kind
    assert t["draft_n"] > 0 and 0 <= t["draft_n_accepted"] <= t["draft_n"]

    chunks = list(c.completions.create(model="tiny", prompt="the sort of", max_tokens=24, stream=True,
                                       extra_body={"ignore_eos": True}))
    assert "".join(ch.choices[0].text for ch in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "length" and len(chunks) > 2

    text, want = lib(ref, MSGS, chat=True, max_tokens=16, ignore_eos=True)
    r = c.chat.completions.create(model="tiny", messages=MSGS, max_tokens=16, extra_body={"ignore_eos": True})
    assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (want.stats.prompt_n, 16)
    chunks = list(c.chat.completions.create(model="tiny", messages=MSGS, max_completion_tokens=16, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-2].model_extra["timings"]["predicted_n"] == 16


def test_seeds_repeat(live, ref):
    c = client(live)

    def sample(seed, **extra):
        return c.completions.create(model="tiny", prompt="the sort of", max_tokens=24, temperature=1.5, seed=seed,
                                    extra_body={"ignore_eos": True, **extra}).choices[0].text
    assert sample(5) == sample(5)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1
    # the same draws as the library for the same seed and settings
    assert sample(5, spec_type="none") == lib(ref, "the sort of", max_tokens=24, temperature=1.5, seed=5,
                                              ignore_eos=True, spec_type="none")[0]
    assert sample(-1)  # llama-server's "random seed"


def test_concurrent_requests_each_equal_their_solo_output(live):
    """Served one at a time, in turn: whatever waits beside it, a request gets its solo output."""
    c = client(live)
    prompts = ["the sort of", "def quicksort(arr): return", "x y z x y z x y", "import self class print",
               "the list is the list", "if left else right"]
    specs = ["draft", "ngram", "none"]

    def run(i, stream):
        kw = dict(model="tiny", prompt=prompts[i], max_tokens=32,
                  extra_body={"ignore_eos": True, "spec_type": specs[i % 3]})
        if stream:
            return "".join(ch.choices[0].text for ch in c.completions.create(stream=True, **kw))
        return c.completions.create(**kw).choices[0].text
    solo = [run(i, False) for i in range(len(prompts))]
    with ThreadPoolExecutor(len(prompts)) as ex:
        together = list(ex.map(lambda i: run(i, i % 2 == 1), range(len(prompts))))
    assert together == solo


def test_per_request_speculation(live, ref):
    c = client(live)
    want = lib(ref, "x y z x y z x y", max_tokens=40, ignore_eos=True, spec_type="none")[0]
    seen = {}
    for spec in ("none", "ngram", "draft"):
        r = c.completions.create(model="tiny", prompt="x y z x y z x y", max_tokens=40,
                                 extra_body={"ignore_eos": True, "spec_type": spec, "draft_n_max": 3})
        assert r.choices[0].text == want, spec  # lossless, whatever drafts
        seen[spec] = r.model_extra
        assert r.model_extra["spec"]["type"] == spec
        assert not any(r.model_extra["spec"]["drafted_per_position"][3:])  # draft_n_max=3 per request
    assert seen["none"]["timings"]["draft_n"] == 0
    assert seen["draft"]["timings"]["draft_n"] > 0
    # accept-if-equal: sampled tokens equal plain sampling for the seed; rejection sampling need not
    kw = dict(model="tiny", prompt="the sort of", max_tokens=24, temperature=0.8, seed=3)
    plain = c.completions.create(**kw, extra_body={"ignore_eos": True, "spec_type": "none"}).choices[0].text
    equal = c.completions.create(**kw, extra_body={"ignore_eos": True, "spec_type": "draft",
                                                   "spec_sampling": "equal"}).choices[0].text
    assert equal == plain


def _straddling_stop(llm, prompt: str, n: int):
    """A stop string that spans a token boundary in the greedy continuation of `prompt`: (stop,
    the text before it, the tokens up to the one that completes it)."""
    with llm.stream(prompt, max_tokens=n, ignore_eos=True, spec_type="none") as s:
        pieces = [c.text for c in s]  # one token each: no drafts
    text = "".join(pieces)
    ends = [len("".join(pieces[:k])) for k in range(1, len(pieces) + 1)]  # where each token's text ends
    for e in ends[2:-2]:
        stop = text[e - 2:e + 2]
        i = text.find(stop)
        if stop.isascii() and stop.isprintable() and stop.strip() and any(i < b < i + len(stop) for b in ends):
            return stop, text[:i], next(k for k, b in enumerate(ends, 1) if b >= i + len(stop))
    raise AssertionError(f"no stop string spans a token boundary in {text!r}")


def test_stop_strings_across_token_boundaries(live, ref):
    c = client(live)
    stop, before, n_tokens = _straddling_stop(ref, "the sort of", 48)
    kw = dict(model="tiny", prompt="the sort of", max_tokens=48, stop=[stop, "never-there"],
              extra_body={"ignore_eos": True})
    r = c.completions.create(**kw)
    assert r.choices[0].text == before and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == n_tokens
    chunks = list(c.completions.create(stream=True, **kw))
    assert "".join(ch.choices[0].text for ch in chunks) == before
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_metrics_are_consistent_with_the_responses(live):
    c = client(live)
    before = metrics(live)
    rs = [c.completions.create(model="tiny", prompt=p, max_tokens=20, extra_body={"ignore_eos": True, "spec_type": s})
          for p, s in (("x y z x y z x y", "ngram"), ("the sort of", "draft"), ("the sort of", "none"))]
    chunks = list(c.chat.completions.create(model="tiny", messages=MSGS, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    after = metrics(live)
    extras = [r.model_extra for r in rs] + [chunks[-2].model_extra]
    usages = [r.usage for r in rs] + [chunks[-1].usage]

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)
    assert delta("pyspec:generation_tokens_total") == sum(u.completion_tokens for u in usages) == 72
    assert delta("pyspec:prompt_tokens_total") == sum(u.prompt_tokens for u in usages)
    assert delta("pyspec:request_success_total", finished_reason="length") == 4
    assert delta("pyspec:requests_total", route="/v1/completions", code="200") == 3
    assert delta("pyspec:requests_total", route="/v1/chat/completions", code="200") == 1
    spec = [e["spec"] for e in extras]
    assert delta("pyspec:spec_decode_num_draft_tokens_total") == sum(e["timings"]["draft_n"] for e in extras) > 0
    assert delta("pyspec:spec_decode_num_accepted_tokens_total") == sum(e["timings"]["draft_n_accepted"]
                                                                        for e in extras)
    assert delta("pyspec:spec_decode_num_drafts_total") == sum(s["drafted_per_position"][0] for s in spec
                                                               if s["drafted_per_position"])
    for pos in range(3):
        assert delta("pyspec:spec_decode_num_accepted_tokens_per_pos_total", position=str(pos)) == sum(
            s["accepted_per_position"][pos] for s in spec if len(s["accepted_per_position"]) > pos)
    assert after[("pyspec:num_requests_running", ())] == 0 and after[("pyspec:num_requests_waiting", ())] == 0


# ---- bad input ----------------------------------------------------------------------------------

BAD = [  # (route, body, the param the error names; None: the body as a whole)
    ("completions", b'{"prompt": "the", ', None),
    ("completions", b"[1, 2]", None),
    ("completions", {"prompt": "the", "temperature": "hot"}, "temperature"),
    ("completions", {"prompt": "the", "top_k": 2.5}, "top_k"),
    ("completions", {"prompt": "the", "max_tokens": "8"}, "max_tokens"),
    ("completions", {"prompt": "the", "max_tokens": 0}, "max_tokens"),
    ("completions", {"prompt": "the", "max_tokens": -3}, "max_tokens"),
    ("completions", {"prompt": "the", "max_tokens": 10**9}, "max_tokens"),
    ("completions", {"prompt": "the", "max_tokens": 0, "stream": True}, "max_tokens"),
    ("completions", {"prompt": "the", "top_p": 2.0}, "top_p"),
    ("completions", {"prompt": "the", "seed": -2}, "seed"),
    ("completions", {"prompt": "the", "repeat_last_n": -5}, "repeat_last_n"),
    ("completions", {"prompt": "the " * 600}, "prompt"),  # longer than the context
    ("completions", {"prompt": [5, 99999]}, "prompt"),
    ("completions", {"prompt": ["the", "of"]}, "prompt"),
    ("completions", {}, "prompt"),
    ("completions", {"prompt": "the", "stop": 5}, "stop"),
    ("completions", {"prompt": "the", "stop": [""]}, "stop"),
    ("completions", {"prompt": "the", "stream": "yes"}, "stream"),
    ("completions", {"prompt": "the", "n": 2}, "n"),
    ("completions", {"prompt": "the", "echo": True}, "echo"),
    ("chat/completions", {"messages": MSGS, "logprobs": True}, "logprobs"),
    ("chat/completions", {"messages": MSGS, "tools": [{"type": "function"}]}, "tools"),
    ("chat/completions", {"messages": MSGS, "response_format": {"type": "json_object"}}, "response_format"),
    ("completions", {"prompt": "the", "spec_type": "mtp"}, "spec_type"),  # the target has no MTP layers
    ("completions", {"prompt": "the", "spec_type": "tree"}, "spec_type"),
    ("completions", {"prompt": "the", "draft_n_max": 65}, "draft_n_max"),
    ("completions", {"prompt": "the", "draft_n_max": 4, "draft_n_min": 8}, "draft_n_min"),
    ("completions", {"prompt": "the", "spec_sampling": "maybe"}, "spec_sampling"),
    ("chat/completions", {"messages": "hi"}, "messages"),
    ("chat/completions", {"messages": [{"content": "hi"}]}, "messages"),
    ("chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
    ("chat/completions", {"messages": [{"role": "user", "content": "the " * 600}]}, "messages"),
]


def test_bad_input_is_a_400_with_an_openai_error(live):
    for route, body, param in BAD:
        status, r = post(live, f"/v1/{route}", body)
        assert status == 400, (body, r)
        err = r["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"], (body, r)
        if param is None:
            assert "JSON" in err["message"]
    status, r = post(live, "/v1/completions", {"prompt": "the " * 600})
    assert r["error"]["code"] == "context_length_exceeded" and f"n_ctx={N_CTX}" in r["error"]["message"]
    # the openai client sees them as BadRequestError
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client(live).completions.create(model="tiny", prompt="the", max_tokens=10**9)
    status, r = post(live, "/v1/completions", {"prompt": "the sort of", "max_tokens": 4})  # still serving
    assert status == 200 and r["usage"]["completion_tokens"] >= 1


def test_request_bodies_have_a_size_limit(live):
    big = json.dumps({"prompt": "x" * 70000}).encode()
    status, r = post(live, "/v1/completions", big)
    assert status == 413 and r["error"]["code"] == "request_too_large"
    u = urlparse(live)  # no Content-Length: counted while read
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.request("POST", "/v1/completions", iter([big[i:i + 8192] for i in range(0, len(big), 8192)]),
                 {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "request_too_large"
    conn.close()


def test_requests_never_name_files(live, ref):
    """The model field names nothing on the server's disk: the loaded model answers, as named."""
    want = lib(ref, "the sort of", max_tokens=8, ignore_eos=True)[0]
    status, r = post(live, "/v1/completions", {"model": "/etc/passwd", "prompt": "the sort of", "max_tokens": 8,
                                               "ignore_eos": True, "chat_template": "/etc/passwd",
                                               "draft_model": "/etc/passwd"})
    assert status == 200 and r["model"] == "tiny" and r["choices"][0]["text"] == want


def test_a_model_without_a_chat_template(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=N_CTX)
    with in_process(llm) as srv:
        status, r = post(srv.url, "/v1/chat/completions", {"messages": MSGS})
        assert status == 400 and "has no chat template" in r["error"]["message"]
        assert "--chat-template" in r["error"]["message"] and "/v1/completions" in r["error"]["message"]
        status, r = post(srv.url, "/v1/completions", {"prompt": "the sort of", "max_tokens": 4})
        assert status == 200


# ---- the CLI, auth, signals -----------------------------------------------------------------------

def test_cli_refuses_bad_parallel_values_and_says_what_np_does(tmp_path, tiny_target, tiny_draft):
    import tiny_draft_heads
    head = tiny_draft_heads.write_dflash(tmp_path / "df.gguf", block_size=8)
    for args, says in ((["-np", "0"], "-np must be in [1, 64]"), (["-np", "65"], "-np must be in [1, 64]"),
                       (["-np", "4", "-b", "2"], "-b 2 (tokens per step) is smaller than -np 4"),
                       (["-np", "8", "-c", "32"], "leaves fewer than 8 tokens each"),
                       (["-np", "2", "-md", str(head)], "-md (a dflash head, which reads one sequence's "
                                                        "features) would never be used"),
                       (["-np", "2", "--spec-type", "mtp"], "spec types none, ngram and draft only")):
        r = subprocess.run([sys.executable, "-m", "pyspec", "serve", "-m", str(tiny_target), *args],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    r = subprocess.run([sys.executable, "-m", "pyspec", "serve", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    text = " ".join(r.stdout.split())
    assert "-np N generations run at once" in text and "one forward pass per step" in text and "127.0.0.1" in text
    assert "later stage" not in text


def test_api_key(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=N_CTX)
    with in_process(llm, api_key="sekret") as srv:
        assert request(srv.url, "GET", "/health")[0] == 200  # open: for load balancers
        for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/completions"),
                             ("POST", "/v1/chat/completions"), ("GET", "/nowhere")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}):
                status, r = request(srv.url, method, path, {"prompt": "the"}, headers=headers)
                assert status == 401 and r["error"]["type"] == "authentication_error", (path, headers)
        with pytest.raises(openai.AuthenticationError):
            client(srv.url, "wrong").completions.create(model="tiny", prompt="the", max_tokens=2)
        r = client(srv.url, "sekret").completions.create(model="tiny", prompt="the", max_tokens=2)
        assert r.usage.completion_tokens >= 1
        assert metrics(srv.url, {"Authorization": "Bearer sekret"})[("pyspec:requests_total", (
            ("code", "401"), ("route", "/v1/models")))] == 3


def test_binds_localhost_and_signals_shut_down_cleanly(tiny_target, tmp_path):
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc, url, lines = start_cli(tmp_path, "-m", tiny_target, "-c", 256)
        assert urlparse(url).hostname == "127.0.0.1"  # the default --host
        status, resp, conn = post(url, "/v1/completions", {"prompt": "the sort of", "stream": True,
                                                           "ignore_eos": True}, stream=True)
        assert status == 200 and resp.readline().startswith(b"data: ")
        out = stop_cli(proc, lines, sig)
        assert f"stopped ({signal.Signals(sig).name})" in out
        events = sse_events(resp)  # the stream ends: finished, or stopped with an error event
        conn.close()
        assert events[-1] == "[DONE]" or json.loads(events[-1])["error"]["code"] == "shutting_down"


# ---- held generations: the queue, disconnects, shutdown ------------------------------------------------

def _in_thread(fn, *args):
    out = {}
    t = threading.Thread(target=lambda: out.update(r=fn(*args)), daemon=True)
    t.start()
    return t, out


def test_a_full_queue_answers_503_at_once(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=N_CTX)
    gate = Gate(llm)
    body_a = {"prompt": "the sort of", "max_tokens": 16, "ignore_eos": True}
    body_b = {"prompt": "x y z x y z", "max_tokens": 16, "ignore_eos": True}
    solo = [lib(llm, b["prompt"], max_tokens=16, ignore_eos=True)[0] for b in (body_a, body_b)]
    with in_process(llm, max_queue=1) as srv:
        gate.armed = True
        a, ra = _in_thread(post, srv.url, "/v1/completions", body_a)
        assert gate.held.wait(120)  # A runs and is held
        b, rb = _in_thread(post, srv.url, "/v1/completions", body_b)
        wait_for(lambda: metrics(srv.url)[("pyspec:num_requests_waiting", ())] == 1, "B to wait")
        status, r = post(srv.url, "/v1/completions", body_b)  # one more than the queue holds
        assert status == 503 and r["error"]["code"] == "queue_full"
        assert "waiting for a free sequence" in r["error"]["message"]
        assert not gate.release.is_set()  # answered while A was still held
        gate.release.set()
        a.join(120), b.join(120)
        assert [x["r"][0] for x in (ra, rb)] == [200, 200]
        assert [x["r"][1]["choices"][0]["text"] for x in (ra, rb)] == solo  # served in turn, as alone


def test_a_client_that_leaves_mid_stream_frees_the_model_within_one_step(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=N_CTX)
    gate = Gate(llm)
    want = lib(llm, "the sort of", max_tokens=12, ignore_eos=True)[0]
    with in_process(llm) as srv:
        gate.armed = True
        status, resp, conn = post(srv.url, "/v1/completions", {"prompt": "x y z x y z", "max_tokens": 400,
                                                               "ignore_eos": True, "stream": True}, stream=True)
        assert status == 200 and gate.held.wait(120)
        resp.close()
        conn.close()  # the client leaves while its generation is held after its first step
        assert gate.interrupted.wait(120), "the server did not interrupt the engine"
        m = {}
        wait_for(lambda: m.update(metrics(srv.url)) or m.get(("pyspec:requests_cancelled_total",
                                                              (("reason", "disconnect"),))) == 1, "the cancel")
        assert m[("pyspec:generation_tokens_total", ())] == 1  # the engine stopped at the next step
        assert m[("pyspec:num_requests_running", ())] == 0
        status, r = post(srv.url, "/v1/completions", {"prompt": "the sort of", "max_tokens": 12, "ignore_eos": True})
        assert status == 200 and r["choices"][0]["text"] == want


def test_shutdown_stops_the_running_generation_and_answers_the_waiting(tiny_target):
    llm = pyspec.LLM(tiny_target, n_ctx=N_CTX)
    gate = Gate(llm)
    srv = pserver.Server(llm, pserver.ServeConfig(model_name="tiny"), port=0, log_level="warning").start()
    try:
        gate.armed = True
        status, resp, conn = post(srv.url, "/v1/completions", {"prompt": "x y z", "max_tokens": 400,
                                                               "ignore_eos": True, "stream": True}, stream=True)
        assert status == 200 and gate.held.wait(120)
        b, rb = _in_thread(post, srv.url, "/v1/completions", {"prompt": "the", "max_tokens": 4})
        wait_for(lambda: metrics(srv.url)[("pyspec:num_requests_waiting", ())] == 1, "B to wait")
        srv.shutdown()
        assert gate.interrupted.wait(120), "shutdown did not interrupt the engine"
        events = sse_events(resp)
        conn.close()
        assert json.loads(events[-1])["error"]["code"] == "shutting_down"
        b.join(120)
        assert rb["r"][0] == 503 and rb["r"][1]["error"]["code"] == "shutting_down"
    finally:
        srv.shutdown()
        assert srv.wait(120)


# ---- -np N: the batch engine behind the server --------------------------------------------------------

def served_text(llm, prompt, **kw) -> str:
    """The text the server answers for the library's solo generation: its tokens' bytes decoded as
    the server does, which at the end also writes out an incomplete UTF-8 character (as U+FFFD)."""
    import codecs
    g = llm.generate(prompt, **kw)
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(llm._continuation_bytes(g.tokens), True)


class BatchGate:
    """Holds a batched server's step loop after the first step of its next request (every sequence
    waits) until the test opens the gate or the server cancels that request (which opens it too)."""

    def __init__(self, batch):
        self.armed = False
        self.held, self.release, self.cancelled = threading.Event(), threading.Event(), threading.Event()
        submit, gate = batch.submit_prepared, self

        def gated(prepared, on_step=None, on_done=None):
            hold, gate.armed = gate.armed, False

            def step(tokens, n_from_draft):
                nonlocal hold
                go_on = on_step(tokens, n_from_draft) if on_step else True
                if hold:
                    hold = False
                    gate.held.set()
                    gate.release.wait(300)
                return go_on
            req = submit(prepared, step, on_done)
            if hold:
                cancel = req.cancel

                def observed():
                    cancel()
                    gate.cancelled.set()
                    gate.release.set()
                req.cancel = observed
            return req
        batch.submit_prepared = gated


def test_np_4_serves_16_concurrent_requests_each_as_alone(chat_target, tmp_path):
    """-np 4: 16 requests at once through the openai client, streaming and not, with and without
    n-gram speculation, each equal to the library's solo output with a sequence's context."""
    proc, url, lines = start_cli(tmp_path, "-m", chat_target, "-c", 4 * N_CTX, "-np", 4, "-a", "tiny",
                                 "--max-queue", 16)
    try:
        c = client(url)
        meta = c.models.list().data[0].model_extra["meta"]
        assert meta["parallel"] == 4 and meta["n_ctx"] == N_CTX and meta["spec_types"] == ["none", "ngram"]
        solo_llm = pyspec.LLM(chat_target, n_ctx=N_CTX)
        words = ["the sort of", "def quicksort(arr): return", "x y z x y z x y", "import self class print",
                 "the list is the list", "if left else right", "for x in arr", "return self sort"]
        jobs = [(words[i % 8], ("ngram", "none")[i // 8], 20 + i) for i in range(16)]
        before = metrics(url)

        def run(i):
            prompt, spec, n = jobs[i]
            kw = dict(model="tiny", prompt=prompt, max_tokens=n, extra_body={"ignore_eos": True, "spec_type": spec})
            if i % 2:
                chunks = list(c.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
                return "".join(ch.choices[0].text for ch in chunks if ch.choices), chunks[-1].usage, chunks[-2]
            r = c.completions.create(**kw)
            return r.choices[0].text, r.usage, r
        with ThreadPoolExecutor(16) as ex:
            outs = list(ex.map(run, range(16)))
        for (prompt, spec, n), (text, usage, last) in zip(jobs, outs):
            assert text == served_text(solo_llm, prompt, max_tokens=n, ignore_eos=True, spec_type="none"), prompt
            assert usage.completion_tokens == n and last.model_extra["spec"]["type"] == spec
        after = metrics(url)
        delta = lambda name: after.get((name, ()), 0) - before.get((name, ()), 0)  # noqa: E731
        assert delta("pyspec:generation_tokens_total") == sum(u.completion_tokens for _, u, _ in outs)
        assert delta("pyspec:prompt_tokens_total") == sum(u.prompt_tokens for _, u, _ in outs)
        assert delta("pyspec:spec_decode_num_draft_tokens_total") == sum(
            last.model_extra["timings"]["draft_n"] for _, _, last in outs) > 0
        assert after[("pyspec:num_requests_running", ())] == 0 and after[("pyspec:num_requests_waiting", ())] == 0
        # a drafter the batch cannot run, and a prompt longer than one sequence's context
        status, r = post(url, "/v1/completions", {"prompt": "the", "spec_type": "draft"})
        assert status == 400 and r["error"]["param"] == "spec_type"
        status, r = post(url, "/v1/completions", {"prompt": "the " * 600})
        assert status == 400 and f"n_ctx={N_CTX}" in r["error"]["message"] and "-c / -np" in r["error"]["message"]
    finally:
        stop_cli(proc, lines)


def test_np_2_queue_disconnect_and_the_next_request(chat_target, tiny_draft):
    llm = pyspec.LLM(chat_target, n_ctx=2 * N_CTX, draft_model=tiny_draft)
    solo = pyspec.LLM(chat_target, n_ctx=N_CTX)
    want = served_text(solo, "the sort of", max_tokens=12, ignore_eos=True)
    with in_process(llm, parallel=2, max_queue=1) as srv:
        gate = BatchGate(srv.state.batch)
        gate.armed = True
        status, resp, conn = post(srv.url, "/v1/completions", {"prompt": "x y z x y z", "max_tokens": 400,
                                                               "ignore_eos": True, "stream": True}, stream=True)
        assert status == 200 and gate.held.wait(120)  # A is held after its first step: the loop waits
        b, rb = _in_thread(post, srv.url, "/v1/completions", {"prompt": "the sort of", "max_tokens": 12,
                                                              "ignore_eos": True})  # takes the second sequence
        wait_for(lambda: metrics(srv.url)[("pyspec:num_requests_running", ())] == 2, "B to run")
        c_, rc = _in_thread(post, srv.url, "/v1/completions", {"prompt": "the sort of", "max_tokens": 12,
                                                               "ignore_eos": True, "spec_type": "auto"})
        wait_for(lambda: metrics(srv.url)[("pyspec:num_requests_waiting", ())] == 1, "C to wait")
        status, r = post(srv.url, "/v1/completions", {"prompt": "the", "max_tokens": 2})
        assert status == 503 and r["error"]["code"] == "queue_full" and "free sequence" in r["error"]["message"]
        status, r = post(srv.url, "/v1/completions", {"prompt": "the", "spec_type": "mtp"})
        assert status == 400 and r["error"]["param"] == "spec_type"  # a drafter this LLM does not have
        resp.close()
        conn.close()  # A's client leaves while the loop is held
        assert gate.cancelled.wait(120), "the server did not cancel the sequence"
        b.join(120), c_.join(120)
        assert rb["r"][0] == rc["r"][0] == 200
        assert rb["r"][1]["choices"][0]["text"] == rc["r"][1]["choices"][0]["text"] == want
        assert rc["r"][1]["spec"]["type"] == "none"  # auto, in a batch: none (not the -md drafter)
        m = metrics(srv.url)
        assert m[("pyspec:requests_cancelled_total", (("reason", "disconnect"),))] == 1
        # A stopped within one step of the cancel: its first token, and B's and C's 12 each
        assert m[("pyspec:generation_tokens_total", ())] == 1 + 12 + 12
        assert m[("pyspec:num_requests_running", ())] == 0 and m[("pyspec:num_requests_waiting", ())] == 0
        status, r = post(srv.url, "/v1/completions", {"prompt": "the sort of", "max_tokens": 12, "ignore_eos": True})
        assert status == 200 and r["choices"][0]["text"] == want


def test_np_2_with_a_draft_model_drafts_per_request(chat_target, tiny_draft):
    # -np 2 -md DRAFT: spec_type "draft" runs in the batch (a draft context per running sequence), each
    # request's output is its solo output, and its timings count the drafts
    llm = pyspec.LLM(chat_target, n_ctx=2 * N_CTX, draft_model=tiny_draft)
    solo = pyspec.LLM(chat_target, n_ctx=N_CTX)
    prompts = ["the sort of", "x y z x y z", "def f(a):"]
    with in_process(llm, parallel=2, max_queue=4) as srv:
        status, r = request(srv.url, "GET", "/v1/models")
        assert status == 200 and "draft" in r["data"][0]["meta"]["spec_types"]
        threads = [_in_thread(post, srv.url, "/v1/completions", {"prompt": p, "max_tokens": 16, "ignore_eos": True,
                                                                 "spec_type": "draft", "draft_n_max": 4})
                   for p in prompts]
        for (t, out), p in zip(threads, prompts):
            t.join(300)
            status, r = out["r"]
            assert status == 200, r
            assert r["choices"][0]["text"] == served_text(solo, p, max_tokens=16, ignore_eos=True, spec_type="none")
            assert r["timings"]["draft_n"] > 0
