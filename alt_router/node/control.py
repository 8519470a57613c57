"""The node's control socket (edge): ``control.sock`` in the state directory, one JSON object a line.

``query`` is the blocking client the CLI, the lab, the benchmarks and the tests use; ``answer``
decides one request against anything that offers the ``Controlled`` methods (the daemon's
``Node``); ``serve`` is the per-connection handler of the asyncio unix server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from alt_router.bgp.bridge import MAX_LINE
from alt_router.node.core import NodeError

log = logging.getLogger(__name__)

CONTROL_SOCKET = "control.sock"
# Set to 1 to enable the control command ``debug-stall`` (tests only: it freezes the event loop).
DEBUG_ENV = "ALT_ROUTER_DEBUG"
MAX_DEBUG_STALL = 120.0


class Controlled(Protocol):
    """What the control commands act on."""

    def status(self, *, routes: bool = True) -> dict[str, Any]: ...
    def announce(self, prefix: str) -> bool: ...
    def withdraw(self, prefix: str) -> bool: ...
    def route(self, address: str) -> dict[str, Any] | None: ...
    def registrations(self) -> list[dict[str, Any]]: ...
    def write_status(self) -> Path: ...


def answer(node: Controlled, request: Any) -> dict[str, Any]:
    """Answer one control request (a JSON object with ``cmd``)."""
    if not isinstance(request, dict):
        return {"ok": False, "error": "request must be a JSON object"}
    cmd = request.get("cmd")
    try:
        if cmd == "status":
            return {"ok": True, **node.status(routes=bool(request.get("routes", True)))}
        if cmd == "announce":
            return {"ok": True, "changed": node.announce(str(request.get("prefix")))}
        if cmd == "withdraw":
            return {"ok": True, "changed": node.withdraw(str(request.get("prefix")))}
        if cmd == "lookup":
            return {"ok": True, "route": node.route(str(request.get("address")))}
        if cmd == "registrations":
            return {"ok": True, "registrations": node.registrations()}
        if cmd == "dump":
            return {"ok": True, "path": str(node.write_status())}
        if cmd == "debug-stall" and os.environ.get(DEBUG_ENV) == "1":
            return debug_stall(request.get("seconds", 1.0))
    except NodeError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": False, "error": f"unknown cmd {cmd!r}"}


def debug_stall(seconds: object) -> dict[str, Any]:
    if not isinstance(seconds, int | float):
        return {"ok": False, "error": "seconds must be a number"}
    stall = min(MAX_DEBUG_STALL, max(0.0, float(seconds)))
    # Answer first, then stall: the caller's query must not wait out the stall.
    asyncio.get_running_loop().call_soon(_stall, stall)
    return {"ok": True, "stalling": stall}


def _stall(seconds: float) -> None:
    """Keep the event loop (and the GIL, between switches) busy in Python for ``seconds``.

    The ``debug-stall`` control command: what a Map-Register flood does to the loop, on demand,
    so a test can show that BGP does not depend on it.
    """
    log.warning("debug-stall: blocking the event loop for %.1fs", seconds)
    end = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < end:
        spins += 1
    log.warning("debug-stall: done (%d spins)", spins)


async def serve(
    handle: Callable[[Any], dict[str, Any]], reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
) -> None:
    """One control connection: a JSON answer per JSON request line, until the client closes."""
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                break
            try:
                reply = handle(json.loads(line))
            except ValueError as exc:
                reply = {"ok": False, "error": f"not JSON: {exc}"}
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def unix_server(
    path: Path, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
) -> asyncio.AbstractServer:
    """A unix stream server on ``path`` that only the node's user can connect to."""
    path.unlink(missing_ok=True)  # a socket file left by a killed daemon
    server = await asyncio.start_unix_server(handler, str(path), limit=MAX_LINE)
    path.chmod(0o600)
    return server


def query(state_dir: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one control request to the daemon running on ``state_dir`` (blocking client)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(state_dir / CONTROL_SOCKET))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply
