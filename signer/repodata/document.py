"""repodata.json as raw record slices: one fast scan, records parsed where they are used.

A conda-forge subdir is 150-200 MB. msgspec finds every record's byte span without
building Python objects, so the forked workers that verify or sign a share of the records
also parse that share. Records are never re-serialised: a signed repodata keeps each
record's bytes exactly as they were served.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import orjson

from signer.trust.errors import FormatError

SECTIONS = ("packages", "packages.conda")
MAX_REPODATA = 4 * 1024 * 1024 * 1024

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
        """`info.subdir` as libmamba reads it ("" when absent or not a string)."""
        raw = self.top.get("info")
        info = orjson.loads(bytes(raw)) if raw is not None else None
        subdir = info.get("subdir") if isinstance(info, dict) else None
        return subdir if isinstance(subdir, str) else ""

    @property
    def subdir(self) -> str:
        return self.info_subdir or "unknown"

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


class _ForVerifying(msgspec.Struct):
    """The members a verifier reads; others are skipped (nothing is written back)."""

    info: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    packages: dict[str, msgspec.Raw] = msgspec.field(default_factory=dict)
    packages_conda: dict[str, msgspec.Raw] = msgspec.field(
        default_factory=dict, name="packages.conda"
    )
    signatures: dict[str, msgspec.Raw] = msgspec.field(default_factory=dict)


_for_verifying = msgspec.json.Decoder(_ForVerifying)


def read_repodata(path: Path, *, members: bool = True) -> SplitRepodata:
    """Scan a repodata.json named by the user; FormatError (exit 2) on any problem.

    `members=False` (verifying): one pass that keeps only info, the records and the
    signatures, about twice as fast; a document it cannot read takes the full path, which
    names the member at fault.
    """
    source = str(path)
    try:
        if path.stat().st_size > MAX_REPODATA:
            raise FormatError(source, "", f"larger than the {MAX_REPODATA}-byte cap")
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(source, "", "no such file") from None
    except IsADirectoryError:
        raise FormatError(source, "", "is a directory") from None
    except OSError as exc:
        raise FormatError(source, "", f"cannot read: {exc.strerror}") from None
    return split_repodata(data, source, members=members)


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
            found = [RawRecord("packages", k, v) for k, v in doc.packages.items()]
            found += [RawRecord("packages.conda", k, v) for k, v in doc.packages_conda.items()]
            return SplitRepodata(source, {"info": doc.info}, found, doc.signatures,
                                 complete=False)  # fmt: skip
    top = _decode_map(data, source, "(top level)")
    records: list[RawRecord] = []
    for section in SECTIONS:
        if section in top:
            for filename, raw in _decode_map(top[section], source, section).items():
                records.append(RawRecord(section, filename, raw))
    signatures = _decode_map(top["signatures"], source, "signatures") if "signatures" in top else {}
    return SplitRepodata(source, top, records, signatures)


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
        record = json.loads(bytes(item.raw))
        float_free = False
    if not isinstance(record, dict):
        raise FormatError(source, f"{item.section}.{item.filename}", "record is not an object")
    return record, float_free


def iter_records(split: SplitRepodata) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in split.records:
        yield item.filename, parse_record(item, split.source)
