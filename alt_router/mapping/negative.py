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
"""

from __future__ import annotations

from bisect import bisect_left
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
