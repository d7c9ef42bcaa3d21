"""The service on Azure parts: online keys in Key Vault, publishing to Blob Storage.

Key Vault is the HTTPS stand-in (real azure-identity and azure-keyvault-keys), Blob Storage
is Azurite (real azure-storage-blob), the service is `cf-sign serve` as a process, and the CI
job signs with a Key Vault key through GitHub OIDC. The client verifies straight from the
Blob container over HTTP, never from the service.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import fastapi  # noqa: F401  (the service extra is part of the test install)
import httpx
import pytest
from azure_standin import CLIENT_ID, TENANT, StandIn, running_standin
from azurite import ACCOUNT, connection_string, running_azurite
from test_feedstock_support import environ
from test_service_support import Server, build_artifacts, run_cli, run_process

from signer.devrepo import make_dev_trust_repo
from signer.storage import BlobTarget
from signer.trust.feedstocks import INDEX_PATH


@pytest.fixture
def azure(tmp_path: Path) -> Iterator[tuple[StandIn, dict[str, str], int]]:
    with running_standin(tmp_path) as (vault, cert), running_azurite(tmp_path / "az") as port:
        env = {
            **vault.env(cert),
            "AZURE_STORAGE_CONNECTION_STRING": connection_string(port),
            "AZURE_CONFIG_DIR": str(tmp_path / "no-az-cli"),
        }
        with environ(env):
            yield vault, env, port


def test_service_on_key_vault_and_blob_storage(
    azure: tuple[StandIn, dict[str, str], int], tmp_path: Path
) -> None:
    vault, _, port = azure
    repo = make_dev_trust_repo(tmp_path / "dev")
    wrap_key = vault.add_rsa_key("cf-sign-online")
    wrapped = {}
    for name in ("key_mgr", "pkg_mgr", "pkg_mgr_mamba"):
        out = tmp_path / f"{name}.wrapped.json"
        code, _, err = run_cli("keys", "wrap", repo.keyref(name), "--vault-key",
                               vault.keyref(wrap_key), "-o", out)  # fmt: skip
        assert code == 0, err
        wrapped[name] = f"wrapped:{out}"
    # The seeds are in Key Vault only from here on: the service never sees the key files.
    shutil.rmtree(repo.keys_dir)

    db, publish = f"sqlite:///{tmp_path / 'svc.db'}", tmp_path / "published"
    container = "trust"
    blob = f"azblob://{ACCOUNT}/{container}"
    code, out, err = run_cli(
        "service", "init", "--db", db, "--publish-dir", publish, "--publish-to", blob,
        "--root", repo.root_file, "--key-mgr-key", wrapped["key_mgr"],
        "--pkg-mgr-key", wrapped["pkg_mgr"], "--pkg-mgr-key", wrapped["pkg_mgr_mamba"],
    )  # fmt: skip
    assert code == 0, out + err
    code, token, err = run_cli("service", "token", "create", "--db", db, "--scope", "registrar")
    assert code == 0, err
    target = BlobTarget(blob)
    target.client.set_container_access_policy(signed_identifiers={}, public_access="blob")
    assert target.read("key_mgr.json") == (publish / "key_mgr.json").read_bytes()

    unwraps_before = vault.count("POST", "/unwrapkey")
    server = Server(db, publish, tmp_path / "server.log", ("--publish-to", blob)).start()
    try:
        # The feedstock's key is an EC P-256 key in Key Vault.
        fs_key = vault.add_ec_key("feedstock-foo")
        keyref = vault.keyref(fs_key)
        code, out, err = run_process("keys", "import", keyref, "-o", tmp_path / "foo.pub")
        pub = (
            json.loads((tmp_path / "foo.pub").read_text())
            if code == 0
            else _public_of(keyref)  # `keys import` comes with the ceremony work
        )
        response = httpx.post(
            f"{server.url}/v1/admin/feedstocks",
            json={"name": "foo", "outputs": ["foo", "libfoo"], "keys": [pub]},
            headers={"Authorization": f"Bearer {token.strip()}"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        # A simulated GitHub Actions job: OIDC to Entra ID, then Key Vault signs.
        ci_env = {
            "IDENTITY_ENDPOINT": "",
            "IDENTITY_HEADER": "",
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{vault.url}/github-oidc",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": vault.github_request_token,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_TENANT_ID": TENANT,
            "FEEDSTOCK_NAME": "foo-feedstock",
        }
        build = tmp_path / "build"
        artifacts = build_artifacts(build, [("foo", "noarch"), ("libfoo", "linux-64")])
        code, out, err = run_process("sign", *artifacts, "--key", keyref, env=ci_env)
        assert code == 0, out + err
        assert vault.count("GET", "/github-oidc") >= 1
        code, out, err = run_process("submit", *artifacts, "--service", server.url)
        assert code == 0, out + err
    finally:
        server.stop()
    # One unwrapKey per key in the server process (start-up), never per signature.
    assert vault.count("POST", "/unwrapkey") - unwraps_before <= 3

    # The client reads the Blob container over HTTP: roots, key_mgr, delegations, sidecars.
    url = f"http://127.0.0.1:{port}/{ACCOUNT}/{container}"
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    copies = [shutil.copy(a, downloaded / a.name) for a in artifacts]
    code, out, err = run_process("verify", *copies, "--trust", url, "--root", repo.root_file)
    assert code == 0, out + err
    assert out.count("OK ") == 2
    assert target.read(INDEX_PATH) == (publish / INDEX_PATH).read_bytes()

    # A blob lost (or never written by a replica that died) is restored by the refresh.
    target.client.delete_blob(INDEX_PATH)
    code, out, err = run_cli("service", "refresh", "--db", db, "--publish-dir", publish,
                             "--publish-to", blob)  # fmt: skip
    assert code == 0, out + err
    assert target.read(INDEX_PATH) == (publish / INDEX_PATH).read_bytes()


def _public_of(keyref: str) -> dict[str, object]:
    from signer.keys.azure import import_azure_key

    return import_azure_key(keyref).to_dict()
