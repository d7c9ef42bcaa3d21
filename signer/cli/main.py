"""Entry point: argparse (fast start-up), error handling and exit codes.

Exit codes: 0 success, 1 verification failed, 2 usage or input error. Each group module
defines `register(subparsers)`; handlers import what they need when they run, so
`cf-sign verify` does not pay for the service or the signing backends.
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
    "signer.cli.service_cmd",
    "signer.cli.demo_cmd",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit 2, as for every other input error.
        sys.stderr.write(f"cf-sign: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cf-sign", description="Content trust for conda-forge.")
    parser.add_argument("--version", action="version", version="cf-sign 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in GROUPS:
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

    parser = build_parser()
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
    return int(code or 0)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
