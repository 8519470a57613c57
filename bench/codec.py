"""LISP codec speed: decode and encode rates of typical messages against a floor.

    python bench/codec.py [--rounds 5]

Messages: a Map-Request with one IPv4 EID record and two IPv4 ITR-RLOCs, and a
Map-Reply with one record and two IPv4 locators.  The floor is one precompiled
``struct.unpack_from`` of the same message's fixed fields: the least any Python
decoder must pay to look at every field, so ``ours/floor`` says how much of our
cost is the codec itself (object construction, checks) rather than the reading.

Rates are the best of several timeit rounds (the least disturbed by other work
on the machine).  Targets: >= 200,000 Map-Request decodes/s and >= 100,000
encodes/s.  The script reports; it always exits 0.
"""

from __future__ import annotations

import argparse
import struct
import timeit
from collections.abc import Callable
from ipaddress import ip_address

from alt_router import lisp

DECODE_TARGET = 200_000
ENCODE_TARGET = 100_000

MAP_REQUEST = lisp.MapRequest(
    0x1122334455667788,
    ip_address("10.2.0.9"),
    (ip_address("192.0.2.1"), ip_address("203.0.113.1")),
    (lisp.EidRecord(ip_address("10.1.0.7"), 32),),
)
MAP_REPLY = lisp.MapReply(
    0x1122334455667788,
    (
        lisp.MappingRecord(
            ip_address("10.1.0.0"), 16, 1440,
            (
                lisp.Locator(ip_address("198.51.100.1"), 1, 50),
                lisp.Locator(ip_address("198.51.100.2"), 1, 50),
            ),
            authoritative=True,
        ),
    ),
)

# Every fixed field of the two messages in one unpack each: header word, nonce,
# then AFI + address (Map-Request: source EID, two ITR-RLOCs, record), and
# record + locator headers (Map-Reply).
FLOOR_REQUEST = struct.Struct("!IQH4sH4sH4sBBH4s")
FLOOR_REPLY = struct.Struct("!IQIBBHHH4sBBBBHH4sBBBBHH4s")


def rate(func: Callable[[], object], rounds: int, target_seconds: float = 0.2) -> float:
    """Calls per second, best of ``rounds`` (each round sized to take about ``target_seconds``)."""
    timer = timeit.Timer(func)
    number, elapsed = timer.autorange()
    number = max(1, int(number * target_seconds / max(elapsed, 1e-9)))
    best = min(timer.repeat(repeat=rounds, number=number))
    return number / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timeit rounds per figure (best is kept)")
    args = parser.parse_args()

    request_bytes = MAP_REQUEST.encode()
    reply_bytes = MAP_REPLY.encode()
    assert FLOOR_REQUEST.size == len(request_bytes), (FLOOR_REQUEST.size, len(request_bytes))
    assert FLOOR_REPLY.size == len(reply_bytes), (FLOOR_REPLY.size, len(reply_bytes))
    assert lisp.decode(request_bytes) == MAP_REQUEST and lisp.decode(reply_bytes) == MAP_REPLY

    decode = lisp.decode
    unpack_request = FLOOR_REQUEST.unpack_from
    unpack_reply = FLOOR_REPLY.unpack_from
    rows = [
        ("Map-Request", "decode", rate(lambda: decode(request_bytes), args.rounds),
         rate(lambda: unpack_request(request_bytes), args.rounds)),
        ("Map-Request", "encode", rate(MAP_REQUEST.encode, args.rounds), None),
        ("Map-Reply", "decode", rate(lambda: decode(reply_bytes), args.rounds),
         rate(lambda: unpack_reply(reply_bytes), args.rounds)),
        ("Map-Reply", "encode", rate(MAP_REPLY.encode, args.rounds), None),
    ]
    print(f"{'message':<12} {'op':<7} {'ours/s':>12} {'floor/s':>12} {'ours/floor':>10} {'cost x':>7}  bytes")
    for name, op, ours, floor in rows:
        size = len(request_bytes if name == "Map-Request" else reply_bytes)
        floor_text = f"{floor:12,.0f}" if floor else f"{'-':>12}"
        ratio = f"{ours / floor:10.3f} {floor / ours:7.1f}" if floor else f"{'-':>10} {'-':>7}"
        print(f"{name:<12} {op:<7} {ours:12,.0f} {floor_text} {ratio}  {size}")

    request_decode = rows[0][2]
    encodes = min(rows[1][2], rows[3][2])
    print()
    print(f"{'PASS' if request_decode >= DECODE_TARGET else 'MISS'}: Map-Request decode "
          f"{request_decode:,.0f}/s (target >= {DECODE_TARGET:,}/s)")
    print(f"{'PASS' if encodes >= ENCODE_TARGET else 'MISS'}: encode, slower of the two "
          f"{encodes:,.0f}/s (target >= {ENCODE_TARGET:,}/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
