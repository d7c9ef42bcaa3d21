"""What a signer is shown before signing: the changes from the current document, and the key's role.

Shared by `metadata sign` and `ceremony sign`, so both show the same review.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from signer.trust.errors import FormatError
from signer.trust.metadata import DelegatingMetadata, Signable, SignedMetadata, parse_metadata


def majority(count: int) -> int:
    """The default root threshold: more than half of the keys."""
    return count // 2 + 1


def short(key: str) -> str:
    return key[:16] + "…"


def _name(key: str, holders: Mapping[str, str]) -> str:
    holder = holders.get(key)
    return f"{short(key)} ({holder})" if holder else short(key)


def summary(meta: DelegatingMetadata, holders: Mapping[str, str] | None = None) -> list[str]:
    """The document as a signer must see it: version, expiry, every delegation."""
    names = holders or {}
    lines = [f"{meta.ROLE} v{meta.version}, expires {meta.expiration}"]
    for role, delegation in sorted(meta.delegations.items()):
        keys = ", ".join(_name(k, names) for k in delegation.pubkeys)
        lines.append(f"  {role}: {delegation.threshold} of {len(delegation.pubkeys)}: {keys}")
    return lines


def changes(
    old: DelegatingMetadata | None,
    new: DelegatingMetadata,
    holders: Mapping[str, str] | None = None,
) -> list[str]:
    """Lines describing what `new` changes from `old` (keys added/removed, thresholds, expiry)."""
    names = holders or {}
    if old is None:
        return ["new document (no previous version given):", *summary(new, names)]
    lines = [f"version: {old.version} -> {new.version}"]
    if new.version != old.version + 1:
        lines.append(f"  WARNING: not the next version (expected {old.version + 1})")
    if old.expiration != new.expiration:
        lines.append(f"expiration: {old.expiration} -> {new.expiration}")
    for role in sorted(set(old.delegations) | set(new.delegations)):
        before, after = old.delegations.get(role), new.delegations.get(role)
        if before is None or after is None:
            lines.append(f"{role}: delegation {'added' if before is None else 'removed'}")
            continue
        if before.threshold != after.threshold or len(before.pubkeys) != len(after.pubkeys):
            lines.append(
                f"{role} threshold: {before.threshold} of {len(before.pubkeys)}"
                f" -> {after.threshold} of {len(after.pubkeys)}"
            )
        added = [k for k in after.pubkeys if k not in before.pubkeys]
        removed = [k for k in before.pubkeys if k not in after.pubkeys]
        lines += [f"{role} key added:   {_name(k, names)}" for k in added]
        lines += [f"{role} key removed: {_name(k, names)}" for k in removed]
        if not added and not removed and before.threshold == after.threshold:
            lines.append(f"{role}: unchanged ({after.threshold} of {len(after.pubkeys)})")
    return lines


def signing_roles(key: str, doc: SignedMetadata, trusted: SignedMetadata | None) -> list[str]:
    """Which thresholds a signature by `key` counts toward (empty: it counts for nothing)."""
    roles: list[str] = []
    meta = doc.meta
    if doc.role == "root":
        if key in meta.delegations["root"].pubkeys:
            roles.append(f"root key of v{meta.version} (the new root)")
        if (
            trusted is not None
            and trusted.role == "root"
            and key in trusted.meta.delegations["root"].pubkeys
        ):
            roles.append(f"root key of v{trusted.meta.version} (the current root)")
        return roles
    if trusted is None:
        return roles
    delegating = {"key_mgr": "key_mgr", "pkg_mgr": "pkg_mgr"}.get(doc.role)
    delegated = trusted.meta.delegations.get(delegating or "")
    if delegated is not None and key in delegated.pubkeys:
        roles.append(f"{delegating} key of {trusted.role} v{trusted.meta.version}")
    return roles


def refuse_overwrite_of_signed(path: Path) -> None:
    """Authoring writes only new files or unsigned drafts: a signed document is never replaced."""
    try:
        data = path.read_bytes()[: 1024 * 1024 + 1]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FormatError(str(path), "", f"cannot read the existing file: {exc.strerror}") from None
    if os.path.islink(path):
        raise FormatError(str(path), "", "exists and is a symbolic link; not overwriting")
    try:
        envelope = Signable.from_bytes(data, str(path))
    except FormatError:
        raise FormatError(
            str(path), "", "exists and is not an unsigned metadata draft; not overwriting"
        ) from None
    if envelope.signatures:
        raise FormatError(
            str(path),
            "",
            f"exists and carries {len(envelope.signatures)} signature(s); "
            "a signed document is never overwritten (choose another output)",
        )


def load_doc(path: str) -> SignedMetadata:
    from signer.trust.jsonload import MAX_DELEGATING, read_file

    return parse_metadata(read_file(path, MAX_DELEGATING), path)
