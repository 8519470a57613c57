"""Token buckets for the Map-Resolver: one global, one per source prefix (clock passed in, no timers).

A bucket per source *address* can be sidestepped: an attacker with a /24 (or any
IPv6 /64) simply rotates addresses, and a spoofer rotates over the whole space.
So the Map-Resolver charges each request to the bucket of its source's /24 or
/64 and then to one global bucket; the global bucket bounds the work the node
does (and the replies it sends) whatever the sources, the prefix buckets keep
one heavy prefix from using the whole global budget.  The prefix table is an
LRU of bounded size: a flood of random sources evicts old entries (which then
start again from a full bucket) instead of growing memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from alt_router.types import IPAddress

DEFAULT_MAX_PREFIXES = 16384
IPV4_PREFIX_LEN = 24
IPV6_PREFIX_LEN = 64


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
    """A token bucket per key, for at most ``max_sources`` keys.

    When the table is full the least recently seen key is forgotten: a
    spoofing flood can then only make real sources start again from a full
    bucket, never deny them, and memory stays bounded.
    """

    def __init__(self, rate: float, burst: float, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate {rate} must be > 0 and burst {burst} >= 1")
        if max_sources < 1:
            raise ValueError(f"max_sources {max_sources} must be >= 1")
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


def prefix_key(addr: IPAddress, v4_len: int = IPV4_PREFIX_LEN, v6_len: int = IPV6_PREFIX_LEN) -> int:
    """One int naming ``addr``'s /``v4_len`` or /``v6_len``, the family in the low bit (cheap to store)."""
    if addr.version == 4:
        return (int(addr) >> (32 - v4_len)) << 1
    return ((int(addr) >> (128 - v6_len)) << 1) | 1


class SourceLimits:
    """The Map-Resolver's admission control: a bucket per source prefix, then a global bucket.

    ``admit`` charges one incoming request; ``admit_reply`` charges a reply the
    resolver itself sends to an address taken from inside the request (a
    negative Map-Reply or an ICMP error to the ITR-RLOC): that address is not
    the one the request came from, so without this charge a spoofed flood
    could aim every reply at one victim.  A reply to the request's own source
    prefix is not charged twice.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        global_rate: float,
        global_burst: float,
        max_prefixes: int = DEFAULT_MAX_PREFIXES,
        v4_len: int = IPV4_PREFIX_LEN,
        v6_len: int = IPV6_PREFIX_LEN,
        now: float = 0.0,
    ) -> None:
        if global_rate <= 0 or global_burst < 1:
            raise ValueError(f"global rate {global_rate} must be > 0 and burst {global_burst} >= 1")
        if not (0 <= v4_len <= 32 and 0 <= v6_len <= 128):
            raise ValueError(f"prefix lengths /{v4_len} and /{v6_len} out of range")
        self.prefixes = RateLimiter(rate, burst, max_prefixes)
        self.global_bucket = TokenBucket(global_rate, global_burst, now)
        self.v4_len = v4_len
        self.v6_len = v6_len

    def key(self, addr: IPAddress) -> int:
        return prefix_key(addr, self.v4_len, self.v6_len)

    def admit(self, source: IPAddress, now: float) -> str | None:
        """None when the request from ``source`` may be served, else the refusal reason."""
        # The prefix first: a prefix over its budget must not also drain the global bucket.
        if not self.prefixes.allow(self.key(source), now):
            return "prefix"
        if not self.global_bucket.take(now):
            return "global"
        return None

    def admit_reply(self, destination: IPAddress, request_source: IPAddress, now: float) -> bool:
        """Whether a reply to ``destination`` (for a request from ``request_source``) may be sent."""
        key = self.key(destination)
        if key == self.key(request_source):
            return True
        return self.prefixes.allow(key, now)

    def __len__(self) -> int:
        return len(self.prefixes)

    @property
    def evicted(self) -> int:
        return self.prefixes.evicted
