"""The service's commands: `serve`, `db upgrade`, `service init|token|refresh|audit`, `submit`.

Handlers import the service when they run; `submit` uses only the standard library (it
runs in feedstock CI, where the service's dependencies are not needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signer.cli.common import flags, non_negative_days, positive_int
from signer.trust.errors import FormatError

if TYPE_CHECKING:
    from signer.service.config import Settings

DEFAULT_PORT = 8000
ENV_SERVICE_URL = "CF_SIGN_SERVICE_URL"


def _add_db_options(parser: argparse.ArgumentParser, *, publish: bool = True) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
        "(default $CF_SIGN_DB, else ./cf-sign-data/cf-sign.db)",
    )
    if publish:
        parser.add_argument(
            "--publish-dir",
            metavar="D",
            help="where published files are written "
            "(default $CF_SIGN_PUBLISH_DIR, else ./cf-sign-data/trust)",
        )
        parser.add_argument(
            "--publish-to",
            metavar="azblob://ACCOUNT/CONTAINER[/PREFIX]",
            help="also publish to Azure Blob Storage (default $CF_SIGN_PUBLISH_TO)",
        )


def _flatten(values: list[list[str]] | None) -> list[str]:
    return [v for group in values or [] for v in group]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="run the trust service (HTTP)")
    _add_db_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--rate-limit",
        metavar="RATE/BURST",
        help="per feedstock and process: artifacts per second / burst (default 5/1000)",
    )
    serve.add_argument(
        "--refresh-interval",
        type=float,
        metavar="SECONDS",
        help="re-sign documents nearing expiry this often (default 3600; 0 = never)",
    )
    serve.add_argument(
        "--trust-cache",
        type=float,
        metavar="SECONDS",
        help="cache /trust answers per process this long (default 1; 0 = always ask the DB)",
    )
    serve.add_argument(
        "--sync-interval",
        type=float,
        metavar="SECONDS",
        help="check the publish directory against the database this often, to catch up "
        "with other replicas' publications (default 5; 0 = only at start-up and refresh)",
    )
    serve.add_argument(
        "--channel-interval",
        type=float,
        metavar="SECONDS",
        help="refresh the signed overlay channels from upstream this often (default 300; "
        "0 = only on demand and when attestations arrive)",
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    serve.set_defaults(handler=_service_command(serve_cmd))

    db = sub.add_parser("db", help="service database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_sub.add_parser("upgrade", help="apply the database migrations")
    _add_db_options(up, publish=False)
    up.set_defaults(handler=_service_command(db_upgrade_cmd))

    svc = sub.add_parser("service", help="initialize and administer the trust service")
    svc_sub = svc.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    init = svc_sub.add_parser(
        "init", help="publish the roots and make key_mgr.json and pkg_mgr.json"
    )
    init.add_argument(
        "--root",
        action="append",
        nargs="+",
        required=True,
        metavar="N.root.json",
        help="the roots, 1.root.json up to the newest (they must form a chain)",
    )
    init.add_argument(
        "--key-mgr-key",
        action="append",
        required=True,
        metavar="KEYREF",
        help="online key_mgr key (one of the root's key_mgr keys; repeat for a threshold)",
    )
    init.add_argument(
        "--pkg-mgr-key",
        action="append",
        required=True,
        metavar="KEYREF",
        help="pkg_mgr key (repeat: e.g. the conda and the mamba profile keys)",
    )
    init.add_argument("--pkg-mgr-threshold", type=int, default=1, metavar="N")
    init.add_argument("--bins", type=int, choices=(16, 256, 4096), default=256)
    init.add_argument(
        "--expires",
        type=non_negative_days,
        default=90.0,
        metavar="DAYS",
        help="lifetime of the documents the service signs (default 90)",
    )
    _add_db_options(init)
    init.set_defaults(handler=_service_command(init_cmd))

    token = svc_sub.add_parser("token", help="bearer tokens of the admin API")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_sub.add_parser("create", help="make a token (printed once)")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=("admin", "registrar"),
        help="admin (everything) or registrar (register feedstocks, names, keys)",
    )
    create.add_argument("--name", default="token", help="a label for the audit log")
    _add_db_options(create, publish=False)
    create.set_defaults(handler=_service_command(token_create_cmd))
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", type=int, metavar="ID")
    _add_db_options(revoke, publish=False)
    revoke.set_defaults(handler=_service_command(token_revoke_cmd))
    listing = token_sub.add_parser("list", help="list tokens (never their secrets)")
    _add_db_options(listing, publish=False)
    listing.set_defaults(handler=_service_command(token_list_cmd))

    refresh = svc_sub.add_parser(
        "refresh", help="re-sign documents nearing expiry and repair the publish directory"
    )
    refresh.add_argument(
        "--within",
        type=non_negative_days,
        metavar="DAYS",
        help="re-sign what expires within DAYS (default: half the documents' lifetime)",
    )
    _add_db_options(refresh)
    refresh.set_defaults(handler=_service_command(refresh_cmd))

    channel = svc_sub.add_parser("channel", help="signed overlay channels (DESIGN.md section 10)")
    channel_sub = channel.add_subparsers(dest="channel_command", metavar="ACTION", required=True)
    add = channel_sub.add_parser(
        "add",
        help="define a channel: the service signs its attested records and publishes "
        "channels/NAME/SUBDIR/repodata.json (artifacts stay upstream)",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--subdir", action="append", required=True, metavar="S",
                     help="a subdir (repeat)")  # fmt: skip
    add.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="URL",
        help="upstream's repodata URL per --subdir, in order; or one channel URL for all",
    )
    add.add_argument(
        "--current-upstream",
        action="append",
        metavar="URL",
        help="upstream's current_repodata.json per --subdir (or one channel URL); optional",
    )
    _add_db_options(add, publish=False)
    add.set_defaults(handler=_service_command(channel_add_cmd))
    listing = channel_sub.add_parser("list", help="the channels, with their last refresh")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    _add_db_options(listing, publish=False)
    listing.set_defaults(handler=_service_command(channel_list_cmd))
    remove = channel_sub.add_parser("remove", help="stop signing a channel (files go too)")
    remove.add_argument("name", metavar="NAME")
    _add_db_options(remove)
    remove.set_defaults(handler=_service_command(channel_remove_cmd))
    now = channel_sub.add_parser(
        "refresh", help="fetch upstream, sign and publish now (the server does it periodically)"
    )
    now.add_argument("name", nargs="?", metavar="NAME", help="one channel (default: all)")
    now.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                     help="processes signing (default 1; the server always uses one)")  # fmt: skip
    now.add_argument("--json", action="store_true", help="machine-readable output")
    _add_db_options(now)
    now.set_defaults(handler=_service_command(channel_refresh_cmd))

    audit_p = svc_sub.add_parser("audit", help="the audit log")
    audit_sub = audit_p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain of the audit log")
    _add_db_options(verify, publish=False)
    verify.set_defaults(handler=_service_command(audit_verify_cmd))
    show = audit_sub.add_parser("show", help="print audit entries as JSON lines")
    show.add_argument("--after", type=int, default=0, metavar="SEQ")
    _add_db_options(show, publish=False)
    show.set_defaults(handler=_service_command(audit_show_cmd))

    submit = sub.add_parser("submit", help="send attestations to the trust service (CI)")
    submit.add_argument("artifacts", nargs="*", metavar="ARTIFACT", type=Path)
    submit.add_argument("--build-dir", type=Path, metavar="D", help="every package in D/<subdir>/")
    submit.add_argument(
        "--service",
        metavar="URL",
        default=os.environ.get(ENV_SERVICE_URL),
        help=f"the service's base URL (default ${ENV_SERVICE_URL})",
    )
    submit.add_argument(
        "--sig-dir", type=Path, metavar="D", help="where the sidecars are (default: beside)"
    )
    submit.add_argument("--retries", type=int, default=5, help="attempts per batch (default 5)")
    submit.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    submit.add_argument("--batch", type=int, default=100, help="artifacts per request")
    submit.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    submit.set_defaults(handler=submit_cmd)


# ----------------------------------------------------------------------------- helpers

# What the service commands import, from the `service` extra (feedstock CI installs cf-sign
# without it: `sign` and `submit` need none of it).
SERVICE_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "prometheus_client")


def missing_service_modules() -> list[str]:
    import importlib

    missing = []
    for name in SERVICE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


# The service library names fields; the command line names the flags that set them.
_SERVICE_FLAGS = {
    "roots": "--root",
    "key_mgr key": "--key-mgr-key",
    "pkg_mgr key": "--pkg-mgr-key",
    "pkg_mgr threshold": "--pkg-mgr-threshold",
    "bins": "--bins",
    "expiry": "--expires",
    "database": "--db",
    "database URL": "--db",
    "rate limit": "--rate-limit",
    "subdir": "--subdir",
    "upstream": "--upstream",
    "current upstream": "--current-upstream",
}


def _service_command(handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A service command: the extra must be installed, a database it cannot use is a
    one-line error (exit 2), and the databases it opened are closed when it ends."""

    def run(args: argparse.Namespace) -> int:
        missing = missing_service_modules()
        if missing:
            raise FormatError(
                f"cf-sign {args.command}",
                "",
                f"the service extra is not installed ({', '.join(missing)} missing): "
                "pip install 'cf-sign[service]'",
            )
        from sqlalchemy.exc import OperationalError

        from signer.service.errors import ServiceError

        try:
            with flags(_SERVICE_FLAGS):
                return handler(args)
        except ServiceError as exc:  # the API's 4xx refusals, as one line (exit 2)
            raise FormatError(f"cf-sign {args.command}", "", exc.detail) from None
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            where = _settings(args).db_url.split("@")[-1]
            raise FormatError(where, "--db", f"cannot use the database: {reason}") from None
        except OSError as exc:
            # A publish directory that cannot be written (read-only, full): one line.
            where = str(exc.filename) if exc.filename else f"cf-sign {args.command}"
            raise FormatError(where, "", exc.strerror or str(exc)) from None
        finally:
            while _OPEN:
                _OPEN.pop().dispose()

    return run


def _settings(args: argparse.Namespace) -> Settings:
    from signer.service.config import load_settings

    return load_settings(
        getattr(args, "db", None),
        getattr(args, "publish_dir", None),
        publish_to=getattr(args, "publish_to", None),
    )


_OPEN: list[Any] = []  # databases opened by this command, closed when it ends


def _database(args: argparse.Namespace, *, initialized: bool = True) -> Any:
    """The database of `--db`; unless `initialized=False` (init, db upgrade) it must be one
    `service init` made: a typo in `--db` must not create a new, empty one."""
    from signer.service.db.session import Database
    from signer.service.lifecycle import check_exists, check_initialized

    url = _settings(args).db_url
    if initialized:
        check_exists(url)
    db = Database(url)
    _OPEN.append(db)
    if initialized:
        check_initialized(db)
    return db


def _publisher(args: argparse.Namespace, *, initialized: bool = True, writes: bool = False) -> Any:
    from signer.service.db.migrate import upgrade
    from signer.service.publisher import Publisher

    db = _database(args, initialized=initialized)
    upgrade(db)  # an older schema is brought to this version's
    settings = _settings(args)
    publisher = Publisher(db, settings.publish_dir, publish_to=settings.publish_to)
    if writes:
        publisher.files.check_writable()  # before anything is committed
    return publisher


# ----------------------------------------------------------------------------- serve, db


def serve_cmd(args: argparse.Namespace) -> int:
    import uvicorn

    from signer.service.config import export_env, parse_rate

    settings = _settings(args).with_overrides(host=args.host, port=args.port)
    if args.rate_limit:
        rate, burst = parse_rate(args.rate_limit)
        settings = settings.with_overrides(rate_per_second=rate, rate_burst=burst)
    if args.refresh_interval is not None:
        settings = settings.with_overrides(refresh_interval=args.refresh_interval)
    if args.sync_interval is not None:
        if not args.sync_interval >= 0 or args.sync_interval == float("inf"):
            raise FormatError(str(args.sync_interval), "--sync-interval", "must be >= 0")
        settings = settings.with_overrides(sync_interval=args.sync_interval)
    if args.channel_interval is not None:
        if not args.channel_interval >= 0 or args.channel_interval == float("inf"):
            raise FormatError(str(args.channel_interval), "--channel-interval", "must be >= 0")
        settings = settings.with_overrides(channel_interval=args.channel_interval)
    if args.trust_cache is not None:
        if args.trust_cache < 0:
            raise FormatError(str(args.trust_cache), "--trust-cache", "must be >= 0")
        settings = settings.with_overrides(trust_cache_seconds=args.trust_cache)
    if args.workers < 1:
        raise FormatError(str(args.workers), "--workers", "must be >= 1")
    _check_port(args.host, args.port)

    # Reach the database, check it was initialized, migrate it and check the publish
    # directory can be written here, where a failure is one line (exit 2); inside uvicorn's
    # start-up it would be a traceback. The servers then find the schema current.
    _publisher(args, writes=True)
    while _OPEN:  # not held open while serving
        _OPEN.pop().dispose()
    sys.stderr.write(
        f"cf-sign serve: database {settings.db_url.split('@')[-1]}, "
        f"publishing to {settings.publish_dir}, http://{args.host}:{args.port}/\n"
    )
    if args.workers > 1:
        # Workers are separate processes: they read the same settings from the environment.
        os.environ.update(export_env(settings))
        uvicorn.run(
            "signer.service.app:create_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
        )
        return 0
    from signer.service.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.log_level == "debug",
    )
    return 0


def _check_port(host: str, port: int) -> None:
    """Refuse at once (exit 2) an address that cannot be listened on."""
    import socket

    if not 0 <= port < 65536:
        raise FormatError(str(port), "--port", "expected 0 (any free port) to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FormatError(host, "--host", f"cannot resolve: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            raise FormatError(f"{host}:{port}", "--port", exc.strerror or str(exc)) from None


def db_upgrade_cmd(args: argparse.Namespace) -> int:
    from signer.service.db.migrate import upgrade

    before, after = upgrade(_database(args, initialized=False))
    print(f"database at revision {after}" + (f" (was {before})" if before != after else ""))
    return 0


# ----------------------------------------------------------------------------- service


def _print_change(change: Any) -> None:
    for path, version in sorted(change.published.items()):
        print(f"published {path} v{version}")
    for note in change.notes:
        print(f"  {note}")


def init_cmd(args: argparse.Namespace) -> int:
    from signer.service.bootstrap import initialize
    from signer.trust.jsonload import MAX_DELEGATING, read_file

    roots = [(path, read_file(path, MAX_DELEGATING)) for path in _flatten(args.root)]
    change = initialize(
        _publisher(args, initialized=False, writes=True),
        roots,
        args.key_mgr_key,
        args.pkg_mgr_key,
        pkg_mgr_threshold=args.pkg_mgr_threshold,
        bins=args.bins,
        expires_days=args.expires,
        actor=f"cli ({_user()})",
    )
    _print_change(change)
    print(f"service initialized; trust repository in {_settings(args).publish_dir}")
    return 0


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def token_create_cmd(args: argparse.Namespace) -> int:
    from signer.service.tokens import create_token

    publisher = _publisher(args)
    with publisher.change(f"cli ({_user()})", needs_config=False) as change:
        token, secret = create_token(change, args.name, args.scope)
    sys.stderr.write(
        f"token {token.id} ({token.name}, scopes: {token.scopes}); shown once, "
        "store it as a secret:\n"
    )
    print(secret)
    return 0


def token_revoke_cmd(args: argparse.Namespace) -> int:
    from signer.service.tokens import revoke_token

    publisher = _publisher(args)
    with publisher.change(f"cli ({_user()})", needs_config=False) as change:
        token = revoke_token(change, args.token_id)
    if token is None:
        raise FormatError(str(args.token_id), "ID", "no such live token")
    print(f"revoked token {token.id} ({token.name})")
    return 0


def token_list_cmd(args: argparse.Namespace) -> int:
    from signer.cli.common import print_table
    from signer.service.tokens import list_tokens

    publisher = _publisher(args)
    with publisher.db.read() as session:
        rows = [["ID", "NAME", "SCOPES", "CREATED", "REVOKED"]]
        for t in list_tokens(session):
            revoked = t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "-"
            created = t.created_at.isoformat(timespec="seconds")
            rows.append([str(t.id), t.name, t.scopes, created, revoked])
    print_table(rows)
    return 0


def refresh_cmd(args: argparse.Namespace) -> int:
    from datetime import timedelta

    publisher = _publisher(args, writes=True)
    within = timedelta(days=args.within) if args.within is not None else None
    change = publisher.refresh(within, actor=f"cli ({_user()})")
    _print_change(change)
    written = publisher.sync_files()
    for path in written:
        print(f"rewrote {path} (the publish directory lagged the database)")
    if not change.published and not written:
        print("nothing to re-sign")
    return 0


def channel_add_cmd(args: argparse.Namespace) -> int:
    from signer.service import channels

    specs = channels.pair_specs(args.subdir, args.upstream, args.current_upstream or ())
    publisher = _publisher(args)
    with publisher.change(f"cli ({_user()})") as change:
        channels.add_channel(change, args.name, specs)
    for spec in specs:
        print(f"channel {args.name}/{spec.subdir}: {spec.upstream}")
    print("the server signs it at its next pass (or: cf-sign service channel refresh)")
    return 0


def channel_list_cmd(args: argparse.Namespace) -> int:
    from signer.cli.common import emit_json, print_table
    from signer.service import channels

    with _publisher(args).db.read() as session:
        views = [channels.view(c) for c in channels.list_channels(session)]
    if args.json:
        emit_json({"channels": [v.model_dump() for v in views]})
        return 0
    rows = [["CHANNEL", "SUBDIR", "RECORDS", "ATTESTED", "OBSERVED", "COVERAGE", "REFRESHED",
             "STATUS"]]  # fmt: skip
    for v in views:
        for d in v.subdirs:
            status = f"failing: {d.error}" if d.error else ("ok" if d.refreshed_at else "new")
            rows.append([v.name, d.subdir, str(d.records), str(d.attested), str(d.observed),
                         f"{d.coverage:.1%}", d.refreshed_at or "-", status])  # fmt: skip
    if len(rows) == 1:
        print("no channels (add one: cf-sign service channel add NAME --subdir S --upstream URL)")
        return 0
    print_table(rows)
    return 0


def channel_remove_cmd(args: argparse.Namespace) -> int:
    from signer.service import channels
    from signer.service.overlays import OverlaySigner

    publisher = _publisher(args, writes=True)
    with publisher.change(f"cli ({_user()})") as change:
        channels.remove_channel(change, args.name)
    OverlaySigner(publisher.db, publisher).prune()  # its files leave this publish directory
    print(f"channel {args.name} removed")
    return 0


def channel_refresh_cmd(args: argparse.Namespace) -> int:
    from signer.cli.common import emit_json, print_table
    from signer.service import channels
    from signer.service.overlays import OverlaySigner

    publisher = _publisher(args, writes=True)
    if args.name is not None:
        with publisher.db.read() as session:
            channels.get_channel(session, args.name)  # unknown: one line, exit 2
    results = OverlaySigner(publisher.db, publisher, jobs=args.jobs).refresh(args.name)
    if args.json:
        emit_json({"results": [r.model_dump() for r in results]})
    else:
        rows = [["CHANNEL", "SUBDIR", "DOCUMENT", "RECORDS", "ATTESTED", "OBSERVED", "UNSIGNED",
                 "RESULT"]]  # fmt: skip
        for r in results:
            outcome = (
                ("published" if r.published else "unchanged") if r.ok else f"failed: {r.error}"
            )
            rows.append([r.channel, r.subdir, r.document, str(r.records), str(r.attested),
                         str(r.observed), str(r.unattested + r.refused), outcome])  # fmt: skip
        if len(rows) > 1:
            print_table(rows)
        else:
            print("no channels")
    return 0 if all(r.ok for r in results) else 1


def audit_verify_cmd(args: argparse.Namespace) -> int:
    from signer.service.audit import verify
    from signer.trust.errors import VerificationError

    publisher = _publisher(args)
    with publisher.db.read() as session:
        report = verify(session)
    if not report.ok:
        for problem in report.problems[1:]:
            sys.stderr.write(f"FAIL audit log: {problem}\n")
        raise VerificationError("audit log", "chain", report.problems[0])
    print(
        f"audit log OK: {report.entries} entries; head entry {report.head_seq} "
        f"hash {report.head_hash}"
    )
    return 0


def audit_show_cmd(args: argparse.Namespace) -> int:
    from signer.service.audit import page

    publisher = _publisher(args)
    with publisher.db.read() as session:
        for entry in page(session, args.after):
            print(json.dumps(entry, sort_keys=True))
    return 0


# ----------------------------------------------------------------------------- submit


def submit_cmd(args: argparse.Namespace) -> int:
    from signer.feedstock.submit import UNSENT, collect, post_all

    if not args.service:
        raise FormatError("--service", "URL", f"required (or set ${ENV_SERVICE_URL})")
    if not args.service.startswith(("http://", "https://")):
        raise FormatError(args.service, "--service", "expected an http(s) URL")
    if args.retries < 1 or args.batch < 1:
        raise FormatError("--retries/--batch", "", "must be >= 1")
    from signer.cli.common import flags

    with flags({"build directory": "--build-dir"}):
        batches = collect(args.artifacts, args.build_dir, args.sig_dir)
    results = post_all(
        args.service, batches, retries=args.retries, timeout=args.timeout, batch=args.batch
    )
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2, sort_keys=True))
    else:
        for result in results:
            print(result.line())
    accepted = sum(r.accepted for r in results)
    unsent = sum(r.status == UNSENT for r in results)
    refused = len(results) - accepted - unsent
    if not args.json:
        print(f"{accepted} accepted, {refused} refused" + (f", {unsent} unsent" if unsent else ""))
    return 0 if accepted == len(results) else 1
