"""Checking the records of one channel subdir that a transaction is about to link.

Conda-free: the hook hands over what it knows of each record (file name and the fields
conda will act on) and the repodata file conda solved from (its cache). Each record must
be in that repodata, carry full-record (conda profile) signatures meeting the pkg_mgr
threshold (rule 5, the same code as `repodata verify`), match its file name and subdir
(rules 5, 13), and agree with the record conda will act on in the fields that decide what
is downloaded and installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from signer.client import TrustSession
    from signer.repodata.document import SplitRepodata

# Fields of conda's PackageRecord compared with the verified record: what is downloaded
# (and checked against), and what the solver and the link step act on.
COMPARED = ("name", "version", "build", "build_number", "sha256", "md5", "size",
            "depends", "constrains", "subdir")  # fmt: skip

# What conda assumes for a field the record does not have.
_DEFAULTS: dict[str, object] = {"build_number": 0, "depends": [], "constrains": []}


@dataclass(frozen=True)
class Candidate:
    """A record conda is about to link, as conda holds it."""

    filename: str
    subdir: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    filename: str
    check: str
    reason: str


class _Members(msgspec.Struct):
    """What the check needs of a repodata: records and signatures stay raw (unparsed)."""

    info: msgspec.Raw = msgspec.Raw(b"null")
    packages: dict[str, msgspec.Raw] = {}
    packages_conda: dict[str, msgspec.Raw] = msgspec.field(default_factory=dict,
                                                           name="packages.conda")  # fmt: skip
    signatures: dict[str, msgspec.Raw] = {}


_MEMBERS = msgspec.json.Decoder(_Members)


def _wanted_records(repodata: Path, wanted: set[str]) -> SplitRepodata:
    """Only the records of `wanted` (and their signatures), in one scan of the file.

    A 100,000-record channel holds 50 records of interest: building a record list of the
    whole channel (as `repodata verify` does) would cost more than checking them.
    FormatError when the file cannot be read or parsed (the general reader names why).
    """
    from signer.repodata.document import MAX_REPODATA, RawRecord, SplitRepodata, read_repodata

    try:
        with open(repodata, "rb") as handle:
            data = handle.read(MAX_REPODATA + 1)
        doc = _MEMBERS.decode(data) if len(data) <= MAX_REPODATA else None
    except (OSError, msgspec.DecodeError):
        doc = None
    if doc is None:  # let the general reader say what is wrong
        split = read_repodata(repodata, members=False)
        records = [r for r in split.records if r.filename in wanted]
        return SplitRepodata(split.source, split.top, records, split.signatures, complete=False)
    records = []
    for name in sorted(wanted):
        section, members = (("packages.conda", doc.packages_conda) if name.endswith(".conda")
                            else ("packages", doc.packages))  # fmt: skip
        raw = members.get(name)
        if raw is not None:
            records.append(RawRecord(section, name, raw))
    signatures = {n: doc.signatures[n] for n in wanted if n in doc.signatures}
    top = {"info": doc.info}
    return SplitRepodata(str(repodata), top, records, signatures, complete=False)


def _same(name: str, ours: object, theirs: object) -> bool:
    if name in ("depends", "constrains"):
        return isinstance(ours, list) and list(ours) == list(theirs or ())  # type: ignore[call-overload]
    return ours == theirs


def check_subdir(
    repodata: Path, candidates: Sequence[Candidate], session: TrustSession
) -> list[Problem]:
    """Every problem with `candidates` (empty: all verified).

    `session` is refreshed already; the records' signatures are checked by its
    verify_repodata, over only the records to be linked (not the whole channel).
    """
    from signer.repodata.document import RawRecord, parse_record
    from signer.trust.errors import FormatError

    wanted = {c.filename for c in candidates}
    try:
        subset = _wanted_records(repodata, wanted)
    except FormatError as exc:
        why = f"repodata {exc.source}: {exc.field + ': ' if exc.field else ''}{exc.reason}"
        return [Problem(c.filename, "repodata", why) for c in candidates]
    found: dict[str, RawRecord] = {}
    for item in subset.records:
        expected = "packages.conda" if item.filename.endswith(".conda") else "packages"
        if item.section == expected:
            found[item.filename] = item
    problems = [
        Problem(c.filename, "repodata", "not in the channel's repodata")
        for c in candidates
        if c.filename not in found
    ]
    if not found:
        return problems
    report = session.verify_repodata(subset, jobs=1)
    problems += [Problem(f.filename, f.check, f.reason) for f in report.failures]
    failed = {p.filename for p in problems}
    info_subdir = subset.subdir
    for c in candidates:
        if c.filename in failed:
            continue
        try:
            record = parse_record(found[c.filename], subset.source)
        except FormatError as exc:
            problems.append(Problem(c.filename, "format", exc.reason))
            continue
        if record.get("subdir", info_subdir) != info_subdir:
            why = f"record subdir {record.get('subdir')!r} in repodata of {info_subdir!r}"
            problems.append(Problem(c.filename, "subdir", why))
            continue
        for name in COMPARED:
            if name not in c.fields:
                continue
            default = info_subdir if name == "subdir" else _DEFAULTS.get(name)
            ours = record.get(name, default)
            if not _same(name, ours, c.fields[name]):
                why = f"conda would use {name} {c.fields[name]!r}, the signed record has {ours!r}"
                problems.append(Problem(c.filename, "record", why))
                break
    return problems
