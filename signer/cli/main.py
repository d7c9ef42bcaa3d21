"""Entry point: argparse (fast start-up), error handling and exit codes.

Exit codes: 0 success, 1 verification failed, 2 usage or input error. Each group module
defines `register(subparsers)` (and may map its commands to their own adders in
`COMMANDS`, so a run builds only its own parser); handlers import what they need when
they run, so `cf-sign verify` does not pay for the service or the signing backends.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Command groups, in help order. Each module has register(subparsers).
GROUPS = (
    "signer.cli.keys_cmd",
    "signer.cli.metadata_cmd",
    "signer.cli.repodata_cmd",
    "signer.cli.feedstock_cmd",
    "signer.cli.channel_cmd",
    "signer.cli.mirror_cmd",
    "signer.cli.service_cmd",
    "signer.cli.ceremony_cmd",
    "signer.cli.rollout_cmd",
    "signer.cli.demo_cmd",
    "signer.cli.conda_cmd",
)

# Top-level command -> its group, so a run builds only the parser it needs.
COMMAND_GROUP = {
    "keys": "signer.cli.keys_cmd",
    "root": "signer.cli.metadata_cmd",
    "key-mgr": "signer.cli.metadata_cmd",
    "pkg-mgr": "signer.cli.metadata_cmd",
    "metadata": "signer.cli.metadata_cmd",
    "repodata": "signer.cli.repodata_cmd",
    "delegations": "signer.cli.feedstock_cmd",
    "sign": "signer.cli.feedstock_cmd",
    "verify": "signer.cli.feedstock_cmd",
    "feedstock": "signer.cli.feedstock_cmd",
    "channel": "signer.cli.channel_cmd",
    "mirror": "signer.cli.mirror_cmd",
    "serve": "signer.cli.service_cmd",
    "db": "signer.cli.service_cmd",
    "service": "signer.cli.service_cmd",
    "submit": "signer.cli.service_cmd",
    "ceremony": "signer.cli.ceremony_cmd",
    "rollout": "signer.cli.rollout_cmd",
    "demo": "signer.cli.demo_cmd",
    "conda": "signer.cli.conda_cmd",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit 2, as for every other input error.
        sys.stderr.write(f"cf-sign: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or only `command`'s group when it is known (faster start-up)."""
    parser = _Parser(prog="cf-sign", description="Content trust for conda-forge.")
    from signer import __version__

    parser.add_argument("--version", action="version", version=f"cf-sign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    group = COMMAND_GROUP.get(command or "")
    if group:
        # A group may list per-command adders: then only this command's parser is built.
        adders = getattr(importlib.import_module(group), "COMMANDS", {})
        if command in adders:
            adders[command](sub)
            return parser
    for name in (group,) if group else GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a group not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from signer.trust.errors import FormatError, VerificationError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except FormatError as exc:
        sys.stderr.write(f"cf-sign: error: {exc}\n")
        return 2
    except VerificationError as exc:
        sys.stderr.write(f"FAIL {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("cf-sign: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        # A file the command had to write (or read): read-only directory, full disk, ...
        # One line naming the file, for every command, instead of a traceback.
        where = exc.filename if exc.filename is not None else "cf-sign"
        sys.stderr.write(f"cf-sign: error: {where}: {exc.strerror or exc}\n")
        return 2
    return int(code or 0)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
