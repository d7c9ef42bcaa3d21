"""A configured channel's verifier session: root chain, key_mgr, pkg_mgr, state.

The one place where the plugin and `cf-sign conda` reach a trust repository, through the
verifier session (signer.client). The state directory is the verifier's
(`$XDG_CACHE_HOME/cf-sign/<hash of the trust location>`), so `cf-sign verify`,
`repodata verify` and conda share what they have seen (rollback protection included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from signer.client import SessionConfig, TrustSession
from signer.conda_plugin.config import ChannelTrust
from signer.trust.metadata import Delegation

DEFAULT_SKEW = timedelta(seconds=60)
DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True)
class ChannelKeys:
    """A refreshed session, and what it verified (for reports)."""

    session: TrustSession
    state_dir: Path
    pkg_mgr: Delegation
    root_version: int
    root_expires: str
    key_mgr_version: int
    key_mgr_expires: str
    pkg_mgr_version: int | None
    pkg_mgr_expires: str | None

    @property
    def location(self) -> str:
        return self.session.location


def open_channel_trust(
    entry: ChannelTrust,
    *,
    now: datetime | None = None,
    skew: timedelta = DEFAULT_SKEW,
    timeout: float = DEFAULT_TIMEOUT,
    state_dir: Path | None = None,
) -> ChannelKeys:
    """Walk the root chain from the configured anchor; verify key_mgr (and pkg_mgr).

    Raises VerificationError (the repository does not verify: refuse) or FormatError (the
    configured anchor or trust directory is missing or malformed: refuse too).
    """
    config = SessionConfig(clock_skew=skew, timeout=timeout, at=now)
    session = TrustSession.open(entry.trust, root=entry.root, state_dir=state_dir, config=config)
    assert session.state is not None  # open() always gives the session its state
    state_path = session.state.path
    session.refresh()
    pkg_mgr = session.pkg_mgr
    return ChannelKeys(
        session=session,
        state_dir=state_path,
        pkg_mgr=session.key_mgr.meta.pkg_mgr_keys,
        root_version=session.root.meta.version,
        root_expires=session.root.meta.expiration,
        key_mgr_version=session.key_mgr.meta.version,
        key_mgr_expires=session.key_mgr.meta.expiration,
        pkg_mgr_version=pkg_mgr.meta.version if pkg_mgr is not None else None,
        pkg_mgr_expires=pkg_mgr.meta.expiration if pkg_mgr is not None else None,
    )
