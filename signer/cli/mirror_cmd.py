"""`cf-sign mirror sync|verify`: copy a channel only as far as it verifies (section 11)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from signer.cli.common import add_trust_options, emit_json, positive_int, positive_seconds

MAX_LINES = 50


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    mirror = sub.add_parser("mirror", help="mirror a channel, publishing only what verifies")
    m_sub = mirror.add_subparsers(dest="mirror_command", metavar="ACTION", required=True)

    sync = m_sub.add_parser("sync", help="download, verify and publish a channel's subdirs")
    sync.add_argument("upstream", metavar="UPSTREAM", help="channel root: URL or directory")
    sync.add_argument("dest", type=Path, metavar="DEST", help="the mirror's channel root")
    add_trust_options(sync)
    sync.add_argument(
        "--subdir", action="append", metavar="S",
        help="subdir to mirror (repeat; default: every subdir of a directory upstream, "
        "noarch for a URL)",
    )  # fmt: skip
    sync.add_argument("--key", action="append", metavar="KEYREF",
                      help="re-sign with the mirror's own pkg_mgr key (conda profile)")  # fmt: skip
    sync.add_argument("--mamba-key", metavar="KEYREF", help="the mirror's mamba-profile key")
    sync.add_argument("--passphrase-env", metavar="VAR")
    sync.add_argument("--jobs", type=positive_int, default=8,
                      help="concurrent downloads (default 8)")  # fmt: skip
    sync.add_argument(
        "--grace", type=positive_seconds, default=3 * 24 * 3600.0, metavar="SECONDS",
        help="keep files gone upstream this long before deleting them (default 3 days)",
    )  # fmt: skip
    sync.add_argument("--retries", type=positive_int, default=3, help="per download (default 3)")
    sync.add_argument("--json", action="store_true", help="machine-readable report")
    sync.add_argument(
        "--publish-to",
        metavar="azblob://ACCOUNT/CONTAINER[/PREFIX]",
        help="also publish the mirror to Azure Blob Storage (artifacts first, repodata last)",
    )
    sync.set_defaults(handler=mirror_sync)

    verify = m_sub.add_parser("verify", help="re-check a mirror at rest")
    verify.add_argument("dest", type=Path, metavar="DEST")
    add_trust_options(verify)
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.set_defaults(handler=mirror_verify)


class _Bars:
    """rich progress: one bar of bytes and one of files, on a terminal only."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), transient=True)  # fmt: skip
        self.count = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              transient=True)  # fmt: skip
        self._bytes: Any = None
        self._files: Any = None

    def files(self, subdir: str, count: int, total_bytes: int | None) -> None:
        if self._bytes is None:
            self.bar.start()
            self._bytes = self.bar.add_task(subdir, total=total_bytes)
            self._files = self.bar.add_task("files", total=count)
        else:
            self.bar.reset(self._bytes, total=total_bytes, description=subdir)
            self.bar.reset(self._files, total=count)

    def advance(self, nbytes: int) -> None:
        self.bar.advance(self._bytes, nbytes)

    def file_done(self) -> None:
        self.bar.advance(self._files, 1)

    def stop(self) -> None:
        if self._bytes is not None:
            self.bar.stop()


def _print(report: Any) -> None:
    for sub in report.subdirs:
        if sub.error:
            print(f"FAIL {sub.subdir}: {sub.error} (nothing published)")
            continue
        for p in sub.refused[:MAX_LINES]:
            print(f"REFUSED {sub.subdir}/{p.file}: {p.check}: {p.reason}")
        for p in sub.quarantined[:MAX_LINES]:
            print(f"QUARANTINED {sub.subdir}/{p.file}: {p.check}: {p.reason}")
        more = max(0, len(sub.refused) - MAX_LINES) + max(0, len(sub.quarantined) - MAX_LINES)
        if more:
            print(f"... and {more} more (--json lists them all)")
        print(
            f"{sub.subdir}: {sub.records} records, {sub.published} published "
            f"({sub.downloaded} downloaded, {sub.resumed} resumed, {sub.reused} unchanged), "
            f"{len(sub.refused)} refused, {len(sub.quarantined)} quarantined, "
            f"{len(sub.removed)} removed"
        )


def mirror_sync(args: argparse.Namespace) -> int:
    from signer.channel.gate import Gate
    from signer.cli.common import open_session, report_notices, verification_hint
    from signer.keys import channel_signer
    from signer.mirror.sync import SyncOptions, sync
    from signer.mirror.upstream import Upstream
    from signer.repodata.parallel import default_jobs
    from signer.trust.errors import FormatError, VerificationError

    upstream = Upstream(args.upstream, timeout=args.timeout, retries=args.retries)
    if not upstream.remote and not Path(args.upstream).is_dir():
        raise FormatError(args.upstream, "UPSTREAM", "not a directory or an http(s) URL")
    if args.mamba_key and not args.key:
        raise FormatError("--mamba-key", "", "re-signing needs --key as well")
    keys = [channel_signer(k, passphrase_env=args.passphrase_env) for k in args.key or []]
    mamba = (
        channel_signer(args.mamba_key, passphrase_env=args.passphrase_env)
        if args.mamba_key
        else None
    )
    subdirs = args.subdir or upstream.subdirs() or ["noarch"]
    gate = Gate(open_session(args))
    blob = None
    if args.publish_to:
        from signer.storage import BlobTarget

        blob = BlobTarget(args.publish_to)
        blob.check_writable()  # fails now, not after the downloads
    options = SyncOptions(jobs=args.jobs, keys=keys, mamba_key=mamba, grace=args.grace,
                          verify_jobs=default_jobs(), publish_to=blob)  # fmt: skip
    bars = _Bars() if sys.stderr.isatty() and not args.json else None
    try:
        report = sync(upstream, args.dest, gate, subdirs, options, bars)
    except VerificationError as exc:
        raise verification_hint(exc) from None
    finally:
        if bars is not None:
            bars.stop()
    report_notices(gate.session)
    if args.json:
        emit_json(report.to_json())
    else:
        _print(report)
        print("OK" if report.ok else "FAILED: something was refused or quarantined")
    return 0 if report.ok else 1


def mirror_verify(args: argparse.Namespace) -> int:
    from signer.channel.gate import Gate
    from signer.cli.common import open_session, verification_hint
    from signer.mirror.sync import verify_mirror
    from signer.repodata.parallel import default_jobs
    from signer.trust.errors import FormatError, VerificationError

    if not args.dest.is_dir():
        raise FormatError(str(args.dest), "DEST", "not a directory")
    gate = Gate(open_session(args))
    try:
        report = verify_mirror(args.dest, gate, jobs=default_jobs())
    except VerificationError as exc:
        raise verification_hint(exc) from None
    if args.json:
        emit_json(report.to_json())
    else:
        for sub in report.subdirs:
            if sub.error:
                print(f"FAIL {sub.subdir}: {sub.error}")
            for p in sub.refused[:MAX_LINES]:
                print(f"FAIL {sub.subdir}/{p.file}: {p.check}: {p.reason}")
            print(f"{sub.subdir}: {sub.records} records, {sub.published} verified")
        print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1
