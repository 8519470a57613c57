"""Map-Server sites replaced at run time (``MapServer.set_sites``, a config reload)."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_network

from alt_router.lisp import HMAC_SHA_256_128
from alt_router.mapping.actions import Announce, Withdraw
from alt_router.mapping.map_server import MapServer, Site

from .test_map_server import ETR1, SITE, SITE_ALWAYS, SITE_MORE, record, register

NEW = Site("site-9", "secret-9", HMAC_SHA_256_128, (ip_network("153.16.9.0/24"),))


def registered() -> MapServer:
    ms = MapServer([SITE, SITE_MORE, SITE_ALWAYS])
    ms.start()
    assert ms.handle_register(register(record("153.16.1.0/24"), notify=False), ETR1, 4342, 0.0) == [
        Announce(ip_network("153.16.1.0/24"))]
    return ms


def test_unchanged_sites_are_not_touched() -> None:
    ms = registered()
    assert ms.set_sites([SITE, SITE_MORE, SITE_ALWAYS], 1.0) == []
    assert [r.site for r in ms.registrations()] == ["site-1"]


def test_a_new_site_accepts_registers_and_an_always_announced_one_is_announced() -> None:
    ms = registered()
    always = dataclasses.replace(NEW, name="site-10", prefixes=(ip_network("153.16.10.0/24"),),
                                 always_announce=True)
    out = ms.set_sites([SITE, SITE_MORE, SITE_ALWAYS, NEW, always], 1.0)
    assert out == [Announce(ip_network("153.16.10.0/24"))]
    data = register(record("153.16.9.0/24"), key="secret-9", notify=False)
    assert ms.handle_register(data, ETR1, 4342, 2.0) == [Announce(ip_network("153.16.9.0/24"))]


def test_a_removed_site_loses_its_registrations_and_announcements() -> None:
    ms = registered()
    out = ms.set_sites([SITE_MORE], 1.0)
    assert sorted(out, key=str) == [Withdraw(ip_network("153.16.1.0/24")),
                                    Withdraw(ip_network("153.16.3.0/24"))]
    assert ms.registrations() == []
    assert ms.counters["dropped-on-reload"] == 1
    # Its ETR is now refused.
    assert ms.handle_register(register(record("153.16.1.0/24")), ETR1, 4342, 2.0) == []
    assert ms.counters["refused:unknown-site"] == 1


def test_a_new_key_drops_the_registrations_made_with_the_old_one() -> None:
    ms = registered()
    out = ms.set_sites([dataclasses.replace(SITE, key="rotated"), SITE_MORE, SITE_ALWAYS], 1.0)
    assert out == [Withdraw(ip_network("153.16.1.0/24"))]
    assert ms.registrations() == []
    assert ms.handle_register(register(record("153.16.1.0/24")), ETR1, 4342, 2.0) == []
    assert ms.counters["refused:auth-mismatch"] == 1
    data = register(record("153.16.1.0/24"), key="rotated", notify=False)
    assert ms.handle_register(data, ETR1, 4342, 3.0) == [Announce(ip_network("153.16.1.0/24"))]


def test_changed_prefixes_move_the_announcement_and_keep_registrations_still_allowed() -> None:
    ms = registered()
    wider = dataclasses.replace(SITE, prefixes=(ip_network("153.16.1.0/24"),
                                                    ip_network("153.16.11.0/24")))
    assert ms.set_sites([wider, SITE_MORE, SITE_ALWAYS], 1.0) == [Announce(ip_network("153.16.11.0/24"))]
    assert [r.prefix for r in ms.registrations()] == [ip_network("153.16.1.0/24")]
    moved = dataclasses.replace(SITE, prefixes=(ip_network("153.16.12.0/24"),))
    out = ms.set_sites([moved, SITE_MORE, SITE_ALWAYS], 2.0)
    # The registration for 153.16.1.0/24 no longer fits the site: dropped, and the site goes quiet.
    assert ms.registrations() == []
    assert sorted(out, key=str) == [Withdraw(ip_network("153.16.1.0/24")),
                                    Withdraw(ip_network("153.16.11.0/24"))]
