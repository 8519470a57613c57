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

from bisect import bisect_left, insort
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network

from alt_router.mapping.actions import IPAddress, Prefix


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


class PrefixSet:
    """A changing set of prefixes (with reference counts) for negative-reply prefix computation.

    Unlike :class:`PrefixIndex` it is updated in place (a bisection and a list insert per
    change, no rebuild), and a query ignores the prefixes that *cover* the EID: the
    Map-Server asks about EIDs inside its own configured site and aggregate prefixes, which
    are in the set.  Sorted by (network address, length), the prefixes covering an EID all
    sort at or before it, and there are at most one per prefix length, so skipping them
    costs at most 33 (IPv4) or 129 (IPv6) steps.
    """

    def __init__(self, prefixes: Iterable[Prefix] = ()) -> None:
        self._refs: dict[Prefix, int] = {}
        self._sorted: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for p in prefixes:
            self.add(p)

    def add(self, prefix: Prefix) -> None:
        n = self._refs.get(prefix, 0)
        self._refs[prefix] = n + 1
        if n == 0:
            insort(self._sorted[prefix.version], (int(prefix.network_address), prefix.prefixlen))

    def discard(self, prefix: Prefix) -> None:
        n = self._refs.get(prefix, 0)
        if n == 0:
            return
        if n > 1:
            self._refs[prefix] = n - 1
            return
        del self._refs[prefix]
        entries = self._sorted[prefix.version]
        entry = (int(prefix.network_address), prefix.prefixlen)
        i = bisect_left(entries, entry)
        if i < len(entries) and entries[i] == entry:
            del entries[i]

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._refs

    def uncovered(self, eid: IPAddress, floor: int = 0) -> Prefix:
        """The least specific prefix containing ``eid``, at least ``floor`` long, that overlaps no
        prefix of the set other than those covering ``eid``."""
        bits = 32 if eid.version == 4 else 128
        entries = self._sorted[eid.version]
        x = int(eid)
        i = bisect_left(entries, (x, bits + 1))  # every entry before i has network <= x
        longest = -1
        if i < len(entries):
            longest = _common_len(x, entries[i][0], bits)
        k = i - 1
        while k >= 0:
            net, length = entries[k]
            common = _common_len(x, net, bits)
            if common < length:  # does not cover the EID: the nearest such predecessor
                longest = max(longest, common)
                break
            k -= 1
        length = min(max(longest + 1, floor), bits)
        network = x >> (bits - length) << (bits - length)
        if eid.version == 4:
            return IPv4Network((network, length))
        return IPv6Network((network, length))
