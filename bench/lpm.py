"""Longest-prefix-match benchmark: pytricia, py-radix and alt_router's tables side by side.

Inserts N IPv4 /24s (default 1,000,000, the size of a full-table stress test),
then times longest-match lookups on the full table of random destinations
drawn two ways: uniformly over 1.0.0.0-223.255.255.255 ("full space": most
miss) and inside the inserted prefixes ("routed space": every one hits).
It also measures the memory the table added (anonymous memory, see
``_anon_kib``).  Each column runs in its own subprocess so one's heap does not
pollute another's figure.

Columns: ``pytricia`` and ``py-radix`` called directly; ``tree`` and ``fib`` are
``LpmTable(4)`` with ``fib="tree"`` (pytricia only) and ``fib="dir24"`` (the
DIR-24-8 array of alt_router/rib/fib.py beside the tree), filled through
``set_key`` (the RIB's path) and queried through ``lookup_packed`` (the
forwarder's call).  Every column looks up the destination as 4 raw bytes,
its library's fastest form.

    python bench/lpm.py            # 1,000,000 prefixes, 1,000,000 lookups of each kind
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LIBS = ("pytricia", "py-radix", "tree", "fib")


def _anon_kib() -> int:
    """Anonymous memory, not RSS: a lookup that reads a never-written page of the FIB's mapping
    maps the kernel's shared zero page, which RSS counts (up to 80 MiB) but which costs nothing."""
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    raise SystemExit("no Anonymous: line in /proc/self/smaps_rollup")


def _prefixes(n: int) -> list[str]:
    # Spread /24s over the unicast space deterministically: index i -> a.b.c.0/24.
    out = []
    for i in range(n):
        a = 1 + (i >> 16) % 223
        out.append(f"{a}.{(i >> 8) & 0xFF}.{i & 0xFF}.0/24")
    return out


def _full_space(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    return [bytes((rnd.randint(1, 223), rnd.randint(0, 255), rnd.randint(0, 255), rnd.randint(1, 254)))
            for _ in range(n)]


def _routed_space(prefixes: list[str], n: int, seed: int = 2) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, c, _d = prefixes[rnd.randrange(len(prefixes))].split("/")[0].split(".")
        out.append(bytes((int(a), int(b), int(c), rnd.randint(0, 255))))
    return out


def _rate(fn: Callable[[bytes], object], keys: list[bytes]) -> tuple[float, int]:
    hits = 0
    start = time.perf_counter()
    for k in keys:
        if fn(k) is not None:
            hits += 1
    return len(keys) / (time.perf_counter() - start), hits


def run_one(lib: str, n: int, lookups: int) -> dict[str, float]:
    prefixes = _prefixes(n)
    full = _full_space(lookups)
    routed = _routed_space(prefixes, lookups)
    gc.collect()
    base = _anon_kib()
    get: Callable[[bytes], object]
    if lib == "pytricia":
        import pytricia  # noqa: PLC0415 - imported in the child so each RSS figure is its own

        table = pytricia.PyTricia(32)
        t0 = time.perf_counter()
        for i, p in enumerate(prefixes):
            table[p] = i
        t1 = time.perf_counter()
        get = table.get
    elif lib in ("tree", "fib"):
        from alt_router.rib.table import LpmTable  # noqa: PLC0415

        lpm: LpmTable[int] = LpmTable(4, "dir24" if lib == "fib" else "tree")
        set_key = lpm.set_key
        t0 = time.perf_counter()
        for i, p in enumerate(prefixes):
            set_key(p, i, new=True)
        t1 = time.perf_counter()
        get = lpm.lookup_packed
    elif lib == "py-radix":
        import radix  # noqa: PLC0415

        tree = radix.Radix()
        t0 = time.perf_counter()
        for i, p in enumerate(prefixes):
            tree.add(p).data["v"] = i
        t1 = time.perf_counter()
        best = tree.search_best

        def get(packed: bytes) -> object:
            node = best(packed=packed)
            return None if node is None else node.data["v"]
    else:
        raise SystemExit(f"unknown library {lib}")
    full_rate, full_hits = _rate(get, full)
    routed_rate, routed_hits = _rate(get, routed)
    gc.collect()
    rss = _anon_kib() - base
    return {
        "insert_s": t1 - t0,
        "inserts_per_s": n / (t1 - t0),
        "full_per_s": full_rate,
        "full_hits": full_hits,
        "routed_per_s": routed_rate,
        "routed_hits": routed_hits,
        "rss_mib": rss / 1024,
        "bytes_per_prefix": rss * 1024 / n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="IPv4 /24 prefixes to insert")
    parser.add_argument("-l", "--lookups", type=int, default=1_000_000, help="lookups of each kind")
    parser.add_argument("--one", choices=LIBS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.lookups)))
        return 0
    results = {}
    for lib in LIBS:  # one child each: RSS figures stay separate
        out = subprocess.run(
            [sys.executable, __file__, "--one", lib, "-n", str(args.n), "-l", str(args.lookups)],
            check=True, capture_output=True, text=True,
        )
        results[lib] = json.loads(out.stdout)
    print(f"{args.n:,} IPv4 /24 prefixes; {args.lookups:,} lookups of each kind on the full table")
    print("(tree/fib = LpmTable(4, fib=...).lookup_packed, the forwarder's call; all on raw address bytes)")
    print(f"{'':26}" + "".join(f"{lib:>13}" for lib in LIBS))
    rows = [
        ("insert time (s)", "insert_s", "{:.2f}"),
        ("inserts/s", "inserts_per_s", "{:,.0f}"),
        ("lookups/s, full space", "full_per_s", "{:,.0f}"),
        ("  hits", "full_hits", "{:,.0f}"),
        ("lookups/s, routed space", "routed_per_s", "{:,.0f}"),
        ("  hits", "routed_hits", "{:,.0f}"),
        ("table memory (MiB)", "rss_mib", "{:.1f}"),
        ("bytes/prefix", "bytes_per_prefix", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:26}" + "".join(f"{fmt.format(results[lib][key]):>13}" for lib in LIBS))
    fib, tree = results["fib"], results["tree"]
    print(f"fib / tree: lookups {fib['full_per_s'] / tree['full_per_s']:.2f}x (full space), "
          f"{fib['routed_per_s'] / tree['routed_per_s']:.2f}x (routed space), "
          f"insert time {fib['insert_s'] / tree['insert_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
