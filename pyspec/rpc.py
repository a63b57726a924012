"""llama.cpp's RPC backend: one model split over `pyspec rpc-server` processes, on this machine or
others (LLM(rpc=[...]), --rpc). Each server lends its devices (its GPUs, else its CPU); the target's
offloaded layers are split over them by free memory, as llama.cpp splits layers over GPUs, and each
forward runs layer by layer across the servers. A server serves one client process at a time.

Exactness: `pyspec rpc-server` runs exact (batch-invariant) kernels unless started with --kernels fast
and says so when a client connects (patches/0011); an exact LLM refuses a server that runs the fast
kernels (UnsupportedError), so LLM(rpc=...) output equals the output of the same model in one process.
"""
from __future__ import annotations

import signal
import socket
from typing import Sequence

from . import _core
from .errors import InvalidParameterError, RPCError, UnsupportedError

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
CONNECT_TIMEOUT_S = 5.0


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """("host", port) of "host:port"; InvalidParameterError saying what was expected otherwise."""
    if not isinstance(endpoint, str) or endpoint.count(":") != 1:
        raise InvalidParameterError(f"an RPC server is HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}), got {endpoint!r}")
    host, port = endpoint.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidParameterError(f"an RPC server is HOST:PORT with a port in 1..65535, got {endpoint!r}")
    return host, int(port)


def check_servers(rpc: Sequence[str] | str, exact: bool) -> list[str]:
    """The endpoints, each checked: reachable within CONNECT_TIMEOUT_S (no hang on a dead host), a llama.cpp
    RPC server of this protocol, and running exact kernels when `exact`. Raises RPCError / UnsupportedError
    naming the server and what to do."""
    if isinstance(rpc, str):
        rpc = [e for e in rpc.split(",") if e]
    if not isinstance(rpc, (list, tuple)):
        raise InvalidParameterError(f"rpc= is a list of \"HOST:PORT\" strings (or one comma-separated string), "
                                    f"got {type(rpc).__name__}")
    endpoints = list(rpc)
    if not endpoints:
        raise InvalidParameterError("rpc= lists no server: expected [\"HOST:PORT\", ...] (or leave it out)")
    if len(set(endpoints)) != len(endpoints):
        raise InvalidParameterError(f"rpc= lists a server twice: {endpoints}")
    for ep in endpoints:
        host, port = split_endpoint(ep)
        start = f"start one with `pyspec rpc-server --host {host} --port {port}` on that machine, or leave it out of rpc"
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise RPCError(f"RPC server {ep} is not reachable ({e.strerror or e}): expected a `pyspec rpc-server` "
                           f"listening there; {start}") from None
        code = _core.rpc_probe(ep)
        if code == -1:
            raise RPCError(f"RPC server {ep} is not reachable: {start}")
        if code == -2:
            raise RPCError(f"{ep} answered, but not as a llama.cpp RPC server of this protocol version: expected "
                           f"`pyspec rpc-server` (or llama.cpp's rpc-server from the same llama.cpp); {start}")
        if code == 0 and exact:
            raise UnsupportedError(f"RPC server {ep} runs llama.cpp's fast kernels, so output would not be exact: "
                                   f"restart it as `pyspec rpc-server --host {host} --port {port}` (exact kernels "
                                   "by default), or use kernels='fast' (not lossless)")
    return endpoints


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, n_threads: int | None = None, kernels: str = "exact",
          cpu: bool = False, cache_dir: str | None = None) -> None:
    """Serves this machine's devices to RPC clients until the process is stopped (Ctrl-C or SIGTERM end it
    at once: a client loses its server and gets DecodeError)."""
    from .threads import default_threads
    if kernels not in ("exact", "fast"):
        raise InvalidParameterError(f"kernels must be 'exact' or 'fast', got {kernels!r}")
    split_endpoint(f"{host}:{port}")
    # the server loop runs in C++ without the GIL and never returns: let the default handlers end the process
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _core.rpc_serve(f"{host}:{port}", n_threads or default_threads(), exact=kernels == "exact", cpu_only=cpu,
                    cache_dir=cache_dir or "")
