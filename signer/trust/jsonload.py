"""Strict JSON reading for trust documents: size caps and no duplicate keys."""

from __future__ import annotations

import json
import sys
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


def _fast(data: bytes) -> tuple[Any] | None:
    """orjson's parse, only when the bytes are exactly its re-serialisation (compact sorted,
    or 2-space indented sorted with or without a final newline: how cf-sign writes
    statements and sidecars). Equal bytes prove what the strict parser checks: UTF-8, no
    NaN, and no duplicate key (a dict serialises each key once). Anything else, and any
    orjson error, takes the strict path, so both give the same verdict. Used only once a
    bulk caller has imported orjson: its import costs more than a small document's parse."""
    orjson = sys.modules.get("orjson")
    if orjson is None or data[:1] not in (b"{", b"["):
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if data[-1:] == b"\n":
        option = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    elif data[1:2] == b"\n":
        option = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
    else:
        option = orjson.OPT_SORT_KEYS
    try:
        again = orjson.dumps(obj, option=option)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return (obj,) if again == data else None


def load_json(data: bytes, source: str, max_bytes: int) -> Any:
    """Parse `data` as strict JSON (UTF-8, no duplicate keys, no NaN) under a size cap."""
    if len(data) > max_bytes:
        raise FormatError(source, "", f"{len(data)} bytes exceeds the {max_bytes}-byte cap")
    fast = _fast(data)
    if fast is not None:
        return fast[0]
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
