"""The API bridge ExaBGP runs: buffering, session replay, and the process relaying both ways."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from alt_router.bgp.bridge import HELLO, REPLAYED, Hello, LineBuffer, SessionMemory


def _state(peer: str, state: str) -> bytes:
    return (json.dumps({"type": "state", "neighbor": {"address": {"local": "10.0.0.1", "peer": peer},
                                                      "asn": {"local": 1, "peer": 2}, "state": state}})
            .replace('"type":"state"', '"type": "state"') + "\n").encode()


def _open(peer: str, direction: str) -> bytes:
    return (json.dumps({"type": "open", "neighbor": {"address": {"local": "10.0.0.1", "peer": peer},
                                                     "direction": direction, "open": {}}}) + "\n").encode()


def test_buffer_drops_the_oldest_and_counts() -> None:
    buf = LineBuffer(3)
    for i in range(5):
        buf.push(f"{i}\n".encode())
    assert buf.drain() == [b"2\n", b"3\n", b"4\n"]
    assert buf.dropped == 2 and len(buf) == 0
    with pytest.raises(ValueError):
        LineBuffer(0)


def test_memory_replays_the_last_open_and_state_per_neighbor() -> None:
    mem = SessionMemory()
    mem.observe(_state("10.0.0.2", "up"))
    mem.observe(_open("10.0.0.2", "send"))  # our own OPEN is not the peer's router-id
    mem.observe(_open("10.0.0.2", "receive"))
    mem.observe(_state("10.0.0.3", "up"))
    mem.observe(_state("10.0.0.3", "down"))
    for junk in (b"not json\n", b'{"type": "state"}\n', b"done\n", b'{"type": "state", "neighbor": 3}\n'):
        mem.observe(junk)
    assert mem.replay() == [
        _open("10.0.0.2", "receive"), _state("10.0.0.2", "up"), _state("10.0.0.3", "down"),
    ]


def test_hello_round_trips_and_rejects_garbage() -> None:
    h = Hello(pid=1, dropped=2, buffered=3, replayed=4)
    assert Hello.parse(h.line()) == h
    for bad in ("#hello", "#hello {", '#hello {"pid": 1}', "hello {}"):
        with pytest.raises(ValueError):
            Hello.parse(bad)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_bridge_process_buffers_until_the_daemon_comes_and_relays_both_ways(tmp_path: Path) -> None:
    sock_path = tmp_path / "bridge.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alt_router.cli", "bridge", "--socket", str(sock_path), "--buffer", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # No daemon yet: three lines into a buffer of two, one dropped; the up state is remembered.
        proc.stdin.write(_state("10.0.0.2", "up") + b"line-1\nline-2\n")
        proc.stdin.flush()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(sock_path))
        server.listen(1)
        server.settimeout(10)
        conn, _ = server.accept()
        conn.settimeout(10)
        hello = Hello.parse(_read_line(conn).decode().strip())
        assert (hello.dropped, hello.buffered, hello.replayed) == (1, 2, 1)
        assert _read_line(conn) == _state("10.0.0.2", "up")
        assert _read_line(conn) == REPLAYED.encode() + b"\n"
        assert [_read_line(conn), _read_line(conn)] == [b"line-1\n", b"line-2\n"]
        proc.stdin.write(b"live\n")
        proc.stdin.flush()
        assert _read_line(conn) == b"live\n"
        conn.sendall(b"neighbor 10.0.0.2 announce route-refresh ipv4 unicast\n")
        assert proc.stdout.readline() == b"neighbor 10.0.0.2 announce route-refresh ipv4 unicast\n"
        # The daemon goes away and comes back: the bridge reconnects and says hello again.
        conn.close()
        proc.stdin.write(b"while-away\n")
        proc.stdin.flush()
        conn, _ = server.accept()
        conn.settimeout(10)
        assert _read_line(conn).startswith(HELLO.encode())
        lines = [_read_line(conn) for _ in range(3)]
        assert lines[1] == REPLAYED.encode() + b"\n"
        # "while-away" was either written into the dead connection or buffered; a reconnecting
        # daemon asks for refreshes either way.  What must hold: the bridge is alive and relaying.
        proc.stdin.write(b"after\n")
        proc.stdin.flush()
        rest = lines[2:]
        while b"after\n" not in rest:
            rest.append(_read_line(conn))
        conn.close()
        server.close()
        # ExaBGP closing our stdin is the bridge's signal to exit.
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if sock_path.exists():
            os.unlink(sock_path)
