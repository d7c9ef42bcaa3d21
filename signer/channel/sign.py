"""Attestation-gated channel signing (section 10).

A record is signed (conda profile by every `keys` key, mamba profile by `mamba_key`) only
when its artifact's attestation verifies: the sidecar's feedstock delegation (threshold
and scope), digest == the record's sha256, subject == the file name, subdir == the
record's. Records without an attestation are "unattested", records whose attestation (or
record) fails are "refused", with the check and the reason; either kind is left unsigned
or dropped. Other keys' signatures on a signed record are kept (co-signing); an unsigned
record keeps none.

With a `StagePolicy` (`signer.channel.stages`), a record lacking a verified attestation
whose feedstocks are all in `observe` or `off` is signed all the same and reported as
"observed"; observed records are never cached, so a stage change takes effect on the next
run however warm the cache.

Work is split over forked processes (`signer.repodata.parallel`); with a cache (see
`signer.channel.cache`) a record whose bytes, attestation and delegation are unchanged
since the last run costs a hash and a stat.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

from signer.channel import cache as cache_file
from signer.channel.attestations import AttestationStore
from signer.channel.document import info_subdir, pieces_without, strict_record
from signer.channel.gate import Gate
from signer.channel.stages import StagePolicy
from signer.client.session import BinKey
from signer.repodata.document import SplitRepodata
from signer.repodata.parallel import collector_paused, map_ranges
from signer.repodata.profiles import conda_message, mamba_message
from signer.repodata.verify import file_name_problem
from signer.trust.errors import FormatError, VerificationError
from signer.trust.signing import MessageSigner

Unattested = Literal["unsigned", "drop"]
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")


class Refusal(NamedTuple):
    file: str
    check: str
    reason: str


class Observed(NamedTuple):
    """Signed without a verified attestation: its feedstock is not enforced (yet)."""

    file: str
    feedstock: str
    why: str  # why it was unattested, and the stage that let it through


@dataclass
class ChannelSignResult:
    subdir: str
    records: int
    signed: int
    unattested: list[str]
    refused: list[Refusal]
    signatures: dict[str, Any]
    dropped: list[str]
    cached: int = 0  # signed from the cache, without verifying again
    cache_note: str | None = None  # why an existing cache was not used
    observed: list[Observed] | None = None  # None: no stages, every unattested refused
    _split: SplitRepodata | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return not self.unattested and not self.refused

    def to_json(self) -> dict[str, Any]:
        """Section 10's report, exactly; with stages, also `observed`."""
        report: dict[str, Any] = {
            "records": self.records,
            "signed": self.signed,
            "unattested": list(self.unattested),
            "refused": [r._asdict() for r in self.refused],
        }
        if self.observed is not None:
            report["observed"] = [o._asdict() for o in self.observed]
        return report

    def pieces(self) -> list[bytes | memoryview]:
        """The signed document (records in `dropped` left out)."""
        assert self._split is not None
        return pieces_without(self._split, self.signatures, self.dropped)


# Per-record outcomes crossing the process boundary: kept small and picklable. A record
# signed from the cache is `_HIT` (one object, so pickled once per chunk): the parent
# holds its entry already.
_Signed = tuple[Literal["s"], tuple[bytes, ...], bytes | None, cache_file.Entry]
_Hit = tuple[Literal["c"]]
_Missing = tuple[Literal["u"]]
_Refused = tuple[Literal["r"], str, str]
_Observed = tuple[Literal["o"], tuple[bytes, ...], bytes | None, str, str]
_Outcome = _Signed | _Hit | _Missing | _Refused | _Observed
_HIT: _Hit = ("c",)


def _check_keys(gate: Gate, keys: list[MessageSigner], mamba_key: MessageSigner | None) -> None:
    if not keys:
        raise FormatError("keys", "", "at least one conda-profile key is needed")
    delegated = set(gate.pkg_mgr.pubkeys)
    hexes = [k.public_key_hex for k in keys] + ([mamba_key.public_key_hex] if mamba_key else [])
    if len(set(hexes)) != len(hexes):
        raise FormatError("keys", "", "the same key is given twice (one key, one profile)")
    for hexkey in hexes:
        if hexkey not in delegated:
            raise FormatError(
                f"key {hexkey[:16]}…", "pkg_mgr",
                "not delegated by the trust repository's key_mgr.json: its signatures "
                "would not verify",
            )  # fmt: skip


def with_subdir(record: dict[str, Any], subdir: str) -> dict[str, Any]:
    """libmamba gives a record without `subdir` the repodata's info.subdir: sign that."""
    return record if "subdir" in record else {**record, "subdir": subdir}


def record_problem(record: dict[str, Any], filename: str, subdir: str) -> Refusal | None:
    problem = file_name_problem(filename, record)
    if problem is not None:
        return Refusal(filename, "file-name", problem)
    sha = record.get("sha256")
    if not isinstance(sha, str) or not _HEX64.match(sha):
        return Refusal(filename, "record", "no sha256 of 64 lowercase hex digits")
    own = record.get("subdir", subdir)
    if own != subdir:
        return Refusal(filename, "subdir", f"record subdir {own!r} differs from info.subdir")
    return None


class _Job:
    """Everything a worker needs; set before forking, inherited copy-on-write."""

    def __init__(
        self, split: SplitRepodata, subdir: str, gate: Gate, store: AttestationStore,
        keys: list[MessageSigner], mamba_key: MessageSigner | None,
        cached: cache_file.Cache, current: list[bool], policy: StagePolicy | None = None,
    ) -> None:  # fmt: skip
        self.split, self.subdir, self.gate, self.store = split, subdir, gate, store
        self.keys, self.mamba_key, self.policy = keys, mamba_key, policy
        self.cached = cached.entries
        # The rows (as packed in entries) whose delegation verifies now, same fingerprint.
        self.rows = frozenset(i.to_bytes(4, "little") for i, ok in enumerate(current) if ok)
        self.length = cache_file.packed_length(len(keys), mamba_key is not None)
        self.local = store.directory is not None
        self.dir_fd: int | None = None

    def _hits(self, start: int, end: int) -> list[bool]:
        """Which records of [start, end) the cache vouches for: an entry for these record
        bytes (same sha256), of a row whose delegation verifies now with the fingerprint it
        was checked under, and this very sidecar (same token of the local file, or the same
        bytes fetched). The local sidecars are stat'ed in one call."""
        records, get, length, rows = self.split.records, self.cached.get, self.length, self.rows
        sha256, record_at, row_at = hashlib.sha256, cache_file.RECORD, cache_file.ROW_AT
        hits = [False] * (end - start)
        names: list[str] = []
        found: list[tuple[int, bytes]] = []
        for i in range(start, end):
            item = records[i]
            blob = get(item.filename)
            if blob is None or len(blob) != length or blob[row_at] not in rows:
                continue  # a row not current is verified again, and refused if it fails
            if blob[record_at] == sha256(item.raw).digest():
                names.append(item.filename)
                found.append((i - start, blob))
        if not self.local:
            for (at, blob), filename in zip(found, names, strict=True):
                hits[at] = self._same_remote(filename, blob)
        elif self.dir_fd is not None:
            tokens = self.store.tokens_bytes(names, self.dir_fd)
            for (at, blob), token in zip(found, tokens, strict=True):
                hits[at] = token is not None and token == blob[cache_file.TOKEN_AT]
        return hits

    def _same_remote(self, filename: str, blob: bytes) -> bool:
        try:
            found = self.store.get(self.subdir, filename)
        except VerificationError:
            return False
        return found is not None and (
            hashlib.sha256(found.data).digest() == blob[cache_file.ATTESTATION]
        )

    def one(self, index: int) -> _Outcome:
        item = self.split.records[index]
        filename = item.filename
        digest = hashlib.sha256(item.raw).digest()
        where = f"{item.section}.{filename}"
        record, float_free = strict_record(memoryview(item.raw), self.split.source, where)
        if not isinstance(record, dict):
            raise FormatError(self.split.source, where, "record is not an object")
        problem = record_problem(record, filename, self.subdir)
        if problem is not None:
            return ("r", problem.check, problem.reason)
        try:
            found = self.store.get(self.subdir, filename)
            if found is None:
                return self._unattested(record, float_free, "no attestation") or ("u",)
            attested = self.gate.verify_attestation(
                found.data, filename=filename, sha256=record["sha256"], subdir=self.subdir,
                package=record["name"], where=found.where,
            )  # fmt: skip
        except VerificationError as exc:
            reason = exc.reason if exc.subject == filename else f"{exc.subject}: {exc.reason}"
            why = f"{exc.check}: {reason}"
            return self._unattested(record, float_free, why) or ("r", exc.check, reason)
        sigs, mamba = self._sign(record, float_free)
        entry = cache_file.Entry(
            digest, found.token, hashlib.sha256(found.data).digest(), attested.feedstock,
            attested.fingerprint, sigs, mamba,
        )  # fmt: skip
        return ("s", sigs, mamba, entry)

    def _sign(
        self, record: dict[str, Any], float_free: bool
    ) -> tuple[tuple[bytes, ...], bytes | None]:
        message = conda_message(record, float_free=float_free)
        sigs = tuple(key.sign_message(message) for key in self.keys)
        mamba = None
        if self.mamba_key is not None:
            mamba = self.mamba_key.sign_message(mamba_message(with_subdir(record, self.subdir)))
        return sigs, mamba

    def _unattested(self, record: dict[str, Any], float_free: bool, why: str) -> _Observed | None:
        """Signed anyway when the stages say the record's feedstocks are not enforced."""
        if self.policy is None:
            return None
        decision = self.policy.decide(record.get("name"), record)
        if not decision.sign or decision.feedstock is None:
            return None
        sigs, mamba = self._sign(record, float_free)
        return ("o", sigs, mamba, decision.feedstock, f"{why} ({decision.note})")

    def run(self, start: int, end: int) -> list[_Outcome]:
        state = self.gate.session.state
        self.dir_fd = self.store.directory_of(self.subdir) if self.cached else None
        try:
            with state.batch() if state is not None else contextlib.nullcontext():
                hits = self._hits(start, end) if self.cached else [False] * (end - start)
                return [
                    _HIT if hit else self.one(i)
                    for i, hit in zip(range(start, end), hits, strict=True)
                ]
        finally:
            if self.dir_fd is not None:
                os.close(self.dir_fd)
                self.dir_fd = None


def _kept_signatures(raw: Any, ours: set[str]) -> dict[str, Any]:
    """Other keys' signature entries of a record (co-signing); malformed ones are dropped."""
    try:
        value = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if k not in ours and isinstance(v, dict)}


def _still_current(gate: Gate, row: cache_file.Row) -> bool:
    """The row's feedstock delegation verifies now, with the fingerprint entries were made
    under (a revoked key, a changed scope or an expired bin: False)."""
    try:
        return gate.fingerprint(row.feedstock) == row.fingerprint
    except VerificationError:
        return False  # the session remembers the failure; those records are refused


def _keep_bins(
    gate: Gate, cached: cache_file.Cache, stored: set[BinKey], path: Path, mac: bytes,
    scope: bytes,
) -> None:  # fmt: skip
    """Keep the bins the cache's rows need, verified, for the next run (written only when
    they changed). After a first run the workers verified them, not this process: resolve
    the rows' feedstocks here once, so the next run need not."""
    for row in cached.rows:
        with contextlib.suppress(VerificationError):
            gate.session.delegation(row.feedstock)
    bins = gate.session.verified_bins()
    if {k for k, _ in bins} != stored:
        cache_file.write_bins(path, mac, scope, bins)


def sign_channel(
    split: SplitRepodata,
    gate: Gate,
    store: AttestationStore,
    keys: list[MessageSigner],
    mamba_key: MessageSigner | None = None,
    *,
    unattested: Unattested = "unsigned",
    jobs: int = 1,
    cache_dir: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
    policy: StagePolicy | None = None,
) -> ChannelSignResult:
    """Gate and sign every record; nothing is written here except the cache.

    Without `policy`, every record lacking a verified attestation is refused.
    """
    subdir = info_subdir(split)
    if subdir is None:
        raise FormatError(split.source, "info.subdir", "missing: records cannot be placed")
    gate.refresh()  # before forking: every worker starts from the verified key_mgr
    _check_keys(gate, keys, mamba_key)
    key_hexes = [k.public_key_hex for k in keys]
    mamba_hex = mamba_key.public_key_hex if mamba_key else None

    cached = cache_file.Cache()
    note: str | None = None
    path = mac = scope = None
    stored_bins: set[BinKey] = set()
    if cache_dir is not None:
        scope = cache_file.scope_of(subdir, store.location, key_hexes, mamba_hex)
        mac = cache_file.mac_key(keys[0])
        path = cache_file.default_cache_path(cache_dir, scope)
        cached, note = cache_file.read(path, mac, scope)
        bins, _ = cache_file.read_bins(cache_file.bins_path(path), mac, scope)
        gate.session.adopt_bins(bins)  # used only where the index verified now pins them
        stored_bins = {k for k, _ in bins}

    # The feedstock index and the delegations the cache will ask for, verified once here:
    # forked workers inherit them instead of each verifying them again.
    with contextlib.suppress(VerificationError):
        gate.session.feedstock_index()  # a failure is remembered, and reported per record
    current = [_still_current(gate, row) for row in cached.rows]
    job = _Job(split, subdir, gate, store, keys, mamba_key, cached, current, policy)
    chunks = map_ranges(job.run, len(split.records), jobs, on_chunk=on_progress)

    ours = set(key_hexes) | ({mamba_hex} if mamba_hex else set())
    signatures: dict[str, Any] = {}
    missing: list[str] = []
    refused: list[Refusal] = []
    entries: dict[str, bytes] = {}
    observed: list[Observed] = []
    hits = 0
    outcomes = (o for chunk in chunks for o in chunk)
    old = cached.entries
    kept_from = split.signatures
    all_hexes = key_hexes + ([mamba_hex] if mamba_hex else [])
    width = 64 * len(all_hexes)  # a cache hit's signatures, in this order (ed25519: 64 bytes)
    # A hit without other keys' signatures is written as the bytes orjson makes of
    # {key: {"signature": hex}} (compact, keys sorted, as `pieces` writes the member), from
    # a template made once: no dicts per record to build and serialise again.
    order = sorted(range(len(all_hexes)), key=all_hexes.__getitem__)
    own_json = "{" + ",".join(f'"{all_hexes[i]}":{{"signature":"%s"}}' for i in order) + "}"
    own_template = own_json.encode()
    slots = [slice(i * 128, i * 128 + 128) for i in order]  # in the hex of the signatures
    sigs_at = slice(cache_file.SIGS_AT, cache_file.SIGS_AT + width)
    with collector_paused():
        for item, outcome in zip(split.records, outcomes, strict=True):
            name = item.filename
            if outcome[0] == "c":
                hits += 1
                blob = entries[name] = old[name]
                if name not in kept_from:
                    hexed = binascii.hexlify(blob[sigs_at])
                    signatures[name] = orjson.Fragment(
                        own_template % tuple(map(hexed.__getitem__, slots))
                    )
                    continue
                text = blob[sigs_at].hex()  # one call
                record_sigs = _kept_signatures(kept_from[name], ours)
                for i, hexkey in enumerate(all_hexes):
                    record_sigs[hexkey] = {"signature": text[i * 128 : i * 128 + 128]}
                signatures[name] = record_sigs
                continue
            if outcome[0] == "s":
                _, sigs, mamba, entry = outcome
                entries[name] = cached.pack(entry)
            elif outcome[0] == "u":
                missing.append(name)
                continue
            elif outcome[0] == "r":
                refused.append(Refusal(name, outcome[1], outcome[2]))
                continue
            else:
                _, sigs, mamba, feedstock, why = outcome
                observed.append(Observed(name, feedstock, why))
            record_sigs = _kept_signatures(kept_from[name], ours) if name in kept_from else {}
            for hexkey, sig in zip(key_hexes, sigs, strict=True):
                record_sigs[hexkey] = {"signature": sig.hex()}
            if mamba is not None and mamba_hex is not None:
                record_sigs[mamba_hex] = {"signature": mamba.hex()}
            signatures[name] = record_sigs
    if path is not None and mac is not None and scope is not None:
        cached.entries = entries
        cache_file.write(path, mac, scope, cached)
        _keep_bins(gate, cached, stored_bins, cache_file.bins_path(path), mac, scope)
    dropped = missing + [r.file for r in refused] if unattested == "drop" else []
    return ChannelSignResult(
        subdir, len(split.records), len(signatures), missing, refused, signatures, dropped,
        cached=hits, cache_note=note if note != "no cache yet" else None,
        observed=observed if policy is not None else None, _split=split,
    )  # fmt: skip
