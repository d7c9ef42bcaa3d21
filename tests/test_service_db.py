"""The service's database and publish directory as given on the command line (issue 9
items 3 and 13): a mistyped `--db` is refused, not created; versions are 64-bit; an
unwritable publish directory is one line, before anything is committed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from test_service_support import World, make_world, new_pg_database, run_cli

from signer.service.db.models import Document, DocumentVersion, Token
from signer.service.db.session import Database

pytest_plugins = ("test_service_support",)  # fixtures: db_url, world

COMMANDS = (
    ["service", "token", "create", "--scope", "admin"],
    ["service", "token", "list"],
    ["service", "audit", "verify"],
    ["service", "refresh"],
)


def test_a_mistyped_sqlite_db_is_not_created(tmp_path: Path) -> None:
    world = make_world(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")
    typo = tmp_path / "servcie.db"
    for args in COMMANDS:
        code, out, err = run_cli(*args, "--db", f"sqlite:///{typo}")
        assert code == 2 and err.count("\n") == 1, (args, out, err)
        assert "not an initialized cf-sign database" in err and "Traceback" not in err
        assert not out.startswith("cfs_")  # no token printed
        assert not typo.exists() and not list(tmp_path.glob("servcie.db*")), args
    # Control: the real database takes the same commands.
    for args in COMMANDS:
        extra = ["--publish-dir", world.publish_dir] if "refresh" in args else []
        code, out, err = run_cli(*args, "--db", world.db_url, *extra)
        assert code == 0, (args, out, err)


def test_an_uninitialized_database_gets_no_token(tmp_path: Path) -> None:
    """`db upgrade` may make the schema; a token needs an initialized service."""
    for url in (f"sqlite:///{tmp_path / 'fresh.db'}", _pg_or_skip()):
        assert run_cli("db", "upgrade", "--db", url)[0] == 0
        code, out, err = run_cli("service", "token", "create", "--scope", "admin", "--db", url)
        assert code == 2 and "not an initialized cf-sign database" in err, out + err
        db = Database(url)
        try:
            with db.read() as session:
                assert session.scalars(select(Token)).all() == []
        finally:
            db.dispose()
        # `serve` refuses it too, before listening.
        code, _, err = _process("serve", "--db", url, "--port", "0")
        assert code == 2 and "not an initialized cf-sign database" in err, err


def _pg_or_skip() -> str:
    try:
        return new_pg_database()
    except Exception as exc:  # no server: the SQLite half still ran
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL: {exc}")


def _process(*args: object, user: int | None = None) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "signer.cli.main", *map(str, args)]
    if user is not None and os.geteuid() == 0:  # root writes anywhere: drop to `user`
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another user can reach (pytest's own are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="cf-sign-ro-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_read_only_publish_dir_is_one_line(shared_tmp: Path) -> None:
    nobody = 65534
    work = shared_tmp
    world = make_world(work, f"sqlite:///{work / 'db' / 'service.db'}")
    for dirpath, _, filenames in os.walk(work):  # the service runs as `nobody`
        for path in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            os.chown(path, nobody, nobody)
    readonly = work / "ro"
    readonly.mkdir(mode=0o555)
    os.chmod(readonly, 0o555)
    os.chmod(work, 0o755)
    for args in (["service", "refresh", "--within", "1000"], ["serve", "--port", "0"]):
        code, out, err = _process(*args, "--db", world.db_url, "--publish-dir",
                                  readonly / "trust", user=nobody)  # fmt: skip
        assert code == 2, (args, out, err)
        assert err.count("\n") == 1 and "Permission denied" in err and "Traceback" not in err
        assert str(readonly) in err, err
    # Nothing was committed by the refused refresh: key_mgr is still at version 1.
    db = Database(world.db_url)
    try:
        with db.read() as session:
            assert session.get(Document, "key_mgr.json").version == 1  # type: ignore[union-attr]
    finally:
        db.dispose()
    # Control: a writable directory takes the same refresh.
    writable = work / "rw"
    writable.mkdir()
    os.chown(writable, nobody, nobody)
    code, out, err = _process("service", "refresh", "--within", "1000", "--db", world.db_url,
                              "--publish-dir", writable / "trust", user=nobody)  # fmt: skip
    assert code == 0 and "published key_mgr.json v2" in out, out + err


def test_versions_are_64_bit(world: World) -> None:
    """Rule 11's recovery resets from versions a stolen key pushed high: 10**12 round-trips."""
    high = 10**12
    db = Database(world.db_url)
    try:
        with db.write() as session, session.begin():
            doc = session.get(Document, "key_mgr.json")
            assert doc is not None
            doc.version = high - 1
            session.add(DocumentVersion(path="key_mgr.json", version=high - 1, sha256=doc.sha256,
                                        published_at=doc.published_at))  # fmt: skip
    finally:
        db.dispose()
    code, out, err = run_cli("service", "refresh", "--within", "1000", "--db", world.db_url,
                             "--publish-dir", world.publish_dir)  # fmt: skip
    assert code == 0 and f"published key_mgr.json v{high}" in out, out + err
    db = Database(world.db_url)
    try:
        with db.read() as session:
            versions = session.scalars(
                select(DocumentVersion.version).where(DocumentVersion.path == "key_mgr.json")
            ).all()
            assert high in versions and session.get(Document, "key_mgr.json").version == high  # type: ignore[union-attr]
    finally:
        db.dispose()
    server = world.server()
    signed = httpx.get(f"{server.url}/trust/key_mgr.json").json()["signed"]
    assert signed["version"] == high
