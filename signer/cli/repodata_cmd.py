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

    sign = rd_sub.add_parser("sign", help="sign every record (pkg_mgr keys)")
    sign.add_argument("repodata", type=Path, metavar="REPODATA")
    sign.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEYREF",
        help="pkg_mgr key signing the full record (what conda verifies); repeatable",
    )
    sign.add_argument(
        "--mamba-key",
        action="append",
        default=[],
        metavar="KEYREF",
        help="pkg_mgr key signing libmamba's signable of each record (what mamba "
        "verifies); repeatable",
    )
    sign.add_argument(
        "--drop-other-signatures",
        action="store_true",
        help="do not keep other keys' signatures (default: kept where still valid)",
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
        "--profile",
        choices=("conda", "mamba", "both"),
        default=None,
        help="whose acceptance to check: conda (whole-record signatures, the default), "
        "mamba (libmamba's signable, and pkg_mgr.json) or both",
    )
    verify.add_argument("--mamba", action="store_true", help="same as --profile both")
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

    from signer.keys import channel_signer
    from signer.repodata.document import read_repodata
    from signer.repodata.parallel import default_jobs
    from signer.repodata.sign import ProfileKey, sign_repodata
    from signer.trust.errors import FormatError
    from signer.trust.state import write_atomic

    if not args.key and not args.mamba_key:
        raise FormatError("repodata sign", "--key", "give at least one --key or --mamba-key")
    started = time.perf_counter()
    keys = [ProfileKey(channel_signer(ref, passphrase_env=args.passphrase_env), "conda")
            for ref in args.key]  # fmt: skip
    keys += [ProfileKey(channel_signer(ref, passphrase_env=args.passphrase_env), "mamba")
             for ref in args.mamba_key]  # fmt: skip
    hexkeys = [k.signer.public_key_hex for k in keys]
    if len(set(hexkeys)) != len(hexkeys):
        raise FormatError("repodata sign", "--key/--mamba-key",
                          "the same key is given twice (one key signs one profile)")  # fmt: skip
    split = read_repodata(args.repodata)
    result = sign_repodata(split, keys, jobs=args.jobs or default_jobs(),
                           keep_others=not args.drop_other_signatures)  # fmt: skip
    output = args.output or args.repodata
    write_atomic(output, split.to_pieces(result.signatures))
    elapsed = time.perf_counter() - started
    profiles = " + ".join(p for p in ("conda", "mamba") if any(k.profile == p for k in keys))
    print(f"signed {result.records} records ({profiles} profile"
          f"{'s' if '+' in profiles else ''}) -> {output}  [{elapsed:.2f} s]")  # fmt: skip
    for key in keys:
        print(f"  {key.profile + ' key':<10} {key.signer.public_key_hex}")
    if result.kept or result.dropped:
        print(f"  other keys' signatures: {result.kept} kept (still valid), "
              f"{result.dropped} dropped (stale or unreadable)")  # fmt: skip
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


def _profiles(args: argparse.Namespace) -> tuple[str, ...]:
    choice = args.profile or ("both" if args.mamba else "conda")
    return ("conda", "mamba") if choice == "both" else (choice,)


def repodata_verify(args: argparse.Namespace) -> int:
    from signer.cli.common import open_session, report_notices, verification_hint
    from signer.repodata.document import read_repodata
    from signer.trust.errors import VerificationError

    profiles = _profiles(args)
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
        report = session.verify_repodata(split, jobs=args.jobs, profiles=profiles,
                                         on_progress=advance)  # fmt: skip
    finally:
        if progress is not None:
            progress.stop()
    ok = report.ok(args.allow_unsigned)
    subdir = split.subdir
    pkg_mgr_doc = session.pkg_mgr.meta if "mamba" in profiles and session.pkg_mgr else None
    if args.json:
        out: dict[str, Any] = {
            "repodata": str(args.repodata), "subdir": subdir, "ok": ok,
            "root_version": root.meta.version, "key_mgr_version": key_mgr.meta.version,
            "pkg_mgr": {"pubkeys": list(pkg_mgr.pubkeys), "threshold": pkg_mgr.threshold},
            "records": report.records, "file_name_mismatches": report.mismatches,
            "profiles": list(report.profiles),
            "failures": [f._asdict() for f in report.failures],
        }  # fmt: skip
        for name, counts in report.profiles.items():
            out[name] = {**counts._asdict(), "ok": counts.ok(args.allow_unsigned)}
        if pkg_mgr_doc is not None:
            out["mamba"]["pkg_mgr_version"] = pkg_mgr_doc.version
        emit_json(out)
        return 0 if ok else 1
    rows = [
        ("repodata", f"{args.repodata}  ({subdir})"),
        ("trust", f"root v{root.meta.version}, key_mgr v{key_mgr.meta.version}, "
                  f"pkg_mgr {pkg_mgr.threshold} of {len(pkg_mgr.pubkeys)} keys"
                  + (f", pkg_mgr.json v{pkg_mgr_doc.version}" if pkg_mgr_doc else "")),
        ("records", str(report.records)),
    ]  # fmt: skip
    allowed = "  (allowed)" if args.allow_unsigned else ""
    for name, counts in report.profiles.items():
        verdict = "accepted" if counts.ok(args.allow_unsigned) else "NOT accepted"
        line = f"{counts.valid} valid, {counts.invalid} invalid, {counts.unsigned} unsigned"
        rows.append((f"{name} profile", f"{line}{allowed}: {verdict}"))
    rows.append(("file-name mismatches", str(report.mismatches)))
    print_table(rows)
    shown = [f for f in report.failures if f.check != "unsigned" or not args.allow_unsigned]
    for failure in shown[:MAX_FAILURE_LINES]:
        tag = f" [{failure.profile}]" if failure.profile and len(profiles) > 1 else ""
        print(f"FAIL {subdir}/{failure.filename}: {failure.check}{tag}: {failure.reason}")
    if len(shown) > MAX_FAILURE_LINES:
        print(f"... and {len(shown) - MAX_FAILURE_LINES} more (--json lists them all)")
    if ok:
        whom = " and ".join(report.profiles)
        print(
            f"OK: every record is validly signed ({whom} profile{'s' if len(profiles) > 1 else ''})"
        )
    else:
        print("FAILED")
    return 0 if ok else 1
