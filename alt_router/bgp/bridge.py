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

Never block ExaBGP.  ExaBGP writes to its API processes with blocking writes
from its single reactor thread, so a bridge that stops reading its stdin stops
ExaBGP's keepalives too, and every session's hold timer runs out.  The bridge
therefore reads stdin whatever the daemon does, and nothing it writes to the
daemon is ever waited for on that path: lines go straight into the socket while
the daemon keeps up (at most ``WRITE_HIGH`` bytes waiting in the transport), else
into the bounded buffer, which a sender task empties as the daemon reads.  If
the buffer overflows while the daemon is connected (a daemon stalled for longer
than the buffer lasts), lines the daemon will never see were dropped, so the
bridge drops the connection: the reconnection's ``#hello`` reports the loss,
the replayed states resynchronise sessions, and the daemon asks every peer for
a route refresh, which repairs the routes.  Reconnections after such a give-up
back off, so a stalled daemon is not flooded with connections.

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
# With the line cap: ExaBGP's lines can be long (one per UPDATE), so bytes are bounded too.
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
# Bytes the daemon's socket transport may hold before lines go to the buffer instead.
WRITE_HIGH = 1024 * 1024
RETRY_INTERVAL = 0.5
# Reconnection delay after a give-up doubles up to this (reset once a connection keeps up).
MAX_RETRY_INTERVAL = 8.0
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
    """A FIFO of lines bounded in lines and in bytes, that counts what it had to drop (pure)."""

    def __init__(self, capacity: int = DEFAULT_BUFFER, max_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        if max_bytes < 1:
            raise ValueError("buffer size must be at least 1 byte")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._lines: deque[bytes] = deque()
        self._bytes = 0
        self.dropped = 0

    def push(self, line: bytes) -> None:
        self._lines.append(line)
        self._bytes += len(line)
        # The oldest go first: the daemon asks for a route refresh on reconnect, which
        # repairs lost updates, while the newest lines carry the current session states.
        # The line just pushed stays, even alone over max_bytes (the splitter caps lines).
        while len(self._lines) > 1 and (len(self._lines) > self.capacity or self._bytes > self.max_bytes):
            self._bytes -= len(self._lines.popleft())
            self.dropped += 1

    def drain(self) -> list[bytes]:
        lines = list(self._lines)
        self._lines.clear()
        self._bytes = 0
        return lines

    def take(self, max_bytes: int) -> list[bytes]:
        """The oldest lines, at least one if any, up to about ``max_bytes`` in all."""
        lines = self._lines
        out: list[bytes] = []
        size = 0
        while lines and (not out or size + len(lines[0]) <= max_bytes):
            line = lines.popleft()
            out.append(line)
            size += len(line)
        self._bytes -= size
        return out

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

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
                 retry_interval: float = RETRY_INTERVAL, *, max_bytes: int = DEFAULT_BUFFER_BYTES,
                 write_high: int = WRITE_HIGH) -> None:
        self.socket_path = socket_path
        self.buffer = LineBuffer(capacity, max_bytes)
        self.memory = SessionMemory()
        self.retry_interval = retry_interval
        self.write_high = write_high
        self.connections = 0
        # Connections dropped because the daemon fell behind by more than the buffer holds.
        self.give_ups = 0
        self._retry = retry_interval
        self._daemon: asyncio.StreamWriter | None = None
        self._dropped_at_hello = 0
        self._pending = asyncio.Event()
        self._stdout: asyncio.StreamWriter | None = None

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
        # The only await on this path is the read itself (see the module docstring).
        splitter = LineSplitter()
        while True:
            chunk = await stdin.read(READ_CHUNK)
            if not chunk:
                tail = splitter.finish()
                if tail:
                    self.from_exabgp(tail)
                return
            lines = splitter.feed(chunk)
            self.buffer.dropped += splitter.take_oversize()
            if lines:
                self.from_exabgp(lines)

    def from_exabgp(self, lines: bytes) -> None:
        """Relay complete lines (one or many, each ending in a newline); never waits."""
        if SessionMemory.interesting(lines):
            for line in lines.splitlines(keepends=True):
                self.memory.observe(line)
        writer = self._daemon
        if writer is not None and writer.transport.is_closing():
            self._daemon = writer = None
        if (writer is not None and not len(self.buffer)
                and writer.transport.get_write_buffer_size() < self.write_high):
            writer.write(lines)
            if not writer.transport.is_closing():
                return
            # The send failed at once (the daemon has gone): keep the lines for the next one.
            self._daemon = writer = None
        for line in lines.splitlines(keepends=True):
            self.buffer.push(line)
        if writer is None:
            return
        if self.buffer.dropped > self._dropped_at_hello:
            self._give_up(writer)
        else:
            self._pending.set()

    def _give_up(self, writer: asyncio.StreamWriter) -> None:
        """The daemon fell behind by more than the buffer: reconnect, so it learns and resyncs."""
        self.give_ups += 1
        self._daemon = None
        self._retry = min(MAX_RETRY_INTERVAL, max(self.retry_interval, self._retry * 2))
        log.warning("the daemon is not keeping up (%d lines dropped in all); reconnecting in %.1fs so it "
                    "resynchronises", self.buffer.dropped, self._retry)
        writer.transport.abort()

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
                if self._daemon is writer:
                    self._daemon = None
                writer.close()
            await asyncio.sleep(self._retry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.transport.set_write_buffer_limits(high=self.write_high)
        replay = self.memory.replay()
        hello = Hello(os.getpid(), self.buffer.dropped, len(self.buffer), len(replay))
        writer.write(hello.line().encode() + b"\n")
        for line in replay:
            writer.write(line)
        writer.write(REPLAYED.encode() + b"\n")
        # From here on lines go to this connection, the buffered ones first (the sender),
        # and any drop is one the hello did not announce.
        self._dropped_at_hello = self.buffer.dropped
        self._daemon = writer
        self._pending.set()
        sender = asyncio.get_running_loop().create_task(self._send_buffered(writer))
        log.info("connected to the daemon at %s (%s)", self.socket_path, hello.line())
        try:
            while True:
                try:
                    command = await reader.readuntil(b"\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                assert self._stdout is not None
                self._stdout.write(command)
                await self._stdout.drain()
        finally:
            sender.cancel()
            # Not ``suppress(CancelledError)``: that would also swallow our own cancellation.
            await asyncio.wait([sender])

    async def _send_buffered(self, writer: asyncio.StreamWriter) -> None:
        """Move buffered lines into the connection as fast as the daemon reads them."""
        try:
            while self._daemon is writer:
                await self._pending.wait()
                self._pending.clear()
                while len(self.buffer) and self._daemon is writer:
                    await writer.drain()
                    if self._daemon is not writer:
                        return
                    writer.write(b"".join(self.buffer.take(self.write_high)))
                if self._daemon is writer:
                    # The daemon has caught up: the next give-up starts from the short delay.
                    self._retry = self.retry_interval
        except (ConnectionError, OSError):
            return

    def stats(self) -> dict[str, int]:
        return {"connections": self.connections, "give_ups": self.give_ups, "dropped": self.buffer.dropped,
                "buffered": len(self.buffer), "buffered_bytes": self.buffer.size}


def run_bridge(socket_path: Path, capacity: int = DEFAULT_BUFFER, max_bytes: int = DEFAULT_BUFFER_BYTES,
               write_high: int = WRITE_HIGH) -> int:
    return asyncio.run(Bridge(socket_path, capacity, max_bytes=max_bytes, write_high=write_high).run())


def main(argv: list[str] | None = None) -> int:
    """``python -m alt_router.bgp.bridge --socket PATH``: what the daemon has ExaBGP run."""
    ap = argparse.ArgumentParser(prog="python -m alt_router.bgp.bridge",
                                 description="ExaBGP API process: relay ExaBGP <-> the alt-router daemon")
    ap.add_argument("--socket", type=Path, required=True, help="the daemon's bridge socket")
    ap.add_argument("--buffer", type=int, default=DEFAULT_BUFFER,
                    help="lines kept while the daemon is away or behind")
    ap.add_argument("--buffer-bytes", type=int, default=DEFAULT_BUFFER_BYTES,
                    help="bytes kept while the daemon is away or behind")
    ap.add_argument("--write-high", type=int, default=WRITE_HIGH,
                    help="bytes in flight to the daemon before lines are buffered instead")
    args = ap.parse_args(argv)
    if args.buffer < 1 or args.buffer_bytes < 1 or args.write_high < 1:
        ap.error("--buffer, --buffer-bytes and --write-high must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bridge %(levelname)s %(message)s")
    return run_bridge(args.socket, args.buffer, args.buffer_bytes, args.write_high)


if __name__ == "__main__":
    sys.exit(main())
