"""Bounded logging of repeated events: one line per (reason, source) per interval, sans-IO.

An outsider can make a node refuse, drop or expire things as fast as it can send
packets; logging each one lets the same outsider fill the disk and bury the one
line an operator needs.  :class:`LogSummary` lets the first occurrence of each
(reason, source) through at once, then counts the rest and reports them as one
summary line per (reason, source) when the interval has passed.  The number of
distinct keys held between flushes is capped, so the summary itself cannot grow
without bound: keys over the cap are folded into one ``(other sources)`` line.

It reads no clock: callers pass ``now`` (the core's convention) and call
:meth:`flush` from their timer or tick.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DEFAULT_INTERVAL = 10.0
# At most this many lines in full and this many summary lines (+1) per interval, whatever an
# attacker varies: 32 sources are enough to see who is at it, and ~6 lines/s bound the log.
DEFAULT_MAX_KEYS = 32
OTHER_SOURCES = "(other sources)"


@dataclass(slots=True)
class LogSummary:
    """Which repeated events to log now, and the summary lines for the rest."""

    interval: float = DEFAULT_INTERVAL
    max_keys: int = DEFAULT_MAX_KEYS
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _held: Counter[tuple[str, str]] = field(default_factory=Counter)
    _since: float | None = None

    def note(self, reason: str, source: object, now: float) -> bool:
        """Count one event; True when the caller should log it in full (the first of its kind)."""
        if self._since is None:
            self._since = now
        key = (reason, str(source))
        if key in self._seen:
            self._held[key] += 1
            return False
        if len(self._seen) >= self.max_keys:
            self._held[(reason, OTHER_SOURCES)] += 1
            return False
        self._seen.add(key)
        return True

    def due(self, now: float) -> bool:
        return self._since is not None and now - self._since >= self.interval

    def flush(self, now: float, *, force: bool = False) -> list[str]:
        """Summary lines for the events held since the last flush, once the interval is over.

        Forgets the keys it reports on, so the next occurrence is logged in full again.
        """
        if not force and not self.due(now):
            return []
        since = self._since if self._since is not None else now
        lines = [
            f"{count} more {reason} from {source} in the last {now - since:.0f}s"
            for (reason, source), count in sorted(self._held.items())
        ]
        self._seen.clear()
        self._held.clear()
        self._since = None
        return lines

    def __len__(self) -> int:
        return len(self._seen) + len(self._held)
