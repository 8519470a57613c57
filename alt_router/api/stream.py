"""The live stream: RIB events as Server-Sent Events, one bounded queue per client.

Each client subscribes to the ``EventStream`` with a queue of at most
``queue_size`` records (references to records the history holds anyway, so a
queue costs pointers, not copies).  Publishing only appends and wakes the
writer, so a slow client never slows the node.  A client whose queue fills is
dropped: its queue is freed and unsubscribed at once, it gets a ``gap`` event
if its connection can still take one, and otherwise its connection is aborted.
It can reconnect with ``Last-Event-ID`` and resume from the history.
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
DEFAULT_HEARTBEAT = 15.0
# Records formatted per wake-up, so one client catching up on a long backlog yields to the loop.
BATCH = 500

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


class StreamSession:
    """One connected client: its backlog, its bounded queue, and whether it was dropped."""

    def __init__(self, hub: StreamHub, queue_size: int) -> None:
        self._hub = hub
        self._queue: deque[Record] = deque()
        self._queue_size = queue_size
        self._backlog: deque[Record] = deque()
        self._pending: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self.overflowed = False
        self.closed = False
        # Set by the HTTP edge while a write is in flight, with how to abort the connection:
        # an overflow during a blocked write means the client stopped reading.
        self.writing = False
        self.abort: Callable[[], None] | None = None

    def start(self, since: int | None) -> None:
        events = self._hub.events
        # Subscribe before reading the history: both happen without yielding, so
        # every record lands in exactly one of backlog or queue.
        self._unsubscribe = events.subscribe(self._on_record)
        if since is None:
            return
        if since > events.last_seq:
            # A seq from before a node restart (numbering starts again at 1).
            self._pending.append(gap_frame("unknown-seq", since, events.oldest_seq, events.last_seq))
            return
        try:
            self._backlog.extend(events.since(since))
        except StreamGap as gap:
            self._pending.append(gap_frame("evicted", gap.requested, gap.oldest, events.last_seq))

    def _on_record(self, record: Record) -> None:
        if self.closed:
            return
        if len(self._queue) >= self._queue_size:
            self._overflow()
            return
        self._queue.append(record)
        self._hub.note_depth(len(self._queue))
        self._wake.set()

    def _overflow(self) -> None:
        self.overflowed = True
        self._queue.clear()
        self._detach()
        self._hub.dropped += 1
        self._wake.set()
        if self.writing and self.abort is not None:
            self.abort()

    def _detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._backlog.clear()
        self._detach()
        self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

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
            source = self._backlog if self._backlog else self._queue
            if source:
                n = min(BATCH, len(source))
                return b"".join(record_frame(source.popleft()) for _ in range(n))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), heartbeat)
            except TimeoutError:
                return KEEPALIVE


class StreamHub:
    """Every stream client of one server, and the counts the API and metrics report."""

    def __init__(self, events: EventStream, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.events = events
        self.queue_size = queue_size
        self.sessions: set[StreamSession] = set()
        self.dropped = 0
        self.served = 0
        self.max_depth = 0

    def open(self, since: int | None) -> StreamSession:
        session = StreamSession(self, self.queue_size)
        session.start(since)
        self.sessions.add(session)
        self.served += 1
        return session

    def release(self, session: StreamSession) -> None:
        session.close()
        self.sessions.discard(session)

    def note_depth(self, depth: int) -> None:
        self.max_depth = max(self.max_depth, depth)

    def close_all(self) -> None:
        for session in list(self.sessions):
            session.close()

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self.sessions),
            "served": self.served,
            "dropped": self.dropped,
            "queue_size": self.queue_size,
            "max_depth": self.max_depth,
            "last_seq": self.events.last_seq,
            "oldest_seq": self.events.oldest_seq,
        }
