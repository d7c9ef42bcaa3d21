"""Signed overlay channels in the service (DESIGN.md section 10), on SQLite and PostgreSQL.

A real `cf-sign serve` process, feedstocks registered and attestations submitted through
its API, an upstream channel on a second loopback HTTP server. The overlay is defined with
`cf-sign service channel add`, refreshed through `POST /v1/admin/channels/{name}/refresh`
(or by the server when attestations arrive), served under `/trust/channels/`, and checked
with `cf-sign repodata verify` against the service's trust repository.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from test_mirror_support import serve
from test_service_support import Server, World, json_error, run_cli, run_process, wait_for

from signer.artifacts.build import build_package
from signer.repodata.index import index_directory

pytest_plugins = ("test_service_support",)  # fixtures: db_url, world

CHANNEL = "conda-forge"


class Upstream:
    """A channel directory on disk, indexed like anaconda.org's, served by `serve`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def build(
        self, name: str, subdir: str, *, files: dict[str, bytes] | None = None, now: bool = False
    ) -> Path:
        stamp = int(time.time() * 1000) if now else None  # default: a fixed, old build time
        return build_package(self.root / subdir, name, "1.0", "h0_0", subdir=subdir,
                             files=files, timestamp_ms=stamp)  # fmt: skip

    def index(self, *subdirs: str) -> None:
        for subdir in subdirs:
            doc = index_directory(self.root / subdir, subdir)
            (self.root / subdir / "repodata.json").write_text(json.dumps(doc, indent=1))


def _register(world: World, server: Server, name: str, outputs: list[str]) -> str:
    keyref, pub = world.feedstock_key(name)
    with server.client(world.registrar_token) as client:
        response = client.post(
            "/v1/admin/feedstocks", json={"name": name, "outputs": outputs, "keys": [pub]}
        )
    assert response.status_code == 201, response.text
    return keyref


def _attest(server: Server, feedstock: str, keyref: str, *artifacts: Path) -> None:
    for artifact in artifacts:
        code, out, err = run_process("sign", artifact, "--feedstock", feedstock, "--key", keyref)
        assert code == 0, out + err
    code, out, err = run_process("submit", *artifacts, "--service", server.url)
    assert code == 0 and f"{len(artifacts)} accepted" in out, out + err


def _refresh(world: World, server: Server) -> dict[tuple[str, str], dict[str, Any]]:
    with server.client(world.admin_token) as client:
        response = client.post(f"/v1/admin/channels/{CHANNEL}/refresh")
    assert response.status_code == 200, response.text
    return {(r["subdir"], r["document"]): r for r in response.json()["results"]}


def _served(server: Server, subdir: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/trust/channels/{CHANNEL}/{subdir}/repodata.json")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def _signers(doc: dict[str, Any], filename: str) -> set[str]:
    return set(doc.get("signatures", {}).get(filename, {}))


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Upstream, str, Any]]:
    up = Upstream(tmp_path / "upstream")
    (up.root / "noarch").mkdir(parents=True)
    (up.root / "linux-64").mkdir(parents=True)
    with serve(up.root) as (url, faults):
        yield up, url, faults


def _add(world: World, url: str, *extra: str) -> None:
    code, out, err = run_cli(
        "service", "channel", "add", CHANNEL, "--db", world.db_url,
        "--subdir", "linux-64", "--subdir", "noarch", "--upstream", url, *extra,
    )  # fmt: skip
    assert code == 0, out + err


def test_overlay_signs_attested_records_and_serves_them(
    world: World, upstream: tuple[Upstream, str, Any], tmp_path: Path
) -> None:
    up, url, faults = upstream
    server = world.server("--channel-interval", "0")
    keyref = _register(world, server, "numpy", ["numpy", "libnumpy-core"])
    numpy = up.build("numpy", "linux-64")
    core = up.build("libnumpy-core", "noarch")
    up.build("stray", "linux-64")  # nobody's package: never signed
    _attest(server, "numpy", keyref, numpy, core)
    up.index("linux-64", "noarch")
    _add(world, url)

    results = _refresh(world, server)
    linux = results[("linux-64", "repodata.json")]
    assert linux["ok"] and linux["published"] and linux["upstream_changed"], linux
    assert (linux["records"], linux["attested"], linux["unattested"]) == (2, 1, 1), linux
    noarch = results[("noarch", "repodata.json")]
    assert (noarch["records"], noarch["attested"], noarch["coverage"]) == (1, 1, 1.0), noarch

    doc = _served(server, "linux-64")
    assert doc["repodata_version"] == 2
    assert doc["info"]["base_url"] == f"{url}/linux-64"  # artifacts come from upstream
    pkg_mgr = json.loads((world.publish_dir / "key_mgr.json").read_text())
    keys = set(pkg_mgr["signed"]["delegations"]["pkg_mgr"]["pubkeys"])
    assert _signers(doc, numpy.name) == keys  # conda's profile and mamba's
    assert _signers(doc, "stray-1.0-h0_0.conda") == set()

    # Verified as a client would: the trust repository over HTTP, the overlay downloaded.
    local = tmp_path / "overlay-linux-64.json"
    local.write_bytes(
        httpx.get(f"{server.url}/trust/channels/{CHANNEL}/linux-64/repodata.json").content
    )
    code, out, err = run_process(
        "repodata", "verify", local, "--trust", f"{server.url}/trust",
        "--root", world.repo.root_file, "--state-dir", tmp_path / "state",
        "--allow-unsigned", "--profile", "both", "--json",
    )  # fmt: skip
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["records"] == 2, out + err
    failed = {(f["filename"], f["check"]) for f in report["failures"]}
    assert failed == {("stray-1.0-h0_0.conda", "unsigned")}, report

    # The .zst is the same document; conditional requests are honoured.
    zst = httpx.get(f"{server.url}/trust/channels/{CHANNEL}/linux-64/repodata.json.zst")
    assert zstandard.ZstdDecompressor().decompress(zst.content) == local.read_bytes()
    first = httpx.get(f"{server.url}/trust/channels/{CHANNEL}/linux-64/repodata.json")
    again = httpx.get(
        f"{server.url}/trust/channels/{CHANNEL}/linux-64/repodata.json",
        headers={"If-None-Match": first.headers["etag"]},
    )
    assert again.status_code == 304

    # Nothing changed upstream: a conditional request, nothing published.
    before = len(faults.requests)
    results = _refresh(world, server)
    assert not results[("linux-64", "repodata.json")]["upstream_changed"]
    assert not results[("linux-64", "repodata.json")]["published"]
    assert len(faults.requests) == before + 2  # one repodata request per subdir

    # Upstream changed: the new record is in the next document (incremental: cached).
    up.build("numpy-base", "linux-64")
    up.index("linux-64")
    linux = _refresh(world, server)[("linux-64", "repodata.json")]
    assert linux["upstream_changed"] and linux["published"] and linux["records"] == 3, linux
    assert linux["cached"] == 1, linux  # numpy's verdict and signatures were reused

    # Figures: `channel list --json` and /metrics (read from the database).
    code, out, err = run_cli("service", "channel", "list", "--db", world.db_url, "--json")
    assert code == 0, err
    (view,) = json.loads(out)["channels"]
    by_subdir = {d["subdir"]: d for d in view["subdirs"]}
    assert by_subdir["linux-64"]["attested"] == 1 and by_subdir["linux-64"]["records"] == 3
    assert by_subdir["linux-64"]["error"] is None
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'cf_sign_channel_coverage{channel="conda-forge",subdir="noarch"} 1.0' in metrics
    assert 'cf_sign_channel_attested{channel="conda-forge",subdir="linux-64"} 1.0' in metrics
    assert 'cf_sign_channel_failing{channel="conda-forge",subdir="linux-64"} 0.0' in metrics


def test_attestations_arriving_make_the_server_sign_them(
    world: World, upstream: tuple[Upstream, str, Any]
) -> None:
    """No periodic pass (`--channel-interval 0`): the intake storing attestations wakes the
    overlay loop, and the record moves from observed (signed because numpy is not enforced
    yet) to attested."""
    up, url, _ = upstream
    server = world.server("--channel-interval", "0")
    keyref = _register(world, server, "numpy", ["numpy"])
    numpy = up.build("numpy", "linux-64")
    up.index("linux-64", "noarch")
    _add(world, url)
    linux = _refresh(world, server)[("linux-64", "repodata.json")]
    assert (linux["attested"], linux["observed"]) == (0, 1), linux

    _attest(server, "numpy", keyref, numpy)

    def attested() -> bool:
        with server.client(world.admin_token) as client:
            view = client.get(f"/v1/admin/channels/{CHANNEL}").json()
        return any(d["subdir"] == "linux-64" and d["attested"] == 1 for d in view["subdirs"])

    wait_for(attested, timeout=60)


def test_a_swapped_artifact_is_not_signed_once_its_feedstock_is_enforced(
    world: World, upstream: tuple[Upstream, str, Any]
) -> None:
    """Attack: upstream (a leaked upload token) replaces numpy's artifact with other bytes
    under the same name. Control: the attested bytes are signed. Enforced, the swapped
    record is refused for its digest and served unsigned; the overlay says why."""
    up, url, _ = upstream
    server = world.server("--channel-interval", "0")
    keyref = _register(world, server, "numpy", ["numpy"])
    numpy = up.build("numpy", "linux-64")
    _attest(server, "numpy", keyref, numpy)
    with server.client(world.admin_token) as client:
        response = client.put("/v1/admin/feedstocks/numpy/stage", json={"stage": "enforce"})
    assert response.status_code == 200, response.text
    up.index("linux-64", "noarch")
    _add(world, url)

    control = _refresh(world, server)[("linux-64", "repodata.json")]
    assert (control["attested"], control["refused"]) == (1, 0), control
    assert _signers(_served(server, "linux-64"), numpy.name)

    numpy.unlink()
    # Uploaded after enforcement began (an older timestamp would get the stage's grace).
    swapped = up.build("numpy", "linux-64", files={"evil.py": b"print('owned')\n"}, now=True)
    assert swapped.name == numpy.name
    up.index("linux-64")
    attack = _refresh(world, server)[("linux-64", "repodata.json")]
    assert (attack["attested"], attack["refused"], attack["observed"]) == (0, 1, 0), attack
    assert _signers(_served(server, "linux-64"), numpy.name) == set()


def test_a_hostile_upstream_keeps_the_last_good_document(
    world: World, upstream: tuple[Upstream, str, Any]
) -> None:
    up, url, _ = upstream
    server = world.server("--channel-interval", "0")
    up.build("stray", "linux-64")
    up.index("linux-64", "noarch")
    _add(world, url)
    assert _refresh(world, server)[("linux-64", "repodata.json")]["ok"]
    good = _served(server, "linux-64")

    hostile = up.root / "linux-64" / "repodata.json"
    for body, reason in (
        (hostile.read_text().replace('"linux-64"', '"osx-64"'), "info.subdir"),
        ('{"info": {"subdir": "linux-64"}, "packages": {"a": 1, "a": 2}}', "duplicate"),
    ):
        hostile.write_text(body)
        result = _refresh(world, server)[("linux-64", "repodata.json")]
        assert not result["ok"] and reason in result["error"], result
        assert _served(server, "linux-64") == good  # nothing published
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'cf_sign_channel_failing{channel="conda-forge",subdir="linux-64"} 1.0' in metrics


def test_channel_definitions_are_checked_and_removal_unpublishes(
    world: World, upstream: tuple[Upstream, str, Any]
) -> None:
    up, url, _ = upstream
    server = world.server("--channel-interval", "0")
    up.index("linux-64", "noarch")
    bad = [
        (["--subdir", "linux-64", "--upstream", "ftp://x/linux-64/repodata.json"], "http(s)"),
        (["--subdir", "linux-64", "--subdir", "noarch", "--upstream", f"{url}/a.json",
          "--upstream", f"{url}/b.json", "--upstream", f"{url}/c.json"], "--upstream"),
        (["--subdir", "Linux 64", "--upstream", url], "subdir"),
    ]  # fmt: skip
    for args, needle in bad:
        code, out, err = run_cli("service", "channel", "add", CHANNEL, "--db", world.db_url, *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    _add(world, url)
    code, _, err = run_cli(
        "service", "channel", "add", CHANNEL, "--db", world.db_url,
        "--subdir", "noarch", "--upstream", url,
    )  # fmt: skip
    assert code == 2 and "already defined" in err, err
    with server.client(world.registrar_token) as client:
        denied = client.post(
            "/v1/admin/channels", json={"name": "other", "subdirs": [
                {"subdir": "noarch", "upstream": f"{url}/noarch/repodata.json"}]},
        )  # fmt: skip
    assert denied.status_code == 403, denied.text
    # The same refusals over HTTP: a JSON error body, nothing defined.
    spec = {"subdir": "noarch", "upstream": f"{url}/noarch/repodata.json"}
    with server.client(world.admin_token) as client:
        for body, status, needle in (
            ({"name": "other", "subdirs": [{**spec, "upstream": "ftp://x/repodata.json"}]},
             400, "http(s)"),
            ({"name": "Other!", "subdirs": [spec]}, 400, "name"),
            ({"name": "other", "subdirs": [spec, spec]}, 400, "twice"),
            ({"name": CHANNEL, "subdirs": [spec]}, 409, "already defined"),
            ({"name": "other", "subdirs": [spec], "extra": 1}, 422, "extra"),
        ):  # fmt: skip
            detail = json_error(client.post("/v1/admin/channels", json=body), status)["detail"]
            assert needle in detail.lower(), (body, detail)
        listed = client.get("/v1/admin/channels").json()["channels"]
        assert [c["name"] for c in listed] == [CHANNEL]  # nothing of the refused ones
        assert client.get("/v1/admin/channels/other").status_code == 404
        json_error(client.post("/v1/admin/channels/other/refresh"), 404)
        json_error(client.delete("/v1/admin/channels/other"), 404)
    for path in ("Bad/noarch/repodata.json", f"{CHANNEL}/noarch/secret.txt",
                 f"{CHANNEL}/noarch/..%2Fstate.json"):  # fmt: skip
        json_error(httpx.get(f"{server.url}/trust/channels/{path}"), 404)

    assert _refresh(world, server)[("noarch", "repodata.json")]["ok"]
    assert _served(server, "noarch")["info"]["subdir"] == "noarch"
    code, out, err = run_cli("service", "channel", "remove", CHANNEL, "--db", world.db_url,
                             "--publish-dir", world.publish_dir)  # fmt: skip
    assert code == 0, out + err
    gone = httpx.get(f"{server.url}/trust/channels/{CHANNEL}/noarch/repodata.json")
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    code, out, err = run_cli("service", "audit", "show", "--db", world.db_url)
    assert code == 0, err
    actions = [json.loads(line)["action"] for line in out.splitlines() if line.strip()]
    assert actions[-2:] == ["channel.add", "channel.remove"], actions


def test_current_repodata_is_signed_beside_the_full_repodata(
    world: World, upstream: tuple[Upstream, str, Any]
) -> None:
    up, url, _ = upstream
    server = world.server("--channel-interval", "0")
    keyref = _register(world, server, "numpy", ["numpy"])
    numpy = up.build("numpy", "linux-64")
    _attest(server, "numpy", keyref, numpy)
    up.index("linux-64", "noarch")
    for subdir in ("linux-64", "noarch"):
        shutil.copy(up.root / subdir / "repodata.json", up.root / subdir / "current_repodata.json")
    code, out, err = run_cli(
        "service", "channel", "add", CHANNEL, "--db", world.db_url, "--subdir", "linux-64",
        "--upstream", f"{url}/linux-64/repodata.json",
        "--current-upstream", f"{url}/linux-64/current_repodata.json",
    )  # fmt: skip
    assert code == 0, out + err
    code, out, err = run_cli(
        "service", "channel", "refresh", "--db", world.db_url,
        "--publish-dir", world.publish_dir, "--jobs", "2", "--json",
    )  # fmt: skip
    assert code == 0, out + err
    results = {(r["subdir"], r["document"]): r for r in json.loads(out)["results"]}
    assert set(results) == {("linux-64", "repodata.json"), ("linux-64", "current_repodata.json")}
    current = results[("linux-64", "current_repodata.json")]
    assert current["ok"] and current["attested"] == 1, current
    base = f"{server.url}/trust/channels/{CHANNEL}"
    doc = httpx.get(f"{base}/linux-64/current_repodata.json").json()
    assert _signers(doc, numpy.name) and doc["info"]["base_url"] == f"{url}/linux-64"
    # No noarch subdir was defined: conda still finds an (empty) noarch/repodata.json.
    noarch = httpx.get(f"{base}/noarch/repodata.json")
    assert noarch.status_code == 200 and noarch.json()["packages"] == {}


def test_migration_0005_down_and_up(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from signer.service.db import migrate
    from signer.service.db.session import Database

    db = Database(db_url)
    try:
        assert migrate.upgrade(db)[1] == migrate.head_revision() == "0005"

        def tables() -> set[str]:
            with db.connect() as conn:
                return set(inspect(conn).get_table_names())

        assert {"channels", "channel_subdirs"} <= tables()
        with db.connect() as conn:
            config = migrate._config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
            conn.commit()
        assert not {"channels", "channel_subdirs"} & tables()
        assert migrate.upgrade(db) == ("0004", "0005")
    finally:
        db.engine.dispose()


def test_a_snapshot_made_before_overlays_gets_the_channels_link(tmp_path: Path) -> None:
    from signer.service.publish_dir import PublishDir

    files = PublishDir(tmp_path / "trust")
    files.publish({"key_mgr.json": b"{}"})
    current = files.current()
    assert current is not None
    (current / "channels").unlink()  # as an older cf-sign made it
    files.link_channels()
    (files.channels / "c").mkdir()
    assert (tmp_path / "trust" / "channels" / "c").is_dir()
    shutil.rmtree(files.channels / "c")


def test_overlay_documents_reach_blob_storage(
    upstream: tuple[Upstream, str, Any], tmp_path: Path
) -> None:
    """With `--publish-to azblob://...` (Azurite, the real azure-storage-blob), each signed
    overlay document is also written to the container, byte for byte as served."""
    from azurite import ACCOUNT, connection_string, running_azurite
    from test_feedstock_support import environ
    from test_service_support import database_for, make_world

    from signer.storage import BlobTarget

    up, url, _ = upstream
    world = make_world(tmp_path / "w", database_for("sqlite", tmp_path))
    with running_azurite(tmp_path / "az") as port, environ(
        {"AZURE_STORAGE_CONNECTION_STRING": connection_string(port)}
    ):
        blob = f"azblob://{ACCOUNT}/trust"
        server = world.server("--channel-interval", "0", "--publish-to", blob)
        try:
            keyref = _register(world, server, "numpy", ["numpy"])
            numpy = up.build("numpy", "linux-64")
            _attest(server, "numpy", keyref, numpy)
            up.index("linux-64", "noarch")
            _add(world, url)
            assert all(r["ok"] for r in _refresh(world, server).values())
            target = BlobTarget(blob)
            for subdir in ("linux-64", "noarch"):
                path = f"channels/{CHANNEL}/{subdir}/repodata.json"
                served = httpx.get(f"{server.url}/trust/{path}").content
                assert target.read(path) == served, path
                assert target.read(path + ".zst") is not None
            assert _signers(json.loads(target.read(f"channels/{CHANNEL}/linux-64/repodata.json")
                                       or b"{}"), numpy.name)  # fmt: skip
        finally:
            server.stop()
