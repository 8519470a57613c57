"""The bridge's byte relay: line framing over chunks, and the standalone ``python -m`` entry point."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from alt_router.bgp.bridge import REPLAYED, Hello, LineSplitter, SessionMemory


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
