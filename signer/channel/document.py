"""Reading a channel's repodata strictly, and writing it back with some records dropped.

`signer.repodata.document` splits a repodata into raw record slices with msgspec, which
keeps the last of two equal keys without a word. A channel signer must not sign a
document that two parsers could read differently, so the split is checked here: every
object of the outline (the top level, both record sections and `signatures`) must be
exactly tiled by the entries the decoder kept, which proves there was no duplicate (see
`_check_tiled`). Keys and values inside records are checked strictly where a record is
parsed for signing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from signer.repodata.document import (
    MAX_REPODATA,
    SECTIONS,
    RawRecord,
    SplitRepodata,
    read_repodata_bytes,
)
from signer.repodata.parallel import collector_paused
from signer.trust.errors import FormatError

_RawMap = dict[str, msgspec.Raw]
_WS = (b" ", b"\n", b"\r", b"\t")


def _non_ws(data: bytes | memoryview) -> int:
    view = data if isinstance(data, bytes) else bytes(data)
    # `in` is a memchr, several times faster than `count`'s loop: a whitespace byte the
    # document lacks (newlines in compact JSON) costs no count.
    return len(view) - sum(view.count(c) for c in _WS if c in view)


# Keys that orjson writes as `"` key `"` with nothing escaped and no whitespace inside.
_PLAIN_KEYS = re.compile(r'["\\\x00-\x20\x7f]')


def _keys_non_ws(keys: Iterable[str], n: int) -> int:
    joined = "".join(keys)
    if joined.isascii() and not _PLAIN_KEYS.search(joined):
        return len(joined) + 2 * n  # the common case, without encoding each key
    return _non_ws(b"".join(orjson.dumps(k) for k in keys))


def _structure(entries: _RawMap) -> int:
    """Non-whitespace bytes of an object's own syntax, around the values it holds.

    Grammar: `{` entry (`,` entry)* `}` with whitespace between tokens, so a duplicate-free
    object has 2 + sum(key) + (2n - 1) of them besides its values' (braces, `:` per entry,
    `,` between); `{}` has 2. Keys are counted as orjson spells them, the shortest spelling.
    """
    n = len(entries)
    return 2 if n == 0 else 2 + _keys_non_ws(entries, n) + 2 * n - 1


def _decode_map(raw: bytes | msgspec.Raw, source: str, field: str) -> _RawMap:
    try:
        return msgspec.json.decode(raw, type=_RawMap)
    except msgspec.ValidationError:
        raise FormatError(source, field, "expected a JSON object") from None
    except msgspec.DecodeError as exc:
        reason = "truncated JSON" if "truncated" in str(exc) else str(exc)
        raise FormatError(source, field, f"malformed JSON: {reason}") from None


def _duplicate(source: str, field: str) -> FormatError:
    return FormatError(source, field, "duplicate key (two parsers could disagree)")


def _check_tiled(data: bytes, top: _RawMap, maps: dict[str, _RawMap], source: str) -> None:
    """Every decoded object (the top level, the record sections, `signatures`) holds exactly
    the entries the decoder kept: a duplicate it dropped is refused, never guessed.

    Per object, its non-whitespace bytes minus those of its syntax and values (the excess)
    is 0 without a duplicate; a dropped duplicate adds at least its key, value and two
    separators, a key spelled with needless escapes only adds (orjson's spelling, counted,
    is the shortest), so no excess is ever negative. The excesses therefore sum to 0 only
    when each is 0, and the sum needs two counts: the whole document, and the leaves (the
    records, the signature entries, the other top-level members) together. A nested object's
    bytes are its parent's value bytes, so the nesting telescopes away.
    """
    leaves = [raw for name, raw in top.items() if name not in maps]
    for entries in maps.values():
        leaves.extend(entries.values())
    syntax = _structure(top) + sum(_structure(entries) for entries in maps.values())
    if _non_ws(data) == syntax + _non_ws(b"".join(leaves)):
        return
    # Which object: each counted on its own (the slow way, on this error path only).
    levels = [("(top level)", data, top)] + [(name, top[name], m) for name, m in maps.items()]
    for field, raw, entries in levels:
        values = _non_ws(b"".join(entries.values()))
        if _non_ws(memoryview(raw)) != _structure(entries) + values:
            raise _duplicate(source, field)
    raise _duplicate(source, "(top level)")  # not reached: some excess is positive


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return out


class _Floats:
    """parse_float hook that notes whether a document held a float."""

    seen = False

    @classmethod
    def parse(cls, text: str) -> float:
        cls.seen = True
        return float(text)


def strict_record(raw: bytes | memoryview, source: str, field: str) -> tuple[Any, bool]:
    """`strict_json`, and whether the value is float-free (canonical bytes' fast path)."""
    _Floats.seen = False
    value = strict_json(raw, source, field, parse_float=_Floats.parse)
    return value, not _Floats.seen


def strict_json(raw: bytes | memoryview, source: str, field: str, parse_float: Any = None) -> Any:
    """Strict parse of one member: UTF-8, no duplicate keys, no NaN/Infinity."""
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(source, field, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          parse_float=parse_float)  # fmt: skip
    except ValueError as exc:
        raise FormatError(source, field, f"malformed JSON: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise FormatError(source, field, "malformed JSON: nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def split_strict(data: bytes, source: str) -> SplitRepodata:
    """The raw split of a repodata, refusing duplicates, non-UTF-8 outside records, truncation.

    Records are not parsed here (that is the signer's per-record work), only located.
    """
    if len(data) > MAX_REPODATA:
        raise FormatError(source, "", f"larger than the {MAX_REPODATA}-byte cap")
    top = _decode_map(data, source, "(top level)")
    maps = {
        name: _decode_map(top[name], source, name)
        for name in (*SECTIONS, "signatures")
        if name in top
    }
    _check_tiled(data, top, maps, source)
    for name, raw in top.items():
        if name not in maps:
            strict_json(memoryview(raw), source, name)  # info, removed, ...: small
    info = strict_json(memoryview(top["info"]), source, "info") if "info" in top else None
    if info is not None and not isinstance(info, dict):
        raise FormatError(source, "info", "expected an object")
    records: list[RawRecord] = []
    for section in SECTIONS:
        if section in maps:
            suffix = ".conda" if section == "packages.conda" else ".tar.bz2"
            for filename, raw in maps[section].items():
                if not filename.endswith(suffix):
                    raise FormatError(
                        source, f"{section}.{filename}", f"file names here end in {suffix}"
                    )
                records.append(RawRecord(section, filename, raw))
    signatures = maps.get("signatures", {})
    return SplitRepodata(source, top, records, signatures)


def read_strict(path: Path) -> SplitRepodata:
    """`split_strict` of a file named by the user (FormatError: exit 2)."""
    data = read_repodata_bytes(path)
    with collector_paused():  # a record tuple per record: nothing cyclic
        return split_strict(data, str(path))


def info_subdir(split: SplitRepodata) -> str | None:
    raw = split.top.get("info")
    info = orjson.loads(bytes(raw)) if raw is not None else None
    subdir = info.get("subdir") if isinstance(info, dict) else None
    return subdir if isinstance(subdir, str) and subdir else None


def pieces_without(
    split: SplitRepodata, signatures: dict[str, Any], dropped: Iterable[str]
) -> list[bytes | memoryview]:
    """The document with `signatures` and without the records in `dropped`.

    Every kept record and every other member keeps its bytes exactly as read.
    """
    gone = set(dropped)
    if not gone:
        return split.to_pieces(signatures)
    members: dict[str, list[bytes | memoryview]] = {
        k: [memoryview(v)] for k, v in split.top.items() if k not in SECTIONS and k != "signatures"
    }
    for section in SECTIONS:
        if section not in split.top:
            continue
        kept = [r for r in split.records if r.section == section and r.filename not in gone]
        body: list[bytes | memoryview] = [b"{"]
        for i, item in enumerate(kept):
            body.append((b",\n  " if i else b"\n  ") + orjson.dumps(item.filename) + b": ")
            body.append(memoryview(item.raw))
        body.append(b"\n}" if kept else b"}")
        members[section] = body
    members["signatures"] = [orjson.dumps(signatures, option=orjson.OPT_SORT_KEYS)]
    pieces: list[bytes | memoryview] = [b"{\n"]
    for i, name in enumerate(sorted(members)):
        pieces.append((b",\n" if i else b"") + orjson.dumps(name) + b": ")
        pieces.extend(members[name])
    pieces.append(b"\n}\n")
    return pieces
