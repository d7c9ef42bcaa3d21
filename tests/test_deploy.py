"""deploy/: the container entrypoint run for real, and the compose and Azure files checked
against what the service reads.

No Docker engine runs on these machines, so the compose file's service is started the way
its image would start it: `deploy/entrypoint.sh` with the compose environment, against the
machine's PostgreSQL and an Azurite process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from azurite import ACCOUNT, connection_string, running_azurite
from test_service_support import free_port, new_pg_database

from signer.devrepo import make_dev_trust_repo
from signer.keys.registry import backend_for
from signer.service import config
from signer.storage import BlobTarget, parse_blob_url

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
BICEP = (DEPLOY / "azure" / "main.bicep").read_text()
KEY_VAULT_CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"


def _compose() -> dict[str, object]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_entrypoint_serves_on_postgresql_and_publishes_to_blob(tmp_path: Path) -> None:
    service = _compose()["x-service"]
    assert isinstance(service, dict)
    env = {str(k): str(v) for k, v in service["environment"].items()}
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    publish_to = env[config.ENV_PUBLISH_TO]
    container = parse_blob_url(publish_to).container
    repo = make_dev_trust_repo(tmp_path / "dev")
    with running_azurite(tmp_path / "azurite") as blob_port:
        port = free_port()
        run_env = {
            **os.environ,
            **env,
            # The compose hosts `db` and `azurite` are this machine's services here.
            config.ENV_DB: new_pg_database(),
            "AZURE_STORAGE_CONNECTION_STRING": connection_string(blob_port),
            "CF_SIGN_PUBLISH_DIR": str(tmp_path / "data" / "trust"),
            "CF_SIGN_COMMAND": f"{sys.executable} -m signer.cli.main",
            "CF_SIGN_HOST": "127.0.0.1",
            "CF_SIGN_PORT": str(port),
            "CF_SIGN_WORKERS": "1",
            "HOME": str(tmp_path / "data"),
        }
        entry = [str(DEPLOY / "entrypoint.sh")]
        init = subprocess.run(
            [*entry, "service", "init", "--root", str(repo.root_file),
             "--key-mgr-key", repo.keyref("key_mgr"), "--pkg-mgr-key", repo.keyref("pkg_mgr")],
            env=run_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert init.returncode == 0, init.stdout + init.stderr
        proc = subprocess.Popen(
            entry, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the entrypoint's server did not start"
                time.sleep(0.2)
            served = httpx.get(f"http://127.0.0.1:{port}/trust/key_mgr.json").content
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        with_env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string(blob_port)}
        os.environ.update(with_env)
        try:
            blob = BlobTarget(f"azblob://{ACCOUNT}/{container}").read("key_mgr.json")
        finally:
            os.environ.pop("AZURE_STORAGE_CONNECTION_STRING")
    assert blob == served and b'"type": "key_mgr"' in served


def test_dockerfile_runs_the_entrypoint_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)$", text, re.M)
    assert user is not None and user.group(1) not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["cf-sign-entrypoint"\]$', text, re.M)
    assert "COPY deploy/entrypoint.sh /usr/local/bin/cf-sign-entrypoint" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "'.[service,azure]'" in text  # the image carries the Key Vault and Blob SDKs


def _resource(kind: str) -> str:
    match = re.search(rf"resource \w+ '{re.escape(kind)}@[^']+' = \{{(.*?)\n\}}", BICEP, re.S)
    assert match is not None, kind
    return match.group(1)


def test_bicep_grants_the_roles_the_service_needs() -> None:
    assignments = re.findall(
        r"resource (\w+) 'Microsoft.Authorization/roleAssignments@[^']+' = \{(.*?)\n\}",
        BICEP,
        re.S,
    )
    scopes = {}
    for _, body in assignments:
        scope = re.search(r"scope: (\w+)", body)
        role = re.search(r"roleDefinitions', (\w+)\)", body)
        assert scope and role and "identity.properties.principalId" in body
        scopes[scope.group(1)] = role.group(1)
    roles = dict(re.findall(r"^var (\w+) = '([0-9a-f-]{36})'", BICEP, re.M))
    # Key Vault: unwrapKey/sign only (not the secrets, not key management).
    assert roles[scopes["kv"]] == KEY_VAULT_CRYPTO_USER
    # Storage: write blobs into the trust container.
    assert roles[scopes["storage"]] == STORAGE_BLOB_DATA_CONTRIBUTOR


def test_bicep_configures_what_the_service_reads() -> None:
    app = _resource("Microsoft.App/containerApps")
    env_names = set(re.findall(r"\{ name: '([A-Z_]+)'", app))
    assert {config.ENV_DB, config.ENV_PUBLISH_DIR, config.ENV_PUBLISH_TO} <= env_names
    assert "AZURE_CLIENT_ID" in env_names  # picks the user-assigned identity
    publish_to = re.search(r"name: 'CF_SIGN_PUBLISH_TO', value: '([^']+)'", app)
    assert publish_to is not None
    example = (
        publish_to.group(1)
        .replace("${storage.name}", "cfsignabc123")
        .replace("${trustContainer}", "trust")
    )
    assert parse_blob_url(example).container == "trust"
    assert re.search(r"param trustContainer string = 'trust'", BICEP)
    assert "publicAccess: 'Blob'" in _resource(
        "Microsoft.Storage/storageAccounts/blobServices/containers"
    )
    # The wrapped key files are mounted where the keyRefs output says, as wrapped: KEYREFs.
    mounted = set(re.findall(r"path: '([\w.]+)'", app))
    refs = re.findall(r"'wrapped:/mnt/keys/([\w.]+)'", BICEP)
    assert refs and set(refs) <= mounted
    assert backend_for("wrapped") is not None
    assert "path: '/healthz'" in app
