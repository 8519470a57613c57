"""The Map-Server's replay-protection nonces across restarts, in the node's state directory (edge).

RFC 9301 §5.6: "A Map-Server MUST track and save in persistent storage the last
nonce received for each ETR xTR-ID and key pair."  The core
(``mapping.map_server.MapServer``) keeps the table and hands it out as plain data
(``dump_nonces``/``load_nonces``); this module writes it to
``<state_dir>/map-server-nonces.json``.

Writes are atomic (temporary file, fsync, rename), happen at shutdown and, while the
table changes, at most once per ``min_interval`` seconds: a flood of Map-Registers
cannot turn into a flood of disk writes, and a crash loses at most that interval.
An unreadable or corrupt file is a logged warning and an empty table, never a failed
start.  The file records the wall-clock time of the save, so the records' lifetimes
count the time the node was down.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from alt_router.mapping.map_server import MapServer

log = logging.getLogger(__name__)

NONCE_FILE: Final = "map-server-nonces.json"
SAVE_INTERVAL: Final = 10.0


def nonce_table_path(state_dir: Path) -> Path:
    return state_dir / NONCE_FILE


class MapServerNonceStore:
    """Loads the table into a Map-Server at start and saves it when it has changed, rate-bounded."""

    def __init__(
        self, path: Path, *, min_interval: float = SAVE_INTERVAL, wall: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.min_interval = min_interval
        self.wall = wall
        self._saved_version = 0  # MapServer.nonce_changes starts at 0: nothing to save yet
        self._last_save: float | None = None

    def load(self, ms: MapServer, now: float) -> int:
        """Restore the saved table into ``ms``; the number of records kept (0 on any problem)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the Map-Server nonce table %s (%s): starting with an empty one",
                        self.path, exc)
            return 0
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            saved_at = doc["saved_at"]
            if not isinstance(saved_at, int | float):
                raise ValueError(f"saved_at {saved_at!r} is not a number")
            kept = ms.load_nonces(doc["nonces"], now, elapsed=max(0.0, self.wall() - saved_at))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the corrupt Map-Server nonce table %s (%s): starting with an empty one",
                        self.path, exc)
            return 0
        self._saved_version = ms.nonce_changes
        return kept

    def due(self, ms: MapServer, now: float) -> float | None:
        """When the next save should happen (None: nothing changed since the last one)."""
        if ms.nonce_changes == self._saved_version:
            return None
        return now if self._last_save is None else self._last_save + self.min_interval

    def maybe_save(self, ms: MapServer, now: float, *, force: bool = False) -> bool:
        """Save if the table changed and the interval has passed (``force``: at shutdown); True if saved."""
        when = self.due(ms, now)
        if when is None or (not force and now < when):
            return False
        version = ms.nonce_changes
        doc = {"saved_at": self.wall(), "nonces": ms.dump_nonces(now)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".map-server-nonces.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(doc, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("cannot save the Map-Server nonce table to %s: %s", self.path, exc)
            self._last_save = now  # retry after the interval, not on every datagram
            return False
        self._saved_version = version
        self._last_save = now
        return True
