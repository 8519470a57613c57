"""What aiohttp lacks to face hostile clients: a connection cap, a header timeout, quiet error logs.

aiohttp (3.x) already gives a keep-alive timeout (armed from the moment a connection opens, so it
also ends a connection that never sends a request), caps on request-line and header sizes, a body
size cap (``client_max_size``) and lingering-close control; ``http.py`` sets all of them.  It has no
cap on concurrent connections, no header read timeout shorter than the keep-alive one, and it logs
a full traceback for every malformed request.  This module adds those as a thin layer:

- ``ConnectionGuard`` wraps aiohttp's protocol factory.  Over ``max_connections`` a new connection
  gets a canned 503 and is closed; a connection that has not completed its first request's headers
  within ``header_timeout`` seconds is aborted.  Both are counted.
- ``QuietServerLog`` is the logger aiohttp's request handler writes to: malformed requests become
  one line at first and then one summary line per interval (``alt_router.logsummary``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from alt_router.logsummary import LogSummary

log = logging.getLogger("alt_router.api.http")

DEFAULT_MAX_CONNECTIONS = 128
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 30.0
DEFAULT_BODY_TIMEOUT = 10.0
DEFAULT_LOG_INTERVAL = 10.0
# A refused connection is held this long at most, so its client can read the 503 before the close.
REFUSE_LINGER = 1.0

MALFORMED = "malformed HTTP request"
SERVER_ERROR = "HTTP server error"
ANY_SOURCE = "any client"


def _canned_503(detail: str) -> bytes:
    body = json.dumps({"error": "too many connections", "detail": detail}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


class _Refuse(asyncio.Protocol):
    """A connection over the cap: answer 503 at once, read nothing, close soon."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._response)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSE_LINGER, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read, whatever it is

    def eof_received(self) -> bool:
        if self._transport is not None:
            self._transport.close()
        return False


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, plus the header deadline; forwards every callback."""

    __slots__ = ("_guard", "_timer", "_transport", "created", "inner", "seen")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self.inner = inner
        self.seen = False
        self.created = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._guard.header_timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(self._guard.header_timeout, self._expire)
        self.inner.connection_made(transport)

    def _expire(self) -> None:
        self._timer = None
        if self.seen or self._transport is None:
            return
        self._guard.counters["header_timeouts"] += 1
        self._transport.abort()

    def request_seen(self) -> None:
        self.seen = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._guard.live.pop(self.inner, None)
        self._transport = None
        self.inner.connection_lost(exc)


class ConnectionGuard:
    """A protocol factory for ``loop.create_server`` around aiohttp's own (``runner.server``)."""

    def __init__(self, factory: Callable[[], asyncio.Protocol],
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._factory = factory
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        # aiohttp protocol -> its guard, from the moment asyncio asks for a protocol (a burst of
        # accepts makes many before the first connection_made) until the connection is lost.
        self.live: dict[object, _Guarded] = {}
        self.counters: Counter[str] = Counter(
            dict.fromkeys(("connections_accepted", "connections_refused", "header_timeouts"), 0))
        self._refusal = _canned_503(f"this API serves at most {max_connections} connections at once")

    def __call__(self) -> asyncio.Protocol:
        if len(self.live) >= self.max_connections:
            self._prune()
        if len(self.live) >= self.max_connections:
            self.counters["connections_refused"] += 1
            return _Refuse(self._refusal)
        self.counters["connections_accepted"] += 1
        guarded = _Guarded(self, self._factory())
        self.live[guarded.inner] = guarded
        return guarded

    def _prune(self) -> None:
        # A protocol asyncio asked for but never connected (its transport failed to set up) would
        # hold a slot for good.
        stale = time.monotonic() - max(1.0, self.header_timeout)
        for inner, guarded in list(self.live.items()):
            if guarded._transport is None and guarded.created < stale:
                del self.live[inner]

    def request_seen(self, protocol: object) -> None:
        """The headers of a request on this connection are in: no header deadline any more."""
        guarded = self.live.get(protocol)
        if guarded is not None:
            guarded.request_seen()

    def close_all(self) -> None:
        for guarded in list(self.live.values()):
            transport = guarded._transport
            if transport is not None:
                transport.abort()

    def stats(self) -> dict[str, int]:
        return {"connections": len(self.live), "max_connections": self.max_connections, **self.counters}


class QuietServerLog:
    """Stands in for the ``logging.Logger`` aiohttp's request handler logs to (its ``logger=``).

    aiohttp calls ``exception()`` with a traceback for every request it cannot parse.  Here
    those become a count (``malformed_requests``), one warning line for the first, and one
    summary line per ``interval`` for the rest; any other server-side error is logged with its
    traceback once per interval and counted in ``server_errors``.
    """

    def __init__(self, counters: Counter[str], interval: float = DEFAULT_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger = log) -> None:
        self.counters = counters
        self.summary = LogSummary(interval=interval)
        self.clock = clock
        self.logger = logger
        self._flush_handle: asyncio.TimerHandle | None = None
        # Reasons held back since the last flush: during a flood, the interval after a summary
        # line starts primed, so the flood yields one line per interval, not a full one plus a summary.
        self._held: set[str] = set()

    # --- the Logger methods aiohttp uses -----------------------------------------------------

    def debug(self, msg: str, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            # aiohttp logs a non-HTTP first line (TLS, a port scan) at debug level: still counted.
            self._note(MALFORMED, "malformed_requests", msg, args, exc_info, level=logging.INFO)
            return
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("exc_info", None)
        self.logger.info(msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._note(SERVER_ERROR, "server_errors", msg, args, None, level=logging.WARNING)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.exception(msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            self._note(MALFORMED, "malformed_requests", msg, args, exc, level=logging.WARNING)
        else:
            self._note(SERVER_ERROR, "server_errors", msg, args, exc, level=logging.ERROR)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - the logging.Logger name
        return self.logger.isEnabledFor(level)

    # --- summarising ------------------------------------------------------------------------

    def _note(self, reason: str, counter: str, msg: str, args: tuple[Any, ...], exc: BaseException | None,
              *, level: int) -> None:
        self.counters[counter] += 1
        now = self.clock()
        if self.summary.note(reason, ANY_SOURCE, now):
            if reason == MALFORMED:
                # One line, whatever the client sent: aiohttp's messages quote it over several.
                detail = str(getattr(exc, "message", None) or exc).strip().splitlines() or [""]
                remote = args[0] if args else "?"
                self.logger.log(level, "%s from %s: %s: %s (further ones are counted in /v1/counters "
                                "and summarised every %.0fs)", MALFORMED, remote, type(exc).__name__,
                                detail[0][:200], self.summary.interval)
            else:
                self.logger.log(level, "%s", msg % args if args else msg, exc_info=exc)
        else:
            self._held.add(reason)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flush_handle = loop.call_later(self.summary.interval, self._on_flush)

    def _on_flush(self) -> None:
        self._flush_handle = None
        if self.flush():
            self._schedule_flush()

    def flush(self, *, force: bool = False) -> bool:
        """Log the summary lines that are due; True if there were any (the flood goes on)."""
        now = self.clock()
        if not force and not self.summary.due(now):
            return bool(self._held)
        lines = self.summary.flush(now, force=force)
        for line in lines:
            self.logger.warning("%s", line)
        if lines:
            for reason in self._held:
                self.summary.note(reason, ANY_SOURCE, now)
        self._held.clear()
        return bool(lines)

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.flush(force=True)
