"""Verifying every record of a repodata against the pkg_mgr delegation (rule 5).

Only full-record (conda profile) signatures count toward the threshold. A record with no
valid conda-profile signature is checked against the mamba subset too, so the report can
tell "signed for mamba only" from "bad signature". File names are checked against each
record's name/version/build and reported separately from signature validity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import orjson

from signer.repodata.document import (
    SplitRepodata,
    check_record_keys,
    in_both_sections,
    parse_record_checked,
    placement_problems,
)
from signer.repodata.parallel import map_ranges
from signer.repodata.profiles import conda_message, mamba_message
from signer.trust.ed25519 import verify_raw
from signer.trust.errors import FormatError
from signer.trust.metadata import Delegation


class Failure(NamedTuple):
    filename: str
    check: str  # "signature" | "unsigned" | "file-name"
    reason: str


class RangeResult(NamedTuple):
    valid: int
    invalid: int
    unsigned: int
    mamba_only: int
    mamba_valid: int
    mismatches: int
    failures: list[Failure]


class RepodataReport(NamedTuple):
    """Counts over the whole repodata, and every failure."""

    records: int
    valid: int
    invalid: int
    unsigned: int
    mamba_only: int
    mamba_valid: int  # valid mamba-profile signatures seen (checked ones only)
    mismatches: int
    failures: list[Failure]

    def ok(self, allow_unsigned: bool = False) -> bool:
        unsigned_ok = allow_unsigned or self.unsigned == 0
        return self.invalid == 0 and self.mamba_only == 0 and self.mismatches == 0 and unsigned_ok


def file_name_problem(filename: str, record: dict[str, Any]) -> str | None:
    """Why the file name disagrees with the record's name/version/build, or None."""
    if filename.endswith(".conda"):
        parts = filename[:-6].rsplit("-", 2)
    elif filename.endswith(".tar.bz2"):
        parts = filename[:-8].rsplit("-", 2)
    else:
        parts = []
    if len(parts) != 3:
        return "file name is not name-version-build.conda|.tar.bz2"
    name, version, build = parts
    if (
        record.get("name") == name
        and record.get("version") == version
        and (record.get("build") == build)
    ):
        return None
    for field, in_name in (("name", name), ("version", version), ("build", build)):
        if record.get(field) != in_name:
            return f"{field} {in_name!r} in the file name but {record.get(field)!r} in the record"
    return None


class _SignatureEntry(msgspec.Struct):
    """`{"signature": "<128 hex>", ...}`: other members (e.g. other_headers) are ignored."""

    signature: str


# A record's `signatures` entry, {keyid: {"signature": ...}}, decoded without building dicts.
_ENTRIES = msgspec.json.Decoder(dict[str, _SignatureEntry])


def _entries(
    raw: msgspec.Raw, source: str = "repodata", filename: str = "?"
) -> dict[str, Any] | None:
    """keyid -> entry, or None when the member is not an object (the record is unsigned)."""
    try:
        return _ENTRIES.decode(raw)
    except msgspec.DecodeError:  # an entry of another shape: the generic path judges it
        try:
            value = orjson.loads(memoryview(raw))
        except orjson.JSONDecodeError as exc:  # e.g. not UTF-8
            raise FormatError(source, f"signatures.{filename}", f"malformed JSON: {exc}") from None
        return value if isinstance(value, dict) else None


def _decode(entry: object) -> bytes | None:
    if type(entry) is _SignatureEntry:
        sig: object = entry.signature
    else:
        sig = entry.get("signature") if isinstance(entry, dict) else None
    if not isinstance(sig, str) or len(sig) != 128:
        return None
    try:
        raw = bytes.fromhex(sig)
    except ValueError:
        return None
    # 128 lowercase hex digits and nothing else: fromhex also takes uppercase and spaces.
    return raw if raw.hex() == sig else None


_Key = tuple[str, bytes]


class _RecordCheck(NamedTuple):
    counted: int  # valid full-record signatures by delegated keys
    mamba_valid: int  # valid mamba-subset signatures among the rest (when checked)
    failed: list[str]  # delegated keys whose signature did not verify over the full record


def _check_record(
    record: dict[str, Any], message: bytes, sigs: dict[str, Any], order: list[_Key],
    threshold: int, check_mamba: bool,
) -> _RecordCheck:  # fmt: skip
    """`message`: the record's conda-profile bytes."""
    counted = 0
    failed: list[tuple[str, bytes, bytes | None]] = []
    for position, (hexkey, public) in enumerate(order):
        if hexkey not in sigs:
            continue
        sig = _decode(sigs[hexkey])
        if sig is not None and verify_raw(public, sig, message):
            counted += 1
            if position:  # try the key that signs this channel's full records first
                order.insert(0, order.pop(position))
            if counted >= threshold and not check_mamba:
                return _RecordCheck(counted, 0, [])
        else:
            failed.append((hexkey, public, sig))
    subset = mamba_message(record) if failed else b""
    mamba_valid = sum(1 for _, public, sig in failed
                      if sig is not None and verify_raw(public, sig, subset))  # fmt: skip
    return _RecordCheck(counted, mamba_valid, [k for k, _, _ in failed])


def verify_repodata(
    split: SplitRepodata,
    pkg_mgr: Delegation,
    *,
    jobs: int = 1,
    check_mamba: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> RepodataReport:
    records = split.records
    raw_signatures = split.signatures
    keys = [(k, bytes.fromhex(k)) for k in pkg_mgr.pubkeys]
    threshold = pkg_mgr.threshold
    subdir = split.subdir
    both = in_both_sections(records)

    def verify_range(start: int, end: int) -> RangeResult:
        valid = invalid = unsigned = mamba_only = mamba_valid = mismatches = 0
        failures: list[Failure] = []
        order = list(keys)
        one_will_do = threshold == 1 and not check_mamba
        for item in records[start:end]:
            filename = item.filename
            record, float_free = parse_record_checked(item, split.source)
            problem = file_name_problem(filename, record)
            if problem is not None:
                mismatches += 1
                failures.append(Failure(filename, "file-name", problem))
            for what, why in placement_problems(item, record, subdir, both):
                mismatches += 1
                failures.append(Failure(filename, what, why))
            raw_sigs = raw_signatures.get(filename)
            sigs = _entries(raw_sigs, split.source, filename) if raw_sigs is not None else None
            message = None
            if one_will_do and sigs is not None and order[0][0] in sigs:
                # The common case, threshold 1: the key that signed the last record.
                message = conda_message(record, float_free=float_free)
                check_record_keys(item, split.source, message if float_free else None)
                sig = _decode(sigs[order[0][0]])
                if sig is not None and verify_raw(order[0][1], sig, message):
                    valid += 1
                    continue
            if message is None:
                message = conda_message(record, float_free=float_free)
                check_record_keys(item, split.source, message if float_free else None)
            if sigs is None or not any(k in sigs for k, _ in keys):
                unsigned += 1
                failures.append(Failure(filename, "unsigned", "no signature by a pkg_mgr key"))
                continue
            check = _check_record(record, message, sigs, order, threshold, check_mamba)
            mamba_valid += check.mamba_valid
            if check.counted >= threshold:
                valid += 1
            elif check.mamba_valid:
                mamba_only += 1
                why = f"only mamba-profile signatures ({check.counted} of {threshold} full-record)"
                failures.append(Failure(filename, "signature", why))
            else:
                invalid += 1
                bad = ", ".join(k[:8] + "…" for k in check.failed)
                why = f"bad signature by {bad} ({check.counted} of {threshold} valid)"
                failures.append(Failure(filename, "signature", why))
        return RangeResult(valid, invalid, unsigned, mamba_only, mamba_valid, mismatches, failures)

    parts = map_ranges(verify_range, len(records), jobs, on_chunk=on_progress)
    failures = [f for part in parts for f in part.failures]
    return RepodataReport(
        len(records),
        sum(p.valid for p in parts),
        sum(p.invalid for p in parts),
        sum(p.unsigned for p in parts),
        sum(p.mamba_only for p in parts),
        sum(p.mamba_valid for p in parts),
        sum(p.mismatches for p in parts),
        failures,
    )
