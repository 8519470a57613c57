"""The EID-prefix of a negative Map-Reply (RFC 6833 §4.3).

The Map-Resolver answers a request for an EID the ALT has no route for with the
*least specific* prefix that contains the EID and overlaps no routed prefix: a
longer one makes the ITR ask again for its neighbours, a shorter one would hide
an EID prefix that does exist.

With no routed prefix covering the EID, ``EID/L`` overlaps a routed prefix ``p``
exactly when ``L`` is at most the common prefix length of the EID and ``p``'s
network address, so the answer is one bit longer than the largest such common
length.  On sorted network addresses that maximum is reached by the EID's
predecessor or successor, so a look-up is two bisections.

:class:`PrefixIndex` is built once from a snapshot (the Map-Resolver rebuilds it when
the RIB changes); :class:`PrefixSet` is kept up to date one prefix at a time (the
Map-Server's registered and configured prefixes).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Final

from alt_router.types import IPAddress, Prefix


def _common_len(a: int, b: int, bits: int) -> int:
    return bits - (a ^ b).bit_length()


class PrefixIndex:
    """Routed prefixes, sorted per family, for negative-reply prefix computation."""

    def __init__(self, prefixes: Iterable[Prefix]) -> None:
        v4: set[int] = set()
        v6: set[int] = set()
        for p in prefixes:
            (v4 if p.version == 4 else v6).add(int(p.network_address))
        self._nets = {4: sorted(v4), 6: sorted(v6)}

    def uncovered(self, eid: IPAddress) -> Prefix:
        """The least specific prefix containing ``eid`` that overlaps no indexed prefix.

        The caller has established that no indexed prefix covers ``eid`` (the
        LPM look-up missed); otherwise the result is the host route.
        """
        bits = 32 if eid.version == 4 else 128
        nets = self._nets[eid.version]
        x = int(eid)
        i = bisect_left(nets, x)
        longest = -1
        if i < len(nets):
            longest = _common_len(x, nets[i], bits)
        if i > 0:
            longest = max(longest, _common_len(x, nets[i - 1], bits))
        length = min(longest + 1, bits)
        network = x >> (bits - length) << (bits - length)
        if eid.version == 4:
            return IPv4Network((network, length))
        return IPv6Network((network, length))


# A packed prefix: IPv4 ``net << 6 | len``, IPv6 ``V6_FLAG | net << 8 | len``.  One int sorts as
# (family, network, length), every IPv4 prefix before every IPv6 one.
V6_FLAG: Final = 1 << 140


def pack_prefix(version: int, net: int, length: int) -> int:
    """A prefix as one int, ordered by (family, network address, length)."""
    return net << 6 | length if version == 4 else V6_FLAG | net << 8 | length


def pack(prefix: Prefix) -> int:
    return pack_prefix(prefix.version, int(prefix.network_address), prefix.prefixlen)


def unpack(key: int) -> Prefix:
    if key < V6_FLAG:
        return IPv4Network((key >> 6, key & 0x3F))
    return IPv6Network(((key ^ V6_FLAG) >> 8, key & 0xFF))


class SortedList:
    """A sorted list in chunks (the idea of ``sortedcontainers``): insertion and removal move
    at most one chunk, not the whole list, so they stay cheap at hundreds of thousands of items."""

    __slots__ = ("_chunks", "_len", "_maxes")
    _LOAD: Final = 512

    def __init__(self) -> None:
        self._chunks: list[list[Any]] = []
        self._maxes: list[Any] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, item: Any) -> None:
        chunks, maxes = self._chunks, self._maxes
        self._len += 1
        if not chunks:
            chunks.append([item])
            maxes.append(item)
            return
        i = bisect_right(maxes, item)
        if i == len(maxes):
            i -= 1
            chunks[i].append(item)
            maxes[i] = item
        else:
            insort(chunks[i], item)
        chunk = chunks[i]
        if len(chunk) > 2 * self._LOAD:
            half = chunk[self._LOAD:]
            del chunk[self._LOAD:]
            maxes[i] = chunk[-1]
            chunks.insert(i + 1, half)
            maxes.insert(i + 1, half[-1])

    def _find(self, item: Any) -> tuple[int, int]:
        """(chunk, index) of ``item``, or (-1, -1)."""
        i = bisect_left(self._maxes, item)
        if i == len(self._maxes):
            return -1, -1
        chunk = self._chunks[i]
        k = bisect_left(chunk, item)
        return (i, k) if k < len(chunk) and chunk[k] == item else (-1, -1)

    def __contains__(self, item: object) -> bool:
        return self._find(item)[0] >= 0

    def remove(self, item: Any) -> bool:
        i, k = self._find(item)
        if i < 0:
            return False
        chunk = self._chunks[i]
        del chunk[k]
        self._len -= 1
        if not chunk:
            del self._chunks[i]
            del self._maxes[i]
        else:
            self._maxes[i] = chunk[-1]
        return True

    def after(self, item: Any) -> Iterator[Any]:
        """The items greater than ``item``, ascending."""
        i = bisect_right(self._maxes, item)
        if i == len(self._maxes):
            return
        chunk = self._chunks[i]
        yield from chunk[bisect_right(chunk, item):]
        for chunk in self._chunks[i + 1:]:
            yield from chunk

    def before(self, item: Any) -> Iterator[Any]:
        """The items less than ``item``, descending."""
        i = bisect_left(self._maxes, item)
        if i < len(self._maxes):
            chunk = self._chunks[i]
            yield from reversed(chunk[:bisect_left(chunk, item)])
        for chunk in reversed(self._chunks[:i]):
            yield from reversed(chunk)

    def __iter__(self) -> Iterator[Any]:
        for chunk in self._chunks:
            yield from chunk


class PrefixSet:
    """A changing set of prefixes (with reference counts) for negative-reply prefix computation.

    Unlike :class:`PrefixIndex` it is updated in place (one chunk of a :class:`SortedList`
    per change, no rebuild), and a query ignores the prefixes that *cover* the EID: the
    Map-Server asks about EIDs inside its own configured site and aggregate prefixes, which
    are in the set.  Sorted by (network address, length), the prefixes covering an EID all
    sort at or before it, and there are at most one per prefix length, so skipping them
    costs at most 33 (IPv4) or 129 (IPv6) steps.  Prefixes are held packed
    (:func:`pack_prefix`); a reference count is kept only for those added more than once.
    """

    def __init__(self, prefixes: Iterable[Prefix] = ()) -> None:
        self._sorted = SortedList()
        self._extra: dict[int, int] = {}
        for p in prefixes:
            self.add(p)

    def add(self, prefix: Prefix) -> None:
        self.add_packed(pack(prefix))

    def discard(self, prefix: Prefix) -> None:
        self.discard_packed(pack(prefix))

    def add_packed(self, key: int) -> None:
        if key in self._sorted:
            self._extra[key] = self._extra.get(key, 0) + 1
        else:
            self._sorted.add(key)

    def discard_packed(self, key: int) -> None:
        n = self._extra.get(key, 0)
        if n > 1:
            self._extra[key] = n - 1
        elif n == 1:
            del self._extra[key]
        else:
            self._sorted.remove(key)

    def __len__(self) -> int:
        return len(self._sorted)

    def __contains__(self, prefix: object) -> bool:
        return isinstance(prefix, IPv4Network | IPv6Network) and pack(prefix) in self._sorted

    def uncovered(self, eid: IPAddress, floor: int = 0) -> Prefix:
        """The least specific prefix containing ``eid``, at least ``floor`` long, that overlaps no
        prefix of the set other than those covering ``eid``."""
        v4 = eid.version == 4
        bits = 32 if v4 else 128
        shift = 6 if v4 else 8
        mask = (1 << shift) - 1
        x = int(eid)
        probe = pack_prefix(eid.version, x, bits + 1)  # every entry before it has network <= x
        longest = -1
        for entry in self._sorted.after(probe):
            if (entry < V6_FLAG) == v4:
                longest = _common_len(x, (entry & ~V6_FLAG if not v4 else entry) >> shift, bits)
            break
        for entry in self._sorted.before(probe):
            if (entry < V6_FLAG) != v4:
                break
            net, length = (entry if v4 else entry ^ V6_FLAG) >> shift, entry & mask
            common = _common_len(x, net, bits)
            if common < length:  # does not cover the EID: the nearest such predecessor
                longest = max(longest, common)
                break
        length = min(max(longest + 1, floor), bits)
        network = x >> (bits - length) << (bits - length)
        if v4:
            return IPv4Network((network, length))
        return IPv6Network((network, length))
