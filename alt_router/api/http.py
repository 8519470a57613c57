"""The HTTP edge: aiohttp routes over a NodeView, inside the daemon's asyncio loop.

Auth rules (docs/api.md): the server listens on 127.0.0.1 unless told otherwise;
listening anywhere else needs a bearer token, and then every request needs it;
write calls need it wherever the server listens.  Tokens are compared with
``hmac.compare_digest`` so the comparison time does not leak the token.  The token
is checked once the headers are in and before any of the body is read (also for
``Expect: 100-continue``); a refused write closes the connection unread.

Limits (``limits.py``): a cap on connections, a header timeout, aiohttp's keep-alive
timeout, a body size cap and a body read timeout, a cap on stream clients; aiohttp's
per-request error logging is summarised.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from ipaddress import ip_address
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alt_router.api.limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_LOG_INTERVAL,
    DEFAULT_MAX_CONNECTIONS,
    ConnectionGuard,
    QuietServerLog,
)
from alt_router.api.metrics import make_registry
from alt_router.api.openapi import document
from alt_router.api.query import (
    ApiError,
    parse_eid,
    parse_prefix,
    parse_registrations_query,
    parse_routes_query,
    parse_seq,
    select_routes,
)
from alt_router.api.stream import (
    DEFAULT_HEARTBEAT,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_QUEUE_SIZE,
    StreamFull,
    StreamHub,
    StreamSession,
)
from alt_router.api.view import JsonDict, NodeView

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8179
MAX_BODY = 64 * 1024
# Kernel send buffer of a stream connection: without a cap Linux autotunes it to
# megabytes, which a client that stopped reading would pin.
STREAM_SNDBUF = 128 * 1024
# What a stream connection may hold in userspace before the pump waits for the socket: asyncio's
# default high-water mark (64 KiB) plus aiohttp's own 64 KiB before it drains came to ~100 KiB
# per client that stopped reading; this and a drain after every chunk keep it to ~32 KiB.
STREAM_WRITE_BUFFER = 16 * 1024
# A dropped stream client gets this long to take its last (gap) event before its connection is cut.
GAP_WRITE_TIMEOUT = 1.0
# aiohttp's defaults are 8190 bytes a line and 128 headers; nothing here needs more than a few.
MAX_HEADERS = 32
# A burst of connects beyond the accept queue waits for SYN retries (1 s, 3 s ...) instead of
# meeting the guard, which answers the ones over the cap at once.
LISTEN_BACKLOG = 1024
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_dumps = partial(json.dumps, default=str)


class ApiConfigError(ValueError):
    """The API cannot start with these settings."""


def is_loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        # A name ("localhost" included) may resolve to anything: treat it as exposed.
        return False


def error_response(status: int, error: str, detail: str = "", headers: dict[str, str] | None = None
                   ) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers,
                             dumps=_dumps)


class ApiServer:
    """The monitoring API for one node. ``await start()``, ``await stop()``."""

    def __init__(
        self, view: NodeView, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
        *, queue_size: int = DEFAULT_QUEUE_SIZE, heartbeat: float = DEFAULT_HEARTBEAT,
        max_body: int = MAX_BODY, stream_sndbuf: int | None = STREAM_SNDBUF,
        max_stream_clients: int = DEFAULT_MAX_CLIENTS, max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT, keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT, log_interval: float = DEFAULT_LOG_INTERVAL,
    ) -> None:
        if token is not None and not token.strip():
            raise ApiConfigError("the API token must not be empty")
        if not is_loopback(host) and token is None:
            raise ApiConfigError(
                f"refusing to serve the API on {host}: a non-loopback address needs a bearer token "
                "([api] token in the node configuration)"
            )
        self.view = view
        self.host = host
        self.requested_port = port
        self._token = token.encode() if token is not None else None
        self.read_needs_token = not is_loopback(host)
        self.heartbeat = heartbeat
        self.max_body = max_body
        self.stream_sndbuf = stream_sndbuf
        self.keepalive_timeout = keepalive_timeout
        self.body_timeout = body_timeout
        try:
            self.hub = StreamHub(view.events, queue_size, max_stream_clients)
            self.guard = ConnectionGuard(self._new_protocol, max_connections, header_timeout)
        except ValueError as exc:
            raise ApiConfigError(str(exc)) from None
        self.requests: Counter[str] = Counter()
        self.http_errors: Counter[str] = Counter(dict.fromkeys(("malformed_requests", "server_errors",
                                                                "body_timeouts"), 0))
        self.server_log = QuietServerLog(self.http_errors, log_interval)
        self.registry = make_registry(view, self.hub, self.requests, self._http_stats)
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> ApiServer:
        runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
            # Also ends a connection that never completes a request (aiohttp arms it on connect).
            keepalive_timeout=self.keepalive_timeout,
            # A refused or unread body is not drained: the connection closes instead.
            lingering_time=0,
            max_headers=MAX_HEADERS,
            logger=self.server_log,
        )
        await runner.setup()
        self._runner = runner
        try:
            # Our own listener, so the guard (cap, header timeout) sees every connection first.
            self._server = await asyncio.get_running_loop().create_server(
                self.guard, self.host, self.requested_port, reuse_address=True, backlog=LISTEN_BACKLOG)
        except OSError as exc:
            self._runner = None
            await runner.cleanup()
            raise ApiConfigError(f"cannot listen on {self.host} port {self.requested_port}: {exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("API listening on %s", self.url)
        return self

    def _new_protocol(self) -> asyncio.Protocol:
        assert self._runner is not None and self._runner.server is not None
        protocol: asyncio.Protocol = self._runner.server()
        return protocol

    async def stop(self) -> None:
        # Streams never end on their own: close them first so the shutdown does not wait on them.
        self.hub.close_all()
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self.guard.close_all()
        self.server_log.close()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- plumbing --------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=self.max_body)
        r = app.router
        r.add_get("/v1/status", self._status)
        r.add_get("/v1/peers", self._peers)
        r.add_get("/v1/tunnels", self._tunnels)
        r.add_get("/v1/routes", self._routes)
        r.add_post("/v1/routes", self._announce, expect_handler=self._expect)
        # .+ because a prefix has a slash (sent raw or as %2F).
        r.add_delete("/v1/routes/{prefix:.+}", self._withdraw, expect_handler=self._expect)
        r.add_get("/v1/lookup/{eid}", self._lookup)
        r.add_get("/v1/registrations", self._registrations)
        r.add_get("/v1/aggregates", self._aggregates)
        r.add_get("/v1/counters", self._counters)
        r.add_get("/v1/stream", self._stream)
        r.add_get("/v1/openapi.json", self._openapi)
        r.add_get("/metrics", self._metrics)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.guard.request_seen(request.protocol)
        try:
            if self.read_needs_token and not self._authorized(request):
                raise self._unauthorized()
            if self._is_write(request) and not self._authorized(request):
                # Before the handler, so before anything reads the body.
                raise self._unauthorized()
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.error, exc.detail, exc.headers)
            if exc.status in (401, 408, 413):
                # The body was not read (or not all of it): do not wait for it.
                response.force_close()
        except web.HTTPException as exc:
            # aiohttp's own 404/405/413 come as plain-text exceptions: answer them in JSON too.
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = error_response(exc.status, exc.reason.lower(), _http_detail(exc, request), headers)
        except Exception:
            log.exception("API handler for %s %s failed", request.method, request.path)
            response = error_response(500, "internal error", "see the node's log")
        self.requests[str(response.status)] += 1
        return response

    @staticmethod
    def _is_write(request: web.Request) -> bool:
        # Only a matched route: a write method on a read-only path stays a 405.
        return request.method in WRITE_METHODS and request.match_info.http_exception is None

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: say no before the client sends the body, unless it may."""
        self.guard.request_seen(request.protocol)
        refusal: web.Response | None = None
        if not self._authorized(request):
            exc = self._unauthorized()
            refusal = error_response(exc.status, exc.error, exc.detail, exc.headers)
        elif request.content_length is not None and request.content_length > self.max_body:
            refusal = error_response(413, "body too large", f"at most {self.max_body} bytes")
        elif request.headers.get("Expect", "").lower() != "100-continue" or request.version != HttpVersion11:
            refusal = error_response(417, "expectation failed", "only Expect: 100-continue is understood")
        if refusal is not None:
            refusal.force_close()
            self.requests[str(refusal.status)] += 1
            return refusal
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # Not part of the response proper (aiohttp's own expect handler does the same).
        request.writer.output_size = 0
        return None

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return False
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._token)

    def _unauthorized(self) -> ApiError:
        detail = ("send 'Authorization: Bearer <token>'" if self._token is not None
                  else "writes need a token and none is configured ([api] token)")
        exc = ApiError(401, "unauthorized", detail)
        exc.headers = {"WWW-Authenticate": 'Bearer realm="alt-router"'}
        return exc

    def _require_token(self, request: web.Request) -> None:
        if not self._authorized(request):
            raise self._unauthorized()

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status, dumps=_dumps)

    def _http_stats(self) -> dict[str, int]:
        return {**self.guard.stats(), **self.http_errors}

    def _api_stats(self) -> JsonDict:
        return {"stream": self.hub.stats(), "requests": dict(sorted(self.requests.items())),
                "http": self._http_stats()}

    # --- read endpoints --------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        status = dict(self.view.status())
        status.setdefault("routes", len(self.view.rib))
        status["api"] = self._api_stats()
        return self._json(status)

    async def _peers(self, request: web.Request) -> web.Response:
        return self._json({"peers": self.view.peers()})

    async def _tunnels(self, request: web.Request) -> web.Response:
        return self._json({"tunnels": self.view.tunnels()})

    async def _routes(self, request: web.Request) -> web.Response:
        return self._json(select_routes(self.view.rib, parse_routes_query(_single(request))))

    async def _lookup(self, request: web.Request) -> web.Response:
        eid = parse_eid(request.match_info["eid"])
        found = self.view.lookup(eid)
        if found is None:
            raise ApiError(404, "no route", f"no route covers {eid}")
        # FRR mode: attributes the kernel table lacks (AS paths) are fetched from FRR on demand.
        detail = getattr(self.view, "lookup_detail", None)
        if detail is not None:
            found = await detail(found)
        return self._json(found)

    async def _registrations(self, request: web.Request) -> web.Response:
        cursor, limit = parse_registrations_query(_single(request))
        try:
            rows, next_cursor = self.view.registrations(cursor, limit)
        except ValueError:
            raise ApiError(400, "bad cursor", "pass back the next_cursor of the previous page, unchanged"
                           ) from None
        total = sum(self.view.registration_totals().values())
        return self._json({"registrations": rows, "count": len(rows), "total": total,
                           "next_cursor": next_cursor})

    async def _aggregates(self, request: web.Request) -> web.Response:
        rows = self.view.aggregates()
        return self._json({"aggregates": rows, "count": len(rows),
                           "active": sum(1 for r in rows if r.get("active"))})

    async def _counters(self, request: web.Request) -> web.Response:
        counters: JsonDict = dict(self.view.counters())
        counters["api"] = self._api_stats()
        return self._json(counters)

    async def _openapi(self, request: web.Request) -> web.Response:
        return self._json(document())

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- write endpoints -------------------------------------------------------

    async def _announce(self, request: web.Request) -> web.Response:
        self._require_token(request)
        if request.content_length is not None and request.content_length > self.max_body:
            raise ApiError(413, "body too large", f"at most {self.max_body} bytes")
        try:
            raw = await asyncio.wait_for(request.read(), self.body_timeout)
        except TimeoutError:
            self.http_errors["body_timeouts"] += 1
            raise ApiError(408, "body too slow",
                           f"the body must arrive within {self.body_timeout:g}s") from None
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "bad body", 'expected JSON such as {"prefix": "153.16.0.0/16"}') from None
        if not isinstance(body, dict) or not isinstance(body.get("prefix"), str):
            raise ApiError(400, "bad body", 'expected JSON such as {"prefix": "153.16.0.0/16"}')
        prefix = str(parse_prefix(body["prefix"]))
        changed = self._change(self.view.announce, prefix)
        answer = {"prefix": prefix, "action": "announce", "changed": changed}
        return self._json(answer, 201 if changed else 200)

    async def _withdraw(self, request: web.Request) -> web.Response:
        self._require_token(request)
        prefix = str(parse_prefix(request.match_info["prefix"]))
        changed = self._change(self.view.withdraw, prefix)
        return self._json({"prefix": prefix, "action": "withdraw", "changed": changed})

    @staticmethod
    def _change(action: Callable[[str], bool], prefix: str) -> bool:
        try:
            return bool(action(prefix))
        except ApiError:
            raise
        except ValueError as exc:
            raise ApiError(422, "refused", str(exc)) from None

    # --- stream ----------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        # On a reconnect the browser's EventSource resends the original URL (with its
        # since=) plus Last-Event-ID, which is newer: the header wins.
        since: int | None = None
        if "since" in request.query:
            since = parse_seq(request.query["since"], "since")
        if "Last-Event-ID" in request.headers:
            since = parse_seq(request.headers["Last-Event-ID"], "Last-Event-ID")
        try:
            session = self.hub.open(since)
        except StreamFull as exc:
            err = ApiError(503, "too many stream clients", f"{exc}; retry later")
            err.headers = {"Retry-After": "5"}
            raise err from None
        try:
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
            })
            await response.prepare(request)
            transport = request.transport
            if transport is not None:
                session.abort = transport.abort
                transport.set_write_buffer_limits(high=STREAM_WRITE_BUFFER)
                sock = transport.get_extra_info("socket")
                if sock is not None and self.stream_sndbuf is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.stream_sndbuf)
            await self._pump(session, response, request.writer)
        finally:
            self.hub.release(session)
        return response

    async def _pump(self, session: StreamSession, response: web.StreamResponse,
                    writer: AbstractStreamWriter) -> None:
        try:
            await response.write(b"retry: 1000\n\n")
            while (chunk := await session.next_chunk(self.heartbeat)) is not None:
                session.writing = True
                try:
                    if session.overflowed or session.closed:
                        # The last words to a dropped client: it may not be reading at all.
                        await asyncio.wait_for(response.write(chunk), GAP_WRITE_TIMEOUT)
                    else:
                        await response.write(chunk)
                        # Wait for the socket now, not after aiohttp's 64 KiB.
                        await writer.drain()
                finally:
                    session.writing = False
        except TimeoutError:
            if session.abort is not None:
                session.abort()
        except (ConnectionError, asyncio.CancelledError) as exc:
            log.debug("stream client left: %r", exc)
            if isinstance(exc, asyncio.CancelledError):
                raise


def _single(request: web.Request) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key in params:
            raise ApiError(400, "repeated parameter", key)
        params[key] = value
    return params


def _http_detail(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no such path: {request.path} (see /v1/openapi.json)"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return "request body too large"
    return exc.text or ""


async def start(view: NodeView, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
                **options: Any) -> ApiServer:
    """Start the API in the running loop; ``await server.stop()`` to end it."""
    return await ApiServer(view, host, port, token, **options).start()
