"""The post-solve hook: refuse a transaction whose trusted-channel records do not verify.

Runs after the solve and before anything is downloaded. Reads the repodata from conda's
own cache (the file the solver just used), so it fetches no repodata of its own; only the
channel's trust documents (the next root, key_mgr) are fetched, once per channel.
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


def _candidate(prec: PackageRecord) -> Candidate:
    fields: dict[str, Any] = {}
    for name in COMPARED:
        value = getattr(prec, name, None)
        if value is not None:
            fields[name] = value
    return Candidate(prec.fn, prec.subdir, fields)


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _check_channel(
    entry: ChannelTrust, precs: Sequence[PackageRecord], repodata_fn: str
) -> tuple[list[Problem], str]:
    from conda.core.subdir_data import SubdirData

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
            path = Path(SubdirData(group[0].channel, repodata_fn=repodata_fn).cache_path_json)
        except (ValueError, TypeError) as exc:
            problems += [Problem(p.fn, "repodata", f"conda's cache: {exc}") for p in group]
            continue
        if not path.is_file():
            why = f"no {repodata_fn} of {subdir} in conda's cache (sharded repodata is not signed)"
            problems += [Problem(p.fn, "repodata", why) for p in group]
            continue
        problems += check_subdir(path, [_candidate(p) for p in group], keys.session)
    summary = (f"root v{keys.root_version} (expires {keys.root_expires}), "
               f"key_mgr v{keys.key_mgr_version} (expires {keys.key_mgr_expires})")  # fmt: skip
    return problems, summary


def enforce_transaction(repodata_fn: str, link_precs: Iterable[PackageRecord]) -> None:
    """Raise TrustRefusedError when a record of an enforced channel does not verify."""
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
        if base and base.rstrip("/") in by_url:
            groups[base.rstrip("/")].append(prec)
    refused: list[str] = []
    for url, precs in groups.items():
        entry = by_url[url]
        started = time.perf_counter()
        problems, summary = _check_channel(entry, precs, repodata_fn)
        took = time.perf_counter() - started
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
        raise TrustRefusedError(
            "cf-sign refused the transaction (records of a trusted channel do not verify; "
            f"nothing was downloaded or linked):\n{body}"
        )
