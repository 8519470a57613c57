"""RIB events and the stream that publishes them.

The stream keeps a bounded history with monotonically increasing sequence
numbers so an API client that lost its connection can resume from the last
sequence it saw, as long as that is still in the buffer; otherwise it gets a
``StreamGap`` and must re-read the whole table.  Subscribers are plain
callbacks; the asyncio edge adapts them to queues.  Nothing here does I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from alt_router.rib.aggregate import AggregateRoute
from alt_router.rib.paths import Path
from alt_router.types import Prefix

ChangeKind = Literal["add", "change", "withdraw"]


@dataclass(frozen=True, slots=True)
class RouteChange:
    """The best path for ``key`` changed: ``old`` is None for an add, ``new`` None for a withdraw.

    ``key`` is the prefix as canonical text; ``prefix`` builds the object (see ``Path``).
    """

    kind: ChangeKind
    key: str
    old: Path | None
    new: Path | None

    @property
    def prefix(self) -> Prefix:
        path = self.new if self.new is not None else self.old
        assert path is not None  # the RIB never emits a change without a path
        return path.prefix


@dataclass(frozen=True, slots=True)
class PeerUp:
    peer: str
    at: float


@dataclass(frozen=True, slots=True)
class PeerDown:
    peer: str
    reason: str
    at: float


AggregateKind = Literal["originate", "change", "withdraw"]


@dataclass(frozen=True, slots=True)
class AggregateEvent:
    """The node started originating the aggregate ``prefix``, changed its attributes, or withdrew it.

    ``route`` (None for a withdraw) carries the attributes peers see: ORIGIN, the AS_SET or
    ATOMIC_AGGREGATE (RFC 4271 §9.2.2.2).
    """

    kind: AggregateKind
    prefix: Prefix
    route: AggregateRoute | None


Event = RouteChange | PeerUp | PeerDown | AggregateEvent


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    event: Event


class StreamGap(ValueError):  # noqa: N818 - reads better at the call site than StreamGapError
    """The requested sequence number has already left the history buffer."""

    def __init__(self, requested: int, oldest: int) -> None:
        self.requested = requested
        self.oldest = oldest
        super().__init__(f"cannot resume after seq {requested}: the oldest event kept is seq {oldest}")


Subscriber = Callable[[Record], None]


class EventStream:
    """Bounded, sequenced event history with subscriber callbacks.

    The history holds the bare events, not ``Record``s: the sequence number of
    each follows from its position, and a full-table load publishes a million
    events that nobody may ever ask for again.  Records are built for
    subscribers and for ``since``.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._history: deque[Event] = deque(maxlen=capacity)
        self._next_seq = 1
        self._subscribers: list[Subscriber] = []
        self.subscriber_errors = 0

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest event (0 before the first)."""
        return self._next_seq - 1

    @property
    def oldest_seq(self) -> int:
        """Sequence number of the oldest event still kept (last_seq + 1 when empty)."""
        return self._next_seq - len(self._history)

    def publish(self, event: Event) -> Record:
        record = Record(self._next_seq, event)
        self._next_seq += 1
        self._history.append(event)
        self._notify(record)
        return record

    def publish_quiet(self, event: Event) -> None:
        """``publish`` without building the Record when nobody subscribes (the bulk path)."""
        if self._subscribers:
            self.publish(event)
            return
        self._next_seq += 1
        self._history.append(event)

    def _notify(self, record: Record) -> None:
        for callback in list(self._subscribers):
            try:
                callback(record)
            except Exception:
                # One broken subscriber (a closed API client) must not stop the RIB or the others.
                self.subscriber_errors += 1

    def since(self, seq: int, limit: int | None = None) -> list[Record]:
        """Every record with a sequence number greater than ``seq`` (at most ``limit`` of them, oldest
        first); StreamGap if some are gone.  ``limit`` lets a replay walk the history in batches
        instead of holding a Record per kept event per client."""
        if seq >= self.last_seq:
            return []
        oldest = self.oldest_seq
        if seq + 1 < oldest:
            raise StreamGap(seq, oldest)
        start = max(0, seq + 1 - oldest)
        history = self._history
        end = len(history) if limit is None else min(len(history), start + max(0, limit))
        return [Record(oldest + i, history[i]) for i in range(start, end)]

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` for every future record; returns the function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def __len__(self) -> int:
        return len(self._history)


class BoundedQueue:
    """A subscriber that buffers up to ``maxlen`` records and flags overflow instead of growing.

    An overflowed client has missed events and must resync (re-read the table).
    """

    def __init__(self, maxlen: int = 1000) -> None:
        self._items: deque[Record] = deque()
        self.maxlen = maxlen
        self.overflowed = False

    def __call__(self, record: Record) -> None:
        if len(self._items) >= self.maxlen:
            self.overflowed = True
            return
        self._items.append(record)

    def drain(self) -> list[Record]:
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)
