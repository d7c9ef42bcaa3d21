"""`cf-sign ceremony propose|sign|status|assemble|verify|push`: offline signing events (DESIGN 13).

Parsing and printing only; the workflow is signer.ceremony.event.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from signer.cli.common import add_expires, emit_json, positive_int
from signer.trust.errors import FormatError

DEFAULT_ROOT_DAYS = 365.0
DEFAULT_KEY_MGR_DAYS = 90.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cer = sub.add_parser("ceremony", help="offline signing events (roots, key_mgr)")
    cer_sub = cer.add_subparsers(dest="ceremony_command", metavar="ACTION", required=True)

    propose = cer_sub.add_parser("propose", help="start a signing event with an unsigned document")
    prop_sub = propose.add_subparsers(dest="propose_role", metavar="ROLE", required=True)
    root = prop_sub.add_parser("root", help="a first root, or root N+1 with --from")
    root.add_argument("--from", dest="previous", metavar="PREV.root.json")
    root.add_argument("--root-key", action="append", metavar="PUB")
    root.add_argument("--threshold", type=positive_int, help="default: a majority")
    root.add_argument("--key-mgr-key", action="append", metavar="PUB")
    root.add_argument("--key-mgr-threshold", type=positive_int)
    add_expires(root, DEFAULT_ROOT_DAYS)
    root.add_argument("--holder", action="append", default=[], metavar="NAME=PUB")
    root.add_argument("-o", "--output", required=True, type=Path, metavar="EVENT_DIR")
    root.set_defaults(handler=propose_root)

    km = prop_sub.add_parser("key_mgr", help="a key_mgr signed by the root's key_mgr keys")
    km.add_argument("--root", required=True, metavar="ROOT.json", help="the root delegating it")
    km.add_argument("--from", dest="previous", metavar="PREV.key_mgr.json")
    km.add_argument("--pkg-mgr-key", action="append", default=[], metavar="PUB")
    km.add_argument("--threshold", type=positive_int)
    add_expires(km, DEFAULT_KEY_MGR_DAYS)
    km.add_argument("--holder", action="append", default=[], metavar="NAME=PUB")
    km.add_argument("-o", "--output", required=True, type=Path, metavar="EVENT_DIR")
    km.set_defaults(handler=propose_key_mgr)

    sign = cer_sub.add_parser("sign", help="review, confirm, write one detached signature")
    sign.add_argument("event", type=Path, metavar="EVENT_DIR")
    sign.add_argument("--key", required=True, metavar="KEYREF")
    sign.add_argument("--yes", action="store_true", help="do not ask (the review still prints)")
    sign.add_argument("--passphrase-env", metavar="VAR")
    sign.set_defaults(handler=sign_event)

    status = cer_sub.add_parser("status", help="thresholds met so far and who is missing")
    status.add_argument("event", type=Path, metavar="EVENT_DIR")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=event_status)

    assemble = cer_sub.add_parser("assemble", help="write the signed document (thresholds met)")
    assemble.add_argument("event", type=Path, metavar="EVENT_DIR")
    assemble.add_argument("-o", "--output", required=True, type=Path, metavar="N.root.json")
    assemble.set_defaults(handler=assemble_event)

    push = cer_sub.add_parser("push", help="send the detached signatures to an online event")
    push.add_argument("event", type=Path, metavar="EVENT_DIR")
    push.add_argument("--service", required=True, metavar="URL")
    push.add_argument("--json", action="store_true")
    push.set_defaults(handler=push_event)

    verify = cer_sub.add_parser("verify", help="check the event's hash-chained transcript")
    verify.add_argument("event", type=Path, metavar="EVENT_DIR")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=verify_event)


def _key_hex(arg: str) -> str:
    from signer.keys import ed25519_hex, load_public_key

    return ed25519_hex(load_public_key(arg), arg)


def _keys(args: list[str] | None) -> list[str] | None:
    return [_key_hex(a) for a in args] if args else None


def _print_created(event: object) -> None:
    from signer.ceremony.event import Event

    assert isinstance(event, Event)
    meta = event.proposed.meta
    print(f"event    {event.directory}  ({meta.ROLE} v{meta.version}, unsigned)")
    for line in event.review():
        print(f"  {line}")
    for authority in event.authorities():
        need = authority.delegation
        print(f"needs    {authority.label}: {need.threshold} of {len(need.pubkeys)}")


def propose_root(args: argparse.Namespace) -> int:
    from signer.ceremony.documents import root_document
    from signer.ceremony.event import parse_holders, propose
    from signer.trust.jsonload import MAX_DELEGATING, read_file
    from signer.trust.metadata import Root, parse_metadata

    previous_bytes = read_file(args.previous, MAX_DELEGATING) if args.previous else None
    previous: Root | None = None
    if previous_bytes is not None:
        meta = parse_metadata(previous_bytes, args.previous, "root").meta
        assert isinstance(meta, Root)
        previous = meta
    elif not args.root_key or not args.key_mgr_key:
        raise FormatError("--root-key", "", "a first root needs --root-key and --key-mgr-key")
    document = root_document(
        previous, _keys(args.root_key), args.threshold, _keys(args.key_mgr_key),
        args.key_mgr_threshold, args.expires,
    )  # fmt: skip
    event = propose(args.output, document, previous_bytes, parse_holders(args.holder, _key_hex))
    _print_created(event)
    return 0


def propose_key_mgr(args: argparse.Namespace) -> int:
    from signer.ceremony.documents import key_mgr_document
    from signer.ceremony.event import parse_holders, propose
    from signer.trust.jsonload import MAX_DELEGATING, read_file
    from signer.trust.metadata import KeyMgr, parse_metadata

    root_bytes = read_file(args.root, MAX_DELEGATING)
    parse_metadata(root_bytes, args.root, "root")
    previous: KeyMgr | None = None
    current_bytes = None
    if args.previous:
        current_bytes = read_file(args.previous, MAX_DELEGATING)
        meta = parse_metadata(current_bytes, args.previous, "key_mgr")
        assert isinstance(meta.meta, KeyMgr)
        previous = meta.meta
    elif not args.pkg_mgr_key:
        raise FormatError("--pkg-mgr-key", "", "a first key_mgr needs --pkg-mgr-key")
    document = key_mgr_document(
        previous, _keys(args.pkg_mgr_key) or [], args.threshold, args.expires
    )
    event = propose(
        args.output, document, root_bytes, parse_holders(args.holder, _key_hex), current_bytes
    )
    _print_created(event)
    return 0


def _confirm(question: str) -> bool:
    sys.stdout.write(f"{question} [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def sign_event(args: argparse.Namespace) -> int:
    from signer.ceremony.event import check_can_sign, load_event, sign, verify
    from signer.keys import resolve_keyref

    event = load_event(args.event)
    verify(event)
    key = resolve_keyref(args.key, passphrase_env=args.passphrase_env)
    roles = check_can_sign(event, key.public_key_hex)
    meta = event.proposed.meta
    holder = event.holders.get(key.public_key_hex)
    print(f"signing event {args.event}: {meta.ROLE} v{meta.version}")
    for line in event.review():
        print(f"  {line}")
    print(f"your key {key.public_key_hex}" + (f" ({holder})" if holder else ""))
    print("  counts toward: " + "; ".join(roles))
    if not args.yes:
        if not sys.stdin.isatty():
            raise FormatError(
                str(args.event),
                "--yes",
                "no terminal to confirm on: nothing written "
                "(review the changes above, then pass --yes)",
            )
        if not _confirm("Sign this document?"):
            print("not signed; nothing written")
            return 2
    made = sign(event, key)
    style = "OpenPGP-style" if made.signature.is_openpgp else "raw"
    print(f"wrote    {made.path}  ({style} signature)")
    return 0


def event_status(args: argparse.Namespace) -> int:
    from signer.ceremony.event import load_event, status

    state = status(load_event(args.event))
    if args.json:
        emit_json(state.to_json())
        return 0
    for line in state.lines():
        print(line)
    return 0


def assemble_event(args: argparse.Namespace) -> int:
    from signer.ceremony.event import assemble, load_event, sha256_hex

    event = load_event(args.event)
    data, state = assemble(event, args.output)
    for line in state.lines():
        print(line)
    meta = event.proposed.meta
    print(f"wrote    {args.output}  ({meta.ROLE} v{meta.version}, sha256 {sha256_hex(data)})")
    return 0


def verify_event(args: argparse.Namespace) -> int:
    from signer.ceremony import transcript
    from signer.ceremony.event import load_event, verify

    event = load_event(args.event)
    head = verify(event)
    entries = len(transcript.read_entries(event.transcript_path))
    if args.json:
        emit_json({"ok": True, "entries": entries, "head": head})
        return 0
    print(f"OK    {event.transcript_path}  {entries} entries, chain intact; head sha256 {head}")
    return 0


def push_event(args: argparse.Namespace) -> int:
    from signer.ceremony.event import load_event
    from signer.ceremony.push import push

    token = os.environ.get("CF_SIGN_ADMIN_TOKEN")
    if not token:
        raise FormatError("CF_SIGN_ADMIN_TOKEN", "", "not set (an admin token of the service)")
    result = push(load_event(args.event), args.service, token)
    if args.json:
        emit_json({"event": result.event_id, "added": result.added, "refused": result.refused,
                   "status": result.status})  # fmt: skip
    else:
        state = result.status
        print(f"online event {result.event_id} at {args.service}")
        for key in result.added:
            print(f"added    {key}")
        for key, why in sorted(result.refused.items()):
            print(f"REFUSED  {key}: {why}")
        print(f"old root: {state['old']['valid']}/{state['old']['threshold']}")
        print(f"new root: {state['new']['valid']}/{state['new']['threshold']}")
    return 1 if result.refused else 0
