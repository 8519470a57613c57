"""Longest-prefix-match tables for IPv4 and IPv6 on a C radix tree.

pytricia, not py-radix: ``python bench/lpm.py`` on this project's machines
(1,000,000 IPv4 /24s, see docs/configuration.md) measured pytricia at about 4x
the insert rate (1.5M/s vs 0.38M/s), ~15% more lookups/s (430k vs 373k) and a
third of the memory (192 vs 611 bytes/prefix), because py-radix allocates a
Python node object plus a data dict per prefix.  pytricia keys are strings, so
prefixes cross the boundary as ``str`` and come back as ``ip_network`` objects.

``LpmTable(4, fib="dir24")`` adds a DIR-24-8 array (``alt_router.rib.fib``) beside the tree and
answers ``lookup_packed`` and ``lookup`` from it: at 1,000,000 routes pytricia's walk costs a cache
miss per level and the array costs one or two.  The tree stays the source of truth for everything
else.  IPv6 tables always use the tree.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Generic, TypeVar

import pytricia

from alt_router.rib.fib import FIB_KINDS, Dir24Fib, FibKind
from alt_router.types import IPAddress, Prefix

V = TypeVar("V")

# LpmTable.items_after: blocks shorter than this are split rather than listed whole (an IPv4 /16
# holds at most 256 /24s, an IPv6 /48 a site's prefixes), for at most _PAGE_PROBES blocks a page.
_PAGE_SPLIT = {4: 16, 6: 48}
_PAGE_PROBES = 2048
# ... unless the table is this small: then any block costs little to list.
_PAGE_SMALL = 20_000


class TableError(ValueError):
    """A prefix or address that the table cannot hold or look up."""


def as_prefix(prefix: str | Prefix) -> Prefix:
    if isinstance(prefix, IPv4Network | IPv6Network):
        return prefix
    try:
        return ip_network(prefix, strict=True)
    except (TypeError, ValueError) as exc:
        raise TableError(f"not a prefix: {prefix!r} ({exc})") from None


def as_address(address: str | IPAddress) -> IPAddress:
    if isinstance(address, IPv4Address | IPv6Address):
        return address
    try:
        return ip_address(address)
    except (TypeError, ValueError):
        raise TableError(f"not an IP address: {address!r}") from None


class LpmTable(Generic[V]):
    """Prefix -> value for one address family, with longest-match lookup.

    ``lookup_packed(packed)`` is an attribute, not a method, so callers bind the fastest
    implementation directly: the FIB's closure, or pytricia's ``get``.  It answers the value of the
    longest prefix covering a raw 4- or 16-byte address, or None (also for a wrong length).
    """

    __slots__ = ("_fib", "_size", "_tree", "lookup_packed", "version")

    lookup_packed: Callable[[bytes], V | None]

    def __init__(self, version: int, fib: FibKind = "tree") -> None:
        if version not in (4, 6):
            raise TableError(f"IP version must be 4 or 6, not {version}")
        if fib not in FIB_KINDS:
            raise TableError(f"fib must be one of {', '.join(FIB_KINDS)}, not {fib!r}")
        self.version = version
        self._tree = pytricia.PyTricia(32 if version == 4 else 128)
        # len(PyTricia) walks the whole tree; a status poll on a 1M-route table must not.
        self._size = 0
        self._fib: Dir24Fib[V] | None = Dir24Fib() if fib == "dir24" and version == 4 else None
        self.lookup_packed = self._fib.lookup_packed if self._fib is not None else self._tree_lookup_packed

    @property
    def fib(self) -> FibKind:
        """What answers ``lookup_packed``: "dir24" or "tree"."""
        return "tree" if self._fib is None else "dir24"

    def _key(self, prefix: str | Prefix) -> str:
        p = as_prefix(prefix)
        if p.version != self.version:
            raise TableError(f"{p} is not an IPv{self.version} prefix")
        return str(p)

    def _addr(self, address: str | IPAddress) -> str:
        a = as_address(address)
        if a.version != self.version:
            raise TableError(f"{a} is not an IPv{self.version} address")
        return str(a)

    def insert(self, prefix: str | Prefix, value: V) -> None:
        """Insert, or replace the value already held for exactly ``prefix``."""
        key = self._key(prefix)
        self.set_key(key, value, new=not self._tree.has_key(key))

    def delete(self, prefix: str | Prefix) -> bool:
        """Remove exactly ``prefix``; False if it was not there."""
        key = self._key(prefix)
        if not self._tree.has_key(key):
            return False
        self.delete_key(key)
        return True

    def get(self, prefix: str | Prefix) -> V | None:
        """The value for exactly ``prefix`` (no longest match)."""
        key = self._key(prefix)
        if not self._tree.has_key(key):
            return None
        value: V = self._tree[key]
        return value

    def __contains__(self, prefix: object) -> bool:
        if not isinstance(prefix, str | IPv4Network | IPv6Network):
            return False
        try:
            return bool(self._tree.has_key(self._key(prefix)))
        except TableError:
            return False

    # --- by canonical key: the RIB's bulk path, which has validated the text already ---------

    def set_key(self, key: str, value: V, *, new: bool) -> None:
        """Insert (``new``) or replace ``key``, which must be canonical prefix text of this family."""
        self._tree[key] = value
        if new:
            self._size += 1
        if self._fib is not None:
            self._fib.insert_key(key, value)

    def delete_key(self, key: str) -> None:
        """Remove ``key``, which must be present."""
        if self._fib is not None:
            # The FIB hands the entries this prefix owned to the next covering one, which only
            # the tree knows (and only while ``key`` is still in it).
            self._fib.delete_key(key, self._tree.parent(key))
        del self._tree[key]
        self._size -= 1

    def best_for_key_function(self) -> Callable[[str], V | None]:
        """``best_for_key`` as the C method itself, for loops that run once per route."""
        get: Callable[[str], V | None] = self._tree.get
        return get

    def best_for_key(self, key: str) -> V | None:
        """The value of ``key`` itself or else of the longest prefix covering it (None if neither).

        One C call where an exact get takes two (``has_key`` then the item).
        """
        value: V | None = self._tree.get(key)
        return value

    def lookup(self, address: str | IPAddress) -> tuple[Prefix, V] | None:
        """The longest prefix covering ``address``, with its value."""
        if self._fib is not None:
            a = as_address(address)
            if a.version != 4:
                raise TableError(f"{a} is not an IPv4 address")
            found = self._fib.lookup(a.packed)
            if found is None:
                return None
            fib_value, length = found
            host = 32 - length
            return IPv4Network((int(a) >> host << host, length)), fib_value
        key = self._tree.get_key(self._addr(address))
        if key is None:
            return None
        value: V = self._tree[key]
        return ip_network(key), value

    def _tree_lookup_packed(self, packed: bytes) -> V | None:
        # The forwarder already holds the destination as the packet's own bytes, and
        # pytricia matches bytes about 3x faster than an address object.
        try:
            value: V | None = self._tree.get(packed)
        except (KeyError, ValueError):
            return None
        return value

    def covering(self, prefix: str | Prefix) -> list[tuple[Prefix, V]]:
        """Entries for ``prefix`` itself and every shorter prefix covering it, longest first."""
        key: str | None = self._key(prefix)
        out: list[tuple[Prefix, V]] = []
        if not self._tree.has_key(key):
            # get_key on a prefix string answers the longest *covering* entry.
            key = self._tree.get_key(key)
        while key is not None:
            out.append((ip_network(key), self._tree[key]))
            key = self._tree.parent(key)
        return out

    def covered(self, prefix: str | Prefix) -> list[tuple[Prefix, V]]:
        """Entries for ``prefix`` itself and every longer prefix inside it, in address order."""
        net = as_prefix(prefix)
        key = self._key(net)
        out: list[tuple[Prefix, V]] = []
        if self._tree.has_key(key):
            out.append((net, self._tree[key]))
            children = self._tree.children(key)
        else:
            # children() needs a present key: insert a placeholder, query, remove it.
            self._tree[key] = None
            try:
                children = self._tree.children(key)
            finally:
                del self._tree[key]
        out.extend((ip_network(k), self._tree[k]) for k in children)
        out.sort(key=lambda kv: (int(kv[0].network_address), kv[0].prefixlen))
        return out

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[tuple[Prefix, V]]:
        tree = self._tree
        for key in list(tree):
            yield ip_network(key), tree[key]

    def values(self) -> Iterator[V]:
        """Every value, without building a prefix object per entry."""
        tree = self._tree
        for key in list(tree):
            yield tree[key]

    def items_after(self, after: str | None, limit: int) -> list[tuple[str, V]]:
        """Up to ``limit`` (key, value) pairs that follow ``after`` in address order (a prefix before
        its more-specifics), for paging: ``after`` is canonical prefix text of this family, present
        in the table or not; None starts at the beginning.

        Without a successor call in pytricia, skipping to ``after`` by iteration costs a step per
        entry before it (0.7 s at 1M).  Instead the space after ``after`` is cut into aligned blocks
        (its two halves, then the right sibling of it and of each ancestor, nearest first), and the
        blocks are visited in order: one shorter than ``_PAGE_SPLIT`` is split into its halves
        (depth first), a longer one is listed with ``children``.  Splitting keeps one dense block
        from being listed whole for a page that needs a few entries of it; it stops after
        ``_PAGE_PROBES`` blocks, because only a sparse region takes that many, and a sparse block
        is cheap to list.
        """
        out: list[tuple[str, V]] = []
        if limit <= 0:
            return out
        tree = self._tree
        if after is None:
            for key in tree:
                out.append((key, tree[key]))
                if len(out) >= limit:
                    break
            return out
        net = as_prefix(after)
        if net.version != self.version:
            raise TableError(f"{net} is not an IPv{self.version} prefix")
        bits, addr, plen = net.max_prefixlen, int(net.network_address), net.prefixlen
        blocks: list[tuple[int, int]] = []
        if plen < bits:
            blocks += [(addr, plen + 1), (addr | 1 << (bits - plen - 1), plen + 1)]
        for length in range(plen, 0, -1):
            bit = 1 << (bits - length)
            if not addr & bit:
                blocks.append((addr >> (bits - length + 1) << (bits - length + 1) | bit, length))
        family, size = (socket.AF_INET, 4) if self.version == 4 else (socket.AF_INET6, 16)
        # A small table is listed by whole blocks: at most its size in entries per page.
        split = _PAGE_SPLIT[self.version] if self._size > _PAGE_SMALL else 0
        probes = 0
        stack = blocks[::-1]  # the next block to visit on top
        while stack and len(out) < limit:
            start, length = stack.pop()
            # inet_ntop, not ip_network: this runs up to _PAGE_PROBES times a page.
            key = f"{socket.inet_ntop(family, start.to_bytes(size, 'big'))}/{length}"
            probes += 1
            if length < split and probes < _PAGE_PROBES:
                if tree.has_key(key):
                    out.append((key, tree[key]))
                half = 1 << (bits - length - 1)
                stack += [(start | half, length + 1), (start, length + 1)]
                continue
            if tree.has_key(key):
                out.append((key, tree[key]))
                children = tree.children(key)
            else:
                # children() needs a present key: a placeholder in the tree only (never the FIB).
                tree[key] = None
                try:
                    children = tree.children(key)
                finally:
                    del tree[key]
            # children() answers in address order, like iteration.
            out.extend((k, tree[k]) for k in children[: limit - len(out)])
        return out[:limit]


class DualTable(Generic[V]):
    """An IPv4 and an IPv6 LpmTable behind one interface that dispatches on the address family."""

    __slots__ = ("v4", "v6")

    def __init__(self, fib: FibKind = "tree") -> None:
        """``fib="dir24"`` backs the IPv4 table with a DIR-24-8 array (80 MiB of address space)."""
        self.v4: LpmTable[V] = LpmTable(4, fib)
        self.v6: LpmTable[V] = LpmTable(6)

    def for_key(self, key: str) -> LpmTable[V]:
        """The table for canonical prefix text ``key``."""
        return self.v6 if ":" in key else self.v4

    def _for_prefix(self, prefix: str | Prefix) -> tuple[LpmTable[V], Prefix]:
        p = as_prefix(prefix)
        return (self.v4 if p.version == 4 else self.v6), p

    def insert(self, prefix: str | Prefix, value: V) -> None:
        table, p = self._for_prefix(prefix)
        table.insert(p, value)

    def delete(self, prefix: str | Prefix) -> bool:
        table, p = self._for_prefix(prefix)
        return table.delete(p)

    def get(self, prefix: str | Prefix) -> V | None:
        table, p = self._for_prefix(prefix)
        return table.get(p)

    def __contains__(self, prefix: object) -> bool:
        return prefix in self.v4 or prefix in self.v6

    def lookup(self, address: str | IPAddress) -> tuple[Prefix, V] | None:
        a = as_address(address)
        return (self.v4 if a.version == 4 else self.v6).lookup(a)

    def lookup_packed(self, packed: bytes) -> V | None:
        """Longest-match value for a raw address: 4 bytes IPv4, 16 bytes IPv6."""
        if len(packed) == 4:
            return self.v4.lookup_packed(packed)
        if len(packed) == 16:
            return self.v6.lookup_packed(packed)
        return None

    def lookup_packed_function(self) -> Callable[[bytes], V | None]:
        """``lookup_packed`` as one callable to bind once: with the IPv4 FIB, its own closure
        (IPv6 and bad lengths handed on to the IPv6 tree), so an IPv4 lookup is one Python call."""
        fib = self.v4._fib
        if fib is None:
            return self.lookup_packed
        return fib.make_lookup(self.v6.lookup_packed)

    def covering(self, prefix: str | Prefix) -> list[tuple[Prefix, V]]:
        table, p = self._for_prefix(prefix)
        return table.covering(p)

    def covered(self, prefix: str | Prefix) -> list[tuple[Prefix, V]]:
        table, p = self._for_prefix(prefix)
        return table.covered(p)

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)

    def __iter__(self) -> Iterator[tuple[Prefix, V]]:
        yield from self.v4
        yield from self.v6

    def items_after(self, after: str | None, limit: int) -> list[tuple[str, V]]:
        """``LpmTable.items_after`` over both families: IPv4 first, then IPv6."""
        if after is not None and ":" in after:
            return self.v6.items_after(after, limit)
        out = self.v4.items_after(after, limit)
        if len(out) < limit:
            out += self.v6.items_after(None, limit - len(out))
        return out
