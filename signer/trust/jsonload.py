"""Strict JSON reading for trust documents: size caps and no duplicate keys."""

from __future__ import annotations

import json
from typing import Any

from signer.trust.errors import FormatError

KIB = 1024
MIB = 1024 * KIB

# Section 6 caps on everything read from outside.
MAX_DELEGATING = 512 * KIB  # root, key_mgr, pkg_mgr
MAX_FEEDSTOCKS = 16 * MIB  # feedstocks/index.json and each bin
MAX_SIDECAR = 1 * MIB
MAX_INDEX_JSON = 1 * MIB  # info/index.json inside an artifact


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(data: bytes, source: str, max_bytes: int) -> Any:
    """Parse `data` as strict JSON (UTF-8, no duplicate keys, no NaN) under a size cap."""
    if len(data) > max_bytes:
        raise FormatError(source, "", f"{len(data)} bytes exceeds the {max_bytes}-byte cap")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(source, "", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        raise FormatError(source, str(exc), "duplicate key") from None
    except ValueError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else "invalid JSON"
        raise FormatError(source, "", f"malformed JSON: {msg}") from None
    except RecursionError:
        raise FormatError(source, "", "malformed JSON: nested too deeply") from None


def read_file(path: str, max_bytes: int) -> bytes:
    """Read a local file named by the user, with the cap applied before reading it all."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise FormatError(path, "", "no such file") from None
    except IsADirectoryError:
        raise FormatError(path, "", "is a directory, expected a file") from None
    except OSError as exc:
        raise FormatError(path, "", f"cannot read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise FormatError(path, "", f"larger than the {max_bytes}-byte cap")
    return data
