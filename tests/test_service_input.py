"""Bad input gets a 4xx JSON answer, never a 500: malformed bodies, oversized requests,
unknown feedstocks, invalid names and keys, per-artifact refusals, rate limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_service_support import Server, World, build_artifacts, json_error

from signer.artifacts import read_artifact
from signer.feedstock.sign import build_sidecar
from signer.keys import KeyHandle, resolve_keyref

pytest_plugins = ("test_service_support",)  # fixtures: served

# 1 artifact per second and a burst of 12 per feedstock (per process): small, to test it.
SERVER_ARGS = ("--rate-limit", "1/12")
MIB = 1024 * 1024


def _admin(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.admin_token}"}


def _ensure_feedstock(world: World, server: Server, name: str) -> str:
    """Register `name` (outputs: name) with a key once per module; returns its KEYREF."""
    keyref = f"file:{world.base / 'feedstock-keys' / (name + '.key')}"
    if not Path(keyref[5:]).exists():
        _, pub = world.feedstock_key(name)
        response = httpx.post(
            f"{server.url}/v1/admin/feedstocks",
            json={"name": name, "outputs": [name], "keys": [pub]},
            headers=_admin(world),
        )
        assert response.status_code == 201, response.text
    return keyref


def _sidecar(world: World, keyref: str, feedstock: str, artifact: Path) -> dict[str, Any]:
    key = resolve_keyref(keyref)
    assert isinstance(key, KeyHandle)
    data = build_sidecar(
        read_artifact(artifact), feedstock, key, "https://conda.anaconda.org/conda-forge", None
    )
    result: dict[str, Any] = json.loads(data)
    return result


BAD_BODIES: list[tuple[str, bytes, int]] = [
    ("not JSON", b"{not json", 422),
    ("an array", b"[]", 422),
    ("no artifacts", b'{"feedstock": "inp"}', 422),
    ("empty artifacts", b'{"feedstock": "inp", "artifacts": {}}', 422),
    ("unknown field", b'{"feedstock": "inp", "artifacts": {}, "token": "x"}', 422),
    ("artifact not an object", b'{"feedstock": "inp", "artifacts": {"noarch/a-1-0.conda": '
     b'1}}', 422),
    ("sha256 not a string", b'{"feedstock": "inp", "artifacts": {"noarch/a-1-0.conda": '
     b'{"sha256": 5, "attestation": {}}}}', 422),
    ("feedstock too long", json.dumps({"feedstock": "x" * 300, "artifacts": {"a": {
        "sha256": "", "attestation": {}}}}).encode(), 422),
    ("invalid feedstock name", b'{"feedstock": "a b", "artifacts": {"noarch/a-1-0.conda": '
     b'{"sha256": "", "attestation": {}}}}', 400),
    ("unknown feedstock", b'{"feedstock": "nobody", "artifacts": {"noarch/a-1-0.conda": '
     b'{"sha256": "", "attestation": {}}}}', 404),
    ("not UTF-8", b'{"feedstock": "\xff", "artifacts": {}}', 400),
]  # fmt: skip


@pytest.mark.parametrize("label,body,status", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_attestation_bodies(
    served: tuple[World, Server], label: str, body: bytes, status: int
) -> None:
    world, server = served
    _ensure_feedstock(world, server, "inp")
    response = httpx.post(
        f"{server.url}/v1/attestations",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    json_error(response, status)


def test_oversized_requests_are_413(served: tuple[World, Server]) -> None:
    _, server = served
    big = b'{"feedstock": "inp", "artifacts": {"x": "' + b"a" * (33 * MIB) + b'"}}'
    json_error(httpx.post(f"{server.url}/v1/attestations", content=big), 413)
    # Chunked (no Content-Length) is counted as it arrives.
    chunks = iter([big[i : i + MIB] for i in range(0, len(big), MIB)])
    json_error(httpx.post(f"{server.url}/v1/attestations", content=chunks), 413)
    # A GET-only endpoint takes small bodies only.
    json_error(httpx.post(f"{server.url}/v1/admin/refresh", content=b"x" * (20 * MIB)), 413)
    many = {
        "feedstock": "inp",
        "artifacts": {
            f"noarch/p{i}-1.0-0.conda": {"sha256": "0" * 64, "attestation": {}} for i in range(501)
        },
    }
    body = json_error(httpx.post(f"{server.url}/v1/attestations", json=many), 413)
    assert "500" in body["detail"]


def test_per_artifact_refusals(served: tuple[World, Server], tmp_path: Path) -> None:
    world, server = served
    keyref = _ensure_feedstock(world, server, "inp")
    good, other = build_artifacts(tmp_path, [("inp", "noarch"), ("inp", "linux-64")])
    sidecar = _sidecar(world, keyref, "inp", good)
    sha = read_artifact(good).sha256
    wrong_hint = {**sidecar, "feedstock": "other"}
    broken = {"feedstock": "inp", "envelopes": [{"payload": "%%%"}]}
    artifacts = {
        f"noarch/{good.name}": {"sha256": sha, "attestation": sidecar},
        "no-subdir.conda": {"sha256": sha, "attestation": sidecar},
        "noarch/not-a-package.txt": {"sha256": sha, "attestation": sidecar},
        f"noarch/{other.name}": {"sha256": "XYZ", "attestation": sidecar},
        f"linux-64/{other.name}": {"sha256": read_artifact(other).sha256, "attestation": sidecar},
        f"win-64/{good.name}": {"sha256": sha, "attestation": wrong_hint},
        f"osx-64/{good.name}": {"sha256": sha, "attestation": broken},
        f"linux-aarch64/{good.name}": {"sha256": "1" * 64, "attestation": sidecar},
    }
    response = httpx.post(
        f"{server.url}/v1/attestations", json={"feedstock": "inp", "artifacts": artifacts}
    )
    assert response.status_code == 200, response.text
    verdicts = response.json()["artifacts"]
    assert verdicts[f"noarch/{good.name}"]["accepted"] is True
    checks = {k: v.get("check") for k, v in verdicts.items() if not v["accepted"]}
    assert checks == {
        "no-subdir.conda": "artifact",
        "noarch/not-a-package.txt": "artifact",
        f"noarch/{other.name}": "sha256",
        f"linux-64/{other.name}": "subject",  # the sidecar attests another file
        f"win-64/{good.name}": "feedstock",
        f"osx-64/{good.name}": "format",
        f"linux-aarch64/{good.name}": "digest",
    }
    assert all(v["reason"] for k, v in verdicts.items() if not v["accepted"])
    assert response.json()["accepted"] == 1 and response.json()["refused"] == 7

    # A different file under a name already attested is a conflict; the same one is idempotent.
    again = httpx.post(
        f"{server.url}/v1/attestations",
        json={
            "feedstock": "inp",
            "artifacts": {f"noarch/{good.name}": artifacts[f"noarch/{good.name}"]},
        },
    ).json()
    assert again["artifacts"][f"noarch/{good.name}"]["status"] == "unchanged"


def test_rate_limit_per_feedstock(served: tuple[World, Server]) -> None:
    world, server = served
    _ensure_feedstock(world, server, "flood")
    batch = {
        "feedstock": "flood",
        "artifacts": {
            f"noarch/flood-1.{i}-0.conda": {"sha256": "0" * 64, "attestation": {}}
            for i in range(12)
        },
    }
    first = httpx.post(f"{server.url}/v1/attestations", json=batch)
    assert first.status_code == 200, first.text  # refused one by one, but within the rate
    limited = httpx.post(f"{server.url}/v1/attestations", json=batch)
    body = json_error(limited, 429)
    assert "flood" in body["detail"] and int(limited.headers["retry-after"]) >= 1
    # Another feedstock is not affected.
    other = httpx.post(
        f"{server.url}/v1/attestations",
        json={
            "feedstock": "inp",
            "artifacts": {"noarch/x-1-0.conda": {"sha256": "", "attestation": {}}},
        },
    )
    assert other.status_code == 200


ADMIN_BAD: list[tuple[str, str, Any, int]] = [
    ("POST", "/v1/admin/feedstocks", {"name": "bad name", "outputs": []}, 400),
    ("POST", "/v1/admin/feedstocks", {"name": "numpy-feedstock"}, 400),
    ("POST", "/v1/admin/feedstocks", {"name": "globby", "outputs": ["lib*"]}, 400),
    ("POST", "/v1/admin/feedstocks", {"name": "k", "keys": [{"keytype": "ed25519",
     "scheme": "ed25519", "keyval": {"public": "XYZ"}}]}, 400),
    ("POST", "/v1/admin/feedstocks", {"name": "t", "threshold": 0}, 422),
    ("POST", "/v1/admin/feedstocks", {"name": "t", "outputs": "numpy"}, 422),
    ("POST", "/v1/admin/feedstocks", {"outputs": []}, 422),
    ("POST", "/v1/admin/feedstocks", {"name": "inp"}, 409),
    ("GET", "/v1/admin/feedstocks/nobody", None, 404),
    ("PATCH", "/v1/admin/feedstocks/nobody", {"add_outputs": ["x"]}, 404),
    ("DELETE", "/v1/admin/feedstocks/nobody", None, 404),
    ("POST", "/v1/admin/feedstocks/nobody/keys", {"key": {"keytype": "ed25519",
     "scheme": "ed25519", "keyval": {"public": "0" * 64}}}, 404),
    ("DELETE", "/v1/admin/feedstocks/inp/keys/" + "0" * 64, None, 404),
    ("GET", "/v1/admin/audit?limit=0", None, 422),
    ("GET", "/v1/admin/audit?after=x", None, 422),
    ("GET", "/v1/admin/audit?after=" + "9" * 40, None, 422),  # beyond any database integer
    ("POST", "/v1/admin/outputs/import", {"outputs": {"pkg": ["bad name"]}}, 400),
    ("POST", "/v1/admin/roots", {"root": "{not json"}, 400),
    ("POST", "/v1/admin/roots", {"root": "{}"}, 400),
    ("PUT", "/v1/admin/pkg-mgr-keys", {"keyrefs": ["file:/nonexistent/key"]}, 400),
    ("POST", "/v1/admin/refresh", {"within_days": -1}, 422),
    ("POST", "/v1/admin/refresh", {"within_days": True}, 422),  # strict: never coerced
    ("POST", "/v1/admin/outputs/import", {"replace": 0}, 422),
    ("POST", "/v1/admin/feedstocks", {"name": "t", "threshold": "2"}, 422),
    ("GET", "/nowhere", None, 404),
    ("PUT", "/healthz", None, 405),
    ("GET", "/trust/../../etc/passwd", None, 404),
    ("GET", "/trust/attestations/noarch/x.conda.sig.json", None, 404),
]  # fmt: skip


@pytest.mark.parametrize("method,path,body,status", ADMIN_BAD)
def test_bad_admin_requests(
    served: tuple[World, Server], method: str, path: str, body: Any, status: int
) -> None:
    world, server = served
    _ensure_feedstock(world, server, "inp")
    response = httpx.request(method, server.url + path, json=body, headers=_admin(world))
    json_error(response, status)


def test_duplicate_and_revoked_keys_conflict(served: tuple[World, Server]) -> None:
    world, server = served
    _, pub = world.feedstock_key("dupkey")
    created = httpx.post(
        f"{server.url}/v1/admin/feedstocks",
        json={"name": "dupkey", "outputs": ["dupkey"], "keys": [pub]},
        headers=_admin(world),
    )
    assert created.status_code == 201
    keyid = created.json()["feedstock"]["keys"][0]["keyid"]
    url = f"{server.url}/v1/admin/feedstocks/dupkey/keys"
    json_error(httpx.post(url, json={"key": pub}, headers=_admin(world)), 409)
    # The same key for another feedstock is refused: a feedstock's key is its own.
    httpx.post(f"{server.url}/v1/admin/feedstocks", json={"name": "dup2"}, headers=_admin(world))
    json_error(
        httpx.post(
            f"{server.url}/v1/admin/feedstocks/dup2/keys", json={"key": pub}, headers=_admin(world)
        ),
        409,
    )
    assert httpx.delete(f"{url}/{keyid}", headers=_admin(world)).status_code == 200
    json_error(httpx.delete(f"{url}/{keyid}", headers=_admin(world)), 409)
    body = json_error(httpx.post(url, json={"key": pub}, headers=_admin(world)), 409)
    assert "revoked" in body["detail"]


def test_never_a_500(served: tuple[World, Server]) -> None:
    """Runs last in this module: nothing above made the service answer 500."""
    _, server = served
    metrics = httpx.get(f"{server.url}/metrics").text
    assert (
        'cf_sign_http_requests_total{method="POST",route="/v1/attestations",status="413"}'
        in metrics
    )
    assert 'status="500"' not in metrics
