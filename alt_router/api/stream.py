"""The live stream: RIB events as Server-Sent Events, encoded once, shared by every client.

The hub is the only subscriber of the ``EventStream`` (and only while a client
is connected): it encodes each record to its SSE frame once and hands the same
``bytes`` object to every client's queue, so a client costs a bounded deque of
references, never a copy of the events.  A client whose queue reaches
``queue_size`` frames is dropped at once: its queue is cleared (the frames stay
alive only while another client still holds them), it is told with a ``gap``
event if its connection can still take one, and otherwise its connection is
aborted.  It can reconnect with ``Last-Event-ID`` and resume from the history;
a resume walks the history in batches, so it holds no per-event state either.

At most ``max_clients`` streams are open at once: the next one is refused
(``StreamFull``, an HTTP 503) and counted.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from alt_router.api.view import event_dict
from alt_router.rib.events import EventStream, Record, StreamGap

DEFAULT_QUEUE_SIZE = 10_000
# Each client costs at most its queue of references (80 KiB at 10,000), what aiohttp buffers before
# it waits for the socket (~64 KiB + one chunk) and its kernel send buffer (STREAM_SNDBUF): about
# 300 KiB in the worst case, so 64 clients stay under 20 MiB.  A handful is the usual need.
DEFAULT_MAX_CLIENTS = 64
DEFAULT_HEARTBEAT = 15.0
# Records read from the history per replay step (encoded until CHUNK_BYTES), so one client
# catching up yields to the loop and holds one chunk at a time.
BATCH = 64
# At most this many bytes per write: a bigger chunk would sit whole in the transport's buffer of a
# client that stopped reading (aiohttp waits for the socket only after the write).
CHUNK_BYTES = 16 * 1024

KEEPALIVE = b": keepalive\n\n"


def sse_frame(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    # json.dumps never emits a raw newline, so the data fits on one SSE line.
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


def record_frame(record: Record) -> bytes:
    name, data = event_dict(record)
    return sse_frame(name, data, record.seq)


def gap_frame(reason: str, requested: int | None, oldest: int, last_seq: int) -> bytes:
    """Tell the client it missed events: re-read the tables, then carry on from ``last_seq``."""
    data = {"reason": reason, "requested": requested, "oldest": oldest, "last_seq": last_seq}
    return sse_frame("gap", data, last_seq)


class StreamFull(Exception):  # noqa: N818 - reads better at the call site
    """Every stream slot is taken."""


class StreamSession:
    """One connected client: where its replay stands, its bounded queue of shared frames, its state."""

    __slots__ = ("_hub", "_pending", "_queue", "_queue_size", "_replay_end", "_replay_next", "_wake",
                 "abort", "closed", "overflowed", "writing")

    def __init__(self, hub: StreamHub, queue_size: int) -> None:
        self._hub = hub
        self._queue: deque[bytes] = deque()
        self._queue_size = queue_size
        # The history still to replay: seq _replay_next .. _replay_end (inclusive); none if next > end.
        self._replay_next = 1
        self._replay_end = 0
        self._pending: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.overflowed = False
        self.closed = False
        # Set by the HTTP edge while a write is in flight, with how to abort the connection:
        # an overflow during a blocked write means the client stopped reading.
        self.writing = False
        self.abort: Callable[[], None] | None = None

    def start(self, since: int | None) -> None:
        # Called by the hub without yielding between this and its subscription: every event up to
        # last_seq comes from the history, every later one from push().
        events = self._hub.events
        if since is None:
            return
        if since > events.last_seq:
            # A seq from before a node restart (numbering starts again at 1).
            self._pending.append(gap_frame("unknown-seq", since, events.oldest_seq, events.last_seq))
            return
        if since + 1 < events.oldest_seq:
            self._pending.append(gap_frame("evicted", since, events.oldest_seq, events.last_seq))
            return
        self._replay_next, self._replay_end = since + 1, events.last_seq

    def push(self, frame: bytes) -> None:
        if self.closed or self.overflowed:
            return
        if len(self._queue) >= self._queue_size:
            self._overflow()
            return
        self._queue.append(frame)
        self._hub.note_depth(len(self._queue))
        self._wake.set()

    def _overflow(self) -> None:
        self.overflowed = True
        self._queue.clear()
        self._replay_next, self._replay_end = 1, 0
        self._hub.dropped += 1
        self._wake.set()
        if self.writing and self.abort is not None:
            self.abort()

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._pending.clear()
        self._replay_next, self._replay_end = 1, 0
        self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def _replay(self) -> bytes | None:
        events = self._hub.events
        try:
            want = min(BATCH, self._replay_end - self._replay_next + 1)
            records = events.since(self._replay_next - 1, want)
        except StreamGap as gap:
            # The history moved on while this client was catching up.
            self._replay_next, self._replay_end = 1, 0
            return gap_frame("evicted", gap.requested, gap.oldest, events.last_seq)
        if not records:
            self._replay_next, self._replay_end = 1, 0
            return None
        parts: list[bytes] = []
        size = 0
        for record in records:
            frame = record_frame(record)
            parts.append(frame)
            size += len(frame)
            self._replay_next = record.seq + 1
            if size >= CHUNK_BYTES:
                break
        return b"".join(parts)

    def _take_queued(self) -> bytes:
        queue = self._queue
        parts = [queue.popleft()]
        size = len(parts[0])
        while queue and size + len(queue[0]) <= CHUNK_BYTES:
            frame = queue.popleft()
            parts.append(frame)
            size += len(frame)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def next_chunk(self, heartbeat: float) -> bytes | None:
        """The next bytes to send (a keepalive after ``heartbeat`` idle seconds); None: end the response."""
        while True:
            if self._pending:
                return self._pending.popleft()
            if self.closed:
                return None
            if self.overflowed:
                self.close()
                events = self._hub.events
                return gap_frame("overflow", None, events.oldest_seq, events.last_seq)
            if self._replay_next <= self._replay_end:
                chunk = self._replay()
                if chunk is not None:
                    return chunk
                continue
            if self._queue:
                return self._take_queued()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), heartbeat)
            except TimeoutError:
                return KEEPALIVE


class StreamHub:
    """Every stream client of one server, the one subscription that feeds them, and their counts."""

    def __init__(self, events: EventStream, queue_size: int = DEFAULT_QUEUE_SIZE,
                 max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.events = events
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.sessions: set[StreamSession] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self.dropped = 0
        self.refused = 0
        self.served = 0
        self.encoded = 0
        self.max_depth = 0

    def open(self, since: int | None) -> StreamSession:
        """A new session; StreamFull (counted in ``refused``) when ``max_clients`` are connected."""
        if len(self.sessions) >= self.max_clients:
            self.refused += 1
            raise StreamFull(f"{self.max_clients} stream clients are connected, the most this node serves")
        session = StreamSession(self, self.queue_size)
        session.start(since)
        self.sessions.add(session)
        if self._unsubscribe is None:
            self._unsubscribe = self.events.subscribe(self._on_record)
        self.served += 1
        return session

    def _on_record(self, record: Record) -> None:
        frame = record_frame(record)
        self.encoded += 1
        for session in self.sessions:
            session.push(frame)

    def release(self, session: StreamSession) -> None:
        session.close()
        self.sessions.discard(session)
        if not self.sessions and self._unsubscribe is not None:
            # Nobody listens: publishing must cost the RIB nothing, not even an encoding.
            self._unsubscribe()
            self._unsubscribe = None

    def note_depth(self, depth: int) -> None:
        self.max_depth = max(self.max_depth, depth)

    def close_all(self) -> None:
        for session in list(self.sessions):
            session.close()

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self.sessions),
            "max_clients": self.max_clients,
            "served": self.served,
            "dropped": self.dropped,
            "refused": self.refused,
            "encoded": self.encoded,
            "queue_size": self.queue_size,
            "max_depth": self.max_depth,
            "last_seq": self.events.last_seq,
            "oldest_seq": self.events.oldest_seq,
        }
