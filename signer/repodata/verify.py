"""Verifying every record of a repodata against the pkg_mgr delegation (rule 5).

Each profile is judged on its own: the conda profile counts the signatures valid over the
whole record (what conda-content-trust checks), the mamba profile those valid over
libmamba's signable (what mamba checks). By default only the conda profile is checked; a
record failing it is looked at under the other profile too, so the report can tell "signed
for mamba only" from "bad signature". File names are checked against each record's
name/version/build and reported separately from signature validity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec
import orjson

from signer.repodata.document import SplitRepodata, parse_record_checked
from signer.repodata.parallel import map_ranges
from signer.repodata.profiles import (
    Profile,
    UnsignableRecord,
    conda_message,
    mamba_message,
    parse_profiles,
)
from signer.trust.ed25519 import verify_raw
from signer.trust.metadata import Delegation


class Failure(NamedTuple):
    filename: str
    check: str  # "signature" | "unsigned" | "file-name"
    reason: str
    profile: str = ""  # "conda" | "mamba"; "" for the file-name check


class ProfileCounts(NamedTuple):
    """How the records fare under one profile's signatures."""

    valid: int  # the pkg_mgr threshold is met over this profile's bytes
    invalid: int  # signed by delegated keys, but short of the threshold over these bytes
    unsigned: int  # no signature by a delegated key at all

    def ok(self, allow_unsigned: bool = False) -> bool:
        return self.invalid == 0 and (allow_unsigned or self.unsigned == 0)


class RangeResult(NamedTuple):
    counts: dict[Profile, list[int]]  # profile -> [valid, invalid, unsigned]
    mismatches: int
    failures: list[Failure]


class RepodataReport(NamedTuple):
    """Counts over the whole repodata per profile checked, and every failure."""

    records: int
    profiles: dict[Profile, ProfileCounts]  # only the profiles that were checked
    mismatches: int
    failures: list[Failure]

    def ok(self, allow_unsigned: bool = False) -> bool:
        return self.mismatches == 0 and all(c.ok(allow_unsigned) for c in self.profiles.values())

    # The conda profile's counts, under the names scripts have read since before profiles.
    @property
    def valid(self) -> int:
        return self.profiles["conda"].valid

    @property
    def invalid(self) -> int:
        return self.profiles["conda"].invalid

    @property
    def unsigned(self) -> int:
        return self.profiles["conda"].unsigned


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


def _entries(raw: msgspec.Raw) -> dict[str, Any] | None:
    """keyid -> entry, or None when the member is not an object (the record is unsigned)."""
    try:
        return _ENTRIES.decode(raw)
    except msgspec.DecodeError:  # an entry of another shape: the generic path judges it
        value = orjson.loads(memoryview(raw))
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

_OTHER: dict[Profile, Profile] = {"conda": "mamba", "mamba": "conda"}
_BYTES: dict[Profile, str] = {"conda": "over the whole record", "mamba": "over libmamba's signable"}


class _Record:
    """One record's bytes per profile, made on first use."""

    __slots__ = ("conda", "float_free", "mamba", "record", "subdir")

    def __init__(self, record: dict[str, Any], float_free: bool, subdir: str) -> None:
        self.record, self.float_free, self.subdir = record, float_free, subdir
        self.conda: bytes | None = None
        self.mamba: bytes | None = None

    def message(self, profile: Profile) -> bytes | None:
        """None: the record has no bytes for this profile (libmamba cannot read it)."""
        if profile == "conda":
            if self.conda is None:
                self.conda = conda_message(self.record, float_free=self.float_free)
            return self.conda
        if self.mamba is None:
            try:
                self.mamba = mamba_message(self.record, self.subdir)
            except UnsignableRecord:
                return None
        return self.mamba


def _valid_keys(signed: list[tuple[str, bytes, bytes | None]], message: bytes | None) -> set[str]:
    if message is None:
        return set()
    return {k for k, public, sig in signed if sig is not None and verify_raw(public, sig, message)}


def _short(keys: list[str]) -> str:
    return ", ".join(k[:8] + "…" for k in keys)


def _judge(
    rec: _Record, sigs: dict[str, Any], keys: list[_Key], threshold: int,
    profiles: tuple[Profile, ...],
) -> tuple[list[tuple[Profile, bool, str]], set[str]]:  # fmt: skip
    """(profile, threshold met, why not) for each profile, and the keys valid for conda."""
    signed = [(k, public, _decode(sigs[k])) for k, public in keys if k in sigs]
    valid: dict[Profile, set[str]] = {}
    for profile in profiles:
        # A signature valid over one profile's bytes is valid over the other's only when
        # the bytes are the same (a record that holds just the fields libmamba signs).
        done = valid.get(_OTHER[profile])
        if done is not None and rec.message(profile) == rec.message(_OTHER[profile]):
            valid[profile] = done
        else:
            rest = [s for s in signed if done is None or s[0] not in done]
            valid[profile] = _valid_keys(rest, rec.message(profile))
    out: list[tuple[Profile, bool, str]] = []
    for profile in profiles:
        good = valid[profile]
        if len(good) >= threshold:
            out.append((profile, True, ""))
            continue
        failed = [s for s in signed if s[0] not in good]
        other = _OTHER[profile]
        by_other = valid.get(other)
        if by_other is None:
            by_other = _valid_keys(failed, rec.message(other))
        only_other = [k for k, _, _ in failed if k in by_other]
        bad = [k for k, _, _ in failed if k not in by_other]
        count = f"({len(good)} of {threshold} valid {_BYTES[profile]})"
        if rec.message(profile) is None:
            why = "libmamba cannot read the record (a string is not valid Unicode)"
        elif bad:
            why = f"bad signature by {_short(bad)} {count}"
            if only_other:
                why += f"; {other}-profile signature by {_short(only_other)}"
        else:
            why = f"only {other}-profile signatures {count}"
        out.append((profile, False, why))
    return out, valid.get("conda", set())


def verify_repodata(
    split: SplitRepodata,
    pkg_mgr: Delegation,
    *,
    jobs: int = 1,
    profiles: Sequence[str] = ("conda",),
    on_progress: Callable[[int], None] | None = None,
) -> RepodataReport:
    """Every record against the pkg_mgr delegation, under each profile in `profiles`."""
    checked = parse_profiles(profiles)
    if not checked:
        raise ValueError("no profile to check")
    records = split.records
    raw_signatures = split.signatures
    keys = [(k, bytes.fromhex(k)) for k in pkg_mgr.pubkeys]
    threshold = pkg_mgr.threshold
    subdir = split.info_subdir

    def verify_range(start: int, end: int) -> RangeResult:
        counts = {p: [0, 0, 0] for p in checked}
        conda_counts = counts.get("conda", [0, 0, 0])
        mismatches = 0
        failures: list[Failure] = []
        order = list(keys)
        conda_only = checked == ("conda",)
        one_will_do = threshold == 1 and conda_only
        for item in records[start:end]:
            filename = item.filename
            record, float_free = parse_record_checked(item, split.source)
            problem = file_name_problem(filename, record)
            if problem is not None:
                mismatches += 1
                failures.append(Failure(filename, "file-name", problem))
            raw_sigs = raw_signatures.get(filename)
            sigs = _entries(raw_sigs) if raw_sigs is not None else None
            message = None
            if one_will_do and sigs is not None and order[0][0] in sigs:
                # The common case, threshold 1: the key that signed the last record.
                sig = _decode(sigs[order[0][0]])
                message = conda_message(record, float_free=float_free)
                if sig is not None and verify_raw(order[0][1], sig, message):
                    conda_counts[0] += 1
                    continue
            rec = _Record(record, float_free, subdir)
            rec.conda = message
            if sigs is None or not any(k in sigs for k, _ in keys):
                for profile in checked:
                    counts[profile][2] += 1
                    failures.append(Failure(filename, "unsigned", "no signature by a pkg_mgr key",
                                            profile))  # fmt: skip
                continue
            judged, conda_valid = _judge(rec, sigs, order, threshold, checked)
            for profile, good, why in judged:
                if good:
                    counts[profile][0] += 1
                else:
                    counts[profile][1] += 1
                    failures.append(Failure(filename, "signature", why, profile))
            if conda_valid and order[0][0] not in conda_valid:
                # Try a key that signs this channel's full records first from now on.
                position = next(i for i, (k, _) in enumerate(order) if k in conda_valid)
                order.insert(0, order.pop(position))
        return RangeResult(counts, mismatches, failures)

    parts = map_ranges(verify_range, len(records), jobs, on_chunk=on_progress)
    totals = {
        p: ProfileCounts(*(sum(part.counts[p][i] for part in parts) for i in range(3)))
        for p in checked
    }
    return RepodataReport(
        len(records),
        totals,
        sum(p.mismatches for p in parts),
        [f for part in parts for f in part.failures],
    )
