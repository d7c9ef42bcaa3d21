"""The service's signed overlay channels: fetch upstream, sign what is attested, publish.

One pass (`OverlaySigner.refresh`), periodic in the server, on demand from
`POST /v1/admin/channels/{name}/refresh` or `cf-sign service channel refresh`:

1. the verifier session over the database (the intake's kind: root chain from the oldest
   published root, key_mgr, the index and each feedstock's bin, verified as clients do);
2. the roll-out stages of every feedstock (observe-stage records are signed, reported as
   observed; an enforced feedstock's unattested record is not), owners from the verified bins;
3. per channel, subdir and document (`repodata.json`, and `current_repodata.json` when
   defined): `signer.channel.overlay.refresh_overlay` with the pkg_mgr online keys (the
   last of two or more signs mamba's profile, the others conda's), the attestations of this
   replica's publish directory, and the overlay's state (upstream's validators and last
   bytes, the signing cache) beside them. It publishes into the shared `channels/` home of
   the publish directory (every snapshot links to it), then to Blob Storage if configured;
4. the figures (records, attested, observed, lag) or the error are written to the
   channel's row; a subdir that fails keeps its last good document and the others go on.

Signed repodata carries no expiry of its own: pkg_mgr.json's is what clients check, and
the documents refresh re-signs it. A pkg_mgr key change changes the signing cache's scope,
so the next pass re-signs every record with the new keys. New attestations are picked up
by the next pass (the server runs one soon after an intake stores any).

Each replica signs and serves its own overlay (ed25519 signatures are deterministic, so
replicas that saw the same upstream publish the same bytes); the publish directory's
`channels` lock serializes passes on it. Losing the state costs a full fetch and re-sign,
nothing else.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from sqlalchemy import select

from signer.channel.attestations import AttestationStore
from signer.channel.gate import Gate
from signer.channel.overlay import OverlayResult, refresh_overlay, write_document
from signer.channel.stages import FeedstockStage, StagePolicy
from signer.service.db.models import Channel, ChannelSubdir, Feedstock
from signer.service.db.session import Database
from signer.service.errors import NotInitialized
from signer.service.intake import Sessions
from signer.service.online_keys import load_config
from signer.service.publish_dir import CHANNELS
from signer.service.publisher import Publisher
from signer.service.schemas import ChannelRefresh
from signer.trust import layout
from signer.trust.errors import FormatError, VerificationError
from signer.trust.signing import MessageSigner
from signer.trust.timefmt import system_clock

log = logging.getLogger("cf_sign.service")

STATE = "overlay-state"
# conda needs <channel>/noarch/repodata.json; a channel defined without noarch gets this.
EMPTY_NOARCH = (
    b'{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{},"repodata_version":1}'
)


@dataclass(frozen=True)
class _Target:
    channel: str
    subdir: str
    document: str
    upstream: str


def split_profiles(
    signers: list[MessageSigner],
) -> tuple[list[MessageSigner], MessageSigner | None]:
    """(conda-profile keys, mamba-profile key): the last of two or more keys signs mamba's."""
    if len(signers) >= 2:
        return signers[:-1], signers[-1]
    return signers, None


class OverlaySigner:
    def __init__(self, db: Database, publisher: Publisher, *, jobs: int = 1) -> None:
        self.db = db
        self.publisher = publisher
        self.jobs = jobs
        self.sessions = Sessions(db)
        self.home = publisher.files.store  # channels/ and overlay-state/ live here
        self.channels_dir = self.home / CHANNELS

    def _targets(self, name: str | None) -> tuple[list[_Target], set[str], set[str]]:
        """(documents to refresh, channels defined, channels without a noarch subdir)."""
        with self.db.read() as session:
            rows = session.execute(
                select(Channel.name, ChannelSubdir.subdir, ChannelSubdir.upstream,
                       ChannelSubdir.current_upstream)
                .join(ChannelSubdir, ChannelSubdir.channel_id == Channel.id)
                .order_by(Channel.name, ChannelSubdir.subdir)
            ).all()  # fmt: skip
            defined = set(session.scalars(select(Channel.name)).all())
        targets: list[_Target] = []
        noarch: dict[str, bool] = {}
        for channel, subdir, upstream, current in rows:
            noarch[channel] = noarch.get(channel, False) or subdir == "noarch"
            if name is not None and channel != name:
                continue
            targets.append(_Target(channel, subdir, "repodata.json", upstream))
            if current is not None:
                targets.append(_Target(channel, subdir, "current_repodata.json", current))
        return targets, defined, {c for c, has in noarch.items() if not has}

    def _policy(self, gate: Gate) -> StagePolicy:
        with self.db.read() as session:
            rows = session.execute(
                select(Feedstock.name, Feedstock.stage, Feedstock.stage_since)
            ).all()
        stages = {
            name: FeedstockStage(stage, since)  # type: ignore[arg-type]
            for name, stage, since in rows
        }
        return StagePolicy.open(stages, gate.session)

    def refresh(self, name: str | None = None) -> list[ChannelRefresh]:
        """One pass over every channel (or `name`'s); each document's outcome."""
        targets, defined, without_noarch = self._targets(name)
        if not targets:
            self.prune()
            return []
        with self.db.read() as session:
            config = load_config(session)
        trust = self.sessions.current()
        if config is None or trust is None:
            raise NotInitialized("the service is not initialized: run `cf-sign service init`")
        conda_keys, mamba_key = split_profiles(
            self.publisher.keys.channel_signers(config.pkg_mgr_keyrefs)
        )
        with self.publisher.files.lock(CHANNELS):
            self.publisher.files.link_channels()
            self._remove_undefined(defined)
            gate = Gate(trust)
            try:
                gate.refresh()
                policy = self._policy(gate)
            except (VerificationError, FormatError) as exc:
                # The service's own documents do not verify: sign nothing, keep what is out.
                log.error("overlay: published trust documents do not verify: %s", exc)
                return [self._failed(t, f"trust documents: {exc}") for t in targets]
            store = AttestationStore(str(self.home))
            results = [self._one(t, gate, store, conda_keys, mamba_key, policy) for t in targets]
            for channel in sorted(without_noarch & {t.channel for t in targets}):
                self._empty_noarch(channel)
        return results

    def _one(
        self,
        t: _Target,
        gate: Gate,
        store: AttestationStore,
        keys: list[MessageSigner],
        mamba_key: MessageSigner | None,
        policy: StagePolicy,
    ) -> ChannelRefresh:
        try:
            result = refresh_overlay(
                t.channel, t.subdir, t.upstream, gate=gate, store=store, keys=keys,
                mamba_key=mamba_key, publish_root=self.home, state_dir=self.home / STATE,
                jobs=self.jobs, policy=policy, document=t.document,
            )  # fmt: skip
        except (VerificationError, FormatError) as exc:
            log.warning("overlay %s/%s/%s: %s", t.channel, t.subdir, t.document, exc)
            return self._failed(t, str(exc))
        if result.published:
            self._to_targets(t)
        self._record(t, result, None)
        return ChannelRefresh(
            channel=t.channel, subdir=t.subdir, document=t.document, ok=True,
            published=result.published, upstream_changed=result.upstream_changed,
            records=result.records, attested=result.signed - result.observed,
            observed=result.observed, unattested=result.unattested, refused=result.refused,
            cached=result.cached, coverage=round(result.coverage, 6),
        )  # fmt: skip

    def _failed(self, t: _Target, error: str) -> ChannelRefresh:
        self._record(t, None, error)
        return ChannelRefresh(
            channel=t.channel, subdir=t.subdir, document=t.document, ok=False, error=error
        )

    def _record(self, t: _Target, result: OverlayResult | None, error: str | None) -> None:
        if t.document != "repodata.json":
            if error is None:
                return  # the figures are the full repodata's
            error = f"{t.document}: {error}"
        now = system_clock().replace(microsecond=0)
        with self.db.write() as session:
            row = session.execute(
                select(ChannelSubdir)
                .join(Channel, ChannelSubdir.channel_id == Channel.id)
                .where(Channel.name == t.channel, ChannelSubdir.subdir == t.subdir)
            ).scalar_one_or_none()
            if row is None:
                return  # removed meanwhile
            row.refreshed_at, row.error = now, error
            if result is not None:
                row.records, row.observed = result.records, result.observed
                row.attested = result.signed - result.observed
                row.unattested, row.refused = result.unattested, result.refused
                if result.published:
                    row.published_at, row.lag_seconds = now, result.lag_seconds
            session.commit()

    def _to_targets(self, t: _Target) -> None:
        for blob in self.publisher.targets:
            for name in (t.document + ".zst", t.document):  # the plain one last, as on disk
                relpath = layout.channel_repodata_path(t.channel, t.subdir, name)
                try:
                    blob.put(relpath, (self.home / relpath).read_bytes())
                except (FormatError, OSError) as exc:
                    log.warning("overlay: publishing %s to %s failed: %s", relpath,
                                blob.location.url, exc)  # fmt: skip

    def _empty_noarch(self, channel: str) -> None:
        target = self.channels_dir / channel / "noarch" / "repodata.json"
        if not target.exists():
            write_document(target, EMPTY_NOARCH)

    def prune(self) -> None:
        """Remove the files of channels no longer defined (by any replica) from here."""
        _, defined, _ = self._targets(None)
        with self.publisher.files.lock(CHANNELS):
            self._remove_undefined(defined)

    def _remove_undefined(self, defined: set[str]) -> None:
        """Channels removed (by any replica) leave this publish directory too."""
        for parent in (self.channels_dir, self.home / STATE):
            if not parent.is_dir():
                continue
            for entry in parent.iterdir():
                if entry.is_dir() and not entry.is_symlink() and entry.name not in defined:
                    shutil.rmtree(entry, ignore_errors=True)
                    log.info("overlay: removed %s (channel no longer defined)", entry)
