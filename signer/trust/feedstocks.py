"""The feedstock layer's delegations: which keys sign for which feedstock, and which names.

Documents (section 3): `feedstocks/index.json` lists the bins with their version and the
sha256 of their bytes; `feedstocks/<bin>.json` holds the delegations of the feedstocks whose
`sha256(name)` starts with the bin id. Both are signed like key_mgr: RAW signatures by the
root's key_mgr keys over the canonical bytes of `signed`.

Verification (section 4, rules 2-3) needs only the one bin of the feedstock a sidecar names,
so a verifier reads two small documents instead of the whole delegation set.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

from signer.trust.chain import check_not_expired
from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import MAX_FEEDSTOCKS
from signer.trust.keys import PublicKey

# Re-exported: the layout module is their home; these names predate it.
from signer.trust.layout import INDEX
from signer.trust.layout import bin_path as bin_path
from signer.trust.metadata import (
    MAX_VERSION,
    SPEC_VERSION,
    Root,
    Signable,
    is_hex64,
    parse_common,
    require_exact_keys,
    require_int,
    require_str,
)
from signer.trust.repository import Fetch, verify_by_key_mgr_keys
from signer.trust.state import TrustState
from signer.trust.threshold import ThresholdResult
from signer.trust.timefmt import DEFAULT_CLOCK_SKEW, parse_time

INDEX_TYPE = "feedstocks_index"
BIN_TYPE = "feedstocks"
INDEX_PATH = INDEX  # the layout module is its home; the name predates it
BIN_CHOICES = (16, 256, 4096)
_PREFIX_LEN = {16: 1, 256: 2, 4096: 3}

# Feedstock and package names: printable ASCII without whitespace or path separators.
# Deliberately loose, so conda-forge's whole registry (names such as `_libarchive_static_for_cph`
# or `r-base`) loads as it is; globs additionally use fnmatch's `*?[]!`.
_NAME = re.compile(r"\A[!-~]{1,256}\Z")
_GLOB_CHARS = frozenset("*?[]")


def bin_id(feedstock: str, bins: int) -> str:
    """The bin holding `feedstock`: the first log16(bins) hex digits of sha256(name)."""
    try:
        length = _PREFIX_LEN[bins]
    except KeyError:
        raise ValueError(f"bins must be one of {BIN_CHOICES}, got {bins}") from None
    return hashlib.sha256(feedstock.encode("utf-8")).hexdigest()[:length]


def check_name(value: object, source: str, where: str, *, glob: bool = False) -> str:
    """A feedstock or package name (or, with `glob`, an fnmatch pattern)."""
    if not isinstance(value, str) or not _NAME.match(value) or "/" in value or "\\" in value:
        what = "pattern" if glob else "name"
        raise FormatError(
            source, where, f"invalid {what} {value!r} (printable ASCII, no spaces or slashes)"
        )
    if not glob and _GLOB_CHARS.intersection(value):
        raise FormatError(source, where, f"{value!r}: wildcards belong in output_globs")
    return value


FEEDSTOCK_SUFFIX = "-feedstock"


def normalize_feedstock(name: str) -> str:
    """`numpy-feedstock` (a repository name, as CI and the registry spell it) -> `numpy`."""
    name = name.strip()
    return name[: -len(FEEDSTOCK_SUFFIX)] if name.endswith(FEEDSTOCK_SUFFIX) else name


def check_feedstock_name(value: object, source: str, where: str) -> str:
    """A feedstock name as delegations spell it: a valid name, without `-feedstock`."""
    name = check_name(value, source, where)
    if name.endswith(FEEDSTOCK_SUFFIX):
        raise FormatError(source, where, f"feedstock names are given without {FEEDSTOCK_SUFFIX}")
    return name


def _name_list(obj: object, source: str, where: str, *, glob: bool) -> tuple[str, ...]:
    if not isinstance(obj, list):
        raise FormatError(source, where, "expected an array of strings")
    names = tuple(check_name(v, source, f"{where}[{i}]", glob=glob) for i, v in enumerate(obj))
    if len(set(names)) != len(names):
        raise FormatError(source, where, "entries must be unique")
    return names


# --------------------------------------------------------------------------- delegation


class FeedstockDelegation:
    """One feedstock's keys (by keyid), threshold and scope of package names.

    Immutable. A plain class rather than a dataclass: creating a frozen dataclass costs about
    a millisecond at import, and `cf-sign verify` counts its start-up in milliseconds.
    """

    __slots__ = ("keys", "output_globs", "outputs", "threshold")
    keys: Mapping[str, PublicKey]
    threshold: int
    outputs: tuple[str, ...]
    output_globs: tuple[str, ...]

    def __init__(
        self,
        keys: Mapping[str, PublicKey],
        threshold: int,
        outputs: tuple[str, ...] = (),
        output_globs: tuple[str, ...] = (),
    ) -> None:
        # Built directly by the service as well as parsed: hold both to the same rules.
        if not keys:
            raise ValueError("a feedstock delegation needs at least one key")
        for keyid, key in keys.items():
            if keyid != key.keyid:
                raise ValueError(f"keyid {keyid} does not match its key ({key.keyid})")
        if not 1 <= threshold <= len(keys):
            raise ValueError(f"threshold {threshold} not in 1..{len(keys)}")
        for name, value in (
            ("keys", dict(keys)),
            ("threshold", threshold),
            ("outputs", tuple(outputs)),
            ("output_globs", tuple(output_globs)),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"FeedstockDelegation is immutable (cannot set {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeedstockDelegation):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.keys)), self.threshold, self.outputs, self.output_globs))

    def __repr__(self) -> str:
        return (
            f"FeedstockDelegation(keys={sorted(self.keys)!r}, threshold={self.threshold}, "
            f"outputs={self.outputs!r}, output_globs={self.output_globs!r})"
        )

    @classmethod
    def of(
        cls,
        keys: list[PublicKey] | tuple[PublicKey, ...],
        threshold: int = 1,
        outputs: tuple[str, ...] | list[str] = (),
        output_globs: tuple[str, ...] | list[str] = (),
    ) -> FeedstockDelegation:
        """Convenience constructor from a list of keys (keyids computed)."""
        return cls({k.keyid: k for k in keys}, threshold, tuple(outputs), tuple(output_globs))

    def in_scope(self, name: str) -> bool:
        """True when `name` is listed in `outputs` or matches an `output_globs` pattern."""
        if name in self.outputs:
            return True
        return any(fnmatchcase(name, pattern) for pattern in self.output_globs)

    def describe_scope(self, limit: int = 6) -> str:
        names = list(self.outputs) + [f"{g} (glob)" for g in self.output_globs]
        shown = ", ".join(names[:limit]) if names else "no names"
        return shown + (f", … {len(names) - limit} more" if len(names) > limit else "")

    def to_dict(self) -> dict[str, Any]:
        # Sorted lists: equal delegations always give equal bytes, so unchanged bins stay put.
        return {
            "keys": {keyid: self.keys[keyid].to_dict() for keyid in sorted(self.keys)},
            "output_globs": sorted(set(self.output_globs)),
            "outputs": sorted(set(self.outputs)),
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, obj: object, source: str, where: str) -> FeedstockDelegation:
        data = require_exact_keys(
            obj, {"keys", "threshold", "outputs", "output_globs"}, source, where
        )
        raw_keys = data["keys"]
        if not isinstance(raw_keys, dict) or not raw_keys:
            raise FormatError(source, f"{where}.keys", "expected a non-empty object of keys")
        keys: dict[str, PublicKey] = {}
        for keyid, raw in raw_keys.items():
            if not is_hex64(keyid):
                raise FormatError(source, f"{where}.keys.{keyid}", "keyid must be 64 hex digits")
            key = PublicKey.from_dict(raw, source, f"{where}.keys.{keyid[:16]}")
            if key.keyid != keyid:
                raise FormatError(
                    source,
                    f"{where}.keys.{keyid[:16]}",
                    f"keyid does not match the key ({key.keyid})",
                )
            keys[keyid] = key
        threshold = require_int(data, "threshold", source, where, 1)
        if threshold > len(keys):
            raise FormatError(
                source, f"{where}.threshold", f"{threshold} exceeds the {len(keys)} keys listed"
            )
        outputs = _name_list(data["outputs"], source, f"{where}.outputs", glob=False)
        globs = _name_list(data["output_globs"], source, f"{where}.output_globs", glob=True)
        return cls(keys, threshold, outputs, globs)


# --------------------------------------------------------------------------- documents

# Documents and results are NamedTuples: immutable and typed like frozen dataclasses, at a
# tenth of their creation cost at import (the verifier's start-up budget is tight).


def _common(
    signed: object, source: str, doc_type: str, extra: set[str]
) -> tuple[dict[str, Any], int, str, str]:
    common = parse_common(signed, source, doc_type, extra)
    return common.data, common.version, common.timestamp, common.expiration


class ShardEntry(NamedTuple):
    version: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "version": self.version}


class FeedstocksIndex(NamedTuple):
    """`signed` of feedstocks/index.json."""

    version: int
    timestamp: str
    expiration: str
    bins: int
    shards: Mapping[str, ShardEntry]
    metadata_spec_version: str = SPEC_VERSION

    @property
    def expires(self) -> datetime:
        return parse_time(self.expiration, INDEX_PATH, "expiration")

    def to_signed(self) -> dict[str, Any]:
        return {
            "bins": self.bins,
            "expiration": self.expiration,
            "metadata_spec_version": self.metadata_spec_version,
            "shards": {b: self.shards[b].to_dict() for b in sorted(self.shards)},
            "timestamp": self.timestamp,
            "type": INDEX_TYPE,
            "version": self.version,
        }

    @classmethod
    def from_signed(cls, signed: object, source: str) -> FeedstocksIndex:
        data, version, timestamp, expiration = _common(
            signed, source, INDEX_TYPE, {"bins", "shards"}
        )
        bins = require_int(data, "bins", source, "signed", 1)
        if bins not in BIN_CHOICES:
            raise FormatError(source, "signed.bins", f"must be one of {BIN_CHOICES}, got {bins}")
        raw = data["shards"]
        if not isinstance(raw, dict):
            raise FormatError(source, "signed.shards", "expected an object")
        id_re = re.compile(rf"\A[0-9a-f]{{{_PREFIX_LEN[bins]}}}\Z")
        shards: dict[str, ShardEntry] = {}
        for name, entry in raw.items():
            where = f"signed.shards.{name}"
            if not id_re.match(name):
                raise FormatError(source, where, f"bin id must be {_PREFIX_LEN[bins]} hex digits")
            fields = require_exact_keys(entry, {"version", "sha256"}, source, where)
            digest = require_str(fields, "sha256", source, where)
            if not is_hex64(digest):
                raise FormatError(source, f"{where}.sha256", "expected 64 lowercase hex digits")
            shards[name] = ShardEntry(
                require_int(fields, "version", source, where, 1, MAX_VERSION), digest
            )
        return cls(version, timestamp, expiration, bins, shards)


class FeedstockBin(NamedTuple):
    """`signed` of feedstocks/<bin>.json."""

    bin: str
    version: int
    timestamp: str
    expiration: str
    delegations: Mapping[str, FeedstockDelegation]
    metadata_spec_version: str = SPEC_VERSION

    @property
    def expires(self) -> datetime:
        return parse_time(self.expiration, bin_path(self.bin), "expiration")

    def to_signed(self) -> dict[str, Any]:
        return {
            "bin": self.bin,
            "delegations": {n: self.delegations[n].to_dict() for n in sorted(self.delegations)},
            "expiration": self.expiration,
            "metadata_spec_version": self.metadata_spec_version,
            "timestamp": self.timestamp,
            "type": BIN_TYPE,
            "version": self.version,
        }

    @classmethod
    def from_signed(cls, signed: object, source: str) -> FeedstockBin:
        data, version, timestamp, expiration = _common(
            signed, source, BIN_TYPE, {"bin", "delegations"}
        )
        bin_name = require_str(data, "bin", source, "signed")
        bins = {len_: b for b, len_ in _PREFIX_LEN.items()}.get(len(bin_name))
        if bins is None or not re.fullmatch(r"[0-9a-f]+", bin_name):
            raise FormatError(source, "signed.bin", f"invalid bin id {bin_name!r}")
        raw = data["delegations"]
        if not isinstance(raw, dict):
            raise FormatError(source, "signed.delegations", "expected an object")
        delegations: dict[str, FeedstockDelegation] = {}
        for name, entry in raw.items():
            where = f"signed.delegations.{name}"
            check_name(name, source, where)
            if bin_id(name, bins) != bin_name:
                # A feedstock filed under the wrong bin is never looked up there: reject it.
                raise FormatError(source, where, f"feedstock does not belong in bin {bin_name}")
            delegations[name] = FeedstockDelegation.from_dict(entry, source, where)
        return cls(bin_name, version, timestamp, expiration, delegations)


def parse_index(data: bytes, source: str = INDEX_PATH) -> tuple[FeedstocksIndex, Signable]:
    envelope = Signable.from_bytes(data, source, MAX_FEEDSTOCKS)
    return FeedstocksIndex.from_signed(envelope.signed, source), envelope


def parse_bin(data: bytes, source: str) -> tuple[FeedstockBin, Signable]:
    envelope = Signable.from_bytes(data, source, MAX_FEEDSTOCKS)
    return FeedstockBin.from_signed(envelope.signed, source), envelope


# --------------------------------------------------------------------------- verification


class ResolvedDelegation(NamedTuple):
    """A verified delegation with the documents it came from."""

    feedstock: str
    delegation: FeedstockDelegation
    index_version: int
    bin: str
    bin_version: int
    signatures: tuple[ThresholdResult, ThresholdResult]  # index, bin


def _as_verification(exc: FormatError, subject: str) -> VerificationError:
    where = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
    return VerificationError(subject, "format", where)


def _fetch(fetch: Fetch, path: str) -> bytes:
    data = fetch(path, MAX_FEEDSTOCKS)
    if data is None:
        raise VerificationError(path, "missing", "not found in the trust repository")
    return data


class VerifiedIndex(NamedTuple):
    """A feedstock index whose signatures, version and expiry verified."""

    document: FeedstocksIndex
    signatures: ThresholdResult


class VerifiedBin(NamedTuple):
    """A bin whose signatures, identity, version and digest matched its index entry."""

    bin: FeedstockBin
    signatures: ThresholdResult


def verify_index(
    fetch: Fetch,
    key_mgr_root: Root,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> VerifiedIndex:
    """Rule 3, first half: the index, signed by root's key_mgr keys, not rolled back or
    expired."""
    data = _fetch(fetch, INDEX_PATH)
    try:
        index, envelope = parse_index(data)
    except FormatError as exc:
        raise _as_verification(exc, INDEX_PATH) from None
    index_sigs = verify_by_key_mgr_keys(envelope, key_mgr_root, INDEX_PATH)
    if state is not None:
        state.check_version(INDEX_PATH, index.version, INDEX_PATH)
    check_not_expired(index, INDEX_PATH, now, skew)
    return VerifiedIndex(index, index_sigs)


def index_entry(index: FeedstocksIndex, feedstock: str) -> tuple[str, ShardEntry]:
    """The bin a feedstock falls in and the index's entry for it."""
    bin_name = bin_id(feedstock, index.bins)
    entry = index.shards.get(bin_name)
    if entry is None:
        raise VerificationError(
            f"feedstock {feedstock}",
            "delegation",
            f"not delegated (no bin {bin_name} in the index)",
        )
    return bin_name, entry


def verify_bin(
    fetch: Fetch,
    key_mgr_root: Root,
    index: FeedstocksIndex,
    bin_name: str,
    entry: ShardEntry,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> VerifiedBin:
    """Rule 3, second half: the bin the index lists under `bin_name`, signed, not rolled
    back, the bytes the index pins (mix-and-match), not expired."""
    path = bin_path(bin_name)
    data = _fetch(fetch, path)
    try:
        shard, bin_envelope = parse_bin(data, path)
    except FormatError as exc:
        raise _as_verification(exc, path) from None
    bin_sigs = verify_by_key_mgr_keys(bin_envelope, key_mgr_root, path)
    if shard.bin != bin_name:
        raise VerificationError(path, "mix-and-match", f"holds bin {shard.bin}, not {bin_name}")
    # Rollback before mix-and-match: an old bin seen before is reported as what it is.
    if state is not None:
        state.check_version(path, shard.version, path)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise VerificationError(
            path,
            "mix-and-match",
            f"sha256 {digest[:16]}… differs from the index's {entry.sha256[:16]}… "
            f"(index v{index.version} lists bin v{entry.version})",
        )
    if shard.version != entry.version:
        raise VerificationError(
            path, "mix-and-match", f"version {shard.version}, the index lists v{entry.version}"
        )
    check_not_expired(shard, path, now, skew)
    return VerifiedBin(shard, bin_sigs)


def delegation_in(
    feedstock: str,
    index: VerifiedIndex,
    bin_name: str,
    shard: VerifiedBin,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> ResolvedDelegation:
    """The feedstock's entry in a verified bin of a verified index. Rollback and expiry
    are checked again here, so an index or bin verified earlier (a session's cache) can
    neither outlive its expiry nor come back after a newer version was seen."""
    path = bin_path(bin_name)
    if state is not None:  # rollback too: a cached bin may be pinned by a newer index
        state.check_version(INDEX_PATH, index.document.version, INDEX_PATH)
        state.check_version(path, shard.bin.version, path)
    check_not_expired(index.document, INDEX_PATH, now, skew)
    check_not_expired(shard.bin, path, now, skew)
    delegation = shard.bin.delegations.get(feedstock)
    if delegation is None:
        raise VerificationError(
            f"feedstock {feedstock}", "delegation", f"not delegated (not in {path})"
        )
    if state is not None:
        state.record_versions({INDEX_PATH: index.document.version, path: shard.bin.version})
    return ResolvedDelegation(
        feedstock,
        delegation,
        index.document.version,
        bin_name,
        shard.bin.version,
        (index.signatures, shard.signatures),
    )


def resolve_feedstock(
    fetch: Fetch,
    key_mgr_root: Root,
    feedstock: str,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> ResolvedDelegation:
    """Rule 3 for one feedstock: the index, then its bin, then its entry."""
    index = verify_index(fetch, key_mgr_root, now, skew, state)
    bin_name, entry = index_entry(index.document, feedstock)
    shard = verify_bin(fetch, key_mgr_root, index.document, bin_name, entry, now, skew, state)
    return delegation_in(feedstock, index, bin_name, shard, now, skew, state)


def verify_feedstock_delegation(
    fetch: Fetch,
    key_mgr_root: Root,
    feedstock: str,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> FeedstockDelegation:
    """The verified delegation of `feedstock` (rules 2-3), or VerificationError."""
    return resolve_feedstock(fetch, key_mgr_root, feedstock, now, skew, state).delegation
