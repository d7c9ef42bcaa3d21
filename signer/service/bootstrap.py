"""`cf-sign service init` and root updates: the service's trust anchor and online keys.

Init takes the roots made in the offline ceremony (`1.root.json ... N.root.json`), checks
they form a chain (N self-signed anchor, each step signed by the old and the new root
keys), checks the online key_mgr keys are the ones the newest root delegates to (enough of
them to meet its threshold), and publishes the roots byte-identical, then key_mgr.json,
pkg_mgr.json and an empty feedstock index, all made and signed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from sqlalchemy import select

from signer.service.db.models import Document
from signer.service.errors import BadRequest, Conflict
from signer.service.online_keys import (
    ServiceConfig,
    absolute_keyref,
    load_config,
    require_config,
    resolve_online_key,
    store_config,
)
from signer.service.publisher import Change, Publisher
from signer.trust.chain import check_not_expired, verify_root_self, verify_root_update
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import BIN_CHOICES
from signer.trust.metadata import Root, SignedMetadata, parse_metadata
from signer.trust.timefmt import system_clock


def parse_roots(files: Sequence[tuple[str, bytes]]) -> list[tuple[SignedMetadata[Root], bytes]]:
    """Parse and order the roots (with their exact bytes); they must form a chain."""
    if not files:
        raise FormatError("service init", "roots", "at least one root is needed")
    roots = sorted(
        ((parse_metadata(data, name, "root"), data) for name, data in files),
        key=lambda pair: pair[0].meta.version,
    )
    verify_root_self(roots[0][0])
    for (previous, _), (current, _) in pairwise(roots):
        verify_root_update(previous, current)
    newest = roots[-1][0]
    check_not_expired(newest.meta, newest.source, system_clock())
    return roots


def check_key_mgr_keys(root: Root, keyrefs: Sequence[str]) -> None:
    """The online key_mgr keys must be the root's key_mgr keys, enough for its threshold."""
    allowed = set(root.key_mgr_keys.pubkeys)
    seen: set[str] = set()
    for ref in keyrefs:
        public = resolve_online_key(ref).public_key_hex
        if public not in allowed:
            raise FormatError(ref, "key_mgr key", f"not one of root v{root.version}'s key_mgr keys")
        seen.add(public)
    if len(seen) < root.key_mgr_keys.threshold:
        raise FormatError(
            "service init",
            "key_mgr key",
            f"{len(seen)} distinct key(s) given, root v{root.version} requires "
            f"{root.key_mgr_keys.threshold}",
        )


def initialize(
    publisher: Publisher,
    roots: Sequence[tuple[str, bytes]],
    key_mgr_keyrefs: Sequence[str],
    pkg_mgr_keyrefs: Sequence[str],
    *,
    pkg_mgr_threshold: int = 1,
    bins: int = 256,
    expires_days: float = 90.0,
    actor: str = "cli",
) -> Change:
    key_mgr_keyrefs = [absolute_keyref(ref) for ref in key_mgr_keyrefs]
    pkg_mgr_keyrefs = [absolute_keyref(ref) for ref in pkg_mgr_keyrefs]
    chain = parse_roots(roots)
    newest = chain[-1][0].meta
    assert isinstance(newest, Root)
    check_key_mgr_keys(newest, key_mgr_keyrefs)
    if not pkg_mgr_keyrefs:
        raise FormatError("service init", "pkg_mgr key", "at least one pkg_mgr key is needed")
    pkg_keys = {resolve_online_key(ref).public_key_hex for ref in pkg_mgr_keyrefs}
    if len(pkg_keys) != len(pkg_mgr_keyrefs):
        raise FormatError("service init", "pkg_mgr key", "the same key was given twice")
    if not 1 <= pkg_mgr_threshold <= len(pkg_keys):
        raise FormatError("service init", "pkg_mgr threshold", f"must be 1..{len(pkg_keys)}")
    if bins not in BIN_CHOICES:
        raise FormatError("service init", "bins", f"must be one of {BIN_CHOICES}")
    if expires_days <= 0:
        raise FormatError("service init", "expiry", "must be more than 0 days")
    config = ServiceConfig(
        key_mgr_keyrefs=tuple(key_mgr_keyrefs),
        pkg_mgr_keyrefs=tuple(pkg_mgr_keyrefs),
        pkg_mgr_threshold=pkg_mgr_threshold,
        bins=bins,
        expires_days=expires_days,
    )
    with publisher.change(actor, needs_config=False) as change:
        if load_config(change.session) is not None:
            raise FormatError("service init", "database", "the service is already initialized")
        store_config(change.session, config)
        change.new_roots = [data for _, data in chain]  # byte-identical
        change.delegations_changed = True
        change.audit(
            "service.init",
            {
                "roots": [doc.meta.version for doc, _ in chain],
                "key_mgr_keys": sorted(
                    resolve_online_key(r).public_key_hex for r in key_mgr_keyrefs
                ),
                "pkg_mgr_keys": sorted(pkg_keys),
                "pkg_mgr_threshold": pkg_mgr_threshold,
                "bins": bins,
                "expires_days": expires_days,
            },
        )
    return change


def newest_root(change: Change) -> SignedMetadata:
    rows = change.session.execute(
        select(Document.path, Document.data).where(Document.path.like("%.root.json"))
    )
    versions = [(int(path.split(".", 1)[0]), path, data) for path, data in rows]
    if not versions:
        raise FormatError("root", "", "no root is published")
    _, path, data = max(versions)
    return parse_metadata(data, path, "root")


def publish_root(
    publisher: Publisher,
    data: bytes,
    key_mgr_keyrefs: Sequence[str] | None,
    *,
    actor: str,
) -> Change:
    """Publish root N+1 (a signing event's result); re-sign with new key_mgr keys if given."""
    try:
        candidate = parse_metadata(data, "root", "root")
    except FormatError as exc:
        raise BadRequest(str(exc), code="invalid_root") from None
    with publisher.change(actor) as change:
        current = newest_root(change)
        try:
            verify_root_update(current, candidate)
        except VerificationError as exc:
            raise Conflict(str(exc), code="root_rejected") from None
        root = candidate.meta
        assert isinstance(root, Root)
        config = require_config(change.session)
        refs = tuple(key_mgr_keyrefs) if key_mgr_keyrefs else config.key_mgr_keyrefs
        try:
            check_key_mgr_keys(root, refs)
        except FormatError as exc:
            raise BadRequest(
                f"the online key_mgr keys do not fit root v{root.version}: {exc.reason}; "
                "give key_mgr_keyrefs",
                code="key_mgr_keys",
            ) from None
        if refs != config.key_mgr_keyrefs:
            store_config(
                change.session,
                ServiceConfig(
                    refs,
                    config.pkg_mgr_keyrefs,
                    config.pkg_mgr_threshold,
                    config.bins,
                    config.expires_days,
                ),
            )
        change.new_roots = [data]
        change.delegations_changed = True  # re-signed by the new keys when they changed
        change.audit(
            "root.publish",
            {"version": root.version, "key_mgr_keyrefs_changed": refs != config.key_mgr_keyrefs},
        )
    return change


def set_pkg_mgr_keys(
    publisher: Publisher, keyrefs: Sequence[str], threshold: int, *, actor: str
) -> Change:
    """Rotate the pkg_mgr keys: key_mgr.json and pkg_mgr.json are re-made and re-signed."""
    try:
        publics = [resolve_online_key(ref).public_key_hex for ref in keyrefs]
    except FormatError as exc:
        raise BadRequest(str(exc), code="invalid_keyref") from None
    if not publics or len(set(publics)) != len(publics):
        raise BadRequest("give one or more distinct pkg_mgr KEYREFs", code="invalid_keyref")
    if not 1 <= threshold <= len(publics):
        raise BadRequest(f"threshold must be 1..{len(publics)}", code="invalid_threshold")
    with publisher.change(actor) as change:
        config = require_config(change.session)
        store_config(
            change.session,
            ServiceConfig(
                config.key_mgr_keyrefs,
                tuple(keyrefs),
                threshold,
                config.bins,
                config.expires_days,
            ),
        )
        change.key_mgr_changed = True
        change.audit("pkg_mgr.rotate", {"pkg_mgr_keys": sorted(publics), "threshold": threshold})
    return change
