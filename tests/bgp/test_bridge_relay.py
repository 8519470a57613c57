"""The bridge's byte relay: line framing over chunks, and the standalone ``python -m`` entry point."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.bgp.bridge import REPLAYED, Hello, LineBuffer, LineSplitter, SessionMemory


def test_splitter_joins_partial_lines_and_keeps_runs_of_complete_ones() -> None:
    s = LineSplitter()
    assert s.feed(b"abc") == b""
    assert s.feed(b"def\nghi\njk") == b"abcdef\nghi\n"
    assert s.feed(b"\n") == b"jk\n"
    assert s.feed(b"tail") == b"" and s.finish() == b"tail\n" and s.finish() == b""


def test_splitter_drops_an_oversize_line_and_carries_on() -> None:
    s = LineSplitter(limit=8)
    assert s.feed(b"ok\n0123456") == b"ok\n"
    assert s.feed(b"789abc") == b"" and s.take_oversize() == 1 and s.take_oversize() == 0
    assert s.feed(b"def\nnext\n") == b"next\n"  # the rest of the monster line is skipped
    assert s.feed(b"0123456789") == b"" and s.finish() == b""  # oversize at EOF: nothing


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=12),
       st.lists(st.integers(1, 9), min_size=1, max_size=8))
def test_splitter_reframes_any_chunking(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    s = LineSplitter()
    out, pos, i = b"", 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        out += s.feed(stream[pos:pos + n])
        pos, i = pos + n, i + 1
    assert out + s.finish() == stream


def test_memory_observes_state_lines_inside_a_run_of_lines() -> None:
    state = json.dumps({"type": "state", "neighbor": {"address": {"peer": "10.0.0.2"}, "state": "up"}})
    run = b"update-1\n" + state.replace('"type":"state"', '"type": "state"').encode() + b"\nupdate-2\n"
    assert SessionMemory.interesting(run) and not SessionMemory.interesting(b"update-1\nupdate-2\n")


def test_standalone_bridge_relays_chunks_both_ways(tmp_path: Path) -> None:
    sock_path = tmp_path / "b.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    server.settimeout(10)
    proc = subprocess.Popen([sys.executable, "-m", "alt_router.bgp.bridge", "--socket", str(sock_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        conn, _ = server.accept()
        conn.settimeout(10)
        reader = conn.makefile("rb")
        assert Hello.parse(reader.readline().decode().strip()).dropped == 0
        assert reader.readline() == REPLAYED.encode() + b"\n"
        big = b"x" * 300_000
        # Lines split across writes arrive whole and in order.
        proc.stdin.write(b"first\n" + big[:1000])
        proc.stdin.flush()
        proc.stdin.write(big[1000:] + b"\nlast\n")
        proc.stdin.flush()
        assert reader.readline() == b"first\n"
        assert reader.readline() == big + b"\n"
        assert reader.readline() == b"last\n"
        conn.sendall(b"neighbor 10.0.0.2 teardown 2\n")
        assert proc.stdout.readline() == b"neighbor 10.0.0.2 teardown 2\n"
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()


def test_buffer_is_bounded_in_bytes_too_and_takes_runs_of_lines() -> None:
    buf = LineBuffer(capacity=100, max_bytes=10)
    for line in (b"aaaa\n", b"bbbb\n", b"cccc\n"):
        buf.push(line)
    assert buf.size == 10 and buf.dropped == 1  # the oldest went to stay within 10 bytes
    buf.push(b"x" * 50 + b"\n")  # one line over the bound alone is kept (the splitter caps lines)
    assert len(buf) == 1 and buf.dropped == 3
    buf = LineBuffer(capacity=100, max_bytes=1000)
    for i in range(6):
        buf.push(f"{i}{i}{i}\n".encode())
    assert buf.take(9) == [b"000\n", b"111\n"] and buf.size == 16
    assert buf.take(1) == [b"222\n"]  # at least one line, whatever the limit
    assert buf.drain() == [b"333\n", b"444\n", b"555\n"] and buf.size == 0
    with pytest.raises(ValueError):
        LineBuffer(capacity=1, max_bytes=0)


def _lines_until_eof_or(conn: socket.socket, marker: bytes) -> list[bytes]:
    lines = []
    with conn.makefile("rb") as reader:
        for line in reader:
            lines.append(line)
            if line == marker:
                break
    return lines


def test_bridge_never_stops_reading_exabgp_while_the_daemon_does_not_read(tmp_path: Path) -> None:
    """ExaBGP's writes to its API process block its whole reactor (keepalives included): the bridge
    must keep reading whatever the daemon does, and drop (counted) rather than wait.  Issue 11."""
    sock_path = tmp_path / "b.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(8)
    server.settimeout(20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "alt_router.bgp.bridge", "--socket", str(sock_path), "--buffer", "200",
         "--buffer-bytes", "100000", "--write-high", "65536"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stalled = []
    try:
        stalled.append(server.accept()[0])  # a daemon that accepts and then never reads
        line = b"u" * 499 + b"\n"
        written = threading.Event()

        def exabgp() -> None:
            assert proc.stdin is not None
            for _ in range(20):  # 10 MB: far more than every buffer on the way holds
                proc.stdin.write(line * 1000)
                proc.stdin.flush()
            written.set()

        writer = threading.Thread(target=exabgp, daemon=True)
        writer.start()
        assert written.wait(60), "the bridge stopped reading ExaBGP while the daemon did not read"
        marker = b"marker\n"
        proc.stdin.write(marker)
        proc.stdin.flush()
        # The bridge gave up on the stalled connection (and maybe on more, while we were not
        # reading them either); the connection that carries the marker says lines were dropped.
        while True:
            conn, _ = server.accept()
            conn.settimeout(20)
            lines = _lines_until_eof_or(conn, marker)
            conn.close()
            if lines and lines[-1] == marker:
                break
        hello = Hello.parse(lines[0].decode().strip())
        assert hello.dropped > 0
        assert lines[1] == REPLAYED.encode() + b"\n"
        assert set(lines[2:-1]) <= {line}
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert b"not keeping up" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for conn in stalled:
            conn.close()
        server.close()
