"""Walking a trust repository (section 4, rules 1-3) through an injected fetch function.

The core does no I/O of its own: `fetch(path, max_bytes)` returns the bytes of a document
of the trust repository, None when it is absent, and raises when it cannot tell (network
failure, oversize): nothing is trusted then.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from signer.trust.chain import RootUpdate, check_not_expired, verify_root_self, verify_root_update
from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import MAX_DELEGATING
from signer.trust.metadata import KeyMgr, PkgMgr, Root, SignedMetadata, parse_metadata
from signer.trust.state import TrustState
from signer.trust.threshold import ThresholdResult, verify_threshold
from signer.trust.timefmt import DEFAULT_CLOCK_SKEW

Fetch = Callable[[str, int], bytes | None]

MAX_CHAIN_STEPS = 1000  # a repository serving endless roots is an attack, not a history


class TrustedRoot:
    """The newest root reached from the anchor, with each verified step."""

    def __init__(self, root: SignedMetadata, steps: list[RootUpdate] | None = None) -> None:
        self.root = root
        self.steps: list[RootUpdate] = steps or []

    @property
    def meta(self) -> Root:
        assert isinstance(self.root.meta, Root)
        return self.root.meta


class TrustedPkgMgr:
    """A verified pkg_mgr.json and what its threshold counted."""

    def __init__(self, pkg_mgr: SignedMetadata, result: ThresholdResult) -> None:
        self.pkg_mgr = pkg_mgr
        self.result = result

    @property
    def meta(self) -> PkgMgr:
        assert isinstance(self.pkg_mgr.meta, PkgMgr)
        return self.pkg_mgr.meta


class TrustedKeyMgr:
    """A verified key_mgr and what its threshold counted."""

    def __init__(self, key_mgr: SignedMetadata, result: ThresholdResult) -> None:
        self.key_mgr = key_mgr
        self.result = result

    @property
    def meta(self) -> KeyMgr:
        assert isinstance(self.key_mgr.meta, KeyMgr)
        return self.key_mgr.meta


def _as_document_error(exc: FormatError, name: str) -> VerificationError:
    # A malformed document found in the repository is a verification failure (exit 1).
    return VerificationError(
        name, "format", f"{exc.field}: {exc.reason}" if exc.field else exc.reason
    )


def choose_anchor(given: bytes | None, given_name: str, state: TrustState | None) -> SignedMetadata:
    """The trusted starting root: the newer of `--root` and the state's verified root."""
    candidates: list[SignedMetadata] = []
    if given is not None:
        candidates.append(parse_metadata(given, given_name, "root"))
    stored = state.trusted_root() if state is not None else None
    if stored is not None:
        try:
            candidates.append(parse_metadata(stored, str(state.path / "root.json"), "root"))  # type: ignore[union-attr]
        except FormatError:
            if not candidates:
                raise
    if not candidates:
        raise VerificationError(
            "root",
            "trust anchor",
            "no trusted root given and none kept in the state (a root is never fetched blindly)",
        )
    anchor = max(candidates, key=lambda doc: doc.meta.version)
    verify_root_self(anchor)
    return anchor


def update_root(
    fetch: Fetch,
    anchor: SignedMetadata,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> TrustedRoot:
    """Fetch N+1.root.json until absent, verifying each step; then check expiry."""
    trusted = TrustedRoot(anchor)
    for _ in range(MAX_CHAIN_STEPS):
        name = f"{trusted.root.meta.version + 1}.root.json"
        data = fetch(name, MAX_DELEGATING)
        if data is None:
            break
        try:
            candidate = parse_metadata(data, name, "root")
        except FormatError as exc:
            raise _as_document_error(exc, name) from None
        trusted.steps.append(verify_root_update(trusted.root, candidate))
        trusted.root = candidate
        if state is not None:
            state.store_root(data)
    else:
        raise VerificationError("root", "chain", f"more than {MAX_CHAIN_STEPS} root updates")
    check_not_expired(trusted.meta, f"{trusted.meta.version}.root.json", now, skew)
    if state is not None and not trusted.steps and state.trusted_root() is None:
        state.store_root(trusted.root.envelope.to_bytes())
    return trusted


def verify_key_mgr(doc: SignedMetadata, root: Root) -> ThresholdResult:
    """key_mgr must carry RAW signatures meeting root's key_mgr threshold."""
    if not isinstance(doc.meta, KeyMgr):
        raise VerificationError(doc.source, "type", f"expected key_mgr, got {doc.role}")
    return verify_threshold(
        doc.envelope.canonical,
        doc.envelope.signatures,
        root.key_mgr_keys,
        "key_mgr",
        allow_openpgp=False,
    ).require(doc.source)


def load_key_mgr(
    fetch: Fetch,
    root: TrustedRoot,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> TrustedKeyMgr:
    name = "key_mgr.json"
    data = fetch(name, MAX_DELEGATING)
    if data is None:
        raise VerificationError(name, "missing", "not found in the trust repository")
    try:
        doc = parse_metadata(data, name, "key_mgr")
    except FormatError as exc:
        raise _as_document_error(exc, name) from None
    result = verify_key_mgr(doc, root.meta)
    if state is not None:
        state.check_version(name, doc.meta.version, name)
    check_not_expired(doc.meta, name, now, skew)
    if state is not None:
        state.record_versions({name: doc.meta.version})
    return TrustedKeyMgr(doc, result)


def verify_pkg_mgr(doc: SignedMetadata, key_mgr: KeyMgr) -> ThresholdResult:
    """pkg_mgr.json must meet the threshold of key_mgr's pkg_mgr keys."""
    if not isinstance(doc.meta, PkgMgr):
        raise VerificationError(doc.source, "type", f"expected pkg_mgr, got {doc.role}")
    return verify_threshold(
        doc.envelope.canonical,
        doc.envelope.signatures,
        key_mgr.pkg_mgr_keys,
        "pkg_mgr",
        allow_openpgp=False,  # as for key_mgr: raw signatures by online keys
    ).require(doc.source)


def load_pkg_mgr(
    fetch: Fetch,
    key_mgr: TrustedKeyMgr,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> TrustedPkgMgr | None:
    """pkg_mgr.json when the repository has one (conda never reads it; mamba needs it)."""
    name = "pkg_mgr.json"
    data = fetch(name, MAX_DELEGATING)
    if data is None:
        return None
    try:
        doc = parse_metadata(data, name, "pkg_mgr")
    except FormatError as exc:
        raise _as_document_error(exc, name) from None
    result = verify_pkg_mgr(doc, key_mgr.meta)
    if state is not None:
        state.check_version(name, doc.meta.version, name)
    check_not_expired(doc.meta, name, now, skew)
    if state is not None:
        state.record_versions({name: doc.meta.version})
    return TrustedPkgMgr(doc, result)
