from __future__ import annotations

import pytest

from alt_router.mapping.ratelimit import RateLimiter


def test_burst_then_rate_with_a_fake_clock() -> None:
    rl = RateLimiter(rate=2.0, burst=3)
    assert [rl.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("a", 0.25) is False  # half a token
    assert rl.allow("a", 0.5) is True
    assert rl.allow("a", 0.5) is False
    assert rl.allow("b", 0.5) is True  # per source


def test_bucket_never_exceeds_burst_and_clock_going_back_mints_nothing() -> None:
    rl = RateLimiter(rate=1.0, burst=2)
    assert rl.allow("a", 1000.0) and rl.allow("a", 1000.0)
    assert not rl.allow("a", 1000.0)
    assert not rl.allow("a", 10.0)
    assert rl.allow("a", 1001.0)
    assert not rl.allow("a", 1001.0)


def test_source_table_is_bounded() -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_sources=3)
    for i in range(10):
        rl.allow(i, 0.0)
    assert len(rl) == 3 and rl.evicted == 7


def test_bad_parameters_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, burst=1)
