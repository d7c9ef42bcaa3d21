"""Operating the service: init checks, refresh, repairing the publish directory, a crash
mid-publish, key rotation, submit's retries, rate-limit buckets, health and metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from sqlalchemy import select
from test_service_support import Server, World, make_world, run_cli, wait_for

from signer.devrepo import make_dev_trust_repo
from signer.feedstock.submit import Submission, post_batch
from signer.fetch import LocalSource
from signer.keys import KeyHandle, generate_key, resolve_keyref
from signer.service import bootstrap, registry
from signer.service.db.models import Document
from signer.service.db.session import Database
from signer.service.online_keys import OnlineKeys
from signer.service.publisher import Publisher
from signer.service.ratelimit import TokenBuckets
from signer.trust.feedstocks import INDEX_PATH, resolve_feedstock
from signer.trust.metadata import Delegation, Root, Signable, parse_metadata
from signer.trust.repository import load_key_mgr, update_root
from signer.trust.signing import envelope_signer, sign_envelope
from signer.trust.timefmt import format_time, system_clock

pytest_plugins = ("test_service_support",)  # fixtures: db_url, world


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ops.db'}"


def _init(
    db: str, pub: Path, root: Path, key_mgr: str, pkg_mgr: str, *roots: Path
) -> tuple[int, str]:
    args: list[object] = [
        "service",
        "init",
        "--db",
        db,
        "--publish-dir",
        pub,
        "--root",
        root,
        *roots,
    ]
    code, out, err = run_cli(*args, "--key-mgr-key", key_mgr, "--pkg-mgr-key", pkg_mgr)
    return code, out + err


def _root_v2(repo: Any, key_mgr_hex: str) -> bytes:
    now = system_clock().replace(microsecond=0)
    old = parse_metadata(repo.root_file.read_bytes(), "root", "root").meta
    assert isinstance(old, Root)
    root = Root(2, format_time(now), format_time(now + timedelta(days=365)), {
        "root": old.root_keys, "key_mgr": Delegation((key_mgr_hex,), 1),
    })  # fmt: skip
    envelope = Signable(root.to_signed(), {}, "2.root.json")
    for key in repo.root_keys[:2]:  # 2 of 3: the old and the new root keys are the same
        sign_envelope(envelope, envelope_signer(key, openpgp=True))
    return envelope.to_bytes()


def test_init_checks(tmp_path: Path) -> None:
    repo = make_dev_trust_repo(tmp_path / "dev")
    db, pub = _sqlite(tmp_path), tmp_path / "pub"
    # The key_mgr key must be one the root delegates to.
    code, out = _init(db, pub, repo.root_file, repo.keyref("pkg_mgr"), repo.keyref("pkg_mgr"))
    assert code == 2 and "not one of root v1's key_mgr keys" in out, out
    # A root that does not chain (its signatures do not cover it) is refused.
    forged = json.loads(repo.root_file.read_text())
    forged["signed"]["version"] = 2
    (tmp_path / "2.root.json").write_text(json.dumps(forged))
    code, out = _init(db, pub, repo.root_file, repo.keyref("key_mgr"), repo.keyref("pkg_mgr"),
                      tmp_path / "2.root.json")  # fmt: skip
    assert code == 1 and "2.root.json" in out, out
    assert not pub.exists()
    # A real chain 1 -> 2 is published byte-identical, in any order given.
    (tmp_path / "2.root.json").write_bytes(_root_v2(repo, repo.key_mgr_key.public_key_hex))  # type: ignore[union-attr]
    code, out = _init(db, pub, tmp_path / "2.root.json", repo.keyref("key_mgr"),
                      repo.keyref("pkg_mgr"), repo.root_file)  # fmt: skip
    assert code == 0, out
    assert (pub / "1.root.json").read_bytes() == repo.root_file.read_bytes()
    assert (pub / "2.root.json").read_bytes() == (tmp_path / "2.root.json").read_bytes()
    code, out = _init(db, pub, repo.root_file, repo.keyref("key_mgr"), repo.keyref("pkg_mgr"))
    assert code == 2 and "already initialized" in out
    # An unreachable database is one line and exit 2.
    code, out, err = run_cli(
        "db", "upgrade", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    assert code == 2 and err.count("\n") == 1 and "cannot use the database" in err


def test_refresh_and_repair(world: World) -> None:
    code, out, err = run_cli(
        "service", "refresh", "--db", world.db_url, "--publish-dir", world.publish_dir
    )
    assert code == 0 and "nothing to re-sign" in out, out + err
    before = json.loads((world.publish_dir / "key_mgr.json").read_bytes())["signed"]
    code, out, err = run_cli("service", "refresh", "--within", "1000", "--db", world.db_url,
                             "--publish-dir", world.publish_dir)  # fmt: skip
    assert code == 0, err
    for path in ("key_mgr.json v2", "pkg_mgr.json v2", "feedstocks/index.json v2"):
        assert f"published {path}" in out, out
    after = json.loads((world.publish_dir / "key_mgr.json").read_bytes())["signed"]
    assert after["version"] == before["version"] + 1 and after["expiration"] >= before["expiration"]
    # A publish directory that lags the database (a lost write) is repaired.
    current = (world.publish_dir / INDEX_PATH).resolve()
    current.unlink()
    current.write_bytes(b"stale")
    code, out, err = run_cli(
        "service", "refresh", "--db", world.db_url, "--publish-dir", world.publish_dir
    )
    assert code == 0 and f"rewrote {INDEX_PATH}" in out, out + err
    db = Database(world.db_url)
    try:
        with db.read() as session:
            stored = session.scalar(select(Document.data).where(Document.path == INDEX_PATH))
    finally:
        db.dispose()
    assert (world.publish_dir / INDEX_PATH).read_bytes() == stored


def test_server_refreshes_documents_nearing_expiry(tmp_path: Path) -> None:
    """The periodic refresh inside `cf-sign serve`: short-lived documents get re-signed."""
    repo = make_dev_trust_repo(tmp_path / "dev")
    db, pub = _sqlite(tmp_path), tmp_path / "published"
    code, out = _init(db, pub, repo.root_file, repo.keyref("key_mgr"), repo.keyref("pkg_mgr"))
    assert code == 0, out
    server = Server(db, pub, tmp_path / "serve.log", ("--refresh-interval", "0.3")).start()
    try:

        def version(path: str) -> int:
            signed = httpx.get(f"{server.url}/trust/{path}").json()["signed"]
            return int(signed["version"])

        assert version("key_mgr.json") == 1
        # Nothing is near expiry yet (90 days): the server leaves the documents alone...
        time.sleep(1.0)
        assert version("key_mgr.json") == 1
        # ...until their lifetime is cut short (as if 45 days had passed): a refresh within
        # half of 90 days re-signs them, from inside the server, without being asked.
        _shorten_expiry(db, "key_mgr.json", days=1)
        wait_for(lambda: version("key_mgr.json") == 2, timeout=20)
        assert version("pkg_mgr.json") == 1  # only what was near expiry
    finally:
        server.stop()
    code, out, err = run_cli("service", "audit", "show", "--db", db)
    assert code == 0, err
    assert '"actor": "refresh"' in out and "documents.refresh" in out, out


def _shorten_expiry(db_url: str, path: str, days: int) -> None:
    """Make the stored document look older: the refresh judges by the recorded expiration."""
    db = Database(db_url)
    try:
        with db.write() as session, session.begin():
            doc = session.get(Document, path)
            assert doc is not None
            doc.expiration = format_time(system_clock() + timedelta(days=days))
    finally:
        db.dispose()


def _verify_dir(world: World, directory: Path, feedstock: str) -> int:
    """Verify the directory as a client would; returns the feedstock's number of keys."""
    source = LocalSource(directory)
    anchor = parse_metadata(world.repo.root_file.read_bytes(), "root", "root")
    root = update_root(source.fetch, anchor, system_clock())
    load_key_mgr(source.fetch, root, system_clock())
    return len(
        resolve_feedstock(source.fetch, root.meta, feedstock, system_clock()).delegation.keys
    )


def test_crash_mid_publish_keeps_the_previous_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world(tmp_path, _sqlite(tmp_path))
    db = Database(world.db_url)
    publisher = Publisher(db, world.publish_dir, OnlineKeys())
    try:
        for i in range(3):
            _, pub = world.feedstock_key(f"f{i}")
            with publisher.change("test") as change:
                registry.create_feedstock(change, f"f{i}", outputs=[f"f{i}"], keys=[pub])
        assert _verify_dir(world, world.publish_dir, "f1") == 1
        previous = world.publish_dir.resolve()

        import signer.service.publish_dir as publish_dir

        real = publish_dir.write_atomic
        calls = []

        def crash_on_second(path: Path, data: bytes, mode: int = 0o644) -> None:
            calls.append(path)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            real(path, data, mode)

        monkeypatch.setattr(publish_dir, "write_atomic", crash_on_second)
        _, pub = world.feedstock_key("f1-second")
        with pytest.raises(OSError), publisher.change("test") as change:
            registry.add_key(change, "f1", pub, admin=True)
        monkeypatch.setattr(publish_dir, "write_atomic", real)
        # The directory still shows the previous, complete and consistent set...
        assert world.publish_dir.resolve() == previous
        assert _verify_dir(world, world.publish_dir, "f1") == 1
        # ...the database (what /trust serves) has the new one, and a sync catches up.
        assert set(publisher.sync_files()) == {
            "feedstocks/index.json",
            *[p for p in change.files if p.startswith("feedstocks/")],
        }
        assert _verify_dir(world, world.publish_dir, "f1") == 2
    finally:
        db.dispose()


def test_pkg_mgr_rotation_and_new_root(tmp_path: Path) -> None:
    world = make_world(tmp_path, _sqlite(tmp_path))
    db = Database(world.db_url)
    publisher = Publisher(db, world.publish_dir, OnlineKeys())
    try:
        _, pub = world.feedstock_key("rot")
        with publisher.change("test") as change:
            registry.create_feedstock(change, "rot", outputs=["rot"], keys=[pub])
        new_pkg, _, _ = generate_key("pkg_mgr2", tmp_path / "new")
        change = bootstrap.set_pkg_mgr_keys(publisher, [f"file:{new_pkg}"], 1, actor="test")
        assert change.published["key_mgr.json"] == 2 and change.published["pkg_mgr.json"] == 2
        key = resolve_keyref(f"file:{new_pkg}")
        assert isinstance(key, KeyHandle)
        source = LocalSource(world.publish_dir)
        anchor = parse_metadata(world.repo.root_file.read_bytes(), "root", "root")
        root = update_root(source.fetch, anchor, system_clock())
        key_mgr = load_key_mgr(source.fetch, root, system_clock())
        assert key_mgr.meta.pkg_mgr_keys.pubkeys == (key.public_key_hex,)
        assert set(json.loads(source.fetch("pkg_mgr.json", 1 << 20) or b"")["signatures"]) == {
            key.public_key_hex
        }

        # Root v2 moves key_mgr to a new key: key_mgr and the delegations are re-signed.
        new_km, _, _ = generate_key("key_mgr2", tmp_path / "new")
        km = resolve_keyref(f"file:{new_km}")
        assert isinstance(km, KeyHandle)
        data = _root_v2(world.repo, km.public_key_hex)
        with pytest.raises(Exception, match="key_mgr"):
            bootstrap.publish_root(publisher, data, None, actor="test")  # old keyref no longer fits
        change = bootstrap.publish_root(publisher, data, [f"file:{new_km}"], actor="test")
        assert {"2.root.json", "key_mgr.json", INDEX_PATH} <= set(change.published)
        assert (world.publish_dir / "2.root.json").read_bytes() == data
        assert _verify_dir(world, world.publish_dir, "rot") == 1  # chains 1 -> 2, new key_mgr
    finally:
        db.dispose()


class _Stub(BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []
    seen: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.seen.append(self.rfile.read(int(self.headers["Content-Length"])))
        status, headers, body = self.answers.pop(0)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/attestations"
    server.shutdown()


def test_submit_retries_with_backoff(stub: str) -> None:
    item = Submission("noarch/a-1-0.conda", "a", "0" * 64, {"feedstock": "a"})
    verdict = {
        "artifacts": {item.artifact: {"accepted": True, "status": "stored", "keyids": ["k"]}}
    }
    _Stub.answers[:] = [
        (503, {}, b'{"error": "x", "detail": "down"}'),
        (429, {"Retry-After": "7"}, b'{"error": "rate_limited", "detail": "slow"}'),
        (200, {"Content-Type": "application/json"}, json.dumps(verdict).encode()),
    ]
    sleeps: list[float] = []
    results = post_batch(stub, "a", [item], retries=5, timeout=10, sleep=sleeps.append)
    assert results[0].accepted and results[0].status == "stored"
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and sleeps[1] == 7.0
    assert json.loads(_Stub.seen[-1])["artifacts"][item.artifact]["sha256"] == "0" * 64
    # A 4xx other than 429 is not retried; giving up names the last reason.
    _Stub.answers[:] = [(404, {}, b'{"error": "unknown_feedstock", "detail": "who?"}')]
    results = post_batch(stub, "a", [item], retries=5, timeout=10, sleep=sleeps.append)
    assert not results[0].accepted and results[0].check == "unknown_feedstock"
    _Stub.answers[:] = [(502, {}, b"bad gateway")] * 3
    results = post_batch(stub, "a", [item], retries=3, timeout=10, sleep=lambda _s: None)
    assert not results[0].accepted and "gave up after 3" in (results[0].reason or "")
    assert results[0].status == "unsent"  # never judged: not a refusal


def test_token_buckets() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=10, clock=lambda: now[0])
    assert buckets.take("a", 10) == 0.0
    assert buckets.take("a", 1) == pytest.approx(0.5)
    assert buckets.take("b", 5) == 0.0  # buckets are per feedstock
    now[0] = 2.0
    assert buckets.take("a", 4) == 0.0 and buckets.take("a", 1) > 0
    assert buckets.take("c", 1000) == 0.0  # a request never needs more than a full bucket


def test_health_and_metrics(tmp_path: Path) -> None:
    world = make_world(tmp_path, _sqlite(tmp_path))
    server = world.server()
    try:
        health = httpx.get(f"{server.url}/healthz").json()
        assert health == {"status": "ok", "database": "ok", "initialized": True,
                          "root_version": 1, "root_expires": health["root_expires"],
                          "index_version": 1}  # fmt: skip
        httpx.get(f"{server.url}/trust/key_mgr.json")
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'cf_sign_document_version{path="key_mgr.json"} 1.0' in metrics
        assert 'cf_sign_document_expiry_seconds{path="root.json"}' in metrics
        assert 'cf_sign_http_requests_total{method="GET",route="/trust",status="200"}' in metrics
    finally:
        server.stop()


HIDE_SERVICE = """
import sys
for name in ("fastapi", "sqlalchemy", "uvicorn", "alembic", "psycopg", "prometheus_client"):
    sys.modules[name] = None  # as on a feedstock CI runner: cf-sign without its service extra
from signer.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_service_extra(tmp_path: Path) -> None:
    """The service commands say what to install; `submit` (CI) works without the extra."""
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", HIDE_SERVICE, *args],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip

    for args in (["serve"], ["db", "upgrade"], ["service", "token", "list"]):
        proc = run(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "pip install 'cf-sign[service]'" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cf-sign-data").exists()  # nothing written

    from signer.artifacts.build import build_package

    artifact = build_package(tmp_path / "bld" / "noarch", "x", "1.0", "py_0", subdir="noarch")
    key, _, _ = generate_key("x", tmp_path / "keys")
    proc = run("sign", str(artifact), "--feedstock", "x", "--key", f"file:{key}")
    assert proc.returncode == 0, proc.stderr
    # Port 9 (discard) refuses: the request fails after its one attempt, cleanly.
    proc = run("submit", str(artifact), "--service", "http://127.0.0.1:9", "--retries", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "UNSENT   noarch/x-1.0-py_0.conda: POST http://127.0.0.1:9/v1/attestations: " in (
        proc.stdout
    )
    assert "0 accepted, 0 refused, 1 unsent" in proc.stdout

    # The demo runs its other steps and says what step 6 needs.
    proc = run("demo", "--dir", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "OK: every record is validly signed" in proc.stdout
    assert "(skipped: the service extra is not installed" in proc.stdout


def test_serve_with_worker_processes(world: World) -> None:
    """`--workers 2`: uvicorn's worker processes rebuild the settings from the environment."""
    from signer.service.config import export_env, load_settings

    settings = load_settings(world.db_url, world.publish_dir, env={}).with_overrides(
        rate_per_second=2.5, rate_burst=7, refresh_interval=0.0, trust_cache_seconds=0.25,
        channel_interval=42.0,
    )
    assert load_settings(env=export_env(settings)) == settings

    server = world.server("--workers", "2", "--rate-limit", "2.5/7")
    _, pub = world.feedstock_key("multi")
    answer = httpx.post(
        f"{server.url}/v1/admin/feedstocks",
        json={"name": "multi", "outputs": ["multi"], "keys": [pub]},
        headers={"Authorization": f"Bearer {world.registrar_token}"},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    version = answer.json()["published"][INDEX_PATH]
    # Whichever worker answers, within its 1 s cache it serves the new index.
    time.sleep(1.1)
    for _ in range(6):
        index = httpx.get(f"{server.url}/trust/{INDEX_PATH}").json()
        assert index["signed"]["version"] == version


def test_serve_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    """A database it cannot reach, a port in use: one line and exit 2, before uvicorn."""
    import socket

    from test_service_support import run_process

    db = f"sqlite:///{tmp_path / 's.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_process("serve", "--db", db, "--port", port)
        assert code == 2 and "--port" in err and "in use" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run_process(
        "serve", "--db", "postgresql://nobody@127.0.0.1:1/none", "--port", "0"
    )
    assert code == 2, err
    assert err.startswith("cf-sign: error: 127.0.0.1:1/none: --db: cannot use the database")
    assert "Traceback" not in err and "nobody" not in err  # no credentials echoed
    code, _, err = run_process("service", "audit", "verify", "--db", "postgresql://x@127.0.0.1:1/n")
    assert code == 2 and "cannot use the database" in err and "Traceback" not in err, err
    code, _, err = run_process("serve", "--db", db, "--workers", "0")
    assert code == 2 and "--workers" in err
    code, _, err = run_process("serve", "--db", db, "--channel-interval", "-1")
    assert code == 2 and "--channel-interval" in err and err.count("\n") == 1, err
