"""Authoring and checking channel-layer metadata: root, key_mgr, pkg_mgr."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from signer.cli.common import (
    add_expires,
    emit_json,
    non_negative_seconds,
    now_from,
    positive_int,
)
from signer.trust.errors import FormatError, VerificationError

DEFAULT_ROOT_DAYS = 365.0
DEFAULT_KEY_MGR_DAYS = 90.0
DEFAULT_PKG_MGR_DAYS = 90.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    root = sub.add_parser("root", help="create and rotate root metadata")
    root_sub = root.add_subparsers(dest="root_command", metavar="ACTION", required=True)

    create = root_sub.add_parser("create", help="write an unsigned root")
    create.add_argument("--root-key", action="append", required=True, metavar="PUB")
    create.add_argument(
        "--threshold", type=positive_int, help="root keys needed (default: a majority)"
    )
    create.add_argument("--key-mgr-key", action="append", required=True, metavar="PUB")
    create.add_argument("--key-mgr-threshold", type=positive_int, default=1)
    create.add_argument("--version", type=positive_int, default=1)
    add_expires(create, DEFAULT_ROOT_DAYS)
    create.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    create.set_defaults(handler=root_create)

    rotate = root_sub.add_parser("rotate", help="write unsigned root N+1 from root N")
    rotate.add_argument("previous", metavar="PREV.root.json")
    rotate.add_argument("--root-key", action="append", metavar="PUB")
    rotate.add_argument(
        "--threshold",
        type=positive_int,
        help="root keys needed (default: the old threshold if the key count is unchanged, "
        "else a majority)",
    )
    rotate.add_argument("--key-mgr-key", action="append", metavar="PUB")
    rotate.add_argument("--key-mgr-threshold", type=positive_int)
    add_expires(rotate, DEFAULT_ROOT_DAYS)
    rotate.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    rotate.set_defaults(handler=root_rotate)

    km = sub.add_parser("key-mgr", help="create key_mgr metadata")
    km_sub = km.add_subparsers(dest="km_command", metavar="ACTION", required=True)
    km_create = km_sub.add_parser("create", help="write an unsigned key_mgr.json")
    km_create.add_argument("--pkg-mgr-key", action="append", required=True, metavar="PUB")
    km_create.add_argument("--threshold", type=positive_int, default=1)
    km_create.add_argument("--version", type=positive_int, default=1)
    add_expires(km_create, DEFAULT_KEY_MGR_DAYS)
    km_create.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    km_create.set_defaults(handler=key_mgr_create)

    pm = sub.add_parser("pkg-mgr", help="create pkg_mgr metadata")
    pm_sub = pm.add_subparsers(dest="pm_command", metavar="ACTION", required=True)
    pm_create = pm_sub.add_parser("create", help="write an unsigned pkg_mgr.json")
    pm_create.add_argument("--version", type=positive_int, default=1)
    add_expires(pm_create, DEFAULT_PKG_MGR_DAYS)
    pm_create.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    pm_create.set_defaults(handler=pkg_mgr_create)

    md = sub.add_parser("metadata", help="sign and verify metadata files")
    md_sub = md.add_subparsers(dest="md_command", metavar="ACTION", required=True)
    sign = md_sub.add_parser("sign", help="add a signature in place")
    sign.add_argument("file", metavar="FILE")
    sign.add_argument("--key", required=True, metavar="KEYREF")
    sign.add_argument("--passphrase-env", metavar="VAR")
    sign.add_argument(
        "--trusted",
        metavar="FILE",
        help="the current root (for a root or key_mgr) or key_mgr (for pkg_mgr): show what "
        "changes and refuse a key it does not delegate",
    )
    sign.set_defaults(handler=metadata_sign)

    verify = md_sub.add_parser(
        "verify", help="root: self-check or one chain step; key_mgr/pkg_mgr: delegation check"
    )
    verify.add_argument("file", metavar="FILE")
    verify.add_argument(
        "--trusted",
        metavar="FILE",
        help="the trusted root (for a root or key_mgr) or key_mgr (for pkg_mgr)",
    )
    verify.add_argument("--at", metavar="TIME", help="check expiry as of this UTC time")
    verify.add_argument("--clock-skew", metavar="SECONDS", type=non_negative_seconds, default=60.0)
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=metadata_verify)


# ----------------------------------------------------------------------------- authoring


def _delegation(pubs: list[str], threshold: int, option: str) -> Any:
    from signer.keys import ed25519_hex, load_public_key
    from signer.trust.metadata import Delegation

    keys = [ed25519_hex(load_public_key(p), p) for p in pubs]
    if len(set(keys)) != len(keys):
        raise FormatError(option, "PUB", "the same key is listed twice")
    if threshold > len(keys):
        raise FormatError(option, "threshold", f"{threshold} exceeds the {len(keys)} keys given")
    return Delegation(tuple(keys), threshold)


def _write_unsigned(meta: Any, output: Path) -> int:
    from signer.ceremony.review import refuse_overwrite_of_signed
    from signer.trust.metadata import Signable
    from signer.trust.state import write_atomic

    refuse_overwrite_of_signed(output)
    envelope = Signable(meta.to_signed(), {}, str(output))
    write_atomic(output, envelope.to_bytes())
    print(f"wrote {output}  ({meta.ROLE} v{meta.version}, unsigned, expires {meta.expiration})")
    return 0


def _times(days: float) -> tuple[str, str]:
    from signer.trust.timefmt import expiry_after, format_time, system_clock

    now = system_clock().replace(microsecond=0)
    return format_time(now), expiry_after(days, now)


def root_create(args: argparse.Namespace) -> int:
    from signer.ceremony.review import majority
    from signer.trust.metadata import Root

    threshold = args.threshold
    if threshold is None:
        threshold = majority(len(args.root_key))
        if len(args.root_key) > 1:
            print(f"root threshold: {threshold} of {len(args.root_key)} (a majority; --threshold)")
    root_keys = _delegation(args.root_key, threshold, "--root-key")
    km_keys = _delegation(args.key_mgr_key, args.key_mgr_threshold, "--key-mgr-key")
    timestamp, expiration = _times(args.expires)
    meta = Root(args.version, timestamp, expiration, {"root": root_keys, "key_mgr": km_keys})
    return _write_unsigned(meta, args.output)


def root_rotate(args: argparse.Namespace) -> int:
    from signer.trust.jsonload import MAX_DELEGATING, read_file
    from signer.trust.metadata import Delegation, Root, parse_metadata

    prev = parse_metadata(read_file(args.previous, MAX_DELEGATING), args.previous, "root").meta
    assert isinstance(prev, Root)

    from signer.ceremony.review import majority

    def carried(
        keys: list[str] | None, threshold: int | None, old: Delegation, opt: str, default: int
    ) -> Any:
        if keys is None:
            return _delegation(list(old.pubkeys), threshold or old.threshold, opt)
        if threshold is None:
            # Same number of keys: keep the old rule; otherwise the default, said aloud.
            threshold = old.threshold if len(keys) == len(old.pubkeys) else default
            option = opt.replace("key", "threshold")
            print(f"{opt[2:]} threshold: {threshold} of {len(keys)} ({option} to choose)")
        return _delegation(keys, threshold, opt)

    root_keys = carried(
        args.root_key, args.threshold, prev.root_keys, "--root-key",
        majority(len(args.root_key or ())),
    )  # fmt: skip
    km_keys = carried(
        args.key_mgr_key, args.key_mgr_threshold, prev.key_mgr_keys, "--key-mgr-key", 1
    )
    timestamp, expiration = _times(args.expires)
    meta = Root(prev.version + 1, timestamp, expiration, {"root": root_keys, "key_mgr": km_keys})
    return _write_unsigned(meta, args.output)


def key_mgr_create(args: argparse.Namespace) -> int:
    from signer.trust.metadata import KeyMgr

    pkg = _delegation(args.pkg_mgr_key, args.threshold, "--pkg-mgr-key")
    timestamp, expiration = _times(args.expires)
    return _write_unsigned(
        KeyMgr(args.version, timestamp, expiration, {"pkg_mgr": pkg}), args.output
    )


def pkg_mgr_create(args: argparse.Namespace) -> int:
    from signer.trust.metadata import PkgMgr

    timestamp, expiration = _times(args.expires)
    return _write_unsigned(PkgMgr(args.version, timestamp, expiration, {}), args.output)


def metadata_sign(args: argparse.Namespace) -> int:
    from signer.ceremony.review import changes, signing_roles
    from signer.keys import load_key
    from signer.trust.jsonload import MAX_DELEGATING, read_file
    from signer.trust.metadata import parse_metadata
    from signer.trust.signing import sign_envelope
    from signer.trust.state import write_atomic

    doc = parse_metadata(read_file(args.file, MAX_DELEGATING), args.file)
    trusted = (
        parse_metadata(read_file(args.trusted, MAX_DELEGATING), args.trusted)
        if args.trusted
        else None
    )
    key = load_key(args.key, passphrase_env=args.passphrase_env)
    previous = trusted.meta if trusted is not None and trusted.role == doc.role else None
    for line in changes(previous, doc.meta):
        print(line)
    roles = signing_roles(key.public_key_hex, doc, trusted)
    if roles:
        print("signing as: " + "; ".join(roles))
    elif trusted is not None:
        raise FormatError(
            args.key,
            "--key",
            f"not delegated: {key.public_key_hex} signs for no role of "
            f"{args.file} or {args.trusted}; nothing written",
        )
    elif doc.role == "root":
        print(
            f"WARNING: {key.public_key_hex[:16]}… is not a root key of this root (an old root "
            "key signing a rotation? --trusted PREV.root.json checks it)"
        )
    else:
        print("WARNING: delegation not checked (--trusted FILE checks that this key may sign)")
    openpgp = doc.role == "root"  # conda reads only OpenPGP-style signatures on roots
    sign_envelope(doc.envelope, key.root_signer() if openpgp else key.channel_signer())
    write_atomic(Path(args.file), doc.envelope.to_bytes())
    style = "OpenPGP-style" if openpgp else "raw"
    print(
        f"signed {args.file}  ({doc.role} v{doc.meta.version}, {style}, key {key.public_key_hex})"
    )
    return 0


# ----------------------------------------------------------------------------- checking


def metadata_verify(args: argparse.Namespace) -> int:
    from signer.cli.common import flags
    from signer.trust.jsonload import MAX_DELEGATING, read_file
    from signer.trust.metadata import parse_metadata
    from signer.trust.repository import check_document
    from signer.trust.timefmt import timedelta_seconds

    doc = parse_metadata(read_file(args.file, MAX_DELEGATING), args.file)
    trusted = (
        parse_metadata(read_file(args.trusted, MAX_DELEGATING), args.trusted)
        if args.trusted
        else None
    )
    now, skew = now_from(args), timedelta_seconds(args.clock_skew)
    try:
        with flags({"trusted": "--trusted"}):
            what, results = check_document(doc, trusted, now, skew)
    except VerificationError as exc:
        if args.json:
            emit_json({"file": args.file, "ok": False, "check": exc.check, "reason": exc.reason})
            return 1
        raise
    if args.json:
        emit_json({
            "file": args.file, "ok": True, "checked": what, "expires": doc.meta.expiration,
            "thresholds": {
                label: {"threshold": r.threshold, "signed": list(r.signed),
                        "invalid": dict(r.invalid), "missing": list(r.missing),
                        "unknown": list(r.unknown)}
                for label, r in results
            },
        })  # fmt: skip
        return 0
    print(f"OK    {args.file}  {what}; expires {doc.meta.expiration}")
    for label, result in results:
        print(f"      {label}: {result.describe()}")
    return 0
