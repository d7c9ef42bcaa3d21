"""Squatting (issue 9 item 7): a public sidecar filed under another subdir's path of the
same file name (`zlib-1.2.11-h62dcd97_3.conda` exists in win-32 and win-64 with different
hashes) would block the genuine attestation. The statement binds the subdir, so intake
refuses it; and an admin can withdraw an attestation (audited), after which the artifact
can be attested again."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_service_support import World, json_error, run_cli

from signer.artifacts import read_artifact
from signer.artifacts.build import build_package
from signer.trust.attestation import publish_statement

pytest_plugins = ("test_service_support",)  # fixtures: db_url, world

NAME, VERSION, BUILD = "zlib", "1.2.11", "h62dcd97_3"


def _setup(world: World, tmp_path: Path) -> tuple[str, dict[str, tuple[str, dict[str, Any]]]]:
    server = world.server()
    keyref, pub = world.feedstock_key(NAME)
    created = httpx.post(
        f"{server.url}/v1/admin/feedstocks",
        json={"name": NAME, "outputs": [NAME], "keys": [pub]},
        headers={"Authorization": f"Bearer {world.registrar_token}"},
        timeout=60,
    )
    assert created.status_code == 201, created.text
    signed: dict[str, tuple[str, dict[str, Any]]] = {}
    for subdir in ("win-32", "win-64"):
        artifact = build_package(tmp_path / subdir, NAME, VERSION, BUILD, subdir=subdir)
        code, out, err = run_cli("sign", artifact, "--feedstock", NAME, "--key", keyref)
        assert code == 0, out + err
        sidecar = json.loads(Path(f"{artifact}.sig.json").read_text())
        signed[subdir] = (read_artifact(artifact).sha256, sidecar)
    assert signed["win-32"][0] != signed["win-64"][0]  # same file name, different files
    return server.url, signed


def _post(url: str, path: str, sha256: str, sidecar: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/v1/attestations",
        json={"feedstock": NAME, "artifacts": {path: {"sha256": sha256, "attestation": sidecar}}},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    verdict: dict[str, Any] = answer.json()["artifacts"][path]
    return verdict


def test_another_subdirs_sidecar_cannot_squat(world: World, tmp_path: Path) -> None:
    if "subdir" not in inspect.signature(publish_statement).parameters:
        pytest.skip("the publish statement does not bind the subdir yet (branch harden)")
    url, signed = _setup(world, tmp_path)
    filename = f"{NAME}-{VERSION}-{BUILD}.conda"
    # Attack: win-64's public sidecar (and its hash) filed under win-32.
    verdict = _post(url, f"win-32/{filename}", *signed["win-64"])
    assert not verdict["accepted"] and verdict["check"] == "subdir", verdict
    # Control: each sidecar under its own subdir is accepted.
    for subdir in ("win-32", "win-64"):
        verdict = _post(url, f"{subdir}/{filename}", *signed[subdir])
        assert verdict["accepted"] and verdict["status"] == "stored", (subdir, verdict)


def test_an_admin_withdraws_an_attestation(world: World, tmp_path: Path) -> None:
    url, signed = _setup(world, tmp_path)
    filename = f"{NAME}-{VERSION}-{BUILD}.conda"
    path = f"win-64/{filename}"
    assert _post(url, path, *signed["win-64"])["accepted"]
    served = f"{url}/trust/attestations/{path}.sig.json"
    on_disk = world.publish_dir / "attestations" / f"{path}.sig.json"
    assert httpx.get(served).status_code == 200 and on_disk.is_file()
    withdraw = f"{url}/v1/admin/attestations/{path}/withdraw"
    admin = {"Authorization": f"Bearer {world.admin_token}"}
    bot = {"Authorization": f"Bearer {world.registrar_token}"}
    # A registrar token may not withdraw; nor may anyone without a token.
    json_error(httpx.post(withdraw, json={"reason": "x"}, headers=bot), 403)
    json_error(httpx.post(withdraw, json={"reason": "x"}), 401)
    assert httpx.get(served).status_code == 200
    # An admin withdraws it: gone from /trust and the publish directory, and audited.
    answer = httpx.post(withdraw, json={"reason": "squatted name"}, headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"artifact": path, "feedstock": NAME,
                             "sha256": signed["win-64"][0], "withdrawn": True}  # fmt: skip
    json_error(httpx.get(served, headers={"Cache-Control": "no-cache"}), 404)
    assert not on_disk.exists()
    code, out, err = run_cli("service", "audit", "show", "--db", world.db_url)
    assert code == 0, err
    entries = [json.loads(line) for line in out.splitlines()]
    withdrawn = [e for e in entries if e["action"] == "attestation.withdraw"]
    assert len(withdrawn) == 1 and withdrawn[0]["detail"]["reason"] == "squatted name"
    assert withdrawn[0]["detail"]["artifact"] == path
    assert run_cli("service", "audit", "verify", "--db", world.db_url)[0] == 0
    # Withdrawing again is a 404; the artifact can then be attested again.
    json_error(httpx.post(withdraw, json={"reason": "again"}, headers=admin), 404)
    verdict = _post(url, path, *signed["win-64"])
    assert verdict["accepted"] and verdict["status"] == "stored", verdict
    assert on_disk.is_file()
