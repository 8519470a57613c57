"""Under a flood, the edge logs a bounded number of lines and counts every drop (issue 11).

What an outsider sends to UDP 4342 or over a tunnel must not make the log grow faster than a
fixed rate: repeats become one summary line per reason and source per interval
(``alt_router.logsummary``), and a per-logger token bucket catches anything else.
"""

from __future__ import annotations

import logging
import random
import socket
from ipaddress import IPv4Address

import pytest

from alt_router.gre.userspace import _RateLimitedLog
from alt_router.node.config import parse_config
from alt_router.node.core import NodeCore
from alt_router.node.logging import LogfmtFormatter, RateLimitFilter
from alt_router.node.mapping import DROP_LOG_INTERVAL, DROP_LOG_SOURCES, NodeMapping
from alt_router.sockdrops import parse_drops, socket_drops

CONFIG = """
[node]
name = "a"
asn = 65001
router_id = "192.0.2.1"
[eid]
accept = ["153.16.0.0/12"]
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def edge(clock: Clock) -> NodeMapping:
    config = parse_config(CONFIG)
    return NodeMapping(config, NodeCore(config).rib, {}, announce=lambda p: None, withdraw=lambda p: None,
                       clock=clock)


def test_a_100k_datagram_flood_logs_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    """100,000 datagrams no role takes, from random sources over 100 s: every one counted, few logged."""
    clock = Clock()
    mapping = edge(clock)
    rng = random.Random(5)
    caplog.set_level(logging.INFO, logger="alt_router.node.mapping")
    seconds = 100.0
    for i in range(100_000):
        clock.now = 1000.0 + i * seconds / 100_000
        src = IPv4Address(rng.getrandbits(32)) if i % 2 else IPv4Address("192.0.2.7")
        mapping.receive(b"\x20" + bytes(15), src, 4342)  # type 2 (Map-Reply): no role takes it
        if i % 1000 == 0:
            mapping.tick()
    mapping.tick()
    assert mapping.counters["no-role"] == 100_000
    lines = [r for r in caplog.records if r.name == "alt_router.node.mapping"]
    intervals = seconds / DROP_LOG_INTERVAL + 1
    # Per interval: the first of each of at most DROP_LOG_SOURCES sources, and a summary line for
    # each of them plus one for all other sources.
    assert len(lines) <= intervals * (2 * DROP_LOG_SOURCES + 1)
    assert any("more no-role from 192.0.2.7" in r.getMessage() for r in lines)
    assert any("(other sources)" in r.getMessage() for r in lines)


def test_a_summary_comes_even_when_the_flood_stops(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    mapping = edge(clock)
    caplog.set_level(logging.INFO, logger="alt_router.node.mapping")
    for _ in range(5):
        mapping.receive(b"", IPv4Address("192.0.2.9"), 1)
    assert mapping.counters["malformed"] == 5
    deadline = mapping.next_deadline()
    assert deadline is not None and deadline <= clock.now + DROP_LOG_INTERVAL
    clock.now = deadline
    mapping.tick()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("malformed" in m for m in messages) == 2  # the first one, then "4 more"
    assert any("4 more malformed from 192.0.2.9" in m for m in messages)
    assert mapping.next_deadline() is None


def test_edge_counters_are_one_plain_dict() -> None:
    mapping = edge(Clock())
    mapping.receive(b"", IPv4Address("192.0.2.9"), 1)
    counters = mapping.edge_counters()
    assert all(isinstance(v, int) for v in counters.values())
    for name in ("no-role", "malformed", "send-error", "rx-buffer-overflow"):
        assert name in counters
    assert mapping.status()["edge"] == counters


def test_log_backstop_bounds_any_logger() -> None:
    clock = Clock()
    flt = RateLimitFilter(rate=10, burst=20, clock=clock)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "refused", None, None)
    passed = 0
    for i in range(10_000):
        clock.now = 1000.0 + i * 1e-3  # 10 s at 1,000 lines a second
        passed += flt.filter(record)
    assert passed <= 20 + 10 * 10 + 1
    other = logging.LogRecord("y", logging.ERROR, __file__, 1, "peer down", None, None)
    assert flt.filter(other)  # another logger has its own bucket
    clock.now += 10
    late = logging.LogRecord("x", logging.WARNING, __file__, 1, "again", None, None)
    assert flt.filter(late)
    assert "suppressed=" in LogfmtFormatter(timestamps=False).format(late)


def test_long_messages_are_cut() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("A" * 100_000,), None)
    assert len(LogfmtFormatter(timestamps=False).format(record)) < 5000


def test_gre_error_log_summarises(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    errlog = _RateLimitedLog(clock)
    caplog.set_level(logging.ERROR, logger="alt_router.gre.userspace")
    for i in range(100_000):
        clock.now = 1000.0 + i * 1e-4  # 10 s of a dead TUN
        errlog("tun:a:5", "tunnel %s: writing into the TUN failed: %s", "a", "EIO")
    clock.now += 1
    errlog("tun:a:5", "tunnel %s: writing into the TUN failed: %s", "a", "EIO")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) <= 4
    assert any("more tun errors (errno 5) from tunnel a" in m for m in messages)


def test_kernel_receive_buffer_drops_are_read() -> None:
    """A UDP socket nobody reads: the datagrams the kernel dropped show up as rx-buffer-overflow."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.0.0.1", 0))
        assert socket_drops([rx]) == 0
        for _ in range(200):
            tx.sendto(b"x" * 1000, rx.getsockname())
        assert socket_drops([rx]) > 0
    assert socket_drops([rx]) == 0  # closed: nothing to read


def test_proc_net_parsing() -> None:
    text = (
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
        "inode ref pointer drops\n"
        "  1: 00000000:10F6 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 "
        "4242 2 0000000000000000 17\n"
        "  2: 00000000:10F7 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 "
        "4343 2 0000000000000000 3\n"
    )
    assert parse_drops(text, [4242]) == {4242: 17}
    assert parse_drops(text, [1]) == {}
    assert parse_drops("", [1]) == {}
