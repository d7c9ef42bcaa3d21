"""Workflows behind `cf-sign conda trust|status|verify-cache` (the CLI only prints)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signer.client import ArtifactVerdict
from signer.conda_plugin.config import (
    ChannelTrust,
    parse_entry,
    prefix_condarc,
    read_condarc_channels,
    user_condarc,
    write_channel,
)
from signer.conda_plugin.trust import ChannelKeys, open_channel_trust
from signer.trust.errors import FormatError, VerificationError


def trust_channel(
    channel: str, trust: str, root: Path, policy: str, *, user: bool
) -> tuple[Path, ChannelTrust, ChannelKeys]:
    """Check the anchor and the repository now, then write the entry (nothing on failure).

    FormatError: a bad argument or an unreadable file; VerificationError: the repository
    does not verify from this root (the .condarc is left as it was).
    """
    root = Path(os.path.expanduser(str(root))).absolute()
    if not root.is_file():
        raise FormatError(str(root), "root", "no such file")
    if not trust.startswith(("http://", "https://", "file://")):
        trust_dir = Path(os.path.expanduser(trust)).absolute()
        if not trust_dir.is_dir():
            raise FormatError(trust, "trust", "not a directory or an http(s) URL")
        trust = str(trust_dir)
    entry = parse_entry(channel, {"trust": trust, "root": str(root), "policy": policy})
    keys = open_channel_trust(entry)
    target = user_condarc() if user else prefix_condarc()
    write_channel(target, entry)
    return target, entry, keys


@dataclass
class ChannelStatus:
    entry: ChannelTrust
    source: str
    url: str | None = None
    keys: ChannelKeys | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "channel": self.entry.channel,
            "url": self.url,
            "policy": self.entry.policy,
            "trust": self.entry.trust,
            "root": str(self.entry.root),
            "source": self.source,
            "ok": self.error is None,
        }
        if self.keys is not None:
            out.update(
                state_dir=str(self.keys.state_dir),
                root_version=self.keys.root_version,
                root_expires=self.keys.root_expires,
                key_mgr_version=self.keys.key_mgr_version,
                key_mgr_expires=self.keys.key_mgr_expires,
                pkg_mgr_version=self.keys.pkg_mgr_version,
                pkg_mgr_expires=self.keys.pkg_mgr_expires,
                pkg_mgr_keys=list(self.keys.pkg_mgr.pubkeys),
                pkg_mgr_threshold=self.keys.pkg_mgr.threshold,
            )
        if self.error is not None:
            out["error"] = self.error
        return out


def _conda_view() -> list[tuple[ChannelTrust, str]] | None:
    """Entries as conda merges them (with the file each came from), or None without conda."""
    try:
        from conda.base.context import context, reset_context
    except ImportError:
        return None
    from signer.conda_plugin.config import parse_channels, plain

    reset_context()
    merged = parse_channels(plain(getattr(context.plugins, "cf_sign_channels", None)))
    sources: dict[str, str] = {}
    for src in context.raw_data:
        if isinstance(src, Path):
            for entry in read_condarc_channels(src):
                sources[entry.channel] = str(src)
    return [(e, sources.get(e.channel, "(conda configuration)")) for e in merged]


def _files_view() -> list[tuple[ChannelTrust, str]]:
    files = [user_condarc(), prefix_condarc()]
    if os.environ.get("CONDARC"):
        files.append(Path(os.environ["CONDARC"]))
    merged: dict[str, tuple[ChannelTrust, str]] = {}
    for path in files:
        for entry in read_condarc_channels(path):
            merged[entry.channel] = (entry, str(path))
    return list(merged.values())


def _url(channel: str) -> str | None:
    try:
        from conda.models.channel import Channel
    except ImportError:
        return None
    url: str | None = Channel(channel).base_url
    return url


def channel_status(*, check: bool = True) -> list[ChannelStatus]:
    """Every configured channel and, with `check`, its verified trust documents."""
    view = _conda_view()
    entries = view if view is not None else _files_view()
    out: list[ChannelStatus] = []
    for entry, source in entries:
        status = ChannelStatus(entry, source, _url(entry.channel))
        if check:
            try:
                status.keys = open_channel_trust(entry)
            except (VerificationError, FormatError) as exc:
                status.error = str(exc)
        out.append(status)
    return out


# --- verify-cache: the feedstock layer for archives already in a package cache ---


@dataclass
class CachedArchive:
    path: Path
    channel: str | None  # base URL from conda's repodata_record.json / urls.txt


@dataclass
class CacheReport:
    verdicts: list[ArtifactVerdict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (archive, why)


def default_pkgs_dir() -> Path:
    try:
        from conda.base.context import context, reset_context
    except ImportError:
        raise FormatError("PKGS_DIR", "", "conda is not importable here: name the cache") from None
    reset_context()
    dirs = list(context.pkgs_dirs)
    if not dirs:
        raise FormatError("PKGS_DIR", "", "conda has no package cache configured")
    return Path(dirs[0])


def _channel_of(archive: Path, urls: dict[str, str]) -> str | None:
    import json

    stem = archive.name.removesuffix(".conda").removesuffix(".tar.bz2")
    record = archive.parent / stem / "info" / "repodata_record.json"
    try:
        data = json.loads(record.read_bytes()[: 1024 * 1024])
        url = data.get("url") if isinstance(data, dict) else None
    except (OSError, ValueError):
        url = None
    url = url if isinstance(url, str) else urls.get(archive.name)
    if not url:
        return None
    # <channel>/<subdir>/<file>: the channel is what is left of the URL.
    parts = url.rsplit("/", 2)
    return parts[0].rstrip("/") if len(parts) == 3 else None


def cached_archives(pkgs_dir: Path) -> Iterator[CachedArchive]:
    if not pkgs_dir.is_dir():
        raise FormatError(str(pkgs_dir), "PKGS_DIR", "not a directory")
    urls: dict[str, str] = {}
    try:
        for line in (pkgs_dir / "urls.txt").read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                urls[line.rsplit("/", 1)[-1]] = line
    except (OSError, UnicodeDecodeError):
        pass
    for path in sorted(pkgs_dir.iterdir()):
        if path.is_file() and path.name.endswith((".conda", ".tar.bz2")):
            yield CachedArchive(path, _channel_of(path, urls))


def verify_cache(pkgs_dir: Path, override: ChannelTrust | None = None) -> CacheReport:
    """`cf-sign verify` on each cached archive of a configured channel (or every archive
    against `override`); archives of channels not configured are listed as skipped."""
    from signer.client import TrustSession
    from signer.client.artifact import failed

    report = CacheReport()
    archives = list(cached_archives(pkgs_dir))
    by_url: dict[str, ChannelTrust] = {}
    if override is None:
        for status in channel_status(check=False):
            by_url[(status.url or status.entry.channel).rstrip("/")] = status.entry
    sessions: dict[tuple[str, Path], TrustSession | VerificationError] = {}
    for archive in archives:
        entry = override or (by_url.get(archive.channel) if archive.channel else None)
        if entry is None:
            why = f"channel {archive.channel} is not configured" if archive.channel else (
                "channel unknown (no repodata_record.json or urls.txt entry)")  # fmt: skip
            report.skipped.append((archive.path.name, why))
            continue
        key = (entry.trust, entry.root)
        if key not in sessions:
            try:
                sessions[key] = open_channel_trust(entry).session
            except VerificationError as exc:
                sessions[key] = exc
            except FormatError as exc:
                sessions[key] = VerificationError(exc.source, "trust", exc.reason)
        session = sessions[key]
        verdict: ArtifactVerdict
        if isinstance(session, VerificationError):
            verdict = failed(archive.path.name, session)
        else:
            try:
                verdict = session.verify_artifact(archive.path)
            except FormatError as exc:  # an archive that cannot be read: it does not verify
                verdict = failed(archive.path.name,
                                 VerificationError(exc.source, "format", exc.reason))  # fmt: skip
        report.verdicts.append(verdict)
    return report
