"""Per-source token buckets for the Map-Resolver (clock passed in, no timers)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; one token per request."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        # A clock that steps backwards (a test, an NTP slew) must not mint tokens.
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class RateLimiter:
    """A token bucket per source, for at most ``max_sources`` sources.

    When the table is full the least recently seen source is forgotten: a
    spoofing flood can then only make real sources start again from a full
    bucket, never deny them, and memory stays bounded.
    """

    def __init__(self, rate: float, burst: float, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate {rate} must be > 0 and burst {burst} >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self.evicted = 0

    def allow(self, source: Hashable, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._buckets.popitem(last=False)
                self.evicted += 1
            bucket = self._buckets[source] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(source)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)
