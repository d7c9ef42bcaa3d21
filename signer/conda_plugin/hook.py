"""The checks behind the hooks: refuse a transaction whose trusted-channel records do not
verify.

The post-solve hook runs after the solve and before anything is downloaded. It reads the
repodata from conda's own cache (the file the solver just used), so it fetches no repodata
of its own; only the channel's trust documents (the next root, key_mgr, pkg_mgr) are
fetched, once per channel. Records that skipped the solver (explicit installs) are checked
by the pre-transaction hook the same way, before anything is linked.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conda import CondaError

from signer.conda_plugin.config import WHERE, ChannelTrust, parse_channels, plain
from signer.conda_plugin.enforce import COMPARED, Candidate, Problem, check_subdir

if TYPE_CHECKING:
    from conda.models.records import PackageRecord


class TrustRefusedError(CondaError):  # type: ignore[misc]
    """Records of a trusted channel did not verify: nothing is downloaded or linked."""

    return_code = 1


class TrustConfigError(CondaError):  # type: ignore[misc]
    """The plugin's .condarc setting is malformed: nothing is trusted, nothing proceeds."""

    return_code = 1


def configured_channels() -> list[ChannelTrust]:
    from conda.base.context import context

    from signer.trust.errors import FormatError

    raw = getattr(context.plugins, "cf_sign_channels", None)
    try:
        return parse_channels(plain(raw))
    except FormatError as exc:
        raise TrustConfigError(f"cf-sign: .condarc {exc}") from None


def channel_url(name: str) -> str | None:
    """The base URL conda gives a channel name or URL (what records carry)."""
    from conda.models.channel import Channel

    url: str | None = Channel(name).base_url
    return url.rstrip("/") if url else None


# An explicit install (`@EXPLICIT` file, package URL) builds its records from URLs: they
# carry no depends, so only what decides the download is compared.
EXPLICIT_COMPARED = ("name", "version", "build", "sha256", "md5", "size", "subdir")

# Records this process has already checked (post-solve), by URL and hash: the
# pre-transaction check then looks only at records that skipped the solver.
_CHECKED: set[tuple[str, str]] = set()


def _key(prec: PackageRecord) -> tuple[str, str]:
    return (str(getattr(prec, "url", None) or prec.fn),
            str(getattr(prec, "sha256", None) or getattr(prec, "md5", None) or ""))  # fmt: skip


def _candidate(prec: PackageRecord, compared: Sequence[str] = COMPARED) -> Candidate:
    fields: dict[str, Any] = {}
    for name in compared:
        value = getattr(prec, name, None)
        if value is not None:
            fields[name] = value
    return Candidate(prec.fn, prec.subdir, fields)


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _cached_repodata(channel: Any, subdir: str, repodata_fn: str, *, fetch: bool) -> Path | None:
    """The repodata file conda solved from, in its cache (None when it has none).

    conda falls back from current_repodata.json to repodata.json when a channel has no
    current_repodata.json, and still reports the name it asked for: look where it looked.
    Any validly signed record of the channel will do: what is compared is the record conda
    acts on against a signed one, not which file conda read it from.
    """
    from conda.core.subdir_data import SubdirData
    from conda.models.channel import Channel

    if getattr(channel, "package_filename", None):  # a record made from a URL
        channel = Channel(f"{channel.base_url}/{subdir}")
    names = [repodata_fn] + (["repodata.json"] if repodata_fn != "repodata.json" else [])
    for name in names:
        path = Path(SubdirData(channel, repodata_fn=name).cache_path_json)
        if path.is_file():
            return path
    if fetch:  # no solve fetched it (explicit install): ask conda, as a solve would
        fetcher = SubdirData(channel, repodata_fn="repodata.json").repo_fetch
        path = Path(fetcher.fetch_latest_path()[0])
        return path if path.is_file() else None
    return None


def _check_channel(
    entry: ChannelTrust, precs: Sequence[PackageRecord], repodata_fn: str, explicit: bool
) -> tuple[list[Problem], str]:
    from signer.conda_plugin.trust import open_channel_trust
    from signer.trust.errors import FormatError, VerificationError

    try:
        keys = open_channel_trust(entry)
    except (VerificationError, FormatError) as exc:
        return [Problem(p.fn, "trust", str(exc)) for p in precs], ""
    by_subdir: dict[str, list[PackageRecord]] = defaultdict(list)
    for prec in precs:
        by_subdir[prec.subdir].append(prec)
    problems: list[Problem] = []
    for subdir, group in sorted(by_subdir.items()):
        try:
            path = _cached_repodata(group[0].channel, subdir, repodata_fn, fetch=explicit)
        except (ValueError, TypeError, OSError, CondaError) as exc:
            problems += [Problem(p.fn, "repodata", f"conda's cache: {exc}") for p in group]
            continue
        if path is None:
            why = (f"no {repodata_fn} of {subdir} in conda's cache (cf-sign verifies the "
                   "channel's repodata.json; sharded repodata is not signed)")  # fmt: skip
            problems += [Problem(p.fn, "repodata", why) for p in group]
            continue
        compared = EXPLICIT_COMPARED if explicit else COMPARED
        problems += check_subdir(path, [_candidate(p, compared) for p in group], keys.session)
    summary = (f"root v{keys.root_version} (expires {keys.root_expires}), "
               f"key_mgr v{keys.key_mgr_version} (expires {keys.key_mgr_expires})")  # fmt: skip
    return problems, summary


def enforce_transaction(
    repodata_fn: str, link_precs: Iterable[PackageRecord], *, explicit: bool = False
) -> None:
    """Raise TrustRefusedError when a record of an enforced channel does not verify.

    `explicit`: the pre-transaction check (after the download, before anything is linked)
    of records no solve has checked in this process.
    """
    entries = configured_channels()
    if not entries:
        return
    by_url: dict[str, ChannelTrust] = {}
    for entry in entries:
        url = channel_url(entry.channel)
        if url is None:
            raise TrustConfigError(
                f"cf-sign: .condarc {WHERE}[{entry.channel!r}]: not a channel conda can resolve"
            )
        by_url[url] = entry
    groups: dict[str, list[PackageRecord]] = defaultdict(list)
    for prec in link_precs:
        base = getattr(prec.channel, "base_url", None)
        if base and base.rstrip("/") in by_url and not (explicit and _key(prec) in _CHECKED):
            groups[base.rstrip("/")].append(prec)
    refused: list[str] = []
    for url, precs in groups.items():
        entry = by_url[url]
        started = time.perf_counter()
        problems, summary = _check_channel(entry, precs, repodata_fn, explicit)
        took = time.perf_counter() - started
        if not entry.enforcing or not problems:
            _CHECKED.update(_key(p) for p in precs)
        lines = [f"{p.filename} from {url}: {p.check}: {p.reason}" for p in problems]
        if not problems:
            _say(f"cf-sign: verified {len(precs)} record(s) from {url} in {took:.2f} s: {summary}")
        elif entry.enforcing:
            refused += lines
        else:
            for line in lines:
                _say(f"cf-sign (observe, not refused): {line}")
            ok = len(precs) - len({p.filename for p in problems})
            _say(f"cf-sign (observe): {ok} of {len(precs)} record(s) from {url} verified")
    if refused:
        body = "\n".join(f"  {line}" for line in refused)
        done = "nothing was linked" if explicit else "nothing was downloaded or linked"
        raise TrustRefusedError(
            "cf-sign refused the transaction (records of a trusted channel do not verify; "
            f"{done}):\n{body}"
        )
