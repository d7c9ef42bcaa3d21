"""The hash-chained transcript of a signing event: `transcript.jsonl`.

One JSON object a line; each carries `prev`, the sha256 of the line before it (its bytes
without the newline; 64 zeros for the first), and `seq`. Editing, removing or reordering a
line breaks the chain from there on. The chain proves nothing about its own last line: the
head hash (`ceremony verify` prints it) goes into the pull request or minutes of the event.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import MIB, load_json

NAME = "transcript.jsonl"
GENESIS = "0" * 64
MAX_TRANSCRIPT = 16 * MIB
MAX_LINE = 256 * 1024


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def read_entries(path: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """Every (line bytes, entry) after checking the chain; a break is a VerificationError."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TRANSCRIPT + 1)
    except FileNotFoundError:
        raise VerificationError(source, "transcript", "missing") from None
    except OSError as exc:
        raise FormatError(source, "", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_TRANSCRIPT:
        raise VerificationError(source, "transcript", "larger than its cap")
    if data and not data.endswith(b"\n"):
        raise VerificationError(source, "transcript", "last line is incomplete")
    out: list[tuple[bytes, dict[str, Any]]] = []
    prev = GENESIS
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        where = f"{source}:{number}"
        try:
            entry = load_json(line, where, MAX_LINE)
        except FormatError as exc:
            raise VerificationError(where, "transcript", exc.reason) from None
        if not isinstance(entry, dict):
            raise VerificationError(where, "transcript", "not a JSON object")
        if entry.get("prev") != prev:
            raise VerificationError(
                where, "transcript", "hash chain broken (prev is not the sha256 of the line before)"
            )
        if entry.get("seq") != number:
            raise VerificationError(where, "transcript", f"seq must be {number}")
        if not isinstance(entry.get("action"), str):
            raise VerificationError(where, "transcript", "no action")
        out.append((line, entry))
        prev = line_hash(line)
    if not out:
        raise VerificationError(source, "transcript", "empty")
    return out


def head(entries: list[tuple[bytes, dict[str, Any]]]) -> str:
    return line_hash(entries[-1][0]) if entries else GENESIS


def append(path: Path, action: str, **fields: Any) -> str:
    """Append one entry chained to the last line; returns the new head hash."""
    entries = read_entries(path) if path.exists() else []
    entry = {"seq": len(entries) + 1, "prev": head(entries), "action": action, **fields}
    line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(fd, "ab") as handle:
            handle.write(line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise FormatError(str(path), "", f"cannot append: {exc.strerror}") from None
    return line_hash(line)
