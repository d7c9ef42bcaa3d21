"""A configured channel's channel-layer keys: root chain, key_mgr, pkg_mgr delegation.

The one place where the plugin and `cf-sign conda` reach the trust repository. The state
directory is the verifier's (`$XDG_CACHE_HOME/cf-sign/<hash of the trust location>`), so
`cf-sign verify`, `repodata verify` and conda share what they have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from signer.conda_plugin.config import ChannelTrust
from signer.trust.metadata import Delegation

DEFAULT_SKEW = timedelta(seconds=60)
DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True)
class ChannelKeys:
    """What the channel's records are checked against, and what it came from."""

    location: str
    state_dir: Path
    pkg_mgr: Delegation
    root_version: int
    root_expires: str
    key_mgr_version: int
    key_mgr_expires: str


def open_channel_trust(
    entry: ChannelTrust,
    *,
    now: datetime | None = None,
    skew: timedelta = DEFAULT_SKEW,
    timeout: float = DEFAULT_TIMEOUT,
    state_dir: Path | None = None,
) -> ChannelKeys:
    """Walk the root chain from the configured anchor and verify key_mgr.

    Raises VerificationError (the repository does not verify: refuse) or FormatError (the
    configured anchor is missing or malformed: refuse too, with the file named).
    """
    from signer.fetch import default_state_dir, open_source
    from signer.trust.errors import FormatError
    from signer.trust.jsonload import MAX_DELEGATING, read_file
    from signer.trust.repository import choose_anchor, load_key_mgr, update_root
    from signer.trust.state import TrustState
    from signer.trust.timefmt import system_clock

    source = open_source(entry.trust, timeout=timeout)
    if not source.location.startswith("http") and not Path(entry.trust).is_dir():
        raise FormatError(entry.trust, "trust", "not a directory or an http(s) URL")
    state_path = state_dir or default_state_dir(source.location)
    state = TrustState(state_path)
    anchor = choose_anchor(
        read_file(str(entry.root), MAX_DELEGATING), str(entry.root), state
    )
    when = now or system_clock()
    root = update_root(source.fetch, anchor, when, skew, state)
    key_mgr = load_key_mgr(source.fetch, root, when, skew, state)
    return ChannelKeys(
        location=source.location,
        state_dir=state_path,
        pkg_mgr=key_mgr.meta.delegations["pkg_mgr"],
        root_version=root.meta.version,
        root_expires=root.meta.expiration,
        key_mgr_version=key_mgr.meta.version,
        key_mgr_expires=key_mgr.meta.expiration,
    )
