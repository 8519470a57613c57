"""The CLI's side of the API: urllib (stdlib) requests and a Server-Sent Events reader."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8179"


class ApiClientError(Exception):
    """Talking to the API failed."""


class ApiUnreachable(ApiClientError):  # noqa: N818 - reads better at the call site
    """No answer at all: nothing listening, wrong address, timeout."""


class ApiHttpError(ApiClientError):
    """The API answered with an error status."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        self.status = status
        self.error = error
        self.detail = detail
        super().__init__(f"HTTP {status}: {error}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class SseParser:
    """Server-Sent Events, one line at a time (the WHATWG event-stream rules the API needs)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data and not self._event:
                return None
            out = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    parser = SseParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


class ApiClient:
    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, params: dict[str, str] | None = None,
                 body: Any = None, headers: dict[str, str] | None = None) -> urllib.request.Request:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        return req

    def _open(self, req: urllib.request.Request, timeout: float) -> Any:
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(f"cannot reach the API at {self.base_url}: {reason}") from None

    def call(self, method: str, path: str, params: dict[str, str] | None = None, body: Any = None) -> Any:
        """The decoded JSON answer; ApiHttpError for 4xx/5xx, ApiUnreachable for no answer."""
        with self._open(self._request(method, path, params, body), self.timeout) as resp:
            try:
                raw = resp.read()
            except OSError as exc:
                raise ApiUnreachable(f"the API at {self.base_url} stopped answering: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiClientError(f"{path}: the API answered something that is not JSON") from None

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self.call("GET", path, params)

    def stream(self, since: int | None = None, read_timeout: float = 60.0
               ) -> Generator[SseEvent, None, None]:
        """Events from one /v1/stream connection until the server closes it.

        Connects before returning (not on the first ``next``), so events published
        after this call are never missed.
        """
        headers = {"Accept": "text/event-stream"}
        if since is not None:
            headers["Last-Event-ID"] = str(since)
        resp = self._open(self._request("GET", "/v1/stream", headers=headers), read_timeout)
        return self._events(resp)

    def _events(self, resp: Any) -> Generator[SseEvent, None, None]:
        try:
            lines = (raw.decode("utf-8", "replace") for raw in resp)
            yield from parse_sse(lines)
        except OSError as exc:
            raise ApiUnreachable(f"lost the stream from {self.base_url}: {exc}") from None
        finally:
            resp.close()


def _http_error(exc: urllib.error.HTTPError) -> ApiHttpError:
    try:
        body = json.loads(exc.read())
        return ApiHttpError(exc.code, str(body.get("error", exc.reason)), str(body.get("detail", "")))
    except (ValueError, AttributeError, OSError):
        return ApiHttpError(exc.code, str(exc.reason))
