"""The service end to end over HTTP on loopback, on SQLite and on PostgreSQL.

init -> register a feedstock and its key -> sign in a simulated CI run -> `cf-sign submit`
-> `cf-sign verify` against the service's URL; a second feedstock's key is refused for the
first one's names; revoking the key makes verification fail; a restart keeps everything.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import httpx
from test_service_support import World, build_artifacts, run_process

from signer.trust.feedstocks import INDEX_PATH

pytest_plugins = ("test_service_support",)  # fixtures: db_url, world

CI_ENV = {
    "CI": "github_actions",
    "FEEDSTOCK_NAME": "foo-feedstock",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    "GITHUB_REPOSITORY": "conda-forge/foo-feedstock",
    "GITHUB_RUN_ID": "4242",
}


def _register(world: World, server_url: str, name: str, outputs: list[str]) -> tuple[str, str]:
    """Register `name` with a new key; returns (KEYREF, keyid)."""
    keyref, pub = world.feedstock_key(name)
    response = httpx.post(
        f"{server_url}/v1/admin/feedstocks",
        json={"name": name, "outputs": outputs, "keys": [pub]},
        headers={"Authorization": f"Bearer {world.registrar_token}"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["feedstock"]["delegated"] is True
    assert INDEX_PATH in body["published"]
    return keyref, body["feedstock"]["keys"][0]["keyid"]


def test_end_to_end(world: World, tmp_path: Path) -> None:
    server = world.server()
    trust = f"{server.url}/trust"
    root = str(world.repo.root_file)

    foo_key, foo_keyid = _register(world, server.url, "foo", ["foo", "libfoo"])
    bar_key, _ = _register(world, server.url, "bar", ["bar"])

    # A simulated CI run of the foo feedstock: build, sign (key from a CI secret), submit.
    build = tmp_path / "build"
    artifacts = build_artifacts(
        build, [("foo", "noarch"), ("libfoo", "linux-64"), ("libfoo", "osx-arm64")]
    )
    secret = Path(foo_key[len("file:") :]).read_text()
    env = {**CI_ENV, "CF_SIGN_KEY": secret}
    code, out, err = run_process(
        "sign", "--build-dir", build, "--output", "foo", "--output", "libfoo",
        "--key", "env:CF_SIGN_KEY", env=env,
    )  # fmt: skip
    assert code == 0, out + err
    code, out, err = run_process("submit", "--build-dir", build, "--service", server.url)
    assert code == 0, out + err
    assert out.count("ACCEPTED") == 3 and "3 accepted, 0 refused" in out
    # Idempotent: the same submission again changes nothing.
    code, out, err = run_process("submit", *artifacts, "--service", server.url)
    assert code == 0 and out.count("(unchanged;") == 3, out + err

    # Verify against the service: the sidecars come from the service, not from the disk.
    elsewhere = tmp_path / "downloaded"
    elsewhere.mkdir()
    copies = [Path(shutil.copy(a, elsewhere / a.name)) for a in artifacts]
    code, out, err = run_process("verify", *copies, "--trust", trust, "--root", root)
    assert code == 0, out + err
    assert out.count("OK ") == 3 and foo_keyid in out

    # The published directory (a link to its current snapshot) holds what the service serves.
    assert world.publish_dir.is_symlink()
    assert world.publish_dir.resolve().parent == world.base / ".published.d" / "snapshots"
    for path in ("1.root.json", "key_mgr.json", "pkg_mgr.json", INDEX_PATH):
        served = httpx.get(f"{trust}/{path}").content
        assert (world.publish_dir / path).read_bytes() == served, path
    assert (world.publish_dir / "1.root.json").read_bytes() == world.repo.root_file.read_bytes()
    sidecar = f"attestations/linux-64/{artifacts[1].name}.sig.json"
    assert (world.publish_dir / sidecar).read_bytes() == httpx.get(f"{trust}/{sidecar}").content

    # The bar feedstock's key signing foo's names is refused, whatever the sidecar claims.
    stolen = tmp_path / "stolen"
    stolen_artifacts = build_artifacts(stolen, [("libfoo", "win-64")])
    code, out, err = run_process("sign", *stolen_artifacts, "--feedstock", "bar", "--key", bar_key)
    assert code == 0, err
    code, out, err = run_process("submit", *stolen_artifacts, "--service", server.url)
    assert code == 1, out + err
    assert "REFUSED" in out and "scope" in out and "libfoo" in out
    code, out, err = run_process("sign", *stolen_artifacts, "--feedstock", "foo", "--key", bar_key)
    code, out, err = run_process("submit", *stolen_artifacts, "--service", server.url)
    assert code == 1 and "REFUSED" in out and "signature" in out, out + err
    assert (
        httpx.get(f"{trust}/attestations/win-64/{stolen_artifacts[0].name}.sig.json").status_code
        == 404
    )

    # A restart keeps everything: same documents, same attestations, same answers.
    before = {p: httpx.get(f"{trust}/{p}").content for p in ("key_mgr.json", INDEX_PATH, sidecar)}
    server.stop()
    server = world.server()
    trust = f"{server.url}/trust"
    for path, data in before.items():
        assert httpx.get(f"{trust}/{path}").content == data, path
    code, out, err = run_process("verify", *copies, "--trust", trust, "--root", root)
    assert code == 0, out + err

    # Revoking foo's key: the next verification fails (foo is no longer delegated).
    response = httpx.delete(
        f"{server.url}/v1/admin/feedstocks/foo/keys/{foo_keyid}",
        headers={"Authorization": f"Bearer {world.admin_token}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["feedstock"]["delegated"] is False
    code, out, err = run_process("verify", *copies, "--trust", trust, "--root", root)
    assert code == 1, out + err
    assert "FAIL" in out and "not delegated" in out
    # And new submissions for foo are refused as a whole.
    code, out, err = run_process("submit", *artifacts, "--service", server.url)
    assert code == 1 and "not_delegated" in out, out + err

    code, out, err = run_process("service", "audit", "verify", "--db", world.db_url)
    assert code == 0, out + err
    digest = hashlib.sha256((world.publish_dir / INDEX_PATH).read_bytes()).hexdigest()
    assert httpx.get(f"{trust}/{INDEX_PATH}").headers["etag"] == f'"{digest}"'
