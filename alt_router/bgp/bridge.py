"""The API bridge: ExaBGP's ``process`` that relays between ExaBGP and the alt-router daemon.

ExaBGP writes JSON lines to the bridge's stdin and reads commands from its
stdout; the daemon listens on a unix socket in its state dir.  The bridge lives
as long as ExaBGP does, so it is what carries session state across a daemon
restart:

* While the daemon is away, lines from ExaBGP are buffered (bounded: the oldest
  go first, and are counted) and sent when it is back.
* It remembers the last ``state`` and received ``open`` line of every neighbor.
  On each connection it sends, in order: a ``#hello`` line (JSON: pid, lines
  dropped so far, lines buffered, lines replayed), the remembered lines, a
  ``#replayed`` line, then the buffer, then live traffic.  A fresh daemon thus
  learns which sessions are up (and asks those peers for a route refresh)
  without ExaBGP having to reset anything.

Lines from the daemon are written to stdout verbatim.  Lines starting with
``#`` are the bridge's own; ExaBGP never writes one.

Throughput: a full table is a few thousand long lines, so the bridge moves
bytes, not lines: it reads ExaBGP in chunks and, while the daemon is connected,
writes every complete line of a chunk in one go, splitting only to remember
``state``/``open`` lines.  It runs as ``python -m alt_router.bgp.bridge`` and
imports only the standard library, so ExaBGP (which blocks writing to us) is
not kept waiting by a slow start, and it costs a fraction of the CLI's memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "bridge.sock"
DEFAULT_BUFFER = 100_000
RETRY_INTERVAL = 0.5
# ExaBGP writes one line per UPDATE; with thousands of NLRI it is long, but bounded.
MAX_LINE = 16 * 1024 * 1024
READ_CHUNK = 1 << 20
HELLO = "#hello"
REPLAYED = "#replayed"


@dataclass(frozen=True, slots=True)
class Hello:
    pid: int
    dropped: int
    buffered: int
    replayed: int

    def line(self) -> str:
        return f"{HELLO} " + json.dumps(
            {"pid": self.pid, "dropped": self.dropped, "buffered": self.buffered, "replayed": self.replayed}
        )

    @classmethod
    def parse(cls, line: str) -> Hello:
        """The inverse of ``line``; ValueError if ``line`` is not a hello."""
        if not line.startswith(HELLO + " "):
            raise ValueError(f"not a bridge hello: {line[:60]!r}")
        try:
            d = json.loads(line[len(HELLO) + 1:])
            return cls(int(d["pid"]), int(d["dropped"]), int(d["buffered"]), int(d["replayed"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed bridge hello: {exc}") from None


class LineBuffer:
    """A bounded FIFO of lines that counts what it had to drop (pure)."""

    def __init__(self, capacity: int = DEFAULT_BUFFER) -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self.capacity = capacity
        self._lines: deque[bytes] = deque()
        self.dropped = 0

    def push(self, line: bytes) -> None:
        if len(self._lines) >= self.capacity:
            # The oldest go first: the daemon asks for a route refresh on reconnect, which
            # repairs lost updates, while the newest lines carry the current session states.
            self._lines.popleft()
            self.dropped += 1
        self._lines.append(line)

    def drain(self) -> list[bytes]:
        lines = list(self._lines)
        self._lines.clear()
        return lines

    def __len__(self) -> int:
        return len(self._lines)


class LineSplitter:
    """Cuts a byte stream into runs of complete lines, dropping lines longer than ``limit`` (pure)."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._skipping = False
        self._oversize = 0

    def feed(self, chunk: bytes) -> bytes:
        """The complete lines ``chunk`` finishes (b"" if none), joined, newlines kept."""
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._hold(chunk)
            return b""
        head, rest = chunk[:cut + 1], chunk[cut + 1:]
        if self._skipping:
            # The rest of an oversize line: drop up to its newline.
            first = head.find(b"\n")
            head = head[first + 1:]
            self._skipping = False
        elif self._partial:
            self._partial.append(head)
            head = b"".join(self._partial)
            self._partial.clear()
            self._partial_len = 0
        self._hold(rest)
        return head

    def _hold(self, data: bytes) -> None:
        if self._skipping or not data:
            return
        self._partial.append(data)
        self._partial_len += len(data)
        if self._partial_len > self.limit:
            # Skip the monster line rather than die: ExaBGP would respawn us into the same line.
            self._partial.clear()
            self._partial_len = 0
            self._skipping = True
            self._oversize += 1

    def take_oversize(self) -> int:
        """Lines dropped for length since the last call."""
        n, self._oversize = self._oversize, 0
        return n

    def finish(self) -> bytes:
        """What is left at end of input, as a line (a newline added), or b""."""
        data = b"" if self._skipping else b"".join(self._partial)
        self._partial.clear()
        self._partial_len = 0
        return data + b"\n" if data else b""


class SessionMemory:
    """The last ``state`` and received ``open`` line per neighbor, for replay to a new daemon (pure)."""

    def __init__(self) -> None:
        self._lines: dict[tuple[str, str], bytes] = {}

    @staticmethod
    def interesting(data: bytes) -> bool:
        """Could ``data`` (one line or many) hold a line ``observe`` keeps?"""
        return b'"type": "state"' in data or b'"type": "open"' in data

    def observe(self, line: bytes) -> None:
        # Cheap substring test first: nearly every line is an update, and those are long.
        if not self.interesting(line[:400]):
            return
        try:
            msg = json.loads(line)
            neighbor = msg["neighbor"]
            peer = str(neighbor["address"]["peer"])
        except (ValueError, KeyError, TypeError):
            return
        if msg.get("type") == "state":
            self._lines[(peer, "state")] = line
        elif msg.get("type") == "open" and neighbor.get("direction") == "receive":
            self._lines[(peer, "open")] = line

    def replay(self) -> list[bytes]:
        """Open before state for each neighbor, as ExaBGP itself sends them."""
        out: list[bytes] = []
        for peer in sorted({p for p, _ in self._lines}):
            for kind in ("open", "state"):
                line = self._lines.get((peer, kind))
                if line is not None:
                    out.append(line)
        return out


class Bridge:
    """The asyncio edge: stdin/stdout pipes to ExaBGP, a reconnecting unix socket to the daemon."""

    def __init__(self, socket_path: Path, capacity: int = DEFAULT_BUFFER,
                 retry_interval: float = RETRY_INTERVAL) -> None:
        self.socket_path = socket_path
        self.buffer = LineBuffer(capacity)
        self.memory = SessionMemory()
        self.retry_interval = retry_interval
        self.connections = 0
        self._daemon: asyncio.StreamWriter | None = None
        self._stdout: asyncio.StreamWriter | None = None
        self._eof = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader(limit=READ_CHUNK)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, sys.stdout.buffer
        )
        self._stdout = asyncio.StreamWriter(transport, protocol, None, loop)
        connector = loop.create_task(self._connect_loop())
        try:
            await self._read_exabgp(stdin)
        finally:
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connector
            if self._daemon is not None:
                self._daemon.close()
        log.info("ExaBGP closed our stdin; bridge exiting (%d lines dropped in all)", self.buffer.dropped)
        return 0

    async def _read_exabgp(self, stdin: asyncio.StreamReader) -> None:
        splitter = LineSplitter()
        while True:
            chunk = await stdin.read(READ_CHUNK)
            if not chunk:
                tail = splitter.finish()
                if tail:
                    await self._from_exabgp(tail)
                return
            lines = splitter.feed(chunk)
            self.buffer.dropped += splitter.take_oversize()
            if lines:
                await self._from_exabgp(lines)

    async def _from_exabgp(self, lines: bytes) -> None:
        """Relay complete lines (one or many, each ending in a newline) to the daemon or the buffer."""
        if SessionMemory.interesting(lines):
            for line in lines.splitlines(keepends=True):
                self.memory.observe(line)
        writer = self._daemon
        if writer is not None:
            try:
                writer.write(lines)
                await writer.drain()
                return
            except (ConnectionError, OSError):
                self._daemon = None
        for line in lines.splitlines(keepends=True):
            self.buffer.push(line)

    async def _connect_loop(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path), limit=MAX_LINE)
            except (FileNotFoundError, ConnectionError, OSError):
                await asyncio.sleep(self.retry_interval)
                continue
            try:
                await self._serve(reader, writer)
            except (ConnectionError, OSError) as exc:
                log.warning("connection to the daemon lost: %s", exc)
            finally:
                self._daemon = None
                writer.close()
            await asyncio.sleep(self.retry_interval)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        replay = self.memory.replay()
        hello = Hello(os.getpid(), self.buffer.dropped, len(self.buffer), len(replay))
        writer.write(hello.line().encode() + b"\n")
        for line in replay:
            writer.write(line)
        writer.write(REPLAYED.encode() + b"\n")
        await writer.drain()
        # Lines that arrive while we drain land in the buffer too; empty it until it stays
        # empty, and only then let live lines go straight through, so none overtakes the buffer.
        while len(self.buffer):
            for line in self.buffer.drain():
                writer.write(line)
            await writer.drain()
        self._daemon = writer
        log.info("connected to the daemon at %s (%s)", self.socket_path, hello.line())
        while True:
            try:
                command = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                return
            assert self._stdout is not None
            self._stdout.write(command)
            await self._stdout.drain()


def run_bridge(socket_path: Path, capacity: int = DEFAULT_BUFFER) -> int:
    return asyncio.run(Bridge(socket_path, capacity).run())


def main(argv: list[str] | None = None) -> int:
    """``python -m alt_router.bgp.bridge --socket PATH``: what the daemon has ExaBGP run."""
    ap = argparse.ArgumentParser(prog="python -m alt_router.bgp.bridge",
                                 description="ExaBGP API process: relay ExaBGP <-> the alt-router daemon")
    ap.add_argument("--socket", type=Path, required=True, help="the daemon's bridge socket")
    ap.add_argument("--buffer", type=int, default=DEFAULT_BUFFER, help="lines kept while the daemon is away")
    args = ap.parse_args(argv)
    if args.buffer < 1:
        ap.error("--buffer must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bridge %(levelname)s %(message)s")
    return run_bridge(args.socket, args.buffer)


if __name__ == "__main__":
    sys.exit(main())
