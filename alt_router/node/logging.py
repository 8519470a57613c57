"""Structured, journald-friendly logging: one ``key=value`` (logfmt) line per record on stderr.

    time=2026-11-25T22:15:04.120Z level=info logger=alt_router.node.core msg="peer b is up" peer=b

Context goes in ``extra=`` (``log.info("reloaded", extra={"added": 2})``) or
comes from ``%``-style arguments already merged into ``msg``.  Under systemd
(``JOURNAL_STREAM`` set) the time is left out: journald stamps every line
itself, and the level also goes in a ``<N>`` syslog prefix journald turns into
the entry's priority, so ``journalctl -p warning`` works.

A backstop keeps the log's growth bounded whatever the node is sent: each logger
may write LOG_RATE lines a second on average (bursts of LOG_BURST), and a message
is cut at MAX_MESSAGE characters.  The places that log what outsiders cause
summarise repeats themselves (``alt_router.logsummary``); this filter only
catches what they miss, and the next line that gets through says how many
were left out (``suppressed=N``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is context.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
# Per logger: 20 lines a second on average, bursts of 200 (a start-up or a reload logs a few
# dozen at once).  With the two dozen loggers of the package, at most a few KB/s in all.
LOG_RATE = 20.0
LOG_BURST = 200.0
MAX_MESSAGE = 4096
# sd-daemon(3) priorities.
_SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def quote(value: object) -> str:
    """A logfmt value: bare when it is one plain token, else double-quoted with escapes."""
    text = value if isinstance(value, str) else str(value)
    if text and all(c.isprintable() and c not in ' "=\\' for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    escaped = "".join(c if c.isprintable() or c == "\\" else f"\\x{ord(c):02x}" for c in escaped)
    return f'"{escaped}"'


def _key(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
    return cleaned or "_"


class RateLimitFilter(logging.Filter):
    """A token bucket per logger name; the next record let through tells how many were refused."""

    def __init__(self, rate: float = LOG_RATE, burst: float = LOG_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.rate = rate
        self.burst = burst
        self.clock = clock
        # logger name -> [tokens, stamp, suppressed]; logger names come from the code, not the wire.
        self._buckets: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(record.name)
            if bucket is None:
                bucket = self._buckets[record.name] = [self.burst, now, 0]
            elif now > bucket[1]:
                bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
            if bucket[0] < 1.0:
                bucket[2] += 1
                return False
            bucket[0] -= 1.0
            if bucket[2]:
                record.suppressed = int(bucket[2])
                bucket[2] = 0
        return True


class LogfmtFormatter(logging.Formatter):
    """``[<N>]time=... level=... logger=... msg=... k=v ...``; ``timestamps``/``syslog_prefix`` as above."""

    def __init__(self, *, timestamps: bool = True, syslog_prefix: bool = False) -> None:
        super().__init__()
        self.timestamps = timestamps
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        fields: list[tuple[str, object]] = []
        if self.timestamps:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            fields.append(("time", f"{stamp}.{int(record.msecs):03d}Z"))
        fields += [
            ("level", _LEVELS.get(record.levelno, record.levelname.lower())),
            ("logger", record.name),
            ("msg", _cut(record.getMessage())),
        ]
        fields += [
            (_key(k), v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        ]
        if record.exc_info:
            fields.append(("exc", self.formatException(record.exc_info)))
        line = " ".join(f"{k}={quote(v)}" for k, v in fields)
        if self.syslog_prefix:
            level = max((lv for lv in _SYSLOG if lv <= record.levelno), default=logging.DEBUG)
            line = f"<{_SYSLOG[level]}>{line}"
        return line


def _cut(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} more characters)"


def under_journald(environ: dict[str, str] | None = None) -> bool:
    return bool((os.environ if environ is None else environ).get("JOURNAL_STREAM"))


def setup(
    level: int = logging.INFO, *, stream: TextIO | None = None, environ: dict[str, str] | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one logfmt handler on ``stream`` (stderr)."""
    journald = under_journald(environ)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter(timestamps=not journald, syslog_prefix=journald))
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def context(**fields: Any) -> dict[str, Any]:
    """``extra=context(peer="b")``: reads better at the call site than a dict literal."""
    return fields
