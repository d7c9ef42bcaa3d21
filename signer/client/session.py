"""The verifier session: one trust repository, one anchor, one state, verified once.

A session composes the trust core (root chain, key_mgr, pkg_mgr, feedstock delegations,
attestations, repodata signatures) over a `TrustSource`; every client (the CLI, the service's
intake, mirrors, the conda plugin, channel signing) verifies through it instead of wiring
the core's functions together itself. Documents are fetched and checked once per session;
delegations are cached with their failures, so many artifacts of one feedstock cost one
index and one bin.

Kept lean (start-up budget of `cf-sign verify`): the trust core and the stdlib fetcher;
the artifact reader and the repodata verifier are imported when first used.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeAlias

from signer.client.artifact import ArtifactVerdict, failed, find_sidecar
from signer.trust import layout
from signer.trust.attestation import AttestationResult, parse_sidecar, verify_sidecar
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import (
    ResolvedDelegation,
    ShardEntry,
    VerifiedBin,
    VerifiedIndex,
    delegation_in,
    index_entry,
    verify_bin,
    verify_index,
)
from signer.trust.jsonload import MAX_DELEGATING, read_file
from signer.trust.metadata import Delegation
from signer.trust.repository import (
    TrustedKeyMgr,
    TrustedPkgMgr,
    TrustedRoot,
    load_key_mgr,
    load_pkg_mgr,
    select_anchor,
    update_root,
)
from signer.trust.state import TrustState
from signer.trust.timefmt import DEFAULT_CLOCK_SKEW, system_clock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from signer.repodata.document import SplitRepodata
    from signer.repodata.verify import RepodataReport

DEFAULT_TIMEOUT = 20.0

# A verified bin depends on: its id, the index entry pinning it (version, sha256), and the
# key_mgr keys (and threshold) of the root it was verified under.
BinKey: TypeAlias = tuple[str, int, str, tuple[str, ...], int]


def _bin_key(bin_name: str, entry: ShardEntry, keys: Delegation) -> BinKey:
    return (bin_name, entry.version, entry.sha256, keys.pubkeys, keys.threshold)


class TrustSource(Protocol):
    """Where trust documents come from: a directory, a URL, the service's database.

    `fetch(path, max_bytes)` returns the document's bytes, None when it is absent, and
    raises VerificationError when it cannot tell (network failure, over the cap).
    """

    @property
    def location(self) -> str: ...

    def fetch(self, path: str, max_bytes: int) -> bytes | None: ...

    def describe(self, path: str) -> str: ...


class SessionConfig(NamedTuple):
    """How a session judges time and waits for the network."""

    clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    timeout: float = DEFAULT_TIMEOUT  # seconds per document, for a URL trust repository
    at: datetime | None = None  # verify as of this time instead of now


class TrustSession:
    """Verification against one trust repository, from one anchor root."""

    def __init__(
        self,
        source: TrustSource,
        anchor: bytes | None = None,
        *,
        anchor_name: str = "root",
        state: TrustState | None = None,
        config: SessionConfig | None = None,
    ) -> None:
        self.source = source
        self.anchor = anchor
        self.anchor_name = anchor_name
        self.state = state
        self.config = config or SessionConfig()
        self.notices: list[str] = []  # things the user should be told (not failures)
        self._root: TrustedRoot | None = None
        self._key_mgr: TrustedKeyMgr | None = None
        self._pkg_mgr: TrustedPkgMgr | None = None
        self._failure: VerificationError | None = None
        self._delegations: dict[str, ResolvedDelegation | VerificationError] = {}
        # The feedstock index, verified once per session; bins verified once per bin and
        # index entry (id, version, sha256) and key_mgr keys, so 29,000 feedstocks in 256
        # bins cost 256 bin verifications. Expiry is checked again on every use.
        self._index: VerifiedIndex | VerificationError | None = None
        self._bins: dict[BinKey, VerifiedBin | VerificationError] = {}

    @classmethod
    def open(
        cls,
        location: str | Path,
        root: Path | None = None,
        state_dir: Path | None = None,
        config: SessionConfig | None = None,
    ) -> TrustSession:
        """A session over a trust directory or http(s) URL; FormatError for bad arguments.

        `root` is the anchor root file (read under the 512 KiB cap); `state_dir` defaults
        to `$XDG_CACHE_HOME/cf-sign/<hash of the location>`.
        """
        from signer.fetch import default_state_dir, is_url, open_source

        config = config or SessionConfig()
        text = str(location)
        if not is_url(text) and not Path(text).is_dir():
            raise FormatError(text, "", "not a directory or an http(s) URL")
        source = open_source(text, timeout=config.timeout)
        anchor = read_file(str(root), MAX_DELEGATING) if root is not None else None
        state = TrustState(state_dir or default_state_dir(source.location))
        return cls(
            source,
            anchor,
            anchor_name=str(root) if root is not None else "root",
            state=state,
            config=config,
        )

    # ------------------------------------------------------------------ channel layer

    @property
    def location(self) -> str:
        return self.source.location

    def now(self) -> datetime:
        return self.config.at if self.config.at is not None else system_clock()

    def refresh(self) -> None:
        """Root chain, key_mgr and (when published) pkg_mgr, verified once per session.

        Raises VerificationError (the same one on every later call) when they do not
        verify, and FormatError when the given anchor root does not parse.
        """
        if self._failure is not None:
            raise self._failure
        if self._key_mgr is not None:
            return
        now, skew = self.now(), self.config.clock_skew
        fetch = self.source.fetch
        try:
            anchor, notice = select_anchor(self.anchor, self.anchor_name, self.state, fetch)
            if notice is not None:
                self.notices.append(notice)
            root = update_root(fetch, anchor, now, skew, self.state)
            key_mgr = load_key_mgr(fetch, root, now, skew, self.state)
            pkg_mgr = load_pkg_mgr(fetch, key_mgr, now, skew, self.state)
        except VerificationError as exc:
            self._failure = exc
            raise
        self._root, self._key_mgr, self._pkg_mgr = root, key_mgr, pkg_mgr

    @property
    def root(self) -> TrustedRoot:
        self.refresh()
        assert self._root is not None
        return self._root

    @property
    def key_mgr(self) -> TrustedKeyMgr:
        self.refresh()
        assert self._key_mgr is not None
        return self._key_mgr

    @property
    def pkg_mgr(self) -> TrustedPkgMgr | None:
        """The verified pkg_mgr.json, None when the repository publishes none."""
        self.refresh()
        return self._pkg_mgr

    def fetch(self, path: str, max_bytes: int) -> bytes | None:
        """Raw access to a document of the trust repository (nothing verified)."""
        return self.source.fetch(path, max_bytes)

    # ------------------------------------------------------------------ feedstock layer

    def delegation(self, feedstock: str) -> ResolvedDelegation:
        """The verified delegation of `feedstock` (rules 2-3); cached, failures too."""
        known = self._delegations.get(feedstock)
        if known is None:
            try:
                known = self._resolve(feedstock)
            except VerificationError as exc:
                known = exc
            self._delegations[feedstock] = known
        if isinstance(known, VerificationError):
            raise known
        return known

    def feedstock_index(self) -> VerifiedIndex:
        """The verified feedstock index (rule 3), once per session; failures cached."""
        if self._index is None:
            try:
                self._index = verify_index(
                    self.source.fetch,
                    self.root.meta,
                    self.now(),
                    self.config.clock_skew,
                    self.state,
                )
            except VerificationError as exc:
                self._index = exc
        if isinstance(self._index, VerificationError):
            raise self._index
        return self._index

    def _resolve(self, feedstock: str) -> ResolvedDelegation:
        root = self.root.meta
        now, skew = self.now(), self.config.clock_skew
        index = self.feedstock_index()
        bin_name, entry = index_entry(index.document, feedstock)
        key = _bin_key(bin_name, entry, root.key_mgr_keys)
        shard = self._bins.get(key)
        if shard is None:
            try:
                shard = verify_bin(
                    self.source.fetch, root, index.document, bin_name, entry, now, skew, self.state
                )
            except VerificationError as exc:
                shard = exc
            self._bins[key] = shard
        if isinstance(shard, VerificationError):
            raise shard
        return delegation_in(feedstock, index, bin_name, shard, now, skew, self.state)

    def verified_bins(self) -> list[tuple[BinKey, VerifiedBin]]:
        """The bins verified (or adopted) so far that the verified index still pins, under
        root's key_mgr keys as they are now: what a caller may keep for a later session."""
        index = self._index
        if not isinstance(index, VerifiedIndex) or self._root is None:
            return []
        keys = self._root.meta.key_mgr_keys
        shards = index.document.shards
        kept = []
        for key, shard in self._bins.items():
            entry = shards.get(key[0])
            if (
                isinstance(shard, VerifiedBin)
                and entry is not None
                and key == _bin_key(key[0], entry, keys)
            ):
                kept.append((key, shard))
        return kept

    def adopt_bins(self, bins: Iterable[tuple[BinKey, VerifiedBin]]) -> None:
        """Bins an earlier session verified (`verified_bins`), kept by the caller where only
        it can write them (channel signing: under the signing cache's MAC).

        They go where this session's own verified bins go, so the one rule applies: a bin is
        used only when the index verified now pins the same (bin, version, sha256) under the
        same key_mgr keys and threshold (a revoked key changes the bin's sha256 in the index,
        so the changed bin is fetched and verified again), and expiry and rollback are
        checked from its stored values on every use (`delegation_in`). What this session
        verified itself is never replaced.
        """
        for key, shard in bins:
            self._bins.setdefault(key, shard)

    def forget_delegations(self) -> None:
        """Drop cached delegations and the index (a long-lived session after the bins
        changed); verified bins stay, keyed by the entry of the index that pins them."""
        self._delegations.clear()
        self._index = None

    def reset(self) -> None:
        """Forget everything verified: the next use refreshes again (a long-lived session
        after the repository published new documents, e.g. the service after a rotation)."""
        self._root = self._key_mgr = self._pkg_mgr = None
        self._failure = None
        self._delegations.clear()
        self._index = None
        self._bins.clear()

    def verify_attestation(
        self,
        sidecar_bytes: bytes,
        *,
        filename: str,
        sha256: str,
        subdir: str,
        package: str | None = None,
        where: str | None = None,
    ) -> AttestationResult:
        """Rule 4 without reading the archive: the hint's delegation, threshold, scope,
        digest, subject name and the subdir the statement binds.

        Raises VerificationError when it does not verify, FormatError when the sidecar
        does not parse (the caller knows whether that is bad input or a bad document).
        """
        source = where or f"{subdir}/{filename}.sig.json"
        parsed = parse_sidecar(sidecar_bytes, source)  # once: the hint, then the envelopes
        resolved = self.delegation(parsed.feedstock)
        return verify_sidecar(
            sidecar_bytes,
            filename,
            sha256,
            resolved.delegation,
            source,
            subdir=subdir,
            package_name=package,
            parsed=parsed,
        )

    def verify_artifact(self, path: Path, sidecar: Path | None = None) -> ArtifactVerdict:
        """One artifact end to end (rules 2-4); the verdict says why when it fails.

        Never raises VerificationError: an archive that cannot be read is a failed verdict
        (check `archive`). FormatError when `sidecar` (a file the user named) does not parse.
        """
        from signer.artifacts import check_filename_matches_index, read_artifact

        try:
            self.refresh()
        except VerificationError as exc:
            # Nothing verifies without the trust documents: the artifact is not read.
            return failed(path.name, exc)
        try:
            try:
                info = read_artifact(path)
            except FormatError as exc:
                # A corrupt or hostile archive did not verify (exit 1); the others go on.
                detail = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
                raise VerificationError(path.name, "archive", detail) from None
            check_filename_matches_index(info)
            data, where, named = find_sidecar(path, info.subdir, self.source, sidecar)
            try:
                result = self.verify_attestation(
                    data,
                    filename=info.filename,
                    sha256=info.sha256,
                    subdir=info.subdir,
                    package=info.name,
                    where=where,
                )
            except FormatError as exc:
                if named:
                    raise  # a file given by the user that does not parse: bad input
                detail = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
                raise VerificationError(where, "format", detail) from None
            resolved = self.delegation(result.feedstock)
        except VerificationError as exc:
            return failed(path.name, exc)
        return ArtifactVerdict(
            info.filename,
            True,
            feedstock=result.feedstock,
            keyids=result.keyids,
            package=result.package,
            sha256=info.sha256,
            channel=result.channel,
            sidecar=where,
            extra={
                "delegation": {
                    "bin": resolved.bin,
                    "bin_version": resolved.bin_version,
                    "index_version": resolved.index_version,
                },
                "attestations": [e.predicate_type for e in result.envelopes],
            },
        )

    # ------------------------------------------------------------------ repodata

    def verify_repodata(
        self,
        repodata: Path | bytes | SplitRepodata,
        *,
        jobs: int | None = None,
        profiles: Sequence[str] = ("conda",),
        check_mamba: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> RepodataReport:
        """Every record's signatures against the verified pkg_mgr delegation (rule 5).

        `profiles`: whose acceptance to judge ("conda", "mamba"); `check_mamba` adds
        "mamba". The mamba profile needs a verified pkg_mgr.json (libmamba refuses a channel
        without one). The document is read first (FormatError: bad input), then the trust
        documents (VerificationError when they do not verify).
        """
        from signer.repodata.document import SplitRepodata, read_repodata, split_repodata
        from signer.repodata.parallel import default_jobs
        from signer.repodata.verify import verify_repodata

        if isinstance(repodata, SplitRepodata):
            split = repodata
        elif isinstance(repodata, bytes):
            split = split_repodata(repodata, "repodata.json", members=False)
        else:
            split = read_repodata(repodata, members=False)
        if check_mamba and "mamba" not in profiles:
            profiles = (*profiles, "mamba")
        pkg_mgr = self.key_mgr.meta.pkg_mgr_keys
        if "mamba" in profiles and self.pkg_mgr is None:
            why = "not found in the trust repository (mamba requires it)"
            raise VerificationError(layout.PKG_MGR, "missing", why)
        return verify_repodata(
            split,
            pkg_mgr,
            jobs=jobs or default_jobs(),
            profiles=profiles,
            on_progress=on_progress,
        )
