"""The ETR's Map-Register nonce across restarts, in the node's state directory (edge).

RFC 9301 §5.6: "An ETR that registers to the Mapping System SHOULD store the
last nonce sent in persistent storage, so when it restarts, it can continue
using an incrementing nonce."  The core (``mapping.etr.Etr``) counts; this
module reads and writes ``<state_dir>/etr-nonce.json``.  Writes are atomic
(temporary file, fsync, rename); an unreadable or corrupt file is a warning,
never a failed start: ``mapping.etr.initial_nonce`` seeds from the clock as
well, so the sequence still increases.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

NONCE_FILE = "etr-nonce.json"
_U64 = (1 << 64) - 1


def nonce_path(state_dir: Path) -> Path:
    return state_dir / NONCE_FILE


def load_last_nonce(path: Path) -> int | None:
    """The last nonce a previous run saved, or None (missing file; corrupt file: with a warning)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the ETR nonce file %s (%s): counting on from the clock", path, exc)
        return None
    try:
        doc = json.loads(text)
        value = doc["last_nonce"]
        if type(value) is not int or not 0 <= value <= _U64:
            raise ValueError(f"last_nonce {value!r} is not an integer in 0..2^64-1")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the corrupt ETR nonce file %s (%s): counting on from the clock", path, exc)
        return None
    return value


def save_last_nonce(path: Path, nonce: int) -> bool:
    """Write ``nonce`` atomically; False (with a warning) when the state directory is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".etr-nonce.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"last_nonce": nonce}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("cannot save the ETR nonce to %s: %s", path, exc)
        return False
    return True


class NonceStore:
    """Saves the ETR's ``last_nonce`` when it has moved on since the last save."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: int | None = load_last_nonce(path)

    def save(self, nonce: int) -> None:
        if nonce != self.saved and save_last_nonce(self.path, nonce):
            self.saved = nonce
