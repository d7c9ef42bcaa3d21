"""kill -9 at each step of a publication, and replicas with their own publish directories
(issue 9 item 11; DESIGN.md section 7: every replica's publish target converges to the
database, a file the database names is never missing for long, and an index never names
a bin that is not there).

The crashes are real: `CF_SIGN_CRASH_AT=<step>` makes the server process SIGKILL itself
at that step (signer/service/faults.py), between two real writes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from test_service_support import Server, World, build_artifacts, make_world, run_cli, wait_for

from signer.artifacts import read_artifact
from signer.client import TrustSession
from signer.feedstock.sign import build_sidecar
from signer.keys import resolve_keyref
from signer.service import registry
from signer.service.db.models import Attestation, Document
from signer.service.db.session import Database
from signer.service.faults import ENV
from signer.service.publisher import Publisher
from signer.trust.feedstocks import INDEX_PATH, bin_path, parse_index

pytest_plugins = ("test_service_support",)

PUBLISH_STEPS = [
    "publish.after-commit",
    "publish.mid-snapshot",
    "publish.before-switch",
    "publish.after-switch",
]


def _world(tmp_path: Path) -> World:
    return make_world(tmp_path, f"sqlite:///{tmp_path / 'service.db'}")


def _register(world: World, server: Server, name: str) -> httpx.Response:
    _, pub = world.feedstock_key(name)
    return httpx.post(
        f"{server.url}/v1/admin/feedstocks",
        json={"name": name, "outputs": [name], "keys": [pub]},
        headers={"Authorization": f"Bearer {world.admin_token}"},
        timeout=60,
    )


def _crash(server: Server) -> None:
    assert server.proc is not None
    server.proc.wait(30)
    assert server.proc.returncode == -9, server.proc.returncode  # killed, not exited
    server.proc = None


def _consistent(directory: Path) -> None:
    """The directory's index names only bins that are there, byte for byte."""
    index, _ = parse_index((directory / INDEX_PATH).read_bytes())
    for name, entry in index.shards.items():
        data = (directory / bin_path(name)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256, f"bin {name} differs"


def _delegated(world: World, directory: Path, feedstock: str, tmp: Path) -> bool:
    session = TrustSession.open(directory, root=world.repo.root_file, state_dir=tmp)
    try:
        session.delegation(feedstock)
    except Exception as exc:
        assert getattr(exc, "check", None) == "delegation", exc
        return False
    return True


def _db_documents(world: World) -> dict[str, bytes]:
    db = Database(world.db_url)
    try:
        with db.read() as session:
            return {p: bytes(d) for p, d in session.execute(select(Document.path, Document.data))}
    finally:
        db.dispose()


def _matches_db(world: World, directory: Path) -> bool:
    return all(
        (directory / p).is_file() and (directory / p).read_bytes() == d
        for p, d in _db_documents(world).items()
    )


@pytest.mark.parametrize("step", PUBLISH_STEPS)
def test_kill_9_mid_publication(tmp_path: Path, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    world = _world(tmp_path)
    server = world.server()
    assert _register(world, server, "cr-a").status_code == 201
    server.stop()
    monkeypatch.setenv(ENV, step)
    server = world.server()
    with pytest.raises(httpx.TransportError):
        _register(world, server, "cr-b")
    _crash(server)
    monkeypatch.delenv(ENV)
    # The directory is consistent, whichever step the crash hit: the previous set or the new.
    _consistent(world.publish_dir)
    assert _delegated(world, world.publish_dir, "cr-a", tmp_path / "s1")
    assert _delegated(world, world.publish_dir, "cr-b", tmp_path / "s2") == (
        step == "publish.after-switch"
    )
    # The database committed cr-b. The next publication (another process, not restarted
    # in between, so no start-up repair) brings everything the database has.
    db = Database(world.db_url)
    try:
        _, pub = world.feedstock_key("cr-c")
        with Publisher(db, world.publish_dir).change("test") as change:
            registry.create_feedstock(change, "cr-c", outputs=["cr-c"], keys=[pub])
    finally:
        db.dispose()
    _consistent(world.publish_dir)
    assert _matches_db(world, world.publish_dir)
    for name in ("cr-a", "cr-b", "cr-c"):
        assert _delegated(world, world.publish_dir, name, tmp_path / f"t-{name}"), name


def _sidecar(world: World, tmp_path: Path, name: str, subdir: str) -> tuple[str, dict[str, object]]:
    artifact = build_artifacts(tmp_path / "build", [(name, subdir)])[0]
    info = read_artifact(artifact)
    key = resolve_keyref(f"file:{world.base / 'feedstock-keys' / f'{name}.key'}")
    data = build_sidecar(info, name, key, "https://example.org/ch", None)  # type: ignore[arg-type]
    return f"{subdir}/{artifact.name}", {"sha256": info.sha256, "attestation": json.loads(data)}


def test_kill_9_after_an_attestation_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(tmp_path)
    server = world.server()
    assert _register(world, server, "cr-att").status_code == 201
    server.stop()
    key, item = _sidecar(world, tmp_path, "cr-att", "noarch")
    monkeypatch.setenv(ENV, "intake.after-commit")
    server = world.server()
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{server.url}/v1/attestations",
                   json={"feedstock": "cr-att", "artifacts": {key: item}}, timeout=60)  # fmt: skip
    _crash(server)
    monkeypatch.delenv(ENV)
    path = world.publish_dir / "attestations" / f"{key}.sig.json"
    assert not path.exists()  # committed, never written: the state the crash left
    db = Database(world.db_url)
    try:
        with db.read() as session:
            stored = session.scalars(select(Attestation.data)).one()
    finally:
        db.dispose()
    # `service refresh` repairs it...
    code, out, err = run_cli("service", "refresh", "--db", world.db_url,
                             "--publish-dir", world.publish_dir)  # fmt: skip
    assert code == 0 and f"rewrote attestations/{key}.sig.json" in out, out + err
    assert path.read_bytes() == stored
    # ...and so does a start-up; re-submitting the same sidecar is `unchanged` and keeps it.
    path.unlink()
    server = world.server()
    wait_for(path.is_file, timeout=10)
    body = {"feedstock": "cr-att", "artifacts": {key: item}}
    answer = httpx.post(f"{server.url}/v1/attestations", json=body, timeout=60)
    assert answer.json()["artifacts"][key]["status"] == "unchanged"
    assert path.read_bytes() == stored
    server.stop()


def test_replicas_with_their_own_directories_converge(tmp_path: Path) -> None:
    world = _world(tmp_path)
    other_dir = tmp_path / "replica-b"
    first = world.server("--sync-interval", "0.3")
    second = Server(world.db_url, other_dir, tmp_path / "b.log", ("--sync-interval", "0.3"))
    world.servers.append(second.start())
    assert _matches_db(world, other_dir)
    # Published through the first replica: the second's directory catches up on its own.
    assert _register(world, first, "cr-rep").status_code == 201
    wait_for(lambda: _matches_db(world, other_dir), timeout=20)
    _consistent(other_dir)
    assert _delegated(world, other_dir, "cr-rep", tmp_path / "s")
    # An attestation accepted by the first appears in the second's directory, and goes
    # from it when an admin withdraws it through the first.
    key, item = _sidecar(world, tmp_path, "cr-rep", "linux-64")
    body = {"feedstock": "cr-rep", "artifacts": {key: item}}
    answer = httpx.post(f"{first.url}/v1/attestations", json=body, timeout=60)
    assert answer.json()["accepted"] == 1, answer.text
    mirrored = other_dir / "attestations" / f"{key}.sig.json"
    wait_for(mirrored.is_file, timeout=20)
    assert (
        mirrored.read_bytes()
        == (world.publish_dir / "attestations" / f"{key}.sig.json").read_bytes()
    )
    withdrawn = httpx.post(f"{first.url}/v1/admin/attestations/{key}/withdraw",
                           json={"reason": "test"},
                           headers={"Authorization": f"Bearer {world.admin_token}"})  # fmt: skip
    assert withdrawn.status_code == 200, withdrawn.text
    assert not (world.publish_dir / "attestations" / f"{key}.sig.json").exists()
    wait_for(lambda: not mirrored.exists(), timeout=20)
    for server in world.servers:
        server.stop()
