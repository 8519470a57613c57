"""LogSummary: the first event of a kind is logged, the rest become one line per interval."""

from __future__ import annotations

from alt_router.logsummary import OTHER_SOURCES, LogSummary


def test_first_of_a_kind_is_logged_then_counted() -> None:
    s = LogSummary(interval=10)
    assert s.note("auth-mismatch", "10.0.0.1", 0.0)
    assert not s.note("auth-mismatch", "10.0.0.1", 1.0)
    assert not s.note("auth-mismatch", "10.0.0.1", 2.0)
    assert s.note("auth-mismatch", "10.0.0.2", 2.0)
    assert s.flush(5.0) == []  # interval not over yet
    assert s.flush(10.0) == ["2 more auth-mismatch from 10.0.0.1 in the last 10s"]
    # Forgotten after the flush: the next one is logged in full again.
    assert s.note("auth-mismatch", "10.0.0.1", 11.0)


def test_keys_are_capped() -> None:
    s = LogSummary(interval=1, max_keys=3)
    logged = [s.note("malformed", f"10.0.0.{i}", 0.0) for i in range(100)]
    assert logged.count(True) == 3
    assert len(s) == 4  # three sources and the fold-in line, whatever the attacker sends
    lines = s.flush(1.0)
    assert lines == [f"97 more malformed from {OTHER_SOURCES} in the last 1s"]
    assert len(s) == 0


def test_forced_flush() -> None:
    s = LogSummary(interval=60)
    s.note("expired", "site-a", 0.0)
    s.note("expired", "site-a", 0.5)
    assert s.flush(1.0, force=True) == ["1 more expired from site-a in the last 1s"]
