"""The Map-Server core alone, in-process: what ``bench/map_server.py`` measures minus the UDP edge.

    python3 bench/map_server_core.py [--registrations 300000] [--refresh 150000] [--profile]

Drives ``MapServer.handle_register`` directly with pre-built, pre-signed Map-Registers
(HMAC-SHA-256, full 32-byte digest, M bit, one /28 record each, one RLOC) laid out as the
scale benchmark lays them out (one /20 site with ``accept_more_specifics`` per 256
registrations), then re-registers them (new nonces) with one ALT Map-Request
(``handle_alt``) per ten Map-Registers, as the scale benchmark's lookups flow.

Reported beside a reference measured in the same run, the raw HMAC-SHA-256 rate of
``hmac.digest`` over one such Map-Register (the one cost no Map-Server avoids):

* the fill rate (first registration of each site prefix) and the refresh rate with lookups,
  as registrations/s and as a ratio to the HMAC rate;
* memory: RSS growth over the fill per registration (target <= 1024 bytes), after a GC.

``--profile`` runs the refresh phase under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hmac
import pstats
import struct
import sys
import time
from hashlib import sha256
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alt_router.inet import udp_packet
from alt_router.lisp import HMAC_SHA_256_128, EidRecord, MapRequest
from alt_router.mapping.map_server import MapServer, Site

SPACE = IPv4Network("153.0.0.0/8")
REG_LEN = 28
SITE_LEN = 20
PER_SITE = 1 << (REG_LEN - SITE_LEN)
ETR = IPv4Address("10.70.0.3")
ITR = IPv4Address("10.70.0.9")
MS = IPv4Address("10.70.0.1")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def site_key(site: int) -> bytes:
    return f"bench-key-{site}".encode()


def template() -> tuple[bytearray, int]:
    """One Map-Register (RFC 9301 §5.6) built byte by byte, MAC zero; and its EID offset."""
    loc = struct.pack("!BBBBHH", 1, 100, 255, 0, 0x5, 1) + ETR.packed
    word = (1 << 24) | (REG_LEN << 16) | (1 << 12)  # one locator, the mask length, the A bit
    rec = struct.pack("!IIHH", 3, word, 0, 1) + SPACE.network_address.packed
    head = struct.pack("!IQBBH", (3 << 28) | (1 << 8) | 1, 0, 0, HMAC_SHA_256_128, 32)
    msg = bytearray(head + bytes(32) + rec + loc)
    return msg, len(head) + 32 + 12


def build(n: int, nonce: int) -> list[bytes]:
    msg, eid_off = template()
    keys = [site_key(s) for s in range((n + PER_SITE - 1) // PER_SITE)]
    base = int(SPACE.network_address)
    step = 1 << (32 - REG_LEN)
    out = []
    for i in range(n):
        struct.pack_into("!Q", msg, 4, nonce + i)
        struct.pack_into("!I", msg, eid_off, base + i * step)
        msg[16:48] = bytes(32)
        msg[16:48] = hmac.digest(keys[i // PER_SITE], msg, sha256)
        out.append(bytes(msg))
    return out


def lookups(n: int, count: int) -> list[bytes]:
    """ALT datagrams (IP/UDP/Map-Request) for registered EIDs, as the Map-Resolver forwards them."""
    out = []
    step = 1 << (32 - REG_LEN)
    for k in range(count):
        i = (k * 7919) % n
        eid = IPv4Address(int(SPACE.network_address) + i * step + 1)
        req = MapRequest(k + 1, None, (ITR,), (EidRecord(eid, 32),)).encode()
        out.append(udp_packet(ITR, eid, 4342, 4342, req, ttl=32))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--registrations", type=int, default=300_000)
    p.add_argument("--refresh", type=int, default=150_000, help="re-registrations timed")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    n = a.registrations
    sites = [
        Site(f"s{s}", site_key(s).decode(), HMAC_SHA_256_128,
             (IPv4Network((int(SPACE.network_address) + s * (1 << (32 - SITE_LEN)), SITE_LEN)),),
             accept_more_specifics=True)
        for s in range((n + PER_SITE - 1) // PER_SITE)
    ]
    fill = build(n, 1 << 40)
    refresh = build(min(n, a.refresh), 2 << 40)
    alt = lookups(n, 4096)

    # Reference: HMAC-SHA-256 over one Map-Register, one-shot, in this process.
    one, key = fill[0], site_key(0)
    t0 = time.perf_counter()
    reps = 200_000
    for _ in range(reps):
        hmac.digest(key, one, sha256)
    hmac_rate = reps / (time.perf_counter() - t0)

    ms = MapServer(sites, max_per_site=1024, max_per_source=10_000_000, max_nonces=1 << 20)
    gc.collect()
    rss0 = rss_bytes()
    now = 0.0
    t0 = time.perf_counter()
    handle = ms.handle_register
    for i, data in enumerate(fill):
        handle(data, ETR, 4342, now + i * 1e-4)
    fill_s = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    if len(ms) != n:
        print(f"only {len(ms)} of {n} registered: {dict(ms.counters)}", file=sys.stderr)
        return 1

    now = 60.0
    handle_alt = ms.handle_alt
    prof = cProfile.Profile() if a.profile else None
    sent_notify = 0
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    for i, data in enumerate(refresh):
        sent_notify += len(handle(data, ETR, 4342, now + i * 2e-4))
        if i % 10 == 0:
            handle_alt(alt[(i // 10) & 4095], now + i * 2e-4)
    if prof:
        prof.disable()
    refresh_s = time.perf_counter() - t0
    forwarded = ms.counters["forwarded-to-etr"]
    ok = sent_notify == len(refresh) and forwarded == (len(refresh) + 9) // 10
    fill_rate = n / fill_s
    refresh_rate = len(refresh) / refresh_s
    per_reg = (rss1 - rss0) / n
    print(f"reference: HMAC-SHA-256 over one {len(one)}-byte Map-Register: {hmac_rate:,.0f}/s")
    print(f"fill:    {n:,} registrations in {fill_s:.2f} s = {fill_rate:,.0f}/s "
          f"({fill_rate / hmac_rate:.3f}x HMAC, {1e6 / fill_rate:.1f} us each)")
    print(f"refresh: {len(refresh):,} re-registrations + {forwarded:,} lookups in {refresh_s:.2f} s = "
          f"{refresh_rate:,.0f}/s ({refresh_rate / hmac_rate:.3f}x HMAC, {1e6 / refresh_rate:.1f} us each)"
          f"{'' if ok else ' (NOT all answered!)'}")
    print(f"memory:  RSS +{(rss1 - rss0) / 2**20:.1f} MiB for {n:,} = {per_reg:.0f} bytes per registration "
          "(target <= 1024)")
    print(f"state:   {ms.stats()}")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
