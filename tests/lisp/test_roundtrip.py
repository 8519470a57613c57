"""Every message the strategies can build survives encode -> decode -> encode unchanged."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from alt_router.lisp import LispMessage, decode

from . import strategies as s

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _roundtrip(msg: LispMessage) -> None:
    wire = msg.encode()
    back = decode(wire)
    assert back == msg
    assert type(back) is type(msg)
    assert back.encode() == wire


@SETTINGS
@given(s.map_requests())
def test_map_request(msg: LispMessage) -> None:
    _roundtrip(msg)


@SETTINGS
@given(s.map_replies())
def test_map_reply(msg: LispMessage) -> None:
    _roundtrip(msg)


@SETTINGS
@given(s.map_registers())
def test_map_register(msg: LispMessage) -> None:
    _roundtrip(msg)


@SETTINGS
@given(s.map_notifies())
def test_map_notify(msg: LispMessage) -> None:
    _roundtrip(msg)


@SETTINGS
@given(s.map_notify_acks())
def test_map_notify_ack(msg: LispMessage) -> None:
    _roundtrip(msg)


@SETTINGS
@given(s.ecms())
def test_ecm(msg: LispMessage) -> None:
    _roundtrip(msg)


@settings(max_examples=40, deadline=None)
@given(s.messages())
def test_any_message_bytes_roundtrip(msg: LispMessage) -> None:
    wire = msg.encode()
    assert decode(wire).encode() == wire
