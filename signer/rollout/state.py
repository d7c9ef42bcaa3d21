"""The roll-out's state directory: an append-only journal and the keys in flight.

The directory is created 0700 (refused if it is readable by others) and everything in it
is 0600. `journal.jsonl` holds one JSON object a line, `{"op", "feedstock", "step", ...}`,
flushed after every line, so a run killed at any point loses at most the line it was
writing. A private key lives in `keys/<op>/<feedstock>.key` from its generation until both
CI secrets hold it, then it is deleted: it is never written anywhere else, nor printed.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signer.trust.errors import FormatError

JOURNAL = "journal.jsonl"
MAX_LINE = 64 * 1024
# What later steps read back from a journal entry; the rest stays on disk only.
_KEPT = ("at", "old", "keyid")
_EMPTY: dict[str, Any] = {}


@dataclass
class Progress:
    """What the journal says about one feedstock in one operation."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def done(self, step: str) -> bool:
        return step in self.steps

    def get(self, step: str) -> dict[str, Any]:
        return self.steps.get(step, {})


def _secure_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FormatError(str(path), "state dir", f"mode {oct(mode & 0o777)}: must be 0700")


class StateDir:
    def __init__(self, path: Path) -> None:
        _secure_dir(path)
        self.path = path
        self._lock = threading.Lock()
        self._progress: dict[tuple[str, str], Progress] = {}
        journal = path / JOURNAL
        if journal.exists():
            for number, line in enumerate(self._lines(journal), 1):
                self._fold(line, f"{journal}:{number}")
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._out = os.fdopen(fd, "a", encoding="utf-8")

    @staticmethod
    def _lines(journal: Path) -> Iterator[str]:
        with open(journal, encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    return  # a line cut short by a kill: never acted on
                if len(line) > MAX_LINE:
                    raise FormatError(str(journal), "line", "too long")
                yield line

    def _fold(self, line: str, where: str) -> None:
        try:
            entry = json.loads(line)
            op, feedstock, step = entry["op"], entry["feedstock"], entry["step"]
        except (ValueError, KeyError, TypeError):
            raise FormatError(where, "journal", "not a roll-out journal line") from None
        self._apply(op, feedstock, step, entry)

    def _apply(self, op: str, feedstock: str, step: str, entry: dict[str, Any]) -> None:
        key = (op, feedstock)
        if step == "start":  # a new round of a repeatable operation (rotation)
            self._progress[key] = Progress()
        if step == "done":
            # Finished: only that is remembered (memory stays small for 29,000 feedstocks).
            self._progress[key] = Progress({"done": _EMPTY})
            return
        kept = {k: entry[k] for k in _KEPT if k in entry}
        self._progress.setdefault(key, Progress()).steps[step] = kept or _EMPTY

    def progress(self, op: str, feedstock: str) -> Progress:
        with self._lock:
            return self._progress.get((op, feedstock), Progress())

    def record(self, op: str, feedstock: str, step: str, **data: Any) -> None:
        entry = {"op": op, "feedstock": feedstock, "step": step, **data}
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()
            self._apply(op, feedstock, step, entry)

    def close(self) -> None:
        self._out.close()

    # keys in flight

    def _key_path(self, op: str, feedstock: str) -> Path:
        return self.path / "keys" / op.replace(":", "_") / f"{feedstock}.key"

    def save_key(self, op: str, feedstock: str, pem: bytes) -> None:
        path = self._key_path(op, feedstock)
        _secure_dir(path.parent.parent)
        _secure_dir(path.parent)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.replace(tmp, path)

    def load_key(self, op: str, feedstock: str) -> bytes | None:
        path = self._key_path(op, feedstock)
        return path.read_bytes() if path.exists() else None

    def drop_key(self, op: str, feedstock: str) -> None:
        self._key_path(op, feedstock).unlink(missing_ok=True)
