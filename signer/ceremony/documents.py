"""The unsigned documents an event proposes: a first root, root N+1, a key_mgr."""

from __future__ import annotations

from collections.abc import Sequence

from signer.ceremony.review import majority
from signer.trust.errors import FormatError
from signer.trust.metadata import Delegation, KeyMgr, Root
from signer.trust.timefmt import expiry_after, format_time, system_clock


def delegation(keys: Sequence[str], threshold: int, what: str) -> Delegation:
    if not keys:
        raise FormatError(what, "keys", "at least one key is needed")
    if len(set(keys)) != len(keys):
        raise FormatError(what, "keys", "the same key is listed twice")
    if threshold > len(keys):
        raise FormatError(what, "threshold", f"{threshold} exceeds the {len(keys)} keys given")
    return Delegation(tuple(keys), threshold)


def _times(days: float) -> tuple[str, str]:
    now = system_clock().replace(microsecond=0)
    return format_time(now), expiry_after(days, now)


def carried_threshold(
    keys: Sequence[str], threshold: int | None, old: Delegation | None, default: int
) -> int:
    """An explicit threshold; else the old one when the key count is unchanged; else `default`."""
    if threshold is not None:
        return threshold
    if old is not None and len(keys) == len(old.pubkeys):
        return old.threshold
    return default


def root_document(
    previous: Root | None,
    root_keys: Sequence[str] | None,
    threshold: int | None,
    key_mgr_keys: Sequence[str] | None,
    key_mgr_threshold: int | None,
    days: float,
) -> Root:
    """Root v1 (no previous) or root N+1; unnamed key sets carry over from `previous`."""
    if previous is None and (not root_keys or not key_mgr_keys):
        raise FormatError("root", "keys", "a first root needs root keys and key_mgr keys")
    old_root = previous.root_keys if previous else None
    old_km = previous.key_mgr_keys if previous else None
    roots = list(root_keys) if root_keys else list(old_root.pubkeys if old_root else ())
    kms = list(key_mgr_keys) if key_mgr_keys else list(old_km.pubkeys if old_km else ())
    root_t = carried_threshold(roots, threshold, old_root, majority(len(roots)))
    km_t = carried_threshold(kms, key_mgr_threshold, old_km, 1)
    timestamp, expiration = _times(days)
    version = previous.version + 1 if previous else 1
    return Root(version, timestamp, expiration, {
        "root": delegation(roots, root_t, "root"),
        "key_mgr": delegation(kms, km_t, "key_mgr"),
    })  # fmt: skip


def key_mgr_document(
    previous: KeyMgr | None, pkg_mgr_keys: Sequence[str], threshold: int | None, days: float
) -> KeyMgr:
    old = previous.pkg_mgr_keys if previous else None
    keys = list(pkg_mgr_keys) or list(old.pubkeys if old else ())
    t = carried_threshold(keys, threshold, old, 1)
    timestamp, expiration = _times(days)
    version = previous.version + 1 if previous else 1
    return KeyMgr(version, timestamp, expiration, {"pkg_mgr": delegation(keys, t, "pkg_mgr")})
