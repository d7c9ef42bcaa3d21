"""`mirror sync` and `mirror verify` (section 11): a channel copied only as far as it verifies.

Per subdir: the upstream repodata (`.zst` or `.json`, under a size cap, split strictly),
its records' signatures (pkg_mgr of the trust repository), every record's attestation, then
the downloads (concurrent, resumable, size and sha256 against the record, the archive's own
info/index.json against the file name). What fails before the download is "refused", what
fails after it is moved to `DEST/.quarantine/<subdir>/<file>` with `<file>.reason`; neither
is ever published. Publishing: artifacts are moved into `DEST/<subdir>/` one by one
(atomic renames), then the repodata naming only them is written (atomic), so a client
never sees a record whose artifact is missing. Work in progress lives in `DEST/.mirror/`:
partial downloads (resumed with Range after a crash) and per subdir the state of the last
run (what was published, and since when a file is gone upstream, for the grace period).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson
import zstandard

from signer.channel.document import info_subdir, pieces_without, split_strict, strict_json
from signer.channel.gate import Gate
from signer.channel.sign import record_problem, with_subdir
from signer.mirror.upstream import DEFAULT_MAX_REPODATA, Download, Upstream, move_into
from signer.repodata.document import SplitRepodata
from signer.repodata.profiles import conda_message, mamba_message
from signer.trust.attestation import sidecar_name
from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import MAX_SIDECAR
from signer.trust.signing import MessageSigner
from signer.trust.state import write_atomic

WORK = ".mirror"
QUARANTINE = ".quarantine"
DEFAULT_GRACE = 3 * 24 * 3600.0


class Problem(NamedTuple):
    file: str
    check: str
    reason: str


@dataclass
class SubdirReport:
    subdir: str
    records: int = 0
    published: int = 0
    downloaded: int = 0
    reused: int = 0
    resumed: int = 0
    bytes: int = 0
    refused: list[Problem] = field(default_factory=list)
    quarantined: list[Problem] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str | None = None  # the subdir could not be synced: nothing of it was published

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused and not self.quarantined

    def to_json(self) -> dict[str, Any]:
        return {
            "subdir": self.subdir, "ok": self.ok, "error": self.error, "records": self.records,
            "published": self.published, "downloaded": self.downloaded, "reused": self.reused,
            "resumed": self.resumed, "bytes": self.bytes,
            "refused": [p._asdict() for p in self.refused],
            "quarantined": [p._asdict() for p in self.quarantined],
            "removed": list(self.removed),
        }  # fmt: skip


@dataclass
class MirrorReport:
    subdirs: list[SubdirReport]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.subdirs)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "subdirs": [s.to_json() for s in self.subdirs]}


class Progress(Protocol):
    def files(self, subdir: str, count: int, total_bytes: int | None) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_done(self) -> None: ...


@dataclass
class SyncOptions:
    jobs: int = 8
    keys: Sequence[MessageSigner] = ()  # re-sign: conda profile
    mamba_key: MessageSigner | None = None
    grace: float = DEFAULT_GRACE  # seconds before a file gone upstream is deleted
    max_repodata: int = DEFAULT_MAX_REPODATA
    verify_jobs: int = 1
    clock: Callable[[], float] = time.time
    # Also publish the mirror to Blob Storage (signer.storage.BlobTarget), in the same order.
    publish_to: BlobPublisher | None = None


class BlobPublisher(Protocol):
    def put_file(self, path: str, source: Path, sha256: str) -> object: ...
    def publish(
        self, files: dict[str, bytes], order: Callable[[str], Any] | None = None
    ) -> object: ...
    def delete(self, path: str) -> bool: ...


class _Wanted(NamedTuple):
    filename: str
    size: int
    sha256: str


# --------------------------------------------------------------------------- state


def _token(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class _State:
    """DEST/.mirror/<subdir>/state.json: what was published, and what is going away."""

    def __init__(self, dest: Path, subdir: str) -> None:
        self.path = dest / WORK / subdir / "state.json"
        self.files: dict[str, dict[str, Any]] = {}
        self.gone_since: dict[str, float] = {}
        try:
            raw = json.loads(self.path.read_bytes())
            self.files = dict(raw["files"])
            self.gone_since = {k: float(v) for k, v in raw["gone_since"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # lost or damaged: files on disk are hashed again, which costs only time

    def save(self) -> None:
        body = {"files": self.files, "gone_since": self.gone_since}
        write_atomic(self.path, json.dumps(body, sort_keys=True).encode())


def _hash(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            sha.update(block)
    return sha.hexdigest()


def _already_there(target: Path, want: _Wanted, state: _State) -> bool:
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != want.size:
        return False
    known = state.files.get(want.filename)
    if (
        known is not None
        and known.get("sha256") == want.sha256
        and known.get("token") == _token(st)
    ):
        return True
    if _hash(target) == want.sha256:
        state.files[want.filename] = {"sha256": want.sha256, "token": _token(st)}
        return True
    return False


# --------------------------------------------------------------------------- checks


def _verified_records(
    split: SplitRepodata, subdir: str, gate: Gate, report: SubdirReport, jobs: int
) -> Iterator[_Wanted]:
    """Records whose signatures (rule 5) and attestation (rule 4 minus the archive) verify.

    A generator, so the caller downloads one record while the next is checked. Refusals
    are added to `report` in record order once it is exhausted.
    """
    bad: dict[str, Problem] = {}
    checked = gate.session.verify_repodata(split, jobs=jobs)
    for failure in checked.failures:
        bad.setdefault(failure.filename, Problem(failure.filename, failure.check, failure.reason))
    for item in split.records:
        name = item.filename
        if name in bad:
            continue
        where = f"{item.section}.{name}"
        record = strict_json(memoryview(item.raw), split.source, where)
        if not isinstance(record, dict):
            bad[name] = Problem(name, "record", "not an object")
            continue
        problem = record_problem(record, name, subdir)
        size = record.get("size")
        if problem is not None:
            bad[name] = Problem(*problem)
            continue
        if type(size) is not int or size < 0:
            bad[name] = Problem(name, "record", "no size")
            continue
        path = f"attestations/{subdir}/{sidecar_name(name)}"
        try:
            sidecar = gate.session.fetch(path, MAX_SIDECAR)
            if sidecar is None:
                bad[name] = Problem(name, "attestation", f"unattested: no {path}")
                continue
            gate.verify_attestation(
                sidecar, filename=name, sha256=record["sha256"], subdir=subdir,
                package=record["name"], where=gate.session.source.describe(path),
            )  # fmt: skip
        except VerificationError as exc:
            reason = exc.reason if exc.subject == name else f"{exc.subject}: {exc.reason}"
            bad[name] = Problem(name, exc.check, reason)
            continue
        yield _Wanted(name, size, record["sha256"])
    report.refused.extend(bad[r.filename] for r in split.records if r.filename in bad)


def _check_utf8(data: bytes, source: str) -> None:
    # Whole document at once (C speed): records are parsed by several readers after this.
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(source, "", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _index_problem(path: Path, filename: str) -> str | None:
    """Rule 4: the archive's own info/index.json must name this file."""
    from signer.artifacts.reader import parse_filename, read_index_json

    try:
        _, index = read_index_json(path)
        name, version, build, _ = parse_filename(filename)
    except FormatError as exc:
        return exc.reason
    for key, value in (("name", name), ("version", version), ("build", build)):
        if index.get(key) != value:
            return f"{key} {value!r} in the file name but {index.get(key)!r} in info/index.json"
    return None


def _quarantine(dest: Path, subdir: str, filename: str, partial: Path | None, why: str) -> None:
    where = dest / QUARANTINE / subdir
    where.mkdir(parents=True, exist_ok=True)  # (once per file: quarantine is rare)
    if partial is not None and partial.exists():
        move_into(partial, where / filename)
    write_atomic(where / f"{filename}.reason", (why + "\n").encode())


# --------------------------------------------------------------------------- publishing


def _resign(
    split: SplitRepodata, kept: list[str], options: SyncOptions, subdir: str
) -> dict[str, Any]:
    wanted = set(kept)
    signatures: dict[str, Any] = {}
    for item in split.records:
        if item.filename not in wanted:
            continue
        record = strict_json(memoryview(item.raw), split.source, item.filename)
        entry = {}
        message = conda_message(record)
        for key in options.keys:
            entry[key.public_key_hex] = {"signature": key.sign_message(message).hex()}
        if options.mamba_key is not None:
            mamba = options.mamba_key.sign_message(mamba_message(with_subdir(record, subdir)))
            entry[options.mamba_key.public_key_hex] = {"signature": mamba.hex()}
        signatures[item.filename] = entry
    return signatures


def _publish_repodata(dest: Path, subdir: str, split: SplitRepodata, signatures: dict[str, Any],
                      dropped: list[str]) -> None:  # fmt: skip
    # Artifacts live beside the mirror's repodata: an upstream base_url no longer applies.
    info = orjson.loads(bytes(split.top["info"])) if "info" in split.top else {"subdir": subdir}
    if isinstance(info, dict) and "base_url" in info:
        del info["base_url"]
        top = dict(split.top)
        top["info"] = orjson.dumps(info, option=orjson.OPT_SORT_KEYS)  # type: ignore[assignment]
        split = SplitRepodata(split.source, top, split.records, split.signatures)
    data = b"".join(pieces_without(split, signatures, dropped))
    write_atomic(
        dest / subdir / "repodata.json.zst", zstandard.ZstdCompressor(level=10).compress(data)
    )
    write_atomic(dest / subdir / "repodata.json", data)


def _publish_to_blob(
    target: BlobPublisher,
    dest: Path,
    subdir: str,
    kept: list[str],
    removed: list[str],
    state: _State,
) -> None:
    """The published subdir to Blob Storage: artifacts not there yet, then the repodata,
    then the blobs of removed artifacts (no repodata names them any more)."""
    uploaded_file = dest / WORK / f"blob-{subdir}.json"
    try:
        uploaded: dict[str, str] = json.loads(uploaded_file.read_bytes())
    except (FileNotFoundError, ValueError):
        uploaded = {}  # lost: each artifact is checked against the blob's own metadata
    for name in kept:
        digest = str(state.files.get(name, {}).get("sha256", ""))
        if not digest or uploaded.get(name) == digest:
            continue
        target.put_file(f"{subdir}/{name}", dest / subdir / name, digest)
        uploaded[name] = digest
        write_atomic(uploaded_file, json.dumps(uploaded, sort_keys=True).encode())
    target.publish({
        f"{subdir}/repodata.json.zst": (dest / subdir / "repodata.json.zst").read_bytes(),
        f"{subdir}/repodata.json": (dest / subdir / "repodata.json").read_bytes(),
    })  # fmt: skip
    for name in removed:
        target.delete(f"{subdir}/{name}")
        uploaded.pop(name, None)
    write_atomic(uploaded_file, json.dumps(uploaded, sort_keys=True).encode())


def ensure_noarch(dest: Path) -> None:
    target = dest / "noarch" / "repodata.json"
    if not target.exists():
        empty = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {},
                 "removed": [], "repodata_version": 1}  # fmt: skip
        write_atomic(target, json.dumps(empty, indent=2, sort_keys=True).encode() + b"\n")


def sync_subdir(
    upstream: Upstream,
    dest: Path,
    subdir: str,
    gate: Gate,
    options: SyncOptions,
    progress: Progress | None = None,
) -> SubdirReport:
    report = SubdirReport(subdir)
    try:
        data, where = upstream.repodata(subdir, options.max_repodata)
        _check_utf8(data, where)
        split = split_strict(data, where)
        if info_subdir(split) != subdir:
            raise FormatError(where, "info.subdir", f"{info_subdir(split)!r}, expected {subdir!r}")
    except (VerificationError, FormatError) as exc:
        report.error = str(exc)
        return report
    report.records = len(split.records)
    info = orjson.loads(bytes(split.top["info"])) if "info" in split.top else {}
    base_url = info.get("base_url") if isinstance(info, dict) else None
    base_url = base_url if isinstance(base_url, str) and base_url else None

    state = _State(dest, subdir)
    published_dir = dest / subdir
    partial_dir = dest / WORK / "partial" / subdir
    kept: list[str] = []

    def fetch(want: _Wanted) -> tuple[_Wanted, Download, str | None]:
        got = upstream.download(
            subdir, want.filename, want.size, want.sha256, partial_dir / want.filename,
            base_url=base_url, on_bytes=progress.advance if progress else None,
        )  # fmt: skip
        problem = _index_problem(got.path, want.filename) if got.ok else None
        if progress is not None:
            progress.file_done()
        return want, got, problem

    pending: list[Future[tuple[_Wanted, Download, str | None]]] = []
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        try:
            if progress is not None:
                progress.files(subdir, len(split.records), None)
            for want in _verified_records(split, subdir, gate, report, options.verify_jobs):
                if _already_there(published_dir / want.filename, want, state):
                    report.reused += 1
                    kept.append(want.filename)
                    if progress is not None:
                        progress.file_done()
                else:  # downloaded while the next records are checked
                    pending.append(pool.submit(fetch, want))
        except (VerificationError, FormatError) as exc:
            for future in pending:
                future.cancel()
            report.error = str(exc)  # partial downloads stay for the next run
            return report
        published_dir.mkdir(parents=True, exist_ok=True)
        for future in pending:
            want, got, problem = future.result()
            if not got.ok or problem is not None:
                check = "download" if not got.ok else "file-name"
                why = got.reason if not got.ok else problem
                detail = f"{check}: {why} (after {got.attempts} attempts)"
                report.quarantined.append(Problem(want.filename, check, str(why)))
                _quarantine(dest, subdir, want.filename, got.path, detail)
                continue
            target = published_dir / want.filename
            move_into(got.path, target)  # artifacts first
            state.files[want.filename] = {"sha256": want.sha256, "token": _token(os.stat(target))}
            report.downloaded += 1
            report.resumed += int(got.resumed)
            report.bytes += got.size
            kept.append(want.filename)

    now = options.clock()
    kept_set = set(kept)
    for name in list(state.files):
        if name in kept_set:
            state.gone_since.pop(name, None)
            continue
        since = state.gone_since.setdefault(name, now)
        if now - since >= options.grace:
            (published_dir / name).unlink(missing_ok=True)
            del state.files[name]
            del state.gone_since[name]
            report.removed.append(name)
    dropped = [r.filename for r in split.records if r.filename not in kept_set]
    if options.keys:
        signatures = _resign(split, kept, options, subdir)
    else:
        signatures = {n: orjson.loads(bytes(split.signatures[n])) for n in kept
                      if n in split.signatures}  # fmt: skip
    os.sync()  # the artifacts reach the disk before a repodata names them (power loss)
    _publish_repodata(dest, subdir, split, signatures, dropped)  # repodata last
    state.save()
    if options.publish_to is not None:
        _publish_to_blob(options.publish_to, dest, subdir, kept, report.removed, state)
    report.published = len(kept)
    return report


def sync(
    upstream: Upstream,
    dest: Path,
    gate: Gate,
    subdirs: list[str],
    options: SyncOptions,
    progress: Progress | None = None,
) -> MirrorReport:
    gate.refresh()
    dest.mkdir(parents=True, exist_ok=True)
    reports = [sync_subdir(upstream, dest, s, gate, options, progress) for s in subdirs]
    ensure_noarch(dest)
    if options.publish_to is not None:
        noarch = dest / "noarch" / "repodata.json"
        options.publish_to.publish({"noarch/repodata.json": noarch.read_bytes()})
    return MirrorReport(reports)


# --------------------------------------------------------------------------- at rest


def verify_mirror(dest: Path, gate: Gate, *, jobs: int = 1) -> MirrorReport:
    """Every published subdir: repodata signatures, each artifact's size, hash, attestation."""
    gate.refresh()
    reports: list[SubdirReport] = []
    subdirs = sorted(
        p.name
        for p in dest.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "repodata.json").exists()
    )
    for subdir in subdirs:
        report = SubdirReport(subdir)
        reports.append(report)
        try:
            path = dest / subdir / "repodata.json"
            data = path.read_bytes()
            _check_utf8(data, str(path))
            split = split_strict(data, str(path))
            wanted = list(_verified_records(split, subdir, gate, report, jobs))
        except (VerificationError, FormatError, OSError) as exc:
            report.error = str(exc)
            continue
        report.records = len(split.records)
        for want in wanted:
            target = dest / subdir / want.filename
            try:
                size = target.stat().st_size
            except FileNotFoundError:
                report.refused.append(Problem(want.filename, "missing", "listed but not on disk"))
                continue
            if size != want.size or _hash(target) != want.sha256:
                report.refused.append(
                    Problem(want.filename, "digest", "size or sha256 differs from the record")
                )
                continue
            report.published += 1
    return MirrorReport(reports)
