"""HTTP limits against hostile clients, on real sockets: the connection cap, the header and
keep-alive timeouts, the token checked before any body is read, a slow body, quiet error logs."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from alt_router.api.limits import MALFORMED, QuietServerLog
from tests.api.conftest import TOKEN, LiveServer, wait_for


def connect(live: LiveServer, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.server.port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a reset counts as closed)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def body_of(raw: bytes) -> dict[str, object]:
    body: dict[str, object] = json.loads(raw.partition(b"\r\n\r\n")[2])
    return body


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    try:
        yield made
    finally:
        for sock in made:
            sock.close()


def test_a_thousand_half_open_connections_are_refused_or_timed_out(
        make_live: Callable[..., LiveServer], sockets: list[socket.socket]) -> None:
    """Over the cap: 503 (RFC 9110 §15.6.4) with Retry-After (§10.2.3), then closed."""
    live = make_live(max_connections=100, header_timeout=1.0)
    guard = live.server.guard
    for i in range(1000):
        # Half of them send the start of a request and stop; the others send nothing at all.
        sockets.append(connect(live, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" if i % 2 else b""))
    wait_for(lambda: guard.counters["connections_accepted"] + guard.counters["connections_refused"] == 1000,
             what="every connection to be seen")
    accepted = guard.counters["connections_accepted"]
    # 100 at once at most; a few more when the first ones time out while the rest connect.
    assert 100 <= accepted < 1000 and guard.counters["connections_refused"] == 1000 - accepted
    # Over the cap: a 503 that says why, at once.
    refused = read_all(sockets[100])
    assert status_of(refused) == 503 and body_of(refused)["error"] == "too many connections"
    # Within the cap: closed by the server once the header timeout passes, none left open.
    wait_for(lambda: guard.stats()["connections"] == 0, what="the half-open connections to be closed")
    assert guard.counters["header_timeouts"] == accepted
    for sock in sockets[:100]:
        sock.settimeout(5)
        assert read_all(sock) == b""
    # And the API still answers.
    assert live.json("GET", "/v1/status")[0] == 200
    _, counters = live.json("GET", "/v1/counters")
    http = counters["api"]["http"]
    assert http["connections_refused"] == 1000 - accepted and http["header_timeouts"] == accepted


def test_a_stream_is_not_cut_by_the_header_or_keep_alive_timeout(
        make_live: Callable[..., LiveServer]) -> None:
    live = make_live(header_timeout=0.3, keepalive_timeout=0.3, heartbeat=0.05)
    stream = connect(live, b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        # Past the header and keep-alive deadlines: a stream in progress is not idle.
        time.sleep(0.8)
        stream.settimeout(5)
        assert b"200 OK" in stream.recv(4096)
        time.sleep(0.4)
        assert b"keepalive" in stream.recv(65536)
        assert live.server.guard.counters["header_timeouts"] == 0
        assert live.server.hub.stats()["clients"] == 1
    finally:
        stream.close()


def test_idle_keep_alive_connections_are_closed(make_live: Callable[..., LiveServer],
                                                sockets: list[socket.socket]) -> None:
    live = make_live(keepalive_timeout=0.3)
    sock = connect(live, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
    sockets.append(sock)
    started = time.monotonic()
    raw = read_all(sock)  # the answer, then the close when the keep-alive runs out
    assert status_of(raw) == 200
    assert time.monotonic() - started < 5
    wait_for(lambda: live.server.guard.stats()["connections"] == 0, what="the connection to go")


def test_a_write_without_the_token_is_refused_before_its_body_is_read(
        live: LiveServer, sockets: list[socket.socket]) -> None:
    # Announces a huge body and never sends it: the answer must not wait for it.
    sock = connect(live, b"POST /v1/routes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 50000\r\n\r\n")
    sockets.append(sock)
    raw = read_all(sock)
    assert status_of(raw) == 401 and body_of(raw)["error"] == "unauthorized"
    assert b"WWW-Authenticate: Bearer" in raw
    assert live.view.announced == set()


def test_expect_100_continue_is_refused_without_the_token(live: LiveServer,
                                                          sockets: list[socket.socket]) -> None:
    """RFC 9110 §10.1.1: a server may answer with a final status instead of 100 (Continue), and the
    client then does not send the body."""
    head = (b"POST /v1/routes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 27\r\nExpect: 100-continue\r\n")
    sock = connect(live, head + b"\r\n")
    sockets.append(sock)
    raw = read_all(sock)
    assert status_of(raw) == 401 and b"100 Continue" not in raw
    # With the token: 100 Continue, then the body, then the answer.
    sock = connect(live, head + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    sockets.append(sock)
    assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
    sock.sendall(b'{"prefix": "153.16.9.0/24"}')
    assert b"201 Created" in sock.recv(4096)
    assert live.view.announced == {"153.16.9.0/24"}


def test_expect_with_a_too_large_body_is_413_before_the_body(live: LiveServer,
                                                             sockets: list[socket.socket]) -> None:
    sock = connect(live, b"POST /v1/routes HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
                         b"Expect: 100-continue\r\n" + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    sockets.append(sock)
    assert status_of(read_all(sock)) == 413


def test_a_body_that_never_arrives_is_408(make_live: Callable[..., LiveServer],
                                         sockets: list[socket.socket]) -> None:
    """RFC 9110 §15.5.9: 408 when the server did not receive a complete request in time."""
    live = make_live(body_timeout=0.3)
    sock = connect(live, b"POST /v1/routes HTTP/1.1\r\nHost: x\r\nContent-Length: 27\r\n"
                         + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode() + b'{"pre')
    sockets.append(sock)
    raw = read_all(sock)
    assert status_of(raw) == 408 and body_of(raw)["error"] == "body too slow"
    assert live.server.http_errors["body_timeouts"] == 1


def test_malformed_requests_log_one_line_then_a_summary(make_live: Callable[..., LiveServer],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    live = make_live(log_interval=60.0)
    caplog.set_level(logging.DEBUG, logger="alt_router")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    for i in range(50):
        junk = b"\x16\x03\x01 not http\r\n\r\n" if i % 2 else b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"
        sock = connect(live, junk)
        read_all(sock)
        sock.close()
    wait_for(lambda: live.server.http_errors["malformed_requests"] == 50, what="every request to be counted")
    live.call(lambda: live.server.server_log.flush(force=True))  # as the end of the interval would
    lines = [r for r in caplog.records
             if r.levelno >= logging.INFO and r.name.startswith(("alt_router", "aiohttp"))
             and "API listening" not in r.getMessage()]
    assert len(lines) == 2, [r.getMessage() for r in lines]
    first, summary = lines
    assert first.getMessage().startswith(MALFORMED + " from 127.0.0.1: ")
    assert "\n" not in first.getMessage() and first.exc_info is None  # one line, no traceback
    assert summary.getMessage().startswith("49 more malformed HTTP request")
    assert live.json("GET", "/v1/status")[0] == 200


def test_server_log_yields_one_line_per_interval_during_a_flood(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    counters: Counter[str] = Counter()
    quiet = QuietServerLog(counters, interval=10.0, clock=lambda: now[0],
                           logger=logging.getLogger("alt_router.test.quiet"))
    caplog.set_level(logging.INFO, logger="alt_router.test.quiet")
    from aiohttp.http_exceptions import BadStatusLine  # noqa: PLC0415

    for second in range(60):
        now[0] = float(second)
        for _ in range(100):
            quiet.exception("Error handling request from %s", "192.0.2.9", exc_info=BadStatusLine("x"))
        if second % 10 == 9:
            now[0] += 1
            quiet.flush()
    assert counters["malformed_requests"] == 6000
    # The first one in full, then one summary line per 10 s interval: 1 + 6 lines for 6,000 requests.
    assert len(caplog.records) == 7
    assert all(r.exc_info is None for r in caplog.records)
