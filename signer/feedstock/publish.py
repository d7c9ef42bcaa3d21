"""Publishing feedstock delegations: the bins whose content changed, then the index.

One core function, `plan_publication`, serves `cf-sign delegations publish` and the service:
it compares what should be published with what is (through `fetch_existing`) and returns
only the files to write, each bin's version bumped from the one already published so that
verifiers' rollback checks keep holding. Unchanged bins keep their bytes, version and hash,
so a client that cached them need not fetch them again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from signer.trust import layout
from signer.trust.errors import FormatError
from signer.trust.feedstocks import (
    BIN_CHOICES,
    INDEX_PATH,
    FeedstockBin,
    FeedstockDelegation,
    FeedstocksIndex,
    ShardEntry,
    bin_id,
    bin_path,
    parse_bin,
    parse_index,
)
from signer.trust.jsonload import MAX_FEEDSTOCKS
from signer.trust.metadata import Root, Signable
from signer.trust.repository import Fetch
from signer.trust.signing import MessageSigner, RawSigner, sign_envelope
from signer.trust.timefmt import expiry_after, format_time, parse_time

DEFAULT_EXPIRES_DAYS = 90.0


class KeyedSigner(MessageSigner, Protocol):
    """A key_mgr signer that can name its KEYREF in messages."""

    @property
    def keyref(self) -> str: ...


@dataclass
class PublicationPlan:
    """Files to write (relative paths -> bytes) and why each bin changed."""

    files: dict[str, bytes] = field(default_factory=dict)
    changed_bins: dict[str, str] = field(default_factory=dict)  # bin id -> reason
    unchanged_bins: int = 0
    index_version: int = 0
    index_reason: str = ""
    feedstocks: int = 0


def _signed_bytes(
    signed: dict[str, object], source: str, signers: Sequence[MessageSigner]
) -> bytes:
    envelope = Signable(dict(signed), {}, source)
    for signer in signers:
        sign_envelope(envelope, RawSigner(signer))  # raw, as conda requires for key_mgr
    return envelope.to_bytes()


def _existing(fetch: Fetch | None, path: str) -> bytes | None:
    return fetch(path, MAX_FEEDSTOCKS) if fetch is not None else None


def _why_stale(
    expiration: str, signed_by: set[str], signer_keys: set[str], refresh_before: datetime
) -> str | None:
    if signed_by != signer_keys:
        return "signed by other key_mgr keys"
    if parse_time(expiration, "existing", "expiration") < refresh_before:
        return f"re-signed before expiry ({expiration})"
    return None


def plan_publication_detailed(
    delegations: Mapping[str, FeedstockDelegation],
    fetch_existing: Fetch | None,
    signers: Sequence[MessageSigner],
    *,
    bins: int = 256,
    expires_days: float,
    now: datetime,
    refresh_days: float | None = None,
) -> PublicationPlan:
    """See `plan_publication`; also says why each bin changed (for people and logs)."""
    if bins not in BIN_CHOICES:
        raise FormatError("bins", "", f"must be one of {BIN_CHOICES}, got {bins}")
    if not signers:
        raise FormatError("key_mgr keys", "", "at least one is needed to sign")
    now = now.replace(microsecond=0)
    timestamp, expiration = format_time(now), expiry_after(expires_days, now)
    # Documents expiring within `refresh_days` are re-signed even when unchanged.
    refresh_before = now + timedelta(
        days=expires_days / 2 if refresh_days is None else refresh_days
    )
    signer_keys = {s.public_key_hex for s in signers}

    old_index = None
    old_index_sigs: set[str] = set()
    data = _existing(fetch_existing, INDEX_PATH)
    if data is not None:
        old_index, envelope = parse_index(data, INDEX_PATH)
        old_index_sigs = set(envelope.signatures)
    same_layout = old_index is not None and old_index.bins == bins

    grouped: dict[str, dict[str, FeedstockDelegation]] = {}
    for name, delegation in delegations.items():
        grouped.setdefault(bin_id(name, bins), {})[name] = delegation
    # A bin once published stays in the index, emptied if need be: dropping it would let an
    # old copy of it be served as current.
    candidates = set(grouped) | (set(old_index.shards) if same_layout and old_index else set())

    plan = PublicationPlan(feedstocks=len(delegations))
    shards: dict[str, ShardEntry] = {}
    for bin_name in sorted(candidates):
        path = bin_path(bin_name)
        wanted = grouped.get(bin_name, {})
        old_entry = old_index.shards.get(bin_name) if same_layout and old_index else None
        old_bytes = _existing(fetch_existing, path)
        old_bin = None
        reason: str | None = "new bin"
        if old_bytes is not None:
            old_bin, old_env = parse_bin(old_bytes, path)
            old_sha = hashlib.sha256(old_bytes).hexdigest()
            if {n: d.to_dict() for n, d in old_bin.delegations.items()} != {
                n: d.to_dict() for n, d in wanted.items()
            }:
                reason = "delegations changed"
            elif old_entry is None or old_entry.sha256 != old_sha:
                reason = "not in the index as published"
            else:
                reason = _why_stale(
                    old_bin.expiration, set(old_env.signatures), signer_keys, refresh_before
                )
        if reason is None and old_entry is not None:
            shards[bin_name] = old_entry
            plan.unchanged_bins += 1
            continue
        previous = max(old_entry.version if old_entry else 0, old_bin.version if old_bin else 0)
        shard = FeedstockBin(bin_name, previous + 1, timestamp, expiration, wanted)
        body = _signed_bytes(shard.to_signed(), path, signers)
        plan.files[path] = body
        plan.changed_bins[bin_name] = reason or "changed"
        shards[bin_name] = ShardEntry(shard.version, hashlib.sha256(body).hexdigest())

    index_reason: str | None
    if old_index is None:
        index_reason = "new index"
    elif plan.files or old_index.bins != bins or dict(old_index.shards) != shards:
        index_reason = f"{len(plan.files)} bin(s) changed" if plan.files else "bins changed"
    else:
        index_reason = _why_stale(old_index.expiration, old_index_sigs, signer_keys, refresh_before)
    if index_reason is None and old_index is not None:
        plan.index_version = old_index.version
        return plan
    version = (old_index.version if old_index else 0) + 1
    index = FeedstocksIndex(version, timestamp, expiration, bins, shards)
    plan.files[INDEX_PATH] = _signed_bytes(index.to_signed(), INDEX_PATH, signers)
    plan.index_version, plan.index_reason = version, index_reason or "changed"
    return plan


def plan_publication(
    delegations: Mapping[str, FeedstockDelegation],
    fetch_existing: Fetch | None,
    signers: Sequence[MessageSigner],
    *,
    bins: int = 256,
    expires_days: float,
    now: datetime,
) -> dict[str, bytes]:
    """The changed files ("feedstocks/<bin>.json", "feedstocks/index.json") to publish.

    `fetch_existing(path, max_bytes)` returns what is published now (None when absent, or
    pass None for a first publication). Bins whose delegations are unchanged, that are still
    signed by `signers` and not within half their lifetime of expiring are left as they are;
    every other bin is re-signed with its version bumped, and then the index. Write the bins
    before the index, so that readers never meet an index naming bytes not yet published.
    """
    return plan_publication_detailed(
        delegations, fetch_existing, signers, bins=bins, expires_days=expires_days, now=now
    ).files


def write_order(files: Mapping[str, bytes]) -> list[str]:
    """Bins first, the index last (the layout's one write order)."""
    return layout.write_order(files)


def newest_root_in(directory: Path) -> Root | None:
    """The newest `N.root.json` of a trust directory (None when it holds none)."""
    from signer.trust.jsonload import MAX_DELEGATING, read_file
    from signer.trust.metadata import parse_metadata

    name = layout.newest_root(path.name for path in directory.glob("*" + layout.ROOT_SUFFIX))
    if name is None:
        return None
    path = directory / name
    return parse_metadata(read_file(str(path), MAX_DELEGATING), str(path), "root").meta


def published_bins(fetch: Fetch) -> int | None:
    """How many bins the published index uses (None before the first publication)."""
    data = fetch(INDEX_PATH, MAX_FEEDSTOCKS)
    return parse_index(data)[0].bins if data is not None else None


def publish_to_directory(
    directory: Path,
    delegations: Mapping[str, FeedstockDelegation],
    signers: Sequence[KeyedSigner],
    *,
    bins: int | None = None,
    expires_days: float = DEFAULT_EXPIRES_DAYS,
    now: datetime,
    dry_run: bool = False,
) -> tuple[PublicationPlan, int]:
    """`delegations publish` into a trust directory: (plan, bins used).

    The signers must be the newest root's key_mgr keys (FormatError naming the KEYREF
    otherwise); files are written in the layout's order (bins, then the index).
    """
    from signer.fetch import LocalSource
    from signer.trust.state import write_atomic

    if not directory.is_dir():
        raise FormatError(str(directory), "trust directory", "not a directory")
    root = newest_root_in(directory)
    if root is not None:
        allowed = set(root.key_mgr_keys.pubkeys)
        for signer in signers:
            if signer.public_key_hex not in allowed:
                raise FormatError(
                    signer.keyref, "key", f"not one of root v{root.version}'s key_mgr keys"
                )
    fetch = LocalSource(directory).fetch
    used = bins if bins is not None else (published_bins(fetch) or 256)
    plan = plan_publication_detailed(
        delegations, fetch, signers, bins=used, expires_days=expires_days, now=now
    )
    if not dry_run:
        for path in write_order(plan.files):
            write_atomic(directory / path, plan.files[path])
    return plan, used
