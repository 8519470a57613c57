"""The event stream: sequence numbers, resume from a sequence, gaps, subscribers."""

from __future__ import annotations

import pytest

from alt_router.rib.events import BoundedQueue, EventStream, PeerUp, Record, StreamGap


def fill(stream: EventStream, n: int) -> None:
    for i in range(n):
        stream.publish(PeerUp(f"p{i}", float(i)))


def test_sequence_numbers_increase_from_one() -> None:
    s = EventStream()
    assert s.last_seq == 0 and s.since(0) == []
    fill(s, 3)
    assert [r.seq for r in s.since(0)] == [1, 2, 3]
    assert s.last_seq == 3


def test_resume_returns_only_newer_records() -> None:
    s = EventStream(capacity=10)
    fill(s, 5)
    assert [r.seq for r in s.since(3)] == [4, 5]
    assert s.since(5) == [] and s.since(99) == []


def test_resume_from_evicted_seq_is_a_gap() -> None:
    s = EventStream(capacity=4)
    fill(s, 10)
    assert s.oldest_seq == 7 and len(s) == 4
    assert [r.seq for r in s.since(6)] == [7, 8, 9, 10]  # 6 was seen: nothing is missing
    with pytest.raises(StreamGap) as info:
        s.since(5)
    assert info.value.oldest == 7 and isinstance(info.value, ValueError)


def test_subscribers_get_every_record_and_can_leave() -> None:
    s = EventStream()
    got: list[Record] = []
    unsubscribe = s.subscribe(got.append)
    fill(s, 2)
    unsubscribe()
    unsubscribe()  # twice is harmless
    fill(s, 1)
    assert [r.seq for r in got] == [1, 2]


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    s = EventStream()
    got: list[int] = []

    def broken(_: Record) -> None:
        raise RuntimeError("client went away")

    s.subscribe(broken)
    s.subscribe(lambda r: got.append(r.seq))
    fill(s, 2)
    assert got == [1, 2] and s.subscriber_errors == 2


def test_bounded_queue_flags_overflow() -> None:
    s = EventStream()
    q = BoundedQueue(maxlen=2)
    s.subscribe(q)
    fill(s, 3)
    assert q.overflowed and [r.seq for r in q.drain()] == [1, 2] and len(q) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventStream(capacity=0)


def test_quiet_publishes_keep_sequence_and_history_and_still_reach_subscribers() -> None:
    from alt_router.rib.events import EventStream, PeerUp, Record, StreamGap  # noqa: PLC0415

    stream = EventStream(capacity=3)
    for i in range(4):
        stream.publish_quiet(PeerUp(f"p{i}", float(i)))
    assert (stream.last_seq, stream.oldest_seq, len(stream)) == (4, 2, 3)
    assert stream.since(2) == [Record(3, PeerUp("p2", 2.0)), Record(4, PeerUp("p3", 3.0))]
    got: list[Record] = []
    stream.subscribe(got.append)
    stream.publish_quiet(PeerUp("p4", 4.0))
    assert got == [Record(5, PeerUp("p4", 4.0))]
    try:
        stream.since(1)
    except StreamGap as gap:
        assert (gap.requested, gap.oldest) == (1, 3)
    else:
        raise AssertionError("expected a gap")
