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
"""

from __future__ import annotations

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


class SessionMemory:
    """The last ``state`` and received ``open`` line per neighbor, for replay to a new daemon (pure)."""

    def __init__(self) -> None:
        self._lines: dict[tuple[str, str], bytes] = {}

    def observe(self, line: bytes) -> None:
        # Cheap substring test first: nearly every line is an update, and those are long.
        if b'"type": "state"' not in line[:400] and b'"type": "open"' not in line[:400]:
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
        stdin = asyncio.StreamReader(limit=MAX_LINE)
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
        while True:
            try:
                line = await stdin.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    await self._from_exabgp(exc.partial + b"\n")
                return
            except asyncio.LimitOverrunError:
                # Skip the monster line rather than die: ExaBGP would respawn us into the same line.
                self.buffer.dropped += 1
                await stdin.readuntil(b"\n")
                continue
            await self._from_exabgp(line)

    async def _from_exabgp(self, line: bytes) -> None:
        self.memory.observe(line)
        writer = self._daemon
        if writer is not None:
            try:
                writer.write(line)
                await writer.drain()
                return
            except (ConnectionError, OSError):
                self._daemon = None
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
