"""`cf-sign repodata index|sign|verify`: the channel layer that conda and mamba check."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from signer.cli.common import add_trust_options, emit_json, positive_int, print_table

MAX_FAILURE_LINES = 20


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rd = sub.add_parser("repodata", help="index, sign and verify channel repodata")
    rd_sub = rd.add_subparsers(dest="repodata_command", metavar="ACTION", required=True)

    index = rd_sub.add_parser("index", help="write repodata.json for a subdir of packages")
    index.add_argument("directory", type=Path, metavar="DIR")
    index.add_argument("--subdir", help="subdir name (default: the directory's name)")
    index.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    index.set_defaults(handler=repodata_index)

    sign = rd_sub.add_parser("sign", help="sign every record (pkg_mgr key)")
    sign.add_argument("repodata", type=Path, metavar="REPODATA")
    sign.add_argument(
        "--key",
        required=True,
        metavar="KEYREF",
        help="pkg_mgr key: signs the full record (what conda verifies)",
    )
    sign.add_argument(
        "--mamba-key",
        metavar="KEYREF",
        help="second pkg_mgr key: signs mamba's subset of each record",
    )
    sign.add_argument("--passphrase-env", metavar="VAR")
    sign.add_argument("--jobs", type=positive_int, help="processes (default: all cores)")
    sign.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT",
        help="write here (default: replace REPODATA atomically)",
    )
    sign.set_defaults(handler=repodata_sign)

    verify = rd_sub.add_parser("verify", help="verify root chain, key_mgr and every record")
    verify.add_argument("repodata", type=Path, metavar="REPODATA")
    add_trust_options(verify)
    verify.add_argument("--jobs", type=positive_int, help="processes (default: all cores)")
    verify.add_argument(
        "--allow-unsigned", action="store_true", help="do not fail on records without signatures"
    )
    verify.add_argument(
        "--mamba", action="store_true", help="also verify every mamba-profile signature"
    )
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    verify.set_defaults(handler=repodata_verify)


def repodata_index(args: argparse.Namespace) -> int:
    from signer.repodata.index import index_directory
    from signer.trust.errors import FormatError
    from signer.trust.state import write_atomic

    if not args.directory.is_dir():
        raise FormatError(str(args.directory), "DIR", "not a directory")
    doc = index_directory(args.directory, args.subdir)
    write_atomic(args.output, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
    count = len(doc["packages"]) + len(doc["packages.conda"])
    print(f"indexed {count} packages of {doc['info']['subdir']} -> {args.output}")
    return 0


def repodata_sign(args: argparse.Namespace) -> int:
    import time

    from signer.keys import resolve_keyref
    from signer.repodata.document import read_repodata
    from signer.repodata.parallel import default_jobs
    from signer.repodata.sign import sign_repodata
    from signer.trust.state import write_atomic

    started = time.perf_counter()
    key = resolve_keyref(args.key, passphrase_env=args.passphrase_env)
    mamba = (
        resolve_keyref(args.mamba_key, passphrase_env=args.passphrase_env)
        if args.mamba_key
        else None
    )
    split = read_repodata(args.repodata)
    signatures = sign_repodata(split, key, mamba, jobs=args.jobs or default_jobs())
    count = len(signatures)
    output = args.output or args.repodata
    write_atomic(output, split.to_pieces(signatures))
    elapsed = time.perf_counter() - started
    profiles = "conda + mamba profiles" if mamba else "conda profile"
    print(f"signed {count} records ({profiles}) -> {output}  [{elapsed:.2f} s]")
    print(f"  key        {key.public_key_hex}")
    if mamba:
        print(f"  mamba key  {mamba.public_key_hex}")
    return 0


def _progress(total: int) -> tuple[Any, Any]:
    """A rich progress bar on a terminal for big channels; otherwise nothing."""
    if total < 10_000 or not sys.stderr.isatty():
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress("verifying", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        transient=True, console=None)  # fmt: skip
    task = progress.add_task("records", total=total)
    return progress, lambda n: progress.advance(task, n)


def repodata_verify(args: argparse.Namespace) -> int:
    from signer.cli.common import open_session, report_notices, verification_hint
    from signer.repodata.document import read_repodata
    from signer.trust.errors import VerificationError

    split = read_repodata(args.repodata, members=False)
    session = open_session(args)
    try:
        session.refresh()
    except VerificationError as exc:
        raise verification_hint(exc) from None
    finally:
        report_notices(session)
    root, key_mgr = session.root, session.key_mgr
    pkg_mgr = key_mgr.meta.pkg_mgr_keys
    progress, advance = _progress(len(split.records))
    if progress is not None:
        progress.start()
    try:
        report = session.verify_repodata(split, jobs=args.jobs, check_mamba=args.mamba,
                                         on_progress=advance)  # fmt: skip
    finally:
        if progress is not None:
            progress.stop()
    ok = report.ok(args.allow_unsigned)
    subdir = split.subdir
    if args.json:
        emit_json({
            "repodata": str(args.repodata), "subdir": subdir, "ok": ok,
            "root_version": root.meta.version, "key_mgr_version": key_mgr.meta.version,
            "pkg_mgr": {"pubkeys": list(pkg_mgr.pubkeys), "threshold": pkg_mgr.threshold},
            "records": report.records, "valid": report.valid, "invalid": report.invalid,
            "unsigned": report.unsigned, "mamba_only": report.mamba_only,
            "mamba_valid_signatures": report.mamba_valid, "file_name_mismatches": report.mismatches,
            "failures": [f._asdict() for f in report.failures],
        })  # fmt: skip
        return 0 if ok else 1
    print_table([
        ("repodata", f"{args.repodata}  ({subdir})"),
        ("trust", f"root v{root.meta.version}, key_mgr v{key_mgr.meta.version}, "
                  f"pkg_mgr {pkg_mgr.threshold} of {len(pkg_mgr.pubkeys)} keys"),
        ("records", str(report.records)),
        ("valid", str(report.valid)),
        ("invalid", str(report.invalid)),
        ("unsigned", str(report.unsigned) + ("  (allowed)" if args.allow_unsigned else "")),
        ("mamba-only", str(report.mamba_only)),
        ("file-name mismatches", str(report.mismatches)),
    ])  # fmt: skip
    shown = [f for f in report.failures if f.check != "unsigned" or not args.allow_unsigned]
    for failure in shown[:MAX_FAILURE_LINES]:
        print(f"FAIL {subdir}/{failure.filename}: {failure.check}: {failure.reason}")
    if len(shown) > MAX_FAILURE_LINES:
        print(f"... and {len(shown) - MAX_FAILURE_LINES} more (--json lists them all)")
    print("OK: every record is validly signed" if ok else "FAILED")
    return 0 if ok else 1
