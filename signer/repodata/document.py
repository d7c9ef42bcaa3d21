"""repodata.json as raw record slices: one fast scan, records parsed where they are used.

A conda-forge subdir is 150-200 MB. msgspec finds every record's byte span without
building Python objects, so the forked workers that verify or sign a share of the records
also parse that share. Records are never re-serialised: a signed repodata keeps each
record's bytes exactly as they were served.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import orjson

from signer.trust.errors import FormatError

SECTIONS = ("packages", "packages.conda")
SUFFIX = {"packages": ".tar.bz2", "packages.conda": ".conda"}  # rule 13
MAX_REPODATA = 4 * 1024 * 1024 * 1024
_SUBDIR = re.compile(r"\A[a-z0-9]+(-[a-z0-9_]+)?\Z")
_WHITESPACE = b" \t\n\r"

_RawMap = dict[str, msgspec.Raw]


class RawRecord(NamedTuple):
    section: str
    filename: str
    raw: msgspec.Raw


class SplitRepodata:
    """Top-level members as raw JSON, records as raw slices, signatures as raw per file."""

    def __init__(self, source: str, top: _RawMap, records: list[RawRecord],
                 signatures: _RawMap, *, complete: bool = True) -> None:  # fmt: skip
        self.source = source
        self.top = top
        self.records = records
        self.signatures = signatures
        self.complete = complete  # False: only what verifying needs (`top` has just `info`)

    @property
    def info_subdir(self) -> str:
        """`info.subdir` (read_repodata has checked it is there and a subdir name)."""
        return _info_subdir(self.top.get("info"), self.source)

    @property
    def subdir(self) -> str:
        return self.info_subdir

    def to_bytes(self, signatures: dict[str, Any]) -> bytes:
        """The document with `signatures` replaced; every other member byte-identical."""
        return b"".join(self.to_pieces(signatures))

    def to_pieces(self, signatures: dict[str, Any]) -> list[bytes | memoryview]:
        """`to_bytes` as pieces to write one after another: the records are not copied."""
        if not self.complete:
            raise ValueError("read with members=False: the document cannot be written back")
        members: dict[str, bytes | msgspec.Raw] = {
            k: v for k, v in self.top.items() if k != "signatures"
        }
        members["signatures"] = orjson.dumps(signatures, option=orjson.OPT_SORT_KEYS)
        pieces: list[bytes | memoryview] = [b"{\n"]
        for i, name in enumerate(sorted(members)):
            pieces.append((b",\n" if i else b"") + orjson.dumps(name) + b": ")
            pieces.append(memoryview(members[name]))  # the bytes as read, not copied
        pieces.append(b"\n}\n")
        return pieces


def _decode_map(raw: bytes | msgspec.Raw, source: str, field: str) -> _RawMap:
    try:
        return msgspec.json.decode(raw, type=_RawMap)
    except msgspec.ValidationError:
        raise FormatError(source, field, "expected a JSON object") from None
    except msgspec.DecodeError as exc:
        reason = str(exc)
        if "truncated" in reason:
            reason = "truncated JSON"
        raise FormatError(source, field, f"malformed or truncated JSON: {reason}") from None


_Unset = msgspec.UnsetType


class _ForVerifying(msgspec.Struct, forbid_unknown_fields=True):
    """conda-index's members; a document with others takes the general path.

    UNSET tells a member that is absent from an empty one: the duplicate-key accounting
    (`_check_unique`) must know exactly which members the file holds.
    """

    info: msgspec.Raw | _Unset = msgspec.UNSET
    packages: dict[str, msgspec.Raw] | _Unset = msgspec.UNSET
    packages_conda: dict[str, msgspec.Raw] | _Unset = msgspec.field(
        default=msgspec.UNSET, name="packages.conda"
    )
    signatures: dict[str, msgspec.Raw] | _Unset = msgspec.UNSET
    removed: msgspec.Raw | _Unset = msgspec.UNSET
    repodata_version: msgspec.Raw | _Unset = msgspec.UNSET


def _nonws(data: Any) -> int:
    """Bytes of `data` that are not JSON whitespace."""
    raw: bytes = data if isinstance(data, bytes) else bytes(data)
    if len(raw) > 1 << 20:  # big: four passes without a copy
        return len(raw) - sum(raw.count(c) for c in (b" ", b"\n", b"\t", b"\r"))
    return len(raw.translate(None, _WHITESPACE))  # small: one pass (3x faster)


def _object_nonws(keys: Iterable[str], n: int) -> int:
    """Non-whitespace bytes of an object's braces, keys, colons and commas."""
    if not n:
        return 2
    # One encode for all keys: `["k1","k2"]` holds each key as JSON, plus 2 + (n - 1) bytes.
    encoded = _nonws(msgspec.json.encode(list(keys))) - 2 - (n - 1)
    return 2 + encoded + n + (n - 1)


def _check_unique(data: bytes, members: Mapping[str, Any], source: str) -> None:
    """Rule 8 in the one scan: no key twice at the top level or inside `packages`,
    `packages.conda` and `signatures` (`members` values: Raw, or a dict of Raw).

    msgspec (like most parsers) keeps the last of two equal keys, libmamba the first.
    Counted instead of parsed again: the file's non-whitespace bytes must be exactly those
    of the members decoded, and a dropped duplicate leaves bytes unaccounted for. (A key
    spelled with needless escapes is refused the same way: file names are plain text.)
    """
    expected = _object_nonws(members, len(members))
    leaves: list[Any] = []
    for value in members.values():
        if isinstance(value, dict):
            expected += _object_nonws(value, len(value))
            leaves.extend(value.values())
        else:
            leaves.append(value)
    expected += _nonws(b"".join(leaves))
    if expected != _nonws(data):
        raise FormatError(source, _duplicate_of(data), "duplicate key (a member given twice)")


def _duplicate_of(data: bytes) -> str:
    """Which key is doubled (the error path only: parses the whole file in Python)."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen and not found:
                found.append(key)
            seen[key] = value
        return seen

    with contextlib.suppress(ValueError, RecursionError):
        json.loads(data, object_pairs_hook=pairs)
    return found[0] if found else "(a key spelled with escapes)"


def check_record_keys(item: RawRecord, source: str, message: bytes | None = None) -> None:
    """No key twice inside one record (the same accounting, one record).

    `message`, the record's canonical bytes when already made (conda profile), is the fast
    way: for an ASCII record without escapes or floats it holds the same non-whitespace
    bytes as the raw record exactly when no key was dropped, at any depth.
    """
    raw = bytes(item.raw)
    if message is not None and raw.isascii() and b"\\" not in raw:
        if _nonws(raw) == _nonws(message):
            return
    elif _record_ok(item.raw):
        return
    key = _duplicate_of(raw)
    raise FormatError(source, f"{item.section}.{item.filename}.{key}", "duplicate key")


def _record_ok(raw: msgspec.Raw) -> bool:
    members = _record_members.decode(raw)
    expected = _object_nonws(members, len(members)) + _nonws(b"".join(members.values()))
    return expected == _nonws(raw)


_record_members = msgspec.json.Decoder(dict[str, msgspec.Raw])
_for_verifying = msgspec.json.Decoder(_ForVerifying)


_OWN = frozenset({*SECTIONS, "signatures", "info"})


def _check_others(members: Mapping[str, Any], source: str) -> None:
    """Members read nowhere else (`removed`, `repodata_version`, unknown ones) are still
    strict JSON: UTF-8, no duplicate keys, no NaN."""
    from signer.trust.jsonload import load_json

    for name, raw in members.items():
        if name not in _OWN and isinstance(raw, msgspec.Raw):
            load_json(bytes(raw), f"{source}: {name}", MAX_REPODATA)


def _info_subdir(raw: Any, source: str) -> str:
    from signer.trust.jsonload import load_json

    if raw is None or raw is msgspec.UNSET:
        raise FormatError(source, "info", "missing: a repodata names its subdir in info.subdir")
    info = load_json(bytes(raw), f"{source}: info", 1024 * 1024)  # strict: no duplicate keys
    subdir = info.get("subdir") if isinstance(info, dict) else None
    if not isinstance(subdir, str) or not _SUBDIR.match(subdir):
        raise FormatError(source, "info.subdir", "missing or not a conda subdir name")
    return subdir


def in_both_sections(records: list[RawRecord]) -> frozenset[str]:
    """File names listed in both `packages` and `packages.conda` (rule 13: one record)."""
    conda = {r.filename for r in records if r.section == "packages.conda"}
    return frozenset(r.filename for r in records if r.section == "packages" and r.filename in conda)


def placement_problems(
    item: RawRecord, record: Mapping[str, Any], subdir: str, both: frozenset[str]
) -> list[tuple[str, str]]:
    """Rule 13 for one record: (check, reason) for each way it is misplaced."""
    problems: list[tuple[str, str]] = []
    suffix = SUFFIX[item.section]
    if not item.filename.endswith(suffix):
        problems.append(("section", f"listed in {item.section}, whose file names end in {suffix}"))
    if item.filename in both:
        problems.append(("section", "listed in both packages and packages.conda"))
    own = record.get("subdir", subdir)  # libmamba gives a record without one info.subdir
    if own != subdir:
        problems.append(("subdir", f"a {own!r} record in the {subdir} repodata"))
    return problems


def read_repodata(path: Path, *, members: bool = True) -> SplitRepodata:
    """Scan a repodata.json named by the user; FormatError (exit 2) on any problem.

    `members=False` (verifying): one pass that keeps only info, the records and the
    signatures, about twice as fast; a document it cannot read takes the full path, which
    names the member at fault.
    """
    return split_repodata(read_repodata_bytes(path), str(path), members=members)


def read_repodata_bytes(path: Path) -> bytes:
    """The bytes of a repodata file named by the user, under the cap (FormatError: exit 2)."""
    source = str(path)
    try:
        if path.stat().st_size > MAX_REPODATA:
            raise FormatError(source, "", f"larger than the {MAX_REPODATA}-byte cap")
        return path.read_bytes()
    except FileNotFoundError:
        raise FormatError(source, "", "no such file") from None
    except IsADirectoryError:
        raise FormatError(source, "", "is a directory") from None
    except OSError as exc:
        raise FormatError(source, "", f"cannot read: {exc.strerror}") from None


def split_repodata(data: bytes, source: str, *, members: bool = True) -> SplitRepodata:
    """`read_repodata` of bytes already in memory (e.g. fetched); `source` names them."""
    if len(data) > MAX_REPODATA:
        raise FormatError(source, "", f"larger than the {MAX_REPODATA}-byte cap")
    if not members:
        try:
            doc = _for_verifying.decode(data)
        except msgspec.DecodeError:  # ValidationError included
            pass
        else:
            present = {
                f: getattr(doc, a) for f, a in _FIELDS if getattr(doc, a) is not msgspec.UNSET
            }
            _check_unique(data, present, source)
            _check_others(present, source)
            found = [RawRecord("packages", k, v) for k, v in present.get("packages", {}).items()]
            found += [RawRecord("packages.conda", k, v)
                      for k, v in present.get("packages.conda", {}).items()]  # fmt: skip
            info = present.get("info")
            _info_subdir(info, source)
            assert isinstance(info, msgspec.Raw)  # _info_subdir refuses a missing one
            return SplitRepodata(source, {"info": info}, found, present.get("signatures", {}),
                                 complete=False)  # fmt: skip
    top = _decode_map(data, source, "(top level)")
    maps: dict[str, Any] = dict(top)
    records: list[RawRecord] = []
    for section in SECTIONS:
        if section in top:
            maps[section] = _decode_map(top[section], source, section)
            for filename, raw in maps[section].items():
                records.append(RawRecord(section, filename, raw))
    signatures = _decode_map(top["signatures"], source, "signatures") if "signatures" in top else {}
    if "signatures" in top:
        maps["signatures"] = signatures
    _check_unique(data, maps, source)
    _check_others(maps, source)
    _info_subdir(top.get("info"), source)
    return SplitRepodata(source, top, records, signatures)


_FIELDS = (
    ("info", "info"),
    ("packages", "packages"),
    ("packages.conda", "packages_conda"),
    ("signatures", "signatures"),
    ("removed", "removed"),
    ("repodata_version", "repodata_version"),
)


class _HasFloat(Exception):
    pass


def _refuse_float(_literal: str) -> float:
    raise _HasFloat


# Records hold strings, integers, lists and objects; a float sends the record down the
# reference path (json), whose canonical bytes differ from orjson's for floats.
_float_free_records = msgspec.json.Decoder(float_hook=_refuse_float)


def parse_record(item: RawRecord, source: str) -> dict[str, Any]:
    return parse_record_checked(item, source)[0]


def parse_record_checked(item: RawRecord, source: str) -> tuple[dict[str, Any], bool]:
    """(record, float-free): float-free records may skip `canonical_bytes_fast`'s check."""
    try:
        record = _float_free_records.decode(item.raw)
        float_free = True
    except (_HasFloat, msgspec.DecodeError):  # the reference parser decides
        try:
            record = json.loads(bytes(item.raw))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError included
            reason = str(exc).splitlines()[0] if str(exc) else "invalid JSON"
            raise FormatError(source, f"{item.section}.{item.filename}", reason[:200]) from None
        float_free = False
    if not isinstance(record, dict):
        raise FormatError(source, f"{item.section}.{item.filename}", "record is not an object")
    return record, float_free


def iter_records(split: SplitRepodata) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in split.records:
        yield item.filename, parse_record(item, split.source)
