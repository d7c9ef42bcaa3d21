"""Helpers shared by the command groups: common options, output, trust loading."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from signer.trust.errors import FormatError

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
        type=float,
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


def skew_from(args: argparse.Namespace) -> timedelta:
    skew = getattr(args, "clock_skew", 60.0)
    if skew < 0:
        raise FormatError("--clock-skew", "SECONDS", "must be >= 0")
    return timedelta(seconds=skew)


def state_from(args: argparse.Namespace, location: str) -> Any:
    from signer.fetch import default_state_dir
    from signer.trust.state import TrustState

    return TrustState(args.state_dir or default_state_dir(location))


def load_trust(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(source, state, trusted root, trusted key_mgr) for --trust/--root/--state-dir."""
    from signer.fetch import open_source
    from signer.trust.jsonload import MAX_DELEGATING, read_file
    from signer.trust.repository import choose_anchor, load_key_mgr, update_root

    source = open_source(args.trust, timeout=args.timeout)
    if not source.location.startswith("http") and not Path(args.trust).is_dir():
        raise FormatError(args.trust, "--trust", "not a directory or an http(s) URL")
    state = state_from(args, source.location)
    given = read_file(args.root, MAX_DELEGATING) if args.root else None
    anchor = choose_anchor(given, args.root or "--root", state)
    now, skew = now_from(args), skew_from(args)
    root = update_root(source.fetch, anchor, now, skew, state)
    key_mgr = load_key_mgr(source.fetch, root, now, skew, state)
    return source, state, root, key_mgr


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
