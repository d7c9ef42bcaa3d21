"""`cf-sign conda trust|status|verify-cache`: the conda plugin's configuration and checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from signer.cli.common import emit_json, print_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conda = sub.add_parser("conda", help="install-time enforcement in conda (the plugin)")
    conda_sub = conda.add_subparsers(dest="conda_command", metavar="COMMAND")
    conda_sub.required = True

    trust = conda_sub.add_parser(
        "trust", help="enforce a channel: write its trust repository and root to .condarc"
    )
    trust.add_argument("channel", metavar="CHANNEL", help="channel name or URL, as given to conda")
    trust.add_argument("--trust", required=True, metavar="URL|DIR", help="trust repository")
    trust.add_argument("--root", required=True, type=Path, metavar="FILE", help="anchor root")
    trust.add_argument(
        "--policy",
        choices=("enforce", "observe"),
        default="enforce",
        help="enforce (default): refuse what does not verify; observe: report",
    )
    trust.add_argument("--user", action="store_true",
                       help="write ~/.condarc instead of the active prefix's .condarc")  # fmt: skip
    trust.set_defaults(handler=trust_cmd)

    status = conda_sub.add_parser("status", help="channels enforced, trust versions, expiries")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=status_cmd)

    cache = conda_sub.add_parser(
        "verify-cache", help="verify the attestations of archives in a conda package cache"
    )
    cache.add_argument("pkgs_dir", nargs="?", type=Path, metavar="PKGS_DIR",
                       help="package cache (default: conda's first pkgs_dirs entry)")  # fmt: skip
    cache.add_argument(
        "--trust",
        metavar="URL|DIR",
        help="check every archive against this repository (and --root)",
    )
    cache.add_argument("--root", type=Path, metavar="FILE", help="anchor root for --trust")
    cache.add_argument("--json", action="store_true", help="machine-readable output")
    cache.set_defaults(handler=verify_cache_cmd)


def trust_cmd(args: argparse.Namespace) -> int:
    from signer.conda_plugin.manage import trust_channel

    target, entry, keys = trust_channel(
        args.channel, args.trust, args.root, args.policy, user=args.user
    )
    sys.stdout.write(
        f"{entry.policy} {entry.channel}: trust {entry.trust}, root {entry.root}\n"
        f"  verified now: root v{keys.root_version} (expires {keys.root_expires}), "
        f"key_mgr v{keys.key_mgr_version} (expires {keys.key_mgr_expires})\n"
        f"  written to {target}\n"
    )
    if not args.user:
        sys.stdout.write(
            "  conda reads it for commands on that prefix only; --user guards every environment\n"
        )
    return 0


def status_cmd(args: argparse.Namespace) -> int:
    from signer.conda_plugin.manage import channel_status

    statuses = channel_status()
    if args.json:
        emit_json([s.to_json() for s in statuses])
    elif not statuses:
        sys.stdout.write("no channel is configured: conda installs are not checked by cf-sign\n")
    else:
        rows = [("CHANNEL", "POLICY", "ROOT", "KEY_MGR", "EXPIRES (key_mgr)", "TRUST")]
        for s in statuses:
            if s.keys is not None:
                k = s.keys
                versions = (f"v{k.root_version}", f"v{k.key_mgr_version}", k.key_mgr_expires)
                rows.append((s.url or s.entry.channel, s.entry.policy, *versions, s.entry.trust))
            else:
                rows.append((s.url or s.entry.channel, s.entry.policy, "-", "-", "-",
                             s.entry.trust))  # fmt: skip
        print_table(rows)
        for s in statuses:
            if s.error is not None:
                sys.stdout.write(f"FAIL {s.url or s.entry.channel}: {s.error}\n")
    return 0 if all(s.error is None for s in statuses) else 1


def verify_cache_cmd(args: argparse.Namespace) -> int:
    from signer.conda_plugin.config import parse_entry
    from signer.conda_plugin.manage import default_pkgs_dir, verify_cache
    from signer.trust.errors import FormatError

    if (args.trust is None) != (args.root is None):
        raise FormatError("--trust/--root", "", "give both or neither")
    override = None
    if args.trust is not None:
        trust = args.trust if args.trust.startswith("http") else str(Path(args.trust).absolute())
        override = parse_entry("(--trust)", {"trust": trust, "root": str(args.root.absolute())},
                               where="command line")  # fmt: skip
    pkgs_dir = args.pkgs_dir or default_pkgs_dir()
    report = verify_cache(pkgs_dir, override)
    if args.json:
        emit_json({
            "verdicts": [v.to_json() for v in report.verdicts],
            "skipped": [{"artifact": a, "reason": r} for a, r in report.skipped],
        })  # fmt: skip
    else:
        for verdict in report.verdicts:
            sys.stdout.write(verdict.line() + "\n")
        for name, why in report.skipped:
            sys.stdout.write(f"SKIP {name}: {why}\n")
        ok = sum(1 for v in report.verdicts if v.ok)
        sys.stdout.write(f"{ok} of {len(report.verdicts)} checked archive(s) verified, "
                         f"{len(report.skipped)} skipped\n")  # fmt: skip
    return 0 if all(v.ok for v in report.verdicts) else 1
