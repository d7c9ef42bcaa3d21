"""`cf-sign channel sign`: sign only the records whose artifacts are attested (section 10)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from signer.cli.common import add_trust_options, emit_json, positive_int

MAX_REFUSAL_LINES = 50


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ch = sub.add_parser("channel", help="attestation-gated channel signing")
    ch_sub = ch.add_subparsers(dest="channel_command", metavar="ACTION", required=True)

    sign = ch_sub.add_parser("sign", help="sign the records whose artifact's attestation verifies")
    sign.add_argument("repodata", type=Path, metavar="REPODATA")
    add_trust_options(sign)
    sign.add_argument(
        "--key", action="append", required=True, metavar="KEYREF",
        help="pkg_mgr key signing the full record (conda profile); repeat to co-sign",
    )  # fmt: skip
    sign.add_argument("--mamba-key", metavar="KEYREF", help="pkg_mgr key for mamba's profile")
    sign.add_argument("--passphrase-env", metavar="VAR")
    sign.add_argument(
        "--attestations", metavar="DIR|URL",
        help="trust-repository layout holding attestations/<subdir>/ (default: --trust)",
    )  # fmt: skip
    sign.add_argument(
        "--stages", metavar="URL|FILE",
        help="feedstock stages (the service's /v1/stages, or that JSON in a file): records of "
        "observe/off feedstocks are signed without an attestation and reported; without it "
        "every unattested record is refused",
    )  # fmt: skip
    sign.add_argument(
        "--unattested", choices=("unsigned", "drop"), default="unsigned",
        help="what happens to records not attested or refused (default: left unsigned)",
    )  # fmt: skip
    sign.add_argument(
        "--require-all", action="store_true",
        help="exit 1 (and write nothing) when any record is unattested or refused",
    )  # fmt: skip
    sign.add_argument("-o", "--output", type=Path, metavar="OUT",
                      help="write here (default: replace REPODATA atomically)")  # fmt: skip
    sign.add_argument("--jobs", type=positive_int, help="processes (default: all cores)")
    sign.add_argument(
        "--cache-dir", type=Path, metavar="D",
        help="where verified-and-signed records are remembered (default: under the state dir)",
    )  # fmt: skip
    sign.add_argument("--no-cache", action="store_true", help="verify and sign every record")
    sign.add_argument("--json", action="store_true", help="machine-readable report")
    sign.set_defaults(handler=channel_sign)


def _keys(args: argparse.Namespace) -> tuple[list[Any], Any]:
    from signer.keys import channel_signer

    keys = [channel_signer(ref, passphrase_env=args.passphrase_env) for ref in args.key]
    mamba = (
        channel_signer(args.mamba_key, passphrase_env=args.passphrase_env)
        if args.mamba_key
        else None
    )
    return keys, mamba


def _progress(total: int) -> tuple[Any, Any]:
    if total < 10_000 or not sys.stderr.isatty():
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress("signing", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        transient=True)  # fmt: skip
    task = progress.add_task("records", total=total)
    return progress, lambda n: progress.advance(task, n)


def channel_sign(args: argparse.Namespace) -> int:
    import time

    from signer.channel.attestations import AttestationStore
    from signer.channel.document import read_strict
    from signer.channel.gate import Gate
    from signer.channel.sign import sign_channel
    from signer.channel.stages import StagePolicy, load_stages
    from signer.cli.common import open_session, report_notices, verification_hint
    from signer.fetch import default_state_dir
    from signer.repodata.parallel import default_jobs
    from signer.trust.errors import VerificationError
    from signer.trust.state import write_atomic

    started = time.perf_counter()
    split = read_strict(args.repodata)
    keys, mamba = _keys(args)
    # Read once, before any signing: a failure is an error, never a default to signing.
    stages = load_stages(args.stages, timeout=args.timeout) if args.stages else None
    gate = Gate(open_session(args))
    store = AttestationStore(args.attestations or args.trust, timeout=args.timeout)
    cache_dir = None
    if not args.no_cache:
        cache_dir = args.cache_dir or args.state_dir or default_state_dir(gate.location)
    progress, advance = _progress(len(split.records))
    if progress is not None:
        progress.start()
    try:
        policy = StagePolicy.open(stages, gate.session) if stages is not None else None
        result = sign_channel(
            split, gate, store, keys, mamba, unattested=args.unattested,
            jobs=args.jobs or default_jobs(), cache_dir=cache_dir, on_progress=advance,
            policy=policy,
        )  # fmt: skip
    except VerificationError as exc:
        raise verification_hint(exc) from None
    finally:
        if progress is not None:
            progress.stop()
    report_notices(gate.session)
    failed = args.require_all and not result.complete
    output = args.output or args.repodata
    if not failed:
        write_atomic(output, result.pieces())
    if args.json:
        emit_json(result.to_json())
        return 1 if failed else 0
    elapsed = time.perf_counter() - started
    for refusal in result.refused[:MAX_REFUSAL_LINES]:
        print(f"REFUSED {result.subdir}/{refusal.file}: {refusal.check}: {refusal.reason}")
    if len(result.refused) > MAX_REFUSAL_LINES:
        print(f"... and {len(result.refused) - MAX_REFUSAL_LINES} more refusals (--json)")
    observed = result.observed or []
    for seen in observed[:MAX_REFUSAL_LINES]:
        print(f"OBSERVED {result.subdir}/{seen.file} (feedstock {seen.feedstock}): {seen.why}")
    if len(observed) > MAX_REFUSAL_LINES:
        print(f"... and {len(observed) - MAX_REFUSAL_LINES} more observed (--json)")
    fate = "dropped" if args.unattested == "drop" else "left unsigned"
    print(
        f"{result.subdir}: {result.records} records, {result.signed} signed "
        f"({result.cached} unchanged since the last run), {len(result.unattested)} unattested, "
        f"{len(result.refused)} refused ({fate})  [{elapsed:.2f} s]"
    )
    if result.observed is not None:
        print(f"  {len(observed)} signed unattested: their feedstocks are not enforced")
    if result.cache_note:
        print(f"  cache not used: {result.cache_note}")
    if failed:
        print("FAILED: --require-all and not every record is attested; nothing written")
        return 1
    print(f"  -> {output}")
    return 0
