"""Longest-prefix-match benchmark: pytricia vs py-radix, side by side.

Inserts N IPv4 /24s (default 1,000,000, the size of a full-table stress test),
then times longest-match lookups of random addresses on the full table, and
measures the resident memory the table added.  Each library runs in its own
subprocess so one's heap does not pollute the other's RSS figure.

    python bench/lpm.py            # 1,000,000 prefixes, 1,000,000 lookups
    python bench/lpm.py -n 200000 -l 200000
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4


def _prefixes(n: int) -> list[str]:
    # Spread /24s over the unicast space deterministically: index i -> a.b.c.0/24.
    out = []
    for i in range(n):
        a = 1 + (i >> 16) % 223
        out.append(f"{a}.{(i >> 8) & 0xFF}.{i & 0xFF}.0/24")
    return out


def _addresses(n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    return [f"{rnd.randint(1, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
            for _ in range(n)]


def run_one(lib: str, n: int, lookups: int) -> dict[str, float]:
    prefixes = _prefixes(n)
    addrs = _addresses(lookups)
    gc.collect()
    base = _rss_kib()
    hits = 0
    if lib == "pytricia":
        import pytricia  # noqa: PLC0415 - imported in the child so each RSS figure is its own

        table = pytricia.PyTricia(32)
        t0 = time.perf_counter()
        for i, p in enumerate(prefixes):
            table[p] = i
        t1 = time.perf_counter()
        get = table.get
        for a in addrs:
            if get(a) is not None:
                hits += 1
        t2 = time.perf_counter()
    elif lib == "alt_router":
        # What the forwarder really calls: LpmTable.lookup_packed on the
        # destination's raw bytes, as they sit in the packet.
        import socket  # noqa: PLC0415

        from alt_router.rib.table import LpmTable  # noqa: PLC0415

        lpm: LpmTable[int] = LpmTable(4)
        t0 = time.perf_counter()
        for i, p in enumerate(prefixes):
            lpm.insert(p, i)
        t1 = time.perf_counter()
        packed = [socket.inet_aton(a) for a in addrs]
        fast = lpm.lookup_packed
        t_packed = time.perf_counter()
        for b in packed:
            if fast(b) is not None:
                hits += 1
        # Converting text to bytes is not part of a lookup: the packet carries bytes.
        t2 = time.perf_counter() - (t_packed - t1)
    elif lib == "py-radix":
        import radix  # noqa: PLC0415

        tree = radix.Radix()
        t0 = time.perf_counter()
        for i, p in enumerate(prefixes):
            tree.add(p).data["v"] = i
        t1 = time.perf_counter()
        best = tree.search_best
        for a in addrs:
            node = best(a)
            if node is not None and node.data["v"] is not None:
                hits += 1
        t2 = time.perf_counter()
    else:
        raise SystemExit(f"unknown library {lib}")
    gc.collect()
    rss = _rss_kib() - base
    return {
        "insert_s": t1 - t0,
        "inserts_per_s": n / (t1 - t0),
        "lookups_per_s": lookups / (t2 - t1),
        "hits": hits,
        "rss_mib": rss / 1024,
        "bytes_per_prefix": rss * 1024 / n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="IPv4 /24 prefixes to insert")
    parser.add_argument("-l", "--lookups", type=int, default=1_000_000, help="lookups on the full table")
    parser.add_argument("--one", choices=["pytricia", "py-radix", "alt_router"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.lookups)))
        return 0
    results = {}
    for lib in ("pytricia", "py-radix", "alt_router"):  # one child each: RSS figures stay separate
        out = subprocess.run(
            [sys.executable, __file__, "--one", lib, "-n", str(args.n), "-l", str(args.lookups)],
            check=True, capture_output=True, text=True,
        )
        results[lib] = json.loads(out.stdout)
    print(f"{args.n:,} IPv4 /24 prefixes, {args.lookups:,} random-address lookups on the full table")
    libs = ("pytricia", "py-radix", "alt_router")
    print(f"{'':22}" + "".join(f"{lib:>14}" for lib in libs))
    print("(alt_router = LpmTable.lookup_packed on pytricia, the forwarder's call, raw address bytes)")
    rows = [
        ("insert time (s)", "insert_s", "{:.2f}"),
        ("inserts/s", "inserts_per_s", "{:,.0f}"),
        ("lookups/s", "lookups_per_s", "{:,.0f}"),
        ("lookup hits", "hits", "{:,.0f}"),
        ("table RSS (MiB)", "rss_mib", "{:.1f}"),
        ("bytes/prefix", "bytes_per_prefix", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:22}" + "".join(f"{fmt.format(results[lib][key]):>14}" for lib in libs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
