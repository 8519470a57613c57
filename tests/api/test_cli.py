"""``alt-router show`` and ``monitor`` against a live server; table formatting; unreachable API."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator

import pytest

from alt_router.api.client import ApiUnreachable, SseEvent, SseParser
from alt_router.api.table import format_duration, format_table
from alt_router.cli import main
from alt_router.commands.monitor import follow, format_event
from tests.api.conftest import TOKEN, LiveServer
from tests.api.test_http import populate


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- table formatter -----------------------------------------------------------


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    out = format_table(["Peer", "Accepted", "State"], [["b", 3, "up"], ["long-name", 1200, None]])
    assert out.splitlines() == [
        "Peer       Accepted  State",
        "b                 3  up",
        "long-name      1200  -",
    ]


def test_table_refuses_ragged_rows() -> None:
    with pytest.raises(ValueError, match="2 cells"):
        format_table(["a", "b", "c"], [[1, 2]])


def test_durations_read_like_bgp_uptimes() -> None:
    assert format_duration(None) == "never"
    assert format_duration(312.4) == "00:05:12"
    assert format_duration(3 * 86400 + 4 * 3600 + 5) == "3d04h"


# --- show ------------------------------------------------------------------------


def test_show_peers_table(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    populate(live)
    code, out, _ = run_cli(capsys, "show", "peers", "--api", live.url)
    assert code == 0
    header, b, c = out.splitlines()
    assert header.split() == ["Peer", "AS", "Address", "State", "Up/Down", "Rcvd", "Accepted", "Best",
                              "Dropped"]
    assert b.split()[:8] == ["b", "65002", "10.255.1.2", "up", "00:00:00", "3", "3", "3"]
    assert c.split()[-2:] == ["outside-eid-space", "1"]
    end = header.index("Accepted") + len("Accepted")  # numbers line up under the header's right edge
    assert b[end - 2:end] == " 3"


def test_show_routes_table_and_filters(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    populate(live)
    code, out, _ = run_cli(capsys, "show", "routes", "153.16.0.0/16", "--match", "longer", "--api", live.url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["Prefix", "Next", "Hop", "Peer", "AS", "Path", "Origin"]
    assert [ln.split()[0] for ln in lines[1:3]] == ["153.16.0.0/16", "153.16.1.0/24"]
    assert lines[-1] == "Displayed 2 of 2 routes"
    code, out, _ = run_cli(capsys, "show", "routes", "--peer", "c", "--api", live.url)
    rows = out.splitlines()[1:3]
    assert rows[0].split()[:2] == ["153.16.1.0/24", "10.255.2.2"]  # not best: no marker
    assert rows[1].split()[:2] == [">", "153.17.0.0/16"]


def test_show_json_is_the_api_answer(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    populate(live)
    code, out, _ = run_cli(capsys, "show", "routes", "--json", "--api", live.url)
    assert code == 0
    assert json.loads(out) == live.json("GET", "/v1/routes")[1]


@pytest.mark.parametrize(("what", "expect"), [
    ("tunnels", "gre-b"), ("registrations", "153.16.1.0/24"), ("counters", "registers_refused.bad-auth"),
    ("status", "asn: 65001"),
])
def test_show_other_tables(live: LiveServer, capsys: pytest.CaptureFixture[str], what: str, expect: str
                           ) -> None:
    code, out, _ = run_cli(capsys, "show", what, "--api", live.url)
    assert code == 0 and expect in out


def test_show_lookup(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    populate(live)
    code, out, _ = run_cli(capsys, "show", "lookup", "153.16.1.7", "--api", live.url)
    assert code == 0
    assert "matched 153.16.1.0/24" in out and "next hop 10.255.1.2 (peer b, tunnel gre-b)" in out
    code, _, err = run_cli(capsys, "show", "lookup", "153.31.0.1", "--api", live.url)
    assert code == 1 and "no route to 153.31.0.1" in err


def test_show_reports_api_errors(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "show", "routes", "banana", "--api", live.url)
    assert code == 1 and out == "" and "bad prefix" in err
    code, _, err = run_cli(capsys, "show", "routes", "--match", "longer", "--api", live.url)
    assert code == 1 and "--match needs a PREFIX" in err


def test_show_unreachable_api_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run_cli(capsys, "show", "peers", "--api", url, "--timeout", "2")
    assert code == 2 and out == ""
    assert "cannot reach the API" in err and "refused" in err.lower()


def test_show_sends_the_token_from_the_environment(live: LiveServer, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    live.server.read_needs_token = True
    code, _, err = run_cli(capsys, "show", "status", "--api", live.url)
    assert code == 1 and "unauthorized" in err
    monkeypatch.setenv("ALT_ROUTER_TOKEN", TOKEN)
    code, _, _ = run_cli(capsys, "show", "status", "--api", live.url)
    assert code == 0


# --- monitor ---------------------------------------------------------------------


def test_monitor_prints_one_line_per_event(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    populate(live)
    code, out, _ = run_cli(capsys, "monitor", "--api", live.url, "--since", "0", "--count", "3")
    assert code == 0
    assert out.splitlines() == [
        "[1] peer  b up",
        "[2] peer  c up",
        "[3] route add      153.16.0.0/16 via 10.255.1.2 peer b as-path 65002",
    ]


def test_monitor_json_lines(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    populate(live)
    code, out, _ = run_cli(capsys, "monitor", "--api", live.url, "--since", "2", "--count", "1", "--json")
    assert code == 0
    line = json.loads(out)
    assert line["event"] == "route" and line["id"] == "3" and line["data"]["prefix"] == "153.16.0.0/16"


def test_monitor_unreachable_api_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "monitor", "--api", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 2 and "cannot reach the API" in err


def ev(seq: int, kind: str = "peer") -> SseEvent:
    return SseEvent(kind, json.dumps({"peer": "b", "state": "up"}), str(seq))


def test_monitor_resumes_from_the_last_seq_after_losing_the_stream() -> None:
    calls: list[int | None] = []
    sessions: list[list[SseEvent] | Exception] = [
        [ev(1), ev(2)],                        # then the node closes the stream
        ApiUnreachable("connection refused"),  # node restarting
        [ev(3)],
    ]

    def connect(since: int | None) -> Iterator[SseEvent]:
        calls.append(since)
        session = sessions.pop(0)
        if isinstance(session, Exception):
            raise session
        return iter(session)

    out, err = io.StringIO(), io.StringIO()
    sleeps: list[float] = []
    code = follow(connect, None, out, count=3, sleep=sleeps.append, err=err)
    assert code == 0 and calls == [None, 2, 2]
    assert [ln.split()[0] for ln in out.getvalue().splitlines()] == ["[1]", "[2]", "[3]"]
    assert sleeps == [0.25, 0.5] and "reconnecting from seq 2" in err.getvalue()


def test_monitor_line_formats() -> None:
    assert format_event(SseEvent("peer", '{"peer":"c","state":"down","reason":"hold timer"}', "7")) == (
        "[7] peer  c down (hold timer)")
    gap = format_event(SseEvent("gap", '{"reason":"evicted","last_seq":40}', "40"))
    assert "re-read the tables" in gap and "seq 40" in gap
    assert "undecodable" in format_event(SseEvent("route", "{not json", "1"))
    withdraw = format_event(SseEvent("route", json.dumps({
        "kind": "withdraw", "prefix": "153.16.0.0/16", "new": None,
        "old": {"next_hop": "10.255.1.2", "peer": "b", "as_path": [65002]}}), "9"))
    assert withdraw == "[9] route withdraw 153.16.0.0/16 via 10.255.1.2 peer b as-path 65002"


def test_sse_parser_follows_the_event_stream_rules() -> None:
    p = SseParser()
    lines = ["retry: 1000", "", ": keepalive", "", "id: 5", "event: route", "data: {\"a\":", "data: 1}", ""]
    events = [e for e in (p.feed(ln + "\n") for ln in lines) if e is not None]
    assert events == [SseEvent("route", '{"a":\n1}', "5")]
    assert [e for e in (p.feed(x) for x in ["data:x\r\n", "\r\n"]) if e] == [SseEvent("message", "x", None)]
