"""A DIR-24-8 IPv4 forwarding table (Gupta, Lin, McKeown, "Routing lookups in hardware at memory
access speeds", INFOCOM 1998): longest-prefix match in one or two array reads.

It is a derived index beside the pytricia tree of ``LpmTable(4, fib="dir24")``: the tree stays
the source of truth (covering/covered queries, iteration, the ``parent`` a delete falls back to);
this table only answers "which value forwards this destination", as fast as Python can ask.

Layout:

* level 1: 2^24 32-bit entries indexed by the top 24 bits of the destination.  An entry is 0 (no
  route), a value slot, or ``L2_FLAG | block``: the /24 has routes longer than /24 and its 256
  addresses are resolved in level-2 block ``block``;
* level 2: blocks of 256 entries (value slots) indexed by the last byte;
* one length byte per entry at both levels: the prefix length of the route that owns the entry
  (for a level-1 block pointer, ``POINTER | the length of the block's base route``).  It makes
  updates exact without walking the tree: an insert of a /N overwrites only entries owned by
  routes of length <= N, a delete rewrites only entries of length == N, and both find those runs
  with ``bytes.translate`` and a regular expression, at C speed, skipping more-specifics.

Memory: level 1 is a 64 MiB anonymous mapping plus 16 MiB of length bytes; the kernel backs only
the 4 KiB pages a route has written, so 1,000,000 /24s packed in one region cost ~5 MiB and
1,000,000 /24s scattered over the whole space (or one /0) cost the full 80 MiB.  Level 2 is
1.25 KiB per /24 that holds longer prefixes.

Values get one slot per prefix, not one per distinct value: the RIB stores a distinct ``Path``
(which carries its prefix) per route, so interning by value would never share a slot and would
cost a value -> slot map of ~100 bytes per route; a per-prefix slot also makes replacing a route's
value one list store, whatever the prefix length.  A /24's slot is read back from the arrays
(nothing longer than /24 lives in level 1); other lengths, rare in an EID table, keep theirs in a
dict.

IPv4 only: IPv6 stays on pytricia (2^24 entries do not stretch to 128-bit addresses).
"""

from __future__ import annotations

import mmap
import re
import struct
from array import array
from collections.abc import Callable
from socket import inet_aton
from typing import Generic, Literal, TypeVar, cast

FibKind = Literal["dir24", "tree"]
FIB_KINDS: tuple[FibKind, ...] = ("dir24", "tree")

V = TypeVar("V")

L1_BITS = 24
L1_SIZE = 1 << L1_BITS
BLOCK = 256
L2_FLAG = 0x8000_0000
POINTER = 0x80
_LEN = 0x7F

# Mask codes a length byte translates to: rewrite, leave alone, or a block pointer to look into.
_WRITE, _SKIP, _POINT = 0, 1, 2
_POINT_BYTE = bytes((_POINT,))
_INSERT = [bytes(_POINT if b & POINTER else _WRITE if b <= n else _SKIP for b in range(256))
           for n in range(33)]
_DELETE = [bytes(_POINT if b & POINTER else _WRITE if b == n else _SKIP for b in range(256))
           for n in range(33)]
_RUNS = re.compile(rb"\x00+")
# Bounds the temporary a long run is written from (a /0 is 2^24 entries).
_CHUNK = 1 << 16

if array("I").itemsize != 4:  # pragma: no cover - every platform CPython supports today
    raise ImportError("alt_router.rib.fib needs a 4-byte array('I')")


class FibError(ValueError):
    """A prefix the FIB cannot hold, or an update inconsistent with its contents."""


def _check(network: int, length: int) -> None:
    if not 0 <= length <= 32:
        raise FibError(f"IPv4 prefix length must be 0..32, not {length}")
    if not 0 <= network <= 0xFFFF_FFFF:
        raise FibError(f"not an IPv4 network: {network}")
    if network & ((1 << (32 - length)) - 1):
        raise FibError(f"{network:#010x}/{length} has host bits set")


def _parse(key: str) -> tuple[int, int]:
    address, _, length = key.partition("/")
    try:
        return int.from_bytes(inet_aton(address), "big"), int(length)
    except (OSError, ValueError):
        raise FibError(f"not an IPv4 prefix: {key!r}") from None


def _write(slots: memoryview | array[int], lens: mmap.mmap | bytearray, start: int, stop: int, *,
           slot: int, length: int) -> None:
    while start < stop:
        end = min(stop, start + _CHUNK)
        n = end - start
        slots[start:end] = array("I", (slot,)) * n
        lens[start:end] = bytes((length,)) * n
        start = end


class Dir24Fib(Generic[V]):
    """IPv4 prefix -> value with longest match by ``lookup_packed``; see the module docstring.

    ``lookup_packed(packed4)`` is an attribute holding a closure over the arrays (no ``self``
    lookups on the hot path): the value of the longest prefix covering a 4-byte address, or None.
    """

    __slots__ = (
        "_count", "_free", "_free_blocks", "_l1", "_l1_len", "_l2", "_l2_base", "_l2_len", "_slots",
        "_values", "lookup_packed",
    )

    lookup_packed: Callable[[bytes], V | None]

    def __init__(self) -> None:
        # Anonymous mappings, not bytearray: the kernel hands out zero pages on first touch, so
        # an empty or regional table does not pay 80 MiB of RSS up front.
        self._l1 = memoryview(mmap.mmap(-1, L1_SIZE * 4)).cast("I")
        self._l1_len = mmap.mmap(-1, L1_SIZE)
        self._l2: array[int] = array("I")
        self._l2_len = bytearray()
        self._l2_base: array[int] = array("I")  # per block: the slot of its base (<= /24) route
        self._free_blocks: list[int] = []
        self._values: list[V | None] = [None]  # slot 0: no route
        self._free: list[int] = []
        self._slots: dict[int, int] = {}  # network << 6 | length -> slot, for lengths other than 24
        self._count = 0
        self.lookup_packed = self.make_lookup()

    def make_lookup(self, other: Callable[[bytes], V | None] | None = None) -> Callable[[bytes], V | None]:
        """A lookup closure over the arrays: ``lookup_packed`` itself, or, given ``other``, one that
        hands every address that is not 4 bytes long (IPv6) to ``other`` instead of answering None,
        so a caller serving both families makes one Python call per IPv4 lookup, not two."""
        # Everything the hot path touches is a closure cell; the constants are literals.
        l1, l2, values = self._l1, self._l2, self._values
        if other is None:
            # unpack rejects any length but 4 inside its C call: a free length check, and the
            # try costs nothing (3.11) until something does raise.
            unpack, error = struct.Struct("!I").unpack, struct.error

            def lookup_packed(packed: bytes) -> V | None:
                try:
                    e: int = l1[unpack(packed)[0] >> 8]
                except error:
                    return None
                if e & 0x8000_0000:
                    e = l2[((e ^ 0x8000_0000) << 8) | packed[3]]
                return values[e]

            return lookup_packed
        from_bytes = int.from_bytes

        def lookup_either(packed: bytes) -> V | None:
            if len(packed) != 4:
                return other(packed)
            e = l1[from_bytes(packed, "big") >> 8]
            if e & 0x8000_0000:
                e = l2[((e ^ 0x8000_0000) << 8) | packed[3]]
            return values[e]

        return lookup_either

    # --- queries -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __contains__(self, prefix: object) -> bool:
        if not (isinstance(prefix, tuple) and len(prefix) == 2):
            return False
        network, length = prefix
        if not isinstance(network, int) or not isinstance(length, int):
            return False
        try:
            _check(network, length)
        except FibError:
            return False
        return self._slot(network, length) != 0

    def get(self, network: int, length: int) -> V | None:
        """The value of exactly ``network/length`` (no longest match)."""
        _check(network, length)
        return self._values[self._slot(network, length)]

    def lookup(self, packed: bytes) -> tuple[V, int] | None:
        """(value, prefix length) of the longest prefix covering a 4-byte address, or None."""
        if len(packed) != 4:
            return None
        x = int.from_bytes(packed, "big")
        i = x >> 8
        e = self._l1[i]
        if e & L2_FLAG:
            j = ((e ^ L2_FLAG) << 8) | (x & 0xFF)
            e, length = self._l2[j], self._l2_len[j]
        else:
            length = self._l1_len[i]
        if not e:
            return None
        # Only slot 0 holds the None that means "no route"; a stored None is a value like any other.
        return cast("V", self._values[e]), length

    # --- updates -------------------------------------------------------------------------

    def insert_key(self, key: str, value: V) -> bool:
        """``insert`` by canonical prefix text ("192.0.2.0/24"), the RIB's form: a /24, by far
        the commonest EID prefix, takes a short path of its own (the text must be canonical:
        host bits are not checked there)."""
        address, _, length = key.partition("/")
        if length != "24":
            network, n = _parse(key)
            return self.insert(network, n, value)
        try:
            i = int.from_bytes(inet_aton(address), "big") >> 8
        except OSError:
            raise FibError(f"not an IPv4 prefix: {key!r}") from None
        lens = self._l1_len
        b = lens[i]
        if b & _LEN == 24:
            e = self._l1[i]
            self._values[self._l2_base[e ^ L2_FLAG] if e & L2_FLAG else e] = value
            return False
        values = self._values
        if self._free:
            slot = self._free.pop()
            values[slot] = value
        else:
            slot = len(values)
            values.append(value)
        if b & POINTER:
            self._paint_block(self._l1[i] ^ L2_FLAG, _INSERT[24], slot, 24)
            lens[i] = POINTER | 24
        else:
            self._l1[i] = slot
            lens[i] = 24
        self._count += 1
        return True

    def delete_key(self, key: str, covering: str | None) -> bool:
        """``delete`` by canonical prefix text; ``covering`` likewise (the tree's ``parent``)."""
        network, length = _parse(key)
        return self.delete(network, length, None if covering is None else _parse(covering))

    def insert(self, network: int, length: int, value: V) -> bool:
        """Add ``network/length`` -> ``value``, or replace its value; True if it was new."""
        _check(network, length)
        slot = self._slot(network, length)
        if slot:
            self._values[slot] = value
            return False
        slot = self._new_slot(value)
        if length == 24:
            # The ingest fast path: one entry, and nothing in level 1 is longer than a /24.
            i = network >> 8
            b = self._l1_len[i]
            if b & POINTER:
                self._paint_block(self._l1[i] ^ L2_FLAG, _INSERT[24], slot, 24)
                self._l1_len[i] = POINTER | 24
            else:
                self._l1[i] = slot
                self._l1_len[i] = 24
        elif length < 24:
            start = network >> 8
            self._paint_l1(start, start + (1 << (24 - length)), _INSERT[length], slot, length)
            self._slots[network << 6 | length] = slot
        else:
            k = self._block(network >> 8)
            start = (k << 8) | (network & 0xFF)
            self._paint(self._l2, self._l2_len, start, start + (1 << (32 - length)),
                        table=_INSERT[length], slot=slot, length=length)
            self._slots[network << 6 | length] = slot
        self._count += 1
        return True

    def delete(self, network: int, length: int, covering: tuple[int, int] | None) -> bool:
        """Remove ``network/length``; False if it was not there.

        ``covering`` is the (network, length) of the longest other prefix covering it (the
        tree's ``parent``), or None: its value takes over the entries this prefix owned.
        """
        _check(network, length)
        slot = self._slot(network, length)
        if not slot:
            return False
        new_slot = new_len = 0
        if covering is not None:
            cnet, new_len = covering
            _check(cnet, new_len)
            new_slot = self._slot(cnet, new_len)
            outside = new_len > 0 and (network ^ cnet) >> (32 - new_len) != 0
            if not new_slot or new_len >= length or outside:
                raise FibError(f"{cnet:#010x}/{new_len} is not a covering prefix in the FIB")
        table = _DELETE[length]
        if length <= 24:
            start = network >> 8
            self._paint_l1(start, start + (1 << (24 - length)), table, new_slot, new_len)
        else:
            i = network >> 8
            k = self._l1[i] ^ L2_FLAG
            base = k << 8
            start = base | (network & 0xFF)
            self._paint(self._l2, self._l2_len, start, start + (1 << (32 - length)),
                        table=table, slot=new_slot, length=new_len)
            if max(self._l2_len[base:base + BLOCK]) <= 24:
                # Nothing longer than /24 left: back to a single level-1 entry.
                self._l1[i] = self._l2_base[k]
                self._l1_len[i] = self._l1_len[i] & _LEN
                self._free_blocks.append(k)
        if length != 24:
            del self._slots[network << 6 | length]
        self._values[slot] = None
        self._free.append(slot)
        self._count -= 1
        return True

    # --- internals -----------------------------------------------------------------------

    def _slot(self, network: int, length: int) -> int:
        """The slot of exactly ``network/length``; 0 if absent."""
        if length != 24:
            return self._slots.get(network << 6 | length, 0)
        i = network >> 8
        if self._l1_len[i] & _LEN != 24:
            return 0
        e = self._l1[i]
        return self._l2_base[e ^ L2_FLAG] if e & L2_FLAG else e

    def _new_slot(self, value: V) -> int:
        if self._free:
            slot = self._free.pop()
            self._values[slot] = value
            return slot
        self._values.append(value)
        return len(self._values) - 1

    def _block(self, i: int) -> int:
        """The level-2 block of /24 number ``i``, made from its level-1 entry if it has none."""
        e = self._l1[i]
        if e & L2_FLAG:
            return e ^ L2_FLAG
        b = self._l1_len[i]
        fill = array("I", (e,)) * BLOCK
        if self._free_blocks:
            k = self._free_blocks.pop()
            base = k << 8
            self._l2[base:base + BLOCK] = fill
            self._l2_len[base:base + BLOCK] = bytes((b,)) * BLOCK
            self._l2_base[k] = e
        else:
            k = len(self._l2_base)
            self._l2.extend(fill)
            self._l2_len.extend(bytes((b,)) * BLOCK)
            self._l2_base.append(e)
        self._l1[i] = L2_FLAG | k
        self._l1_len[i] = POINTER | b
        return k

    def _paint_l1(self, start: int, stop: int, table: bytes, slot: int, length: int) -> None:
        """Rewrite the level-1 entries in [start, stop) that ``table`` selects, and, inside
        level-2 blocks whose base route it selects, the entries that route owns."""
        l1, lens = self._l1, self._l1_len
        mask = self._paint(l1, lens, start, stop, table=table, slot=slot, length=length)
        pos = mask.find(_POINT_BYTE)
        while pos >= 0:
            i = start + pos
            if table[lens[i] & _LEN] == _WRITE:
                self._paint_block(l1[i] ^ L2_FLAG, table, slot, length)
                lens[i] = POINTER | length
            pos = mask.find(_POINT_BYTE, pos + 1)

    def _paint_block(self, k: int, table: bytes, slot: int, length: int) -> None:
        self._l2_base[k] = slot
        base = k << 8
        self._paint(self._l2, self._l2_len, base, base + BLOCK, table=table, slot=slot, length=length)

    @staticmethod
    def _paint(slots: memoryview | array[int], lens: mmap.mmap | bytearray, start: int, stop: int, *,
               table: bytes, slot: int, length: int) -> bytes | bytearray:
        """Write (slot, length) over the runs in [start, stop) whose length byte ``table`` maps to
        _WRITE; returns the translated mask for the caller's pointer pass."""
        mask = lens[start:stop].translate(table)
        if len(mask) == 1:
            if mask[0] == _WRITE:
                slots[start] = slot
                lens[start] = length
            return mask
        for run in _RUNS.finditer(mask):
            _write(slots, lens, start + run.start(), start + run.end(), slot=slot, length=length)
        return mask
