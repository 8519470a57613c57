"""The FRR-mode Loc-RIB: a compact mirror of the kernel's ALT table (issue 10).

In FRR mode zebra chooses the routes and the kernel holds them; the ``Rib`` only mirrors prefix,
output peer and gateway per route for the API and the Map-Resolver.  A full ``Path`` per route in a
pytricia tree (the ExaBGP mode's Loc-RIB) cost about 350 bytes a route there: the tree's C nodes
(~190), the ``Path`` (96) and its key string (60).  Here a route costs about 20 bytes:

* every route of one netlink batch through one next hop shares one ``Via`` (the ``Hop``: peer,
  peer address, gateway, owning peer, attributes; and the batch's ``learned_at``), so no object
  is made per route;
* IPv4 routes live in a DIR-24-8 array (``rib.fib.Dir24Fib``), which answers exact gets and
  longest matches and holds a /24 in 5 bytes of array plus a value slot;
* the address order that ``/v1/routes`` pages in comes from ``SortedKeys``: the prefixes as ints
  (``network << 8 | length``, so int order is address order with a prefix before its
  more-specifics) in sorted ``array('Q')`` blocks, 8 bytes a route;
* IPv6 (rare in an EID table) keeps a dict of int keys.

``Path`` objects are made on the way out only (a page, a lookup, an event).  Pure; no I/O.
"""

from __future__ import annotations

import socket
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterator, MutableSequence
from ipaddress import IPv6Network

from alt_router.rib.fib import Dir24Fib
from alt_router.rib.paths import Attributes, Path
from alt_router.types import IPAddress

# peer, peer address, next hop (the kernel's gateway), next-hop peer, attributes: the order of
# ``Path.from_key``'s arguments after the key.
Hop = tuple[str, IPAddress, IPAddress, str, Attributes]
# A hop and the time its routes were learned: shared by the routes of one batch.
Via = tuple[Hop, float]

_inet_ntop = socket.inet_ntop
_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_SUFFIX = tuple(f"/{n}" for n in range(129))
_MASK4 = 0xFFFF_FFFF


def path_of(key: str, via: Via) -> Path:
    """The ``Path`` the API and the events see for route ``key``."""
    hop = via[0]
    return Path.from_key(key, hop[0], hop[1], hop[2], hop[3], hop[4], via[1])


def via_of(path: Path) -> Via:
    return (path.peer, path.peer_address, path.next_hop, path.next_hop_peer, path.attributes), path.learned_at


def int_key(key: str) -> tuple[bool, int]:
    """(IPv6?, ``network << 8 | length``) of canonical prefix text ``key``; ValueError if it is not one."""
    address, slash, length = key.partition("/")
    v6 = ":" in address
    try:
        network = int.from_bytes(_inet_pton(_AF_INET6 if v6 else _AF_INET, address), "big")
        plen = int(length)
    except (OSError, ValueError):
        raise ValueError(f"not a prefix: {key!r}") from None
    bits = 128 if v6 else 32
    if not slash or not 0 <= plen <= bits or network & ((1 << (bits - plen)) - 1):
        raise ValueError(f"not a prefix: {key!r}")
    return v6, network << 8 | plen


def text_key(v6: bool, ikey: int) -> str:
    """The canonical text (what ``str(ip_network(...))`` gives) of int key ``ikey``."""
    plen = ikey & 0xFF
    if v6:
        return str(IPv6Network((ikey >> 8, plen)))
    return _inet_ntop(_AF_INET, (ikey >> 8).to_bytes(4, "big")) + _SUFFIX[plen]


class SortedKeys:
    """A sorted set of non-negative ints in blocks of at most ``2 * LOAD`` (a B+ tree of depth 2).

    An insert or delete moves at most one block's entries; a key above every other (a table
    arriving in address order, as a dump does) is an append.  ``wide`` keys (IPv6) do not fit
    ``array('Q')`` and are kept in lists.
    """

    LOAD = 1024
    __slots__ = ("_blocks", "_len", "_maxes", "_wide")

    def __init__(self, wide: bool = False) -> None:
        self._wide = wide
        self._blocks: list[MutableSequence[int]] = []
        self._maxes: list[int] = []
        self._len = 0

    def _block(self, keys: list[int]) -> MutableSequence[int]:
        return list(keys) if self._wide else array("Q", keys)

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: int) -> bool:
        j = bisect_left(self._maxes, key)
        if j == len(self._maxes):
            return False
        block = self._blocks[j]
        return block[bisect_left(block, key)] == key

    def add(self, key: int) -> bool:
        """Insert ``key``; False if it was there already."""
        maxes, blocks = self._maxes, self._blocks
        if not maxes:
            blocks.append(self._block([key]))
            maxes.append(key)
            self._len = 1
            return True
        if key > maxes[-1]:
            j = len(maxes) - 1
            block = blocks[j]
            block.append(key)
            maxes[j] = key
        else:
            j = bisect_left(maxes, key)
            block = blocks[j]
            i = bisect_left(block, key)
            if block[i] == key:
                return False
            block.insert(i, key)
        self._len += 1
        if len(block) > 2 * self.LOAD:
            half = self.LOAD
            blocks[j:j + 1] = [block[:half], block[half:]]
            maxes[j:j + 1] = [block[half - 1], block[-1]]
        return True

    def discard(self, key: int) -> bool:
        """Remove ``key``; False if it was not there."""
        maxes = self._maxes
        j = bisect_left(maxes, key)
        if j == len(maxes):
            return False
        block = self._blocks[j]
        i = bisect_left(block, key)
        if block[i] != key:
            return False
        del block[i]
        self._len -= 1
        if not block:
            del self._blocks[j]
            del maxes[j]
        elif i == len(block):
            maxes[j] = block[-1]
        return True

    def clear(self) -> None:
        self._blocks.clear()
        self._maxes.clear()
        self._len = 0

    def after(self, key: int | None) -> Iterator[int]:
        """The keys greater than ``key`` (None: all of them), in order."""
        blocks = self._blocks
        if key is None:
            j = i = 0
        else:
            j = bisect_right(self._maxes, key)
            if j == len(blocks):
                return
            i = bisect_right(blocks[j], key)
        while j < len(blocks):
            yield from blocks[j][i:]
            j += 1
            i = 0

    def between(self, low: int, high: int) -> Iterator[int]:
        """The keys in [``low``, ``high``], in order."""
        for key in self.after(low - 1 if low else None):
            if key > high:
                return
            yield key


class KernelLoc:
    """The FRR-mode Loc-RIB: canonical prefix -> ``Via``, both families (see the module docstring).

    Routes are addressed by int key (``network << 8 | length``) and family; text keys are made
    only for output.
    """

    __slots__ = ("_fib", "_keys4", "_keys6", "_lens4", "_lens6", "_v6", "lookup_via")

    def __init__(self) -> None:
        self._fib: Dir24Fib[Via] = Dir24Fib()
        self._keys4 = SortedKeys()
        self._keys6 = SortedKeys(wide=True)
        self._v6: dict[int, Via] = {}
        # Prefix lengths present, with their route counts: a covering route is looked for at
        # these lengths only (a handful in an EID table).
        self._lens4: Counter[int] = Counter()
        self._lens6: Counter[int] = Counter()
        self.lookup_via = self._fib.make_lookup(self._lookup6)

    def __len__(self) -> int:
        return len(self._fib) + len(self._v6)

    # --- exact ------------------------------------------------------------------------------

    def get(self, v6: bool, ikey: int) -> Via | None:
        if v6:
            return self._v6.get(ikey)
        return self._fib.get(ikey >> 8, ikey & 0xFF)

    def set(self, v6: bool, ikey: int, via: Via) -> bool:
        """Add or replace; True if the prefix is new."""
        if v6:
            new = ikey not in self._v6
            self._v6[ikey] = via
            if new:
                self._keys6.add(ikey)
                self._lens6[ikey & 0xFF] += 1
            return new
        if self._fib.insert(ikey >> 8, ikey & 0xFF, via):
            self._keys4.add(ikey)
            self._lens4[ikey & 0xFF] += 1
            return True
        return False

    def delete(self, v6: bool, ikey: int) -> Via | None:
        """Remove; the value it had (None: it was not there)."""
        plen = ikey & 0xFF
        if v6:
            old = self._v6.pop(ikey, None)
            if old is not None:
                self._keys6.discard(ikey)
                self._forget_length(self._lens6, plen)
            return old
        network = ikey >> 8
        old = self._fib.get(network, plen)
        if old is None:
            return None
        parent = self._parent4(network, plen)
        self._fib.delete(network, plen, None if parent is None else (parent >> 8, parent & 0xFF))
        self._keys4.discard(ikey)
        self._forget_length(self._lens4, plen)
        return old

    @staticmethod
    def _forget_length(lens: Counter[int], plen: int) -> None:
        lens[plen] -= 1
        if lens[plen] <= 0:
            del lens[plen]

    def _parent4(self, network: int, plen: int) -> int | None:
        """The int key of the longest IPv4 route strictly covering ``network/plen``."""
        get = self._fib.get
        for length in sorted((n for n in self._lens4 if n < plen), reverse=True):
            net = network >> (32 - length) << (32 - length) if length else 0
            if get(net, length) is not None:
                return net << 8 | length
        return None

    # --- longest match ----------------------------------------------------------------------

    def _lookup6(self, packed: bytes) -> Via | None:
        found = self.lookup6(packed)
        return None if found is None else found[1]

    def lookup6(self, packed: bytes) -> tuple[int, Via] | None:
        if len(packed) != 16:
            return None
        x = int.from_bytes(packed, "big")
        v6 = self._v6
        for length in sorted(self._lens6, reverse=True):
            ikey = (x >> (128 - length) << (128 - length) if length else 0) << 8 | length
            via = v6.get(ikey)
            if via is not None:
                return ikey, via
        return None

    def lookup(self, packed: bytes) -> tuple[str, Via] | None:
        """(canonical prefix, via) of the longest route covering a 4- or 16-byte address."""
        if len(packed) == 4:
            found4 = self._fib.lookup(packed)
            if found4 is None:
                return None
            via, plen = found4
            net = int.from_bytes(packed, "big") >> (32 - plen) << (32 - plen) if plen else 0
            return text_key(False, net << 8 | plen), via
        found6 = self.lookup6(packed)
        return None if found6 is None else (text_key(True, found6[0]), found6[1])

    # --- walks ------------------------------------------------------------------------------

    def covering(self, v6: bool, ikey: int) -> list[tuple[str, Via]]:
        """Routes for the prefix itself and every shorter one covering it, longest first."""
        bits = 128 if v6 else 32
        network, plen = ikey >> 8, ikey & 0xFF
        out: list[tuple[str, Via]] = []
        for length in sorted((n for n in (self._lens6 if v6 else self._lens4) if n <= plen), reverse=True):
            k = (network >> (bits - length) << (bits - length) if length else 0) << 8 | length
            via = self.get(v6, k)
            if via is not None:
                out.append((text_key(v6, k), via))
        return out

    def covered(self, v6: bool, ikey: int) -> list[tuple[str, Via]]:
        """Routes for the prefix itself and every longer one inside it, in address order."""
        bits = 128 if v6 else 32
        network, plen = ikey >> 8, ikey & 0xFF
        last = (network | ((1 << (bits - plen)) - 1)) << 8 | 0xFF
        keys = self._keys6 if v6 else self._keys4
        return [(text_key(v6, k), self._value(v6, k)) for k in keys.between(ikey, last)]

    def _value(self, v6: bool, ikey: int) -> Via:
        via = self.get(v6, ikey)
        assert via is not None  # the key set and the values change together
        return via

    def items(self, v6: bool, after: int | None = None) -> Iterator[tuple[int, Via]]:
        """(int key, via) of one family after int key ``after`` (None: all), in address order."""
        keys = self._keys6 if v6 else self._keys4
        if v6:
            values = self._v6
            for k in keys.after(after):
                yield k, values[k]
            return
        get = self._fib.get
        for k in keys.after(after):
            via = get(k >> 8, k & 0xFF)
            assert via is not None
            yield k, via

    def items_after(self, after: str | None, limit: int) -> list[tuple[str, Via]]:
        """Up to ``limit`` (canonical prefix, via) after prefix ``after`` (None: from the start), IPv4
        then IPv6, each in address order; ``after`` need not be in the table."""
        out: list[tuple[str, Via]] = []
        if limit <= 0:
            return out
        start: list[tuple[bool, int | None]] = [(False, None), (True, None)]
        if after is not None:
            v6, ikey = int_key(after)
            start = [(True, ikey)] if v6 else [(False, ikey), (True, None)]
        for v6, key in start:
            for k, via in self.items(v6, key):
                out.append((text_key(v6, k), via))
                if len(out) >= limit:
                    return out
        return out

    def keys(self, v6: bool) -> Iterator[int]:
        return (self._keys6 if v6 else self._keys4).after(None)
