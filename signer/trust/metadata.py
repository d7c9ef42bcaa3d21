"""Typed models of the channel layer: the signable envelope, root, key_mgr and pkg_mgr.

Parsing is strict: exact key sets, lowercase hex, unique keys, thresholds between 1 and the
number of keys. A document that does not parse is never partly trusted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Literal,
    NamedTuple,
    TypeGuard,
    overload,
)

from signer.trust.canonical import canonical_bytes
from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import MAX_DELEGATING, load_json
from signer.trust.timefmt import parse_time

SPEC_VERSION = "0.6.0"

MAX_VERSION = 2**63 - 1  # versions are 64-bit everywhere (the service's database too)

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_HEX128 = re.compile(r"\A[0-9a-f]{128}\Z")
_HEX40 = re.compile(r"\A[0-9a-f]{40}\Z")
_HEX_EVEN = re.compile(r"\A(?:[0-9a-f]{2})+\Z")


def is_hex64(value: object) -> TypeGuard[str]:
    """64 lowercase hex digits: a raw ed25519 public key, a keyid, a sha256 digest."""
    return isinstance(value, str) and _HEX64.match(value) is not None


is_public_key_hex = is_hex64


def require_exact_keys(
    obj: object,
    expected: set[str],
    source: str,
    where: str,
    optional: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """`obj` must be a JSON object with exactly `expected` keys (plus any of `optional`)."""
    if not isinstance(obj, dict):
        raise FormatError(source, where or "(top level)", f"expected an object, got {_kind(obj)}")
    keys = set(obj)
    missing = expected - keys
    extra = keys - expected - optional
    prefix = f"{where}." if where else ""
    if missing:
        raise FormatError(source, prefix + sorted(missing)[0], "missing")
    if extra:
        raise FormatError(source, prefix + sorted(extra)[0], "unexpected key")
    return obj


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool):
        return "an integer"
    return names.get(type(value), type(value).__name__)


def require_int(
    obj: Mapping[str, Any],
    key: str,
    source: str,
    where: str,
    minimum: int,
    maximum: int | None = None,
) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(source, f"{where}.{key}", f"expected an integer, got {_kind(value)}")
    if value < minimum:
        raise FormatError(source, f"{where}.{key}", f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise FormatError(source, f"{where}.{key}", f"must be <= {maximum}, got {value}")
    return value


def require_str(obj: Mapping[str, Any], key: str, source: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise FormatError(source, f"{where}.{key}", f"expected a string, got {_kind(value)}")
    return value


# --------------------------------------------------------------------------- signatures


class Signature(NamedTuple):
    """One entry of `signatures`: raw, or OpenPGP-style when `other_headers` is set."""

    signature: str
    other_headers: str | None = None
    see_also: str | None = None

    @property
    def is_openpgp(self) -> bool:
        return self.other_headers is not None

    def to_dict(self) -> dict[str, str]:
        out = {"signature": self.signature}
        if self.other_headers is not None:
            out["other_headers"] = self.other_headers
        if self.see_also is not None:
            out["see_also"] = self.see_also
        return out

    @classmethod
    def from_dict(cls, obj: object, source: str, where: str) -> Signature:
        if isinstance(obj, dict) and "other_headers" in obj:
            data = require_exact_keys(
                obj, {"other_headers", "signature"}, source, where, optional={"see_also"}
            )
        else:
            data = require_exact_keys(obj, {"signature"}, source, where)
        sig = data["signature"]
        if not isinstance(sig, str) or not _HEX128.match(sig):
            raise FormatError(source, f"{where}.signature", "expected 128 lowercase hex digits")
        headers = data.get("other_headers")
        if headers is not None and (not isinstance(headers, str) or not _HEX_EVEN.match(headers)):
            raise FormatError(source, f"{where}.other_headers", "expected lowercase hex bytes")
        see_also = data.get("see_also")
        if see_also is not None and (not isinstance(see_also, str) or not _HEX40.match(see_also)):
            raise FormatError(source, f"{where}.see_also", "expected a 40-hex fingerprint")
        return cls(sig, headers, see_also)


def parse_signatures(obj: object, source: str, where: str = "signatures") -> dict[str, Signature]:
    if not isinstance(obj, dict):
        raise FormatError(source, where, f"expected an object, got {_kind(obj)}")
    out: dict[str, Signature] = {}
    for keyid, value in obj.items():
        if not _HEX64.match(keyid):
            raise FormatError(
                source,
                f"{where}.{keyid}",
                "key must be 64 lowercase hex digits (ed25519 public key)",
            )
        out[keyid] = Signature.from_dict(value, source, f"{where}.{keyid}")
    return out


class Signable:
    """`{"signatures": ..., "signed": ...}` with the canonical bytes of `signed` cached."""

    __slots__ = ("_canonical", "signatures", "signed", "source")

    def __init__(
        self, signed: dict[str, Any], signatures: dict[str, Signature], source: str
    ) -> None:
        self.signed = signed
        self.signatures = signatures
        self.source = source
        self._canonical: bytes | None = None

    @property
    def canonical(self) -> bytes:
        if self._canonical is None:
            self._canonical = canonical_bytes(self.signed)
        return self._canonical

    def to_dict(self) -> dict[str, Any]:
        return {
            "signatures": {k: s.to_dict() for k, s in sorted(self.signatures.items())},
            "signed": self.signed,
        }

    def to_bytes(self) -> bytes:
        """The file form: canonical bytes of the whole envelope plus a newline."""
        return canonical_bytes(self.to_dict()) + b"\n"

    @classmethod
    def from_obj(cls, obj: object, source: str) -> Signable:
        data = require_exact_keys(obj, {"signatures", "signed"}, source, "")
        if not isinstance(data["signed"], dict):
            raise FormatError(source, "signed", f"expected an object, got {_kind(data['signed'])}")
        return cls(data["signed"], parse_signatures(data["signatures"], source), source)

    @classmethod
    def from_bytes(cls, data: bytes, source: str, max_bytes: int = MAX_DELEGATING) -> Signable:
        return cls.from_obj(load_json(data, source, max_bytes), source)


# --------------------------------------------------------------------------- roles


class Delegation(NamedTuple):
    """Keys (64-hex ed25519 public keys) and how many of them must sign."""

    pubkeys: tuple[str, ...]
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {"pubkeys": list(self.pubkeys), "threshold": self.threshold}

    @classmethod
    def from_dict(cls, obj: object, source: str, where: str) -> Delegation:
        data = require_exact_keys(obj, {"pubkeys", "threshold"}, source, where)
        keys = data["pubkeys"]
        if not isinstance(keys, list) or not keys:
            raise FormatError(source, f"{where}.pubkeys", "expected a non-empty array of keys")
        for i, key in enumerate(keys):
            if not is_public_key_hex(key):
                raise FormatError(
                    source, f"{where}.pubkeys[{i}]", "expected 64 lowercase hex digits"
                )
        if len(set(keys)) != len(keys):
            raise FormatError(source, f"{where}.pubkeys", "keys must be unique")
        threshold = require_int(data, "threshold", source, where, 1)
        if threshold > len(keys):
            raise FormatError(
                source, f"{where}.threshold", f"{threshold} exceeds the {len(keys)} keys listed"
            )
        return cls(tuple(keys), threshold)


_COMMON_KEYS = frozenset({"type", "version", "metadata_spec_version", "timestamp", "expiration"})
_SIGNED_KEYS = _COMMON_KEYS | {"delegations"}


class CommonFields(NamedTuple):
    """The fields every signed document shares (channel layer and feedstock layer)."""

    data: dict[str, Any]  # the whole `signed` object, its keys checked
    version: int
    timestamp: str
    expiration: str
    metadata_spec_version: str


def parse_common(
    signed: object, source: str, doc_type: str, extra: frozenset[str] | set[str]
) -> CommonFields:
    """`signed` with exactly the shared keys plus `extra`; type, version, spec and times checked."""
    data = require_exact_keys(signed, set(_COMMON_KEYS | extra), source, "signed")
    if data["type"] != doc_type:
        raise FormatError(source, "signed.type", f"expected {doc_type!r}, got {data['type']!r}")
    version = require_int(data, "version", source, "signed", 1, MAX_VERSION)
    spec = require_str(data, "metadata_spec_version", source, "signed")
    if spec != SPEC_VERSION:
        raise FormatError(
            source, "signed.metadata_spec_version", f"unsupported {spec!r} (need {SPEC_VERSION})"
        )
    timestamp = require_str(data, "timestamp", source, "signed")
    parse_time(timestamp, source, "signed.timestamp")
    expiration = require_str(data, "expiration", source, "signed")
    parse_time(expiration, source, "signed.expiration")
    return CommonFields(data, version, timestamp, expiration, spec)


class _MetadataFields(NamedTuple):
    version: int
    timestamp: str
    expiration: str
    delegations: Mapping[str, Delegation]
    metadata_spec_version: str = SPEC_VERSION


class DelegatingMetadata(_MetadataFields):
    """Common shape of root, key_mgr and pkg_mgr (`signed` part)."""

    __slots__ = ()
    ROLE: ClassVar[str] = ""
    DELEGATES: ClassVar[frozenset[str]] = frozenset()

    @property
    def expires(self) -> datetime:
        return parse_time(self.expiration, self.ROLE, "expiration")

    def delegation(self, role: str) -> Delegation:
        return self.delegations[role]

    def to_signed(self) -> dict[str, Any]:
        return {
            "delegations": {r: d.to_dict() for r, d in sorted(self.delegations.items())},
            "expiration": self.expiration,
            "metadata_spec_version": self.metadata_spec_version,
            "timestamp": self.timestamp,
            "type": self.ROLE,
            "version": self.version,
        }

    @classmethod
    def from_signed(cls, signed: object, source: str) -> DelegatingMetadata:
        common = parse_common(signed, source, cls.ROLE, {"delegations"})
        data = common.data
        raw = data["delegations"]
        if not isinstance(raw, dict):
            raise FormatError(source, "signed.delegations", f"expected an object, got {_kind(raw)}")
        if set(raw) != cls.DELEGATES:
            unknown = sorted(set(raw) - cls.DELEGATES)
            missing = sorted(cls.DELEGATES - set(raw))
            what = f"unknown role {unknown[0]!r}" if unknown else f"missing role {missing[0]!r}"
            raise FormatError(source, "signed.delegations", what)
        delegations = {
            name: Delegation.from_dict(raw[name], source, f"signed.delegations.{name}")
            for name in sorted(raw)
        }
        return cls(
            common.version,
            common.timestamp,
            common.expiration,
            delegations,
            common.metadata_spec_version,
        )


class Root(DelegatingMetadata):
    __slots__ = ()
    ROLE = "root"
    DELEGATES = frozenset({"root", "key_mgr"})

    @property
    def root_keys(self) -> Delegation:
        return self.delegations["root"]

    @property
    def key_mgr_keys(self) -> Delegation:
        return self.delegations["key_mgr"]


class KeyMgr(DelegatingMetadata):
    __slots__ = ()
    ROLE = "key_mgr"
    DELEGATES = frozenset({"pkg_mgr"})

    @property
    def pkg_mgr_keys(self) -> Delegation:
        return self.delegations["pkg_mgr"]


class PkgMgr(DelegatingMetadata):
    __slots__ = ()
    ROLE = "pkg_mgr"
    DELEGATES = frozenset()


ROLE_CLASSES: dict[str, type[DelegatingMetadata]] = {
    cls.ROLE: cls for cls in (Root, KeyMgr, PkgMgr)
}


if TYPE_CHECKING:
    from typing_extensions import TypeVar

    # A bare `SignedMetadata` means any role; `SignedMetadata[Root]` is a root.
    M = TypeVar("M", bound=DelegatingMetadata, covariant=True, default=DelegatingMetadata)
    R = TypeVar("R", bound=DelegatingMetadata)
else:  # typing's own at run time: typing_extensions is not worth its import here
    from typing import TypeVar

    M = TypeVar("M", bound=DelegatingMetadata, covariant=True)
    R = TypeVar("R", bound=DelegatingMetadata)


class SignedMetadata(Generic[M]):
    """A parsed role with its envelope (signatures and canonical bytes).

    Typed by role: `parse_metadata(data, name, "root")` is a `SignedMetadata[Root]`, so
    `.meta.root_keys` type-checks without a cast; `as_role` narrows one of unknown role.
    """

    __slots__ = ("_meta", "envelope")

    def __init__(self, meta: M, envelope: Signable) -> None:
        self._meta = meta
        self.envelope = envelope

    @property
    def meta(self) -> M:
        return self._meta

    @property
    def source(self) -> str:
        return self.envelope.source

    @property
    def role(self) -> str:
        return self._meta.ROLE

    def as_role(self, cls: type[R]) -> SignedMetadata[R]:
        """This document as a `cls` (Root, KeyMgr, PkgMgr), or VerificationError (type)."""
        meta = self._meta
        if not isinstance(meta, cls):
            raise VerificationError(self.source, "type", f"expected {cls.ROLE}, got {self.role}")
        return SignedMetadata(meta, self.envelope)


@overload
def parse_metadata(
    data: bytes, source: str, expected_role: Literal["root"]
) -> SignedMetadata[Root]: ...
@overload
def parse_metadata(
    data: bytes, source: str, expected_role: Literal["key_mgr"]
) -> SignedMetadata[KeyMgr]: ...
@overload
def parse_metadata(
    data: bytes, source: str, expected_role: Literal["pkg_mgr"]
) -> SignedMetadata[PkgMgr]: ...
@overload
def parse_metadata(
    data: bytes, source: str, expected_role: str | None = None
) -> SignedMetadata[DelegatingMetadata]: ...
def parse_metadata(
    data: bytes, source: str, expected_role: str | None = None
) -> SignedMetadata[DelegatingMetadata]:
    """Parse a root, key_mgr or pkg_mgr document; `expected_role` pins its type."""
    envelope = Signable.from_bytes(data, source, MAX_DELEGATING)
    role = envelope.signed.get("type")
    if expected_role is not None and role != expected_role:
        raise FormatError(source, "signed.type", f"expected {expected_role!r}, got {role!r}")
    cls = ROLE_CLASSES.get(role) if isinstance(role, str) else None
    if cls is None:
        raise FormatError(source, "signed.type", f"unknown role {role!r}")
    return SignedMetadata(cls.from_signed(envelope.signed, source), envelope)
