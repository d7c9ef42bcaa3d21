"""Walking a trust repository (section 4, rules 1-3) through an injected fetch function.

The core does no I/O of its own: `fetch(path, max_bytes)` returns the bytes of a document
of the trust repository, None when it is absent, and raises when it cannot tell (network
failure, oversize): nothing is trusted then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from signer.trust.chain import RootUpdate, check_not_expired, verify_root_self, verify_root_update
from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import MAX_DELEGATING
from signer.trust.layout import KEY_MGR, PKG_MGR, is_feedstocks_path, root_path
from signer.trust.metadata import (
    Delegation,
    KeyMgr,
    PkgMgr,
    Root,
    Signable,
    SignedMetadata,
    parse_metadata,
)
from signer.trust.state import TrustState
from signer.trust.threshold import ThresholdResult, verify_threshold
from signer.trust.timefmt import DEFAULT_CLOCK_SKEW

Fetch = Callable[[str, int], bytes | None]

MAX_CHAIN_STEPS = 1000  # a repository serving endless roots is an attack, not a history


class TrustedRoot:
    """The newest root reached from the anchor, with each verified step."""

    def __init__(self, root: SignedMetadata[Root], steps: list[RootUpdate] | None = None) -> None:
        self.root = root
        self.steps: list[RootUpdate] = steps or []

    @property
    def meta(self) -> Root:
        return self.root.meta


class TrustedPkgMgr:
    """A verified pkg_mgr.json and what its threshold counted."""

    def __init__(self, pkg_mgr: SignedMetadata[PkgMgr], result: ThresholdResult) -> None:
        self.pkg_mgr = pkg_mgr
        self.result = result

    @property
    def meta(self) -> PkgMgr:
        return self.pkg_mgr.meta


class TrustedKeyMgr:
    """A verified key_mgr and what its threshold counted."""

    def __init__(self, key_mgr: SignedMetadata[KeyMgr], result: ThresholdResult) -> None:
        self.key_mgr = key_mgr
        self.result = result

    @property
    def meta(self) -> KeyMgr:
        return self.key_mgr.meta


def _as_document_error(exc: FormatError, name: str) -> VerificationError:
    # A malformed document found in the repository is a verification failure (exit 1).
    return VerificationError(
        name, "format", f"{exc.field}: {exc.reason}" if exc.field else exc.reason
    )


class Anchor(NamedTuple):
    """Where the chain starts, and what the user should be told about the state's root."""

    root: SignedMetadata[Root]
    notice: str | None = None


def select_anchor(
    given: bytes | None,
    given_name: str,
    state: TrustState | None,
    fetch: Fetch | None = None,
) -> Anchor:
    """The trusted starting root (rules 1 and 10).

    The given root is the anchor. The state's root is used instead only when it is that
    root, or chains from it: each step from the given version to the stored one verified
    (both thresholds) with the roots the state kept, else those of the repository. A state
    root that does not chain is ignored, and the notice says so. Without a given root, the
    state's root is the anchor (it was verified when it was stored).
    """
    anchor: SignedMetadata[Root] | None = None
    notice: str | None = None
    if given is not None:
        anchor = parse_metadata(given, given_name, "root")
    stored = state.trusted_root() if state is not None else None
    if stored is not None and state is not None:
        where = str(state.path / "root.json")
        try:
            kept = parse_metadata(stored, where, "root")
        except FormatError as exc:
            if anchor is None:
                raise
            notice = f"{where}: ignored ({exc.reason})"
        else:
            if anchor is None:
                anchor = kept
            else:
                use, why = _chains_from(anchor, kept, state, fetch)
                if use:
                    anchor = kept
                elif why:
                    notice = (
                        f"{where}: root v{kept.meta.version} in the state does not chain from "
                        f"the given root v{anchor.meta.version} ({why}): ignored"
                    )
    if anchor is None:
        raise VerificationError(
            "root",
            "trust anchor",
            "no trusted root given and none kept in the state (a root is never fetched blindly)",
        )
    verify_root_self(anchor)
    return Anchor(anchor, notice)


def _chains_from(
    given: SignedMetadata[Root],
    kept: SignedMetadata[Root],
    state: TrustState,
    fetch: Fetch | None,
) -> tuple[bool, str]:
    """(use the kept root, why not): it is the given root or a verified successor of it."""
    start, end = given.meta.version, kept.meta.version
    if end < start:
        return False, ""  # the given root is newer: nothing to tell
    if end == start:
        same = kept.envelope.canonical == given.envelope.canonical
        return same, "" if same else "a different root of the same version"
    current = given
    for version in range(start + 1, end + 1):
        name = root_path(version)
        if version == end:
            candidate = kept
        else:
            data = state.root_copy(version)
            if data is None and fetch is not None:
                data = fetch(name, MAX_DELEGATING)
            if data is None:
                return False, f"{name} is not available to check the chain"
            try:
                candidate = parse_metadata(data, name, "root")
            except FormatError as exc:
                return False, f"{name}: {exc.reason}"
        try:
            verify_root_update(current, candidate)
        except VerificationError as exc:
            return False, f"{name}: {exc.check}: {exc.reason}"
        current = candidate
    return True, ""


def choose_anchor(
    given: bytes | None, given_name: str, state: TrustState | None
) -> SignedMetadata[Root]:
    """`select_anchor` without the repository or the notice (kept for older callers)."""
    return select_anchor(given, given_name, state).root


def keys_fingerprint(delegation: Delegation) -> str:
    """Identifies a delegation's key set (not its threshold), for rule 11."""
    return hashlib.sha256("\n".join(sorted(delegation.pubkeys)).encode("ascii")).hexdigest()


def _key_mgr_guarded(path: str) -> bool:
    # Everything root's key_mgr keys sign: key_mgr.json, the feedstock index and the bins.
    return path == KEY_MGR or is_feedstocks_path(path)


def update_root(
    fetch: Fetch,
    anchor: SignedMetadata[Root],
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> TrustedRoot:
    """Fetch N+1.root.json until absent, verifying each step; then check expiry.

    With a state: each verified root is kept, and when the key_mgr keys are not those the
    stored versions were seen under, those versions are dropped (rule 11).
    """
    trusted = TrustedRoot(anchor)
    key_mgr_changed = False
    for _ in range(MAX_CHAIN_STEPS):
        name = root_path(trusted.root.meta.version + 1)
        data = fetch(name, MAX_DELEGATING)
        if data is None:
            break
        try:
            candidate = parse_metadata(data, name, "root")
        except FormatError as exc:
            raise _as_document_error(exc, name) from None
        previous = trusted.meta
        trusted.steps.append(verify_root_update(trusted.root, candidate))
        trusted.root = candidate
        key_mgr_changed |= set(previous.key_mgr_keys.pubkeys) != set(
            candidate.meta.key_mgr_keys.pubkeys
        )
        if state is not None:
            state.store_root(data, candidate.meta.version)
    else:
        raise VerificationError("root", "chain", f"more than {MAX_CHAIN_STEPS} root updates")
    check_not_expired(trusted.meta, root_path(trusted.meta.version), now, skew)
    if state is not None:
        if not trusted.steps:
            kept = state.trusted_root()
            current = trusted.root.envelope
            if kept is None or _canonical_of(kept) != current.canonical:
                state.store_root(current.to_bytes(), trusted.meta.version)
        state.follow_keys(
            "key_mgr",
            keys_fingerprint(trusted.meta.key_mgr_keys),
            _key_mgr_guarded,
            changed=key_mgr_changed,
        )
    return trusted


def _canonical_of(data: bytes) -> bytes | None:
    try:
        return Signable.from_bytes(data, "state").canonical
    except FormatError:
        return None


def verify_by_key_mgr_keys(envelope: Signable, root: Root, subject: str) -> ThresholdResult:
    """What root's key_mgr keys sign (key_mgr.json, the feedstock index and bins) carries
    RAW signatures meeting their threshold: conda rejects OpenPGP-style ones there."""
    return verify_threshold(
        envelope.canonical, envelope.signatures, root.key_mgr_keys, "key_mgr", allow_openpgp=False
    ).require(subject)


def verify_key_mgr(doc: SignedMetadata, root: Root) -> ThresholdResult:
    """key_mgr must carry RAW signatures meeting root's key_mgr threshold."""
    if not isinstance(doc.meta, KeyMgr):
        raise VerificationError(doc.source, "type", f"expected key_mgr, got {doc.role}")
    return verify_by_key_mgr_keys(doc.envelope, root, doc.source)


def load_key_mgr(
    fetch: Fetch,
    root: TrustedRoot,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
    state: TrustState | None = None,
) -> TrustedKeyMgr:
    name = KEY_MGR
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
        state.follow_keys("pkg_mgr", keys_fingerprint(doc.meta.pkg_mgr_keys), _pkg_mgr_guarded)
    return TrustedKeyMgr(doc, result)


def _pkg_mgr_guarded(path: str) -> bool:
    return path == PKG_MGR


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
    name = PKG_MGR
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


class DocumentCheck(NamedTuple):
    """What `check_document` checked, and what each threshold counted."""

    what: str
    thresholds: list[tuple[str, ThresholdResult]]


def check_document(
    doc: SignedMetadata,
    trusted: SignedMetadata | None,
    now: datetime,
    skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> DocumentCheck:
    """One channel-layer document on its own (`metadata verify`): a root against itself or
    the root before it, a key_mgr against a root, a pkg_mgr against a key_mgr; then expiry.

    FormatError (field `trusted`) when the document needs a trusted one it was not given.
    """
    results: list[tuple[str, ThresholdResult]] = []
    if isinstance(doc.meta, Root):
        if trusted is None:
            results.append(("self", verify_root_self(doc)))
            what = f"root v{doc.meta.version}: self-signature"
        else:
            step = verify_root_update(trusted, doc)
            results += [("old root keys", step.by_old_keys), ("new root keys", step.by_new_keys)]
            what = f"root v{trusted.meta.version} -> v{doc.meta.version}"
    elif isinstance(doc.meta, KeyMgr):
        if trusted is None or not isinstance(trusted.meta, Root):
            raise FormatError(doc.source, "trusted", "a key_mgr is checked against a trusted root")
        results.append(("root's key_mgr keys", verify_key_mgr(doc, trusted.meta)))
        what = f"key_mgr v{doc.meta.version} under root v{trusted.meta.version}"
    else:
        if trusted is None or not isinstance(trusted.meta, KeyMgr):
            raise FormatError(
                doc.source, "trusted", "a pkg_mgr is checked against a trusted key_mgr"
            )
        results.append(("key_mgr's pkg_mgr keys", verify_pkg_mgr(doc, trusted.meta)))
        what = f"pkg_mgr v{doc.meta.version} under key_mgr v{trusted.meta.version}"
    check_not_expired(doc.meta, doc.source, now, skew)
    return DocumentCheck(what, results)
