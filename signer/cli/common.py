"""Helpers shared by the command groups: common options, output, trust loading."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signer.trust.errors import FormatError, VerificationError

if TYPE_CHECKING:
    from signer.client.session import SessionConfig, TrustSession

Handler = Callable[[argparse.Namespace], int]


def add_trust_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--trust",
        required=required,
        metavar="DIR|URL",
        help="trust repository (local directory or URL)",
    )
    parser.add_argument("--root", metavar="FILE", help="trusted root to start from (first use)")
    parser.add_argument(
        "--state-dir",
        metavar="D",
        type=Path,
        help="verifier state (default: $XDG_CACHE_HOME/cf-sign/<hash>)",
    )
    parser.add_argument(
        "--clock-skew",
        metavar="SECONDS",
        type=non_negative_seconds,
        default=60.0,
        help="allowed clock skew for expiry checks (default 60)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_seconds,
        default=20.0,
        help="per request, for a URL trust repository (default 20)",
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="verify as of this UTC time (YYYY-MM-DDTHH:MM:SSZ) instead of now",
    )


def add_expires(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument(
        "--expires",
        metavar="DAYS",
        type=non_negative_days,
        default=default,
        help=f"days until expiration (default {default:g})",
    )


def non_negative_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number of days: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds: {text!r}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def now_from(args: argparse.Namespace) -> datetime:
    from signer.trust.timefmt import parse_time, system_clock

    at = getattr(args, "at", None)
    return parse_time(at, "--at", "TIME") if at else system_clock()


def session_config(args: argparse.Namespace) -> SessionConfig:
    """--clock-skew, --timeout and --at as the session's configuration."""
    from signer.client.session import SessionConfig
    from signer.trust.timefmt import parse_time

    at = getattr(args, "at", None)
    return SessionConfig(
        clock_skew=timedelta(seconds=getattr(args, "clock_skew", 60.0)),
        timeout=getattr(args, "timeout", 20.0),
        at=parse_time(at, "--at", "TIME") if at else None,
    )


def open_session(args: argparse.Namespace) -> TrustSession:
    """The verifier session for --trust/--root/--state-dir (FormatError naming the flag)."""
    from signer.client.session import TrustSession

    config = session_config(args)
    root = Path(args.root) if args.root else None
    try:
        return TrustSession.open(args.trust, root=root, state_dir=args.state_dir, config=config)
    except FormatError as exc:
        if exc.source == str(args.trust) and not exc.field:
            raise FormatError(exc.source, "--trust", exc.reason) from None
        raise


def skew_from(args: argparse.Namespace) -> timedelta:
    return session_config(args).clock_skew


def report_notices(session: TrustSession) -> None:
    """What the session wants the user told (e.g. a state root it ignored), on stderr."""
    for notice in session.notices:
        sys.stderr.write(f"cf-sign: note: {notice}\n")


def verification_hint(exc: VerificationError) -> VerificationError:
    """The library's failure with the flag that would fix it, where one would."""
    if exc.check == "trust anchor":
        return VerificationError(exc.subject, exc.check, exc.reason + "; pass --root FILE")
    return exc


@contextmanager
def flags(mapping: dict[str, str]) -> Iterator[None]:
    """Name the command-line flag in a library's FormatError about one of its fields."""
    try:
        yield
    except FormatError as exc:
        flag = mapping.get(exc.field)
        if flag is None:
            raise
        raise FormatError(exc.source, flag, exc.reason) from None


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def print_table(rows: Iterable[Sequence[str]], out: Any = None) -> None:
    """Left-aligned columns, two spaces apart."""
    rows = [list(map(str, r)) for r in rows]
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    stream = out or sys.stdout
    for row in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row)]
        stream.write("  ".join(cells).rstrip() + "\n")
