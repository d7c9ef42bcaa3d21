"""Issue 9.2 at the service: one ECDSA key in several spellings is one key.

With and without the final newline, or with CRLF line ends, a P-256 key has one keyid, so
the registry's "a key belongs to one feedstock" and "a revoked key never comes back" hold
for every spelling. Control: another key is accepted in the same calls.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from test_service_support import Server, World, json_error

from signer.keys import generate_key

pytest_plugins = ("test_service_support",)  # fixtures: served


def _ecdsa(world: World, name: str) -> list[dict[str, Any]]:
    _, pub_path, _ = generate_key(name, world.base / "ecdsa-keys", "ecdsa-p256")
    key = json.loads(pub_path.read_text())
    pem = key["keyval"]["public"]
    return [
        {**key, "keyval": {"public": p}} for p in (pem, pem.rstrip("\n"), pem.replace("\n", "\r\n"))
    ]


def test_ecdsa_spellings_are_one_key_in_the_registry(served: tuple[World, Server]) -> None:
    world, server = served
    admin = {"Authorization": f"Bearer {world.token('admin', name='ecdsa-admin')}"}
    normal, bare, crlf = _ecdsa(world, "ecdsa-one")
    created = httpx.post(f"{server.url}/v1/admin/feedstocks",
                         json={"name": "ecdsaone", "outputs": ["ecdsaone"], "keys": [normal]},
                         headers=admin)  # fmt: skip
    assert created.status_code == 201, created.text
    keyid = created.json()["feedstock"]["keys"][0]["keyid"]
    url = f"{server.url}/v1/admin/feedstocks/ecdsaone/keys"
    json_error(httpx.post(url, json={"key": bare}, headers=admin), 409)  # a second spelling
    httpx.post(f"{server.url}/v1/admin/feedstocks", json={"name": "ecdsatwo"}, headers=admin)
    other = f"{server.url}/v1/admin/feedstocks/ecdsatwo/keys"
    json_error(httpx.post(other, json={"key": crlf}, headers=admin), 409)  # another feedstock
    assert httpx.delete(f"{url}/{keyid}", headers=admin).status_code == 200
    body = json_error(httpx.post(url, json={"key": crlf}, headers=admin), 409)
    assert "revoked" in body["detail"]  # revoked, in any spelling
    # Control: a different ECDSA key is accepted by the same call.
    fresh = _ecdsa(world, "ecdsa-two")[1]
    assert httpx.post(other, json={"key": fresh}, headers=admin).status_code in (200, 201)
