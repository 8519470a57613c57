"""A real ApiServer on 127.0.0.1 (ephemeral port) in a background event loop, over a FakeNodeView.

The loop runs in its own thread so tests (and the CLI under test) can use
blocking urllib against it; anything that touches the view runs in the loop's
thread through ``LiveServer.call``, as the daemon would.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from alt_router.api.http import ApiServer
from tests.api.fake_view import FakeNodeView

T = TypeVar("T")
TOKEN = "s3cret-token"


class LiveServer:
    def __init__(self, **options: Any) -> None:
        self.view = FakeNodeView(history=options.pop("history", 10_000))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: ApiServer = self.run(self._start(options))

    async def _start(self, options: dict[str, Any]) -> ApiServer:
        options.setdefault("token", TOKEN)
        server = ApiServer(self.view, "127.0.0.1", 0, **options)
        return await server.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        fut: Future[T] = Future()

        def job() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(job)
        return fut.result(10.0)

    @property
    def url(self) -> str:
        return self.server.url

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body: Any = None, token: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        raw = json.dumps(body).encode() if body is not None else None
        if raw is not None:
            h.setdefault("Content-Type", "application/json")
        status, _, data = self.request(method, path, raw, h)
        return status, json.loads(data)

    def close(self) -> None:
        try:
            self.run(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def live() -> Iterator[LiveServer]:
    server = LiveServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def make_live() -> Iterator[Callable[..., LiveServer]]:
    made: list[LiveServer] = []

    def make(**options: Any) -> LiveServer:
        server = LiveServer(**options)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.close()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
