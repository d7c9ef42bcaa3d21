"""Shared fixtures of the service tests: databases, real servers on loopback, a world.

`db_url` runs a test against SQLite (a file) and against PostgreSQL (a fresh database per
test on the local server, `cfsign_test_<session>_<n>`, all dropped when the session ends).
Servers are real processes (`python -m signer.cli.main serve ...`) on a free port.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from signer.artifacts.build import build_package
from signer.cli.main import main
from signer.devrepo import DevTrustRepo, make_dev_trust_repo
from signer.keys import generate_key

PG_ADMIN_URL = os.environ.get("CF_SIGN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_SESSION = secrets.token_hex(3)
_created: list[str] = []


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


def _pg_available() -> str | None:
    try:
        with _pg_admin() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return str(exc).splitlines()[0]
    return None


def _pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def new_pg_database() -> str:
    name = f"cfsign_test_{_SESSION}_{len(_created)}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _created.append(name)
    return _pg_url(name)


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_databases() -> Iterator[None]:
    yield
    if not _created:
        return
    with _pg_admin() as conn:
        for name in _created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_for(kind: str, directory: Path) -> str:
    """A fresh database of `kind` ("sqlite" or "postgresql") for one test or module."""
    if kind == "sqlite":
        return f"sqlite:///{directory / 'service.db'}"
    problem = _pg_available()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed in CI: {problem}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}: {problem}")
    return new_pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_for(request.param, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, Server]]:
    """One initialized world and its server for a whole test module (per database)."""
    base = tmp_path_factory.mktemp(f"served-{request.param}")
    world = make_world(base, database_for(request.param, base))
    extra = getattr(request.module, "SERVER_ARGS", ())
    server = world.server(*extra)
    yield world, server
    for s in world.servers:
        s.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """`cf-sign serve` as a real process on loopback."""

    db_url: str
    publish_dir: Path
    log_path: Path
    extra: tuple[str, ...] = ()
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signer.cli.main", "serve", "--db", self.db_url,
             "--publish-dir", str(self.publish_dir), "--port", str(self.port),
             "--log-level", "warning", *self.extra],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def run_cli(*args: object) -> tuple[int, str, str]:
    """`cf-sign ARGS` in this process, capturing output without pytest's capsys."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def run_process(*args: object, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "signer.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


@dataclass
class World:
    """A dev trust repository, an initialized service database, and tokens."""

    base: Path
    db_url: str
    publish_dir: Path
    repo: DevTrustRepo
    admin_token: str = ""
    registrar_token: str = ""
    servers: list[Server] = field(default_factory=list)

    def server(self, *extra: str) -> Server:
        server = Server(
            self.db_url,
            self.publish_dir,
            self.base / f"server{len(self.servers)}.log",
            tuple(extra),
        )
        self.servers.append(server)
        return server.start()

    def feedstock_key(self, name: str) -> tuple[str, dict[str, Any]]:
        """(KEYREF, public key dict) of a new ed25519 feedstock key."""
        key_path, pub_path, _ = generate_key(name, self.base / "feedstock-keys")
        return f"file:{key_path}", json.loads(pub_path.read_text())

    def token(self, *scopes: str, name: str = "test") -> str:
        args: list[str] = ["service", "token", "create", "--db", self.db_url, "--name", name]
        for scope in scopes:
            args += ["--scope", scope]
        code, out, err = run_cli(*args)
        assert code == 0, err
        return out.strip()


def make_world(base: Path, db_url: str) -> World:
    repo = make_dev_trust_repo(base / "dev")
    publish_dir = base / "published"
    code, out, err = run_cli(
        "service", "init", "--db", db_url, "--publish-dir", publish_dir,
        "--root", repo.root_file, "--key-mgr-key", repo.keyref("key_mgr"),
        "--pkg-mgr-key", repo.keyref("pkg_mgr"), "--pkg-mgr-key", repo.keyref("pkg_mgr_mamba"),
    )  # fmt: skip
    assert code == 0, out + err
    world = World(base, db_url, publish_dir, repo)
    world.admin_token = world.token("admin", name="admin")
    world.registrar_token = world.token("registrar", name="bot")
    return world


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = make_world(tmp_path, db_url)
    yield w
    for server in w.servers:
        server.stop()


def build_artifacts(out: Path, names: list[tuple[str, str]]) -> list[Path]:
    """Real packages `name-1.0-<build>` under out/<subdir>/, as conda-build leaves them."""
    paths = []
    for name, subdir in names:
        build = "py_0" if subdir == "noarch" else "h1234_0"
        paths.append(build_package(out / subdir, name, "1.0", build, subdir=subdir))
    return paths


def json_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is `status` with a JSON error body (never a 500, never HTML)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str) and isinstance(body.get("detail"), str), body
    return body


Waiter = Callable[[], bool]


def wait_for(condition: Waiter, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
