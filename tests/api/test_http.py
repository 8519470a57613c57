"""The read and write endpoints, their filters and errors, and the token rules, against a live server."""

from __future__ import annotations

import asyncio
import json
import random
import string
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import pytest

from alt_router.api.http import ApiConfigError, ApiServer, is_loopback
from tests.api.conftest import TOKEN, LiveServer
from tests.api.fake_view import FakeNodeView


def populate(live: LiveServer) -> None:
    def setup() -> None:
        live.view.up("b", "c")
        live.view.learn("b", "153.16.0.0/16", "153.16.1.0/24", "2001:db8::/48")
        live.view.learn("c", "153.16.1.0/24", as_path=(65003, 65010))  # longer path: not best
        live.view.learn("c", "153.17.0.0/16")
        live.view.learn("c", "10.0.0.0/8")  # outside the EID space: dropped
    live.call(setup)


def prefixes(answer: dict[str, object]) -> list[str]:
    routes = answer["routes"]
    assert isinstance(routes, list)
    return [r["prefix"] for r in routes]


# --- read endpoints ------------------------------------------------------------


def test_status_has_node_identity_and_stream_position(live: LiveServer) -> None:
    populate(live)
    status, body = live.json("GET", "/v1/status")
    assert status == 200
    assert body["node"] == "a" and body["asn"] == 65001 and body["routes"] == 4
    assert body["api"]["stream"]["last_seq"] == live.view.events.last_seq > 0


def test_peers_report_state_uptime_and_prefix_counts(live: LiveServer) -> None:
    populate(live)
    live.call(lambda: setattr(live.view, "now", 1060.0))
    status, body = live.json("GET", "/v1/peers")
    assert status == 200
    peers = {p["name"]: p for p in body["peers"]}
    assert peers["b"]["state"] == "up" and peers["b"]["uptime"] == 60.0
    assert peers["b"]["prefixes"]["accepted"] == 3 and peers["b"]["prefixes"]["best"] == 3
    assert peers["c"]["prefixes"]["accepted"] == 2 and peers["c"]["prefixes"]["best"] == 1
    assert peers["c"]["prefixes"]["dropped"] == {"outside-eid-space": 1}
    assert peers["c"]["prefixes"]["received"] == 3


def test_peer_down_shows_reason_and_no_uptime(live: LiveServer) -> None:
    populate(live)
    live.call(live.view.rib.peer_down, "c", "hold timer expired", 1010.0)
    _, body = live.json("GET", "/v1/peers")
    c = next(p for p in body["peers"] if p["name"] == "c")
    assert c["state"] == "down" and c["uptime"] is None and c["last_down_reason"] == "hold timer expired"


def test_tunnels_registrations_and_counters(live: LiveServer) -> None:
    _, tunnels = live.json("GET", "/v1/tunnels")
    assert [t["name"] for t in tunnels["tunnels"]] == ["gre-b", "gre-c"]
    assert tunnels["tunnels"][0]["counters"]["drops"] == {"wrong-key": 2}
    _, regs = live.json("GET", "/v1/registrations")
    assert regs["registrations"][0]["eid_prefix"] == "153.16.1.0/24"
    _, counters = live.json("GET", "/v1/counters")
    assert counters["map_server"]["registers_refused"]["unknown-site"] == 2
    assert counters["api"]["stream"]["clients"] == 0


def test_routes_lists_best_paths(live: LiveServer) -> None:
    populate(live)
    status, body = live.json("GET", "/v1/routes")
    assert status == 200
    assert sorted(prefixes(body)) == ["153.16.0.0/16", "153.16.1.0/24", "153.17.0.0/16", "2001:db8::/48"]
    assert body["count"] == body["total"] == 4 and body["truncated"] is False
    route = next(r for r in body["routes"] if r["prefix"] == "153.16.1.0/24")
    assert route["peer"] == "b" and route["next_hop"] == "10.255.1.2" and route["as_path"] == [65002]


@pytest.mark.parametrize(("query", "expected"), [
    ("prefix=153.16.1.0/24", ["153.16.1.0/24"]),
    ("prefix=153.16.1.0/24&match=exact", ["153.16.1.0/24"]),
    ("prefix=153.16.0.0/16&match=longer", ["153.16.0.0/16", "153.16.1.0/24"]),
    ("prefix=153.16.0.0/12&match=longer", ["153.16.0.0/16", "153.16.1.0/24", "153.17.0.0/16"]),
    ("prefix=153.16.1.0/24&match=shorter", ["153.16.1.0/24", "153.16.0.0/16"]),
    ("prefix=153.16.1.128/25&match=shorter", ["153.16.1.0/24", "153.16.0.0/16"]),
    ("prefix=153.16.2.0/24", []),
    ("prefix=2001:db8::/32&match=longer", ["2001:db8::/48"]),
    ("peer=c", ["153.16.1.0/24", "153.17.0.0/16"]),
    ("peer=b&prefix=153.16.0.0/16&match=longer", ["153.16.0.0/16", "153.16.1.0/24"]),
    ("peer=c&prefix=153.16.1.0/24&match=shorter", ["153.16.1.0/24"]),
])
def test_route_filters(live: LiveServer, query: str, expected: list[str]) -> None:
    populate(live)
    status, body = live.json("GET", "/v1/routes?" + query)
    assert status == 200, body
    assert prefixes(body) == expected


def test_peer_filter_marks_which_paths_are_best(live: LiveServer) -> None:
    populate(live)
    _, body = live.json("GET", "/v1/routes?peer=c")
    best = {r["prefix"]: r["best"] for r in body["routes"]}
    assert best == {"153.16.1.0/24": False, "153.17.0.0/16": True}


def test_limit_truncates_and_says_so(live: LiveServer) -> None:
    populate(live)
    _, body = live.json("GET", "/v1/routes?limit=2")
    assert body["count"] == 2 and body["total"] == 4 and body["truncated"] is True
    _, body = live.json("GET", "/v1/routes?prefix=153.16.0.0/12&match=longer&limit=1")
    assert body["count"] == 1 and body["total"] == 3 and body["truncated"] is True


def test_lookup_gives_route_and_next_hop(live: LiveServer) -> None:
    populate(live)
    status, body = live.json("GET", "/v1/lookup/153.16.1.9")
    assert status == 200
    assert body["prefix"] == "153.16.1.0/24" and body["next_hop_peer"] == "b" and body["tunnel"] == "gre-b"
    status, body = live.json("GET", "/v1/lookup/2001:db8::1")
    assert status == 200 and body["prefix"] == "2001:db8::/48"
    status, body = live.json("GET", "/v1/lookup/153.31.0.1")
    assert status == 404 and body["error"] == "no route"


# --- errors --------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status", "error"), [
    ("/v1/routes?prefix=153.16.0.1/16", 400, "bad prefix"),  # host bits set
    ("/v1/routes?prefix=banana", 400, "bad prefix"),
    ("/v1/routes?prefix=153.16.0.0/33", 400, "bad prefix"),
    ("/v1/routes?prefix=153.16.0.0/16&match=sideways", 400, "bad match kind"),
    ("/v1/routes?match=longer", 400, "match without prefix"),
    ("/v1/routes?limit=0", 400, "bad limit"),
    ("/v1/routes?limit=-3", 400, "bad sequence number"),
    ("/v1/routes?colour=red", 400, "unknown parameter"),
    ("/v1/routes?prefix=153.16.0.0/16&prefix=153.17.0.0/16", 400, "repeated parameter"),
    ("/v1/routes?peer=nobody", 404, "unknown peer"),
    ("/v1/lookup/not-an-address", 400, "bad EID"),
    ("/v1/stream?since=yesterday", 400, "bad sequence number"),
    ("/v1/stream?since=-1", 400, "bad sequence number"),
    ("/v1/nothing", 404, "not found"),
    ("/", 404, "not found"),
])
def test_bad_requests_get_json_errors(live: LiveServer, path: str, status: int, error: str) -> None:
    got, headers, raw = live.request("GET", path)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    body = json.loads(raw)
    assert body["error"] == error and isinstance(body["detail"], str)


def test_bad_last_event_id_header_is_400(live: LiveServer) -> None:
    status, body = live.json("GET", "/v1/stream", headers={"Last-Event-ID": "abc"})
    assert status == 400 and body["error"] == "bad sequence number"


def test_wrong_method_is_405_with_allow(live: LiveServer) -> None:
    status, headers, raw = live.request("PUT", "/v1/status")
    assert status == 405 and "GET" in headers["Allow"]
    assert json.loads(raw)["error"] == "method not allowed"


def test_oversized_body_is_413_and_changes_nothing(live: LiveServer) -> None:
    body = json.dumps({"prefix": "153.16.9.0/24", "pad": "x" * 100_000}).encode()
    status, _, raw = live.request("POST", "/v1/routes", body,
                                  {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert status == 413 and json.loads(raw)["error"]
    assert live.view.announced == set()


def test_a_failing_view_is_a_500_json_error(live: LiveServer) -> None:
    def broken() -> list[dict[str, object]]:
        raise RuntimeError("bug in the daemon")
    live.view.tunnels = broken  # type: ignore[method-assign]
    status, body = live.json("GET", "/v1/tunnels")
    assert status == 500 and body["error"] == "internal error"
    assert live.json("GET", "/v1/peers")[0] == 200


def test_random_query_strings_never_cause_5xx(live: LiveServer) -> None:
    populate(live)
    rng = random.Random(6836)
    keys = ["prefix", "match", "peer", "limit", "since", "x", "", "prefix[]"]
    values = ["153.16.0.0/16", "::/0", "0.0.0.0/0", "longer", "shorter", "exact", "1", "0", "-1",
              "99999999999999999999999", "b", "%00", "\u00e9", "/", "153.16.0.0/16/16", "fe80::1%eth0/64"]
    paths = ["/v1/routes", "/v1/lookup/", "/v1/status", "/v1/peers", "/v1/routes/"]
    for _ in range(150):
        params = [(rng.choice(keys), rng.choice(values) + rng.choice(["", rng.choice(string.printable)]))
                  for _ in range(rng.randint(0, 3))]
        path = rng.choice(paths)
        if path == "/v1/lookup/":
            path += urllib.parse.quote(rng.choice(values), safe="")
        status, _, _ = live.request("GET", path + "?" + urllib.parse.urlencode(params))
        assert status < 500, (path, params)


# --- writes and tokens ---------------------------------------------------------


def test_announce_and_withdraw_with_token(live: LiveServer) -> None:
    status, body = live.json("POST", "/v1/routes", {"prefix": "153.16.9.0/24"}, token=TOKEN)
    assert status == 201 and body == {"prefix": "153.16.9.0/24", "action": "announce", "changed": True}
    status, body = live.json("POST", "/v1/routes", {"prefix": "153.16.9.0/24"}, token=TOKEN)
    assert status == 200 and body["changed"] is False
    status, body = live.json("DELETE", "/v1/routes/153.16.9.0/24", token=TOKEN)
    assert status == 200 and body["changed"] is True
    status, body = live.json("DELETE", "/v1/routes/153.16.9.0%2F24", token=TOKEN)
    assert status == 200 and body["changed"] is False
    assert live.view.announced == set()


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer ", "Basic czNjcmV0LXRva2Vu", TOKEN,
                                  "Bearer s3cret-token-and-more", "Bearer s3cret-toke"])
def test_writes_without_the_right_token_are_401_and_no_change(live: LiveServer, auth: str | None) -> None:
    headers = {"Content-Type": "application/json"} | ({"Authorization": auth} if auth else {})
    status, h, raw = live.request("POST", "/v1/routes", b'{"prefix": "153.16.9.0/24"}', headers)
    assert status == 401 and json.loads(raw)["error"] == "unauthorized" and "Bearer" in h["WWW-Authenticate"]
    live.call(live.view.announced.add, "153.16.7.0/24")
    status, _, _ = live.request("DELETE", "/v1/routes/153.16.7.0/24", None, headers)
    assert status == 401
    assert live.view.announced == {"153.16.7.0/24"}


def test_writes_are_refused_when_no_token_is_configured(make_live: Callable[..., LiveServer]) -> None:
    live = make_live(token=None)
    status, body = live.json("POST", "/v1/routes", {"prefix": "153.16.9.0/24"}, token="anything")
    assert status == 401 and "none is configured" in body["detail"]
    assert live.view.announced == set()
    assert live.json("GET", "/v1/status")[0] == 200  # reads stay open on loopback


@pytest.mark.parametrize(("body", "error"), [
    (b"not json", "bad body"),
    (b"[1, 2]", "bad body"),
    (b'{"prefix": 5}', "bad body"),
    (b"{}", "bad body"),
    (b'{"prefix": "153.16.9.1/24"}', "bad prefix"),
    (b"\xff\xfe", "bad body"),
])
def test_bad_announce_bodies_are_400(live: LiveServer, body: bytes, error: str) -> None:
    status, _, raw = live.request("POST", "/v1/routes", body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 400 and json.loads(raw)["error"] == error
    assert live.view.announced == set()


def test_refused_prefix_is_422(live: LiveServer) -> None:
    status, body = live.json("POST", "/v1/routes", {"prefix": "10.0.0.0/8"}, token=TOKEN)
    assert status == 422 and "outside" in body["detail"]
    status, body = live.json("DELETE", "/v1/routes/not-a-prefix", token=TOKEN)
    assert status == 400 and body["error"] == "bad prefix"


def test_requests_are_counted_by_status(live: LiveServer) -> None:
    live.request("GET", "/v1/status")
    live.request("GET", "/v1/nothing")
    _, body = live.json("GET", "/v1/counters")
    assert body["api"]["requests"]["200"] >= 1 and body["api"]["requests"]["404"] == 1


# --- binding rules ---------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "localhost", ""])
def test_non_loopback_bind_without_token_is_refused(host: str) -> None:
    with pytest.raises(ApiConfigError, match="needs a bearer token"):
        ApiServer(FakeNodeView(), host, 0)


def test_empty_token_is_refused() -> None:
    with pytest.raises(ApiConfigError, match="empty"):
        ApiServer(FakeNodeView(), "127.0.0.1", 0, token="  ")


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.9.9.9") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("localhost")


def test_exposed_server_needs_the_token_for_reads_too() -> None:
    async def scenario() -> tuple[int, int]:
        # Listening on a real non-loopback address would expose the test: flip the rule instead.
        server = ApiServer(FakeNodeView(), "127.0.0.1", 0, token=TOKEN)
        server.read_needs_token = True
        await server.start()
        try:
            loop = asyncio.get_running_loop()

            def get(headers: dict[str, str]) -> int:
                req = urllib.request.Request(server.url + "/v1/status", headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=5) as resp:
                        return int(resp.status)
                except urllib.error.HTTPError as exc:
                    return exc.code

            without = await loop.run_in_executor(None, get, {})
            with_token = await loop.run_in_executor(None, get, {"Authorization": f"Bearer {TOKEN}"})
            return without, with_token
        finally:
            await server.stop()

    assert asyncio.run(scenario()) == (401, 200)


def test_port_in_use_is_a_clear_error(live: LiveServer) -> None:
    async def clash() -> None:
        await ApiServer(FakeNodeView(), "127.0.0.1", live.server.port).start()

    with pytest.raises(ApiConfigError, match="cannot listen"):
        asyncio.run(clash())
