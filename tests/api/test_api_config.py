"""The [api] limit keys of the node configuration."""

from __future__ import annotations

import pytest

from alt_router.api import limits, stream
from alt_router.node.config import ApiSection, ConfigError, parse_config
from tests.node.test_node_config import MINIMAL


def test_api_limits_default_to_the_servers_defaults() -> None:
    api = parse_config(MINIMAL).api
    assert api.max_connections == limits.DEFAULT_MAX_CONNECTIONS
    assert api.header_timeout == limits.DEFAULT_HEADER_TIMEOUT
    assert api.keepalive_timeout == limits.DEFAULT_KEEPALIVE_TIMEOUT
    assert api.stream_clients == stream.DEFAULT_MAX_CLIENTS
    assert api.stream_queue == stream.DEFAULT_QUEUE_SIZE
    assert ApiSection() == api


def test_api_limits_are_read() -> None:
    text = MINIMAL + ("\n[api]\nmax_connections = 32\nheader_timeout = 2.5\nkeepalive_timeout = 5\n"
                      "stream_clients = 8\nstream_queue = 500\n")
    api = parse_config(text).api
    assert (api.max_connections, api.header_timeout, api.keepalive_timeout, api.stream_clients,
            api.stream_queue) == (32, 2.5, 5.0, 8, 500)


@pytest.mark.parametrize(("extra", "key"), [
    ("max_connections = 0", "api.max_connections"),
    ("header_timeout = 0", "api.header_timeout"),
    ("keepalive_timeout = -1", "api.keepalive_timeout"),
    ("stream_clients = 0", "api.stream_clients"),
    ("stream_queue = true", "api.stream_queue"),
    ("max_connections = 4\nstream_clients = 8", "api.stream_clients"),
])
def test_bad_api_limits_are_errors(extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + f"\n[api]\n{extra}\n", source="node.toml")
    assert any(p.startswith(f"{key}:") for p in info.value.problems), info.value.problems


def test_the_daemon_hands_every_limit_to_the_server() -> None:
    from alt_router.api.http import ApiServer  # noqa: PLC0415
    from alt_router.node.daemon import api_limits  # noqa: PLC0415
    from tests.api.fake_view import FakeNodeView  # noqa: PLC0415

    text = MINIMAL + ("\n[api]\nmax_connections = 32\nheader_timeout = 2.5\nkeepalive_timeout = 5\n"
                      "stream_clients = 8\nstream_queue = 500\n")
    server = ApiServer(FakeNodeView(), "127.0.0.1", 0, **api_limits(parse_config(text).api))
    assert server.guard.max_connections == 32 and server.guard.header_timeout == 2.5
    assert server.keepalive_timeout == 5.0
    assert server.hub.max_clients == 8 and server.hub.queue_size == 500
