"""Admin API authentication: bearer tokens, stored as hashes, with scopes.

No token, a forged token, a revoked token: 401. A token without the needed scope: 403.
"""

from __future__ import annotations

import hashlib
import secrets

import httpx
import pytest
from sqlalchemy import select
from test_service_support import Server, World, json_error, run_cli

from signer.service.db.models import Token
from signer.service.db.session import Database

pytest_plugins = ("test_service_support",)  # fixtures: served

ADMIN_CALLS = [
    ("GET", "/v1/admin/feedstocks", None),
    ("POST", "/v1/admin/feedstocks", {"name": "x", "outputs": ["x"]}),
    ("DELETE", "/v1/admin/feedstocks/x", None),
    ("POST", "/v1/admin/feedstocks/x/keys", {"key": {}}),
    ("GET", "/v1/admin/audit", None),
    ("POST", "/v1/admin/refresh", {}),
]
# Calls a registrar token may not make (all need scope admin).
ADMIN_ONLY = [
    ("DELETE", "/v1/admin/feedstocks/authtest", None),
    ("DELETE", "/v1/admin/feedstocks/authtest/keys/" + "0" * 64, None),
    ("GET", "/v1/admin/audit", None),
    ("POST", "/v1/admin/refresh", {}),
    ("PATCH", "/v1/admin/feedstocks/authtest", {"remove_outputs": ["authtest"]}),
    ("PATCH", "/v1/admin/feedstocks/authtest", {"threshold": 1}),
    ("POST", "/v1/admin/outputs/import", {"outputs": {"a": ["authtest"]}, "replace": True}),
    ("PUT", "/v1/admin/pkg-mgr-keys", {"keyrefs": ["file:/nonexistent"]}),
    ("POST", "/v1/admin/roots", {"root": "{}"}),
]


def _call(
    server: Server, method: str, path: str, body: object, token: str | None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, server.url + path, json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("method,path,body", ADMIN_CALLS)
def test_no_token_is_401(
    served: tuple[World, Server], method: str, path: str, body: object
) -> None:
    _, server = served
    response = _call(server, method, path, body, None)
    json_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_forged_tokens_are_401(served: tuple[World, Server]) -> None:
    world, server = served
    db = Database(world.db_url)
    try:
        with db.read() as session:
            stored_hash = session.scalars(select(Token.token_hash)).first()
    finally:
        db.dispose()
    assert stored_hash is not None
    forged = [
        "cfs_" + secrets.token_urlsafe(32),  # the right shape, never issued
        world.admin_token[:-2] + ("AA" if not world.admin_token.endswith("AA") else "BB"),
        stored_hash,  # what the database holds is not a credential
        "cfs_",
        "x" * 5000,
    ]
    for token in forged:
        body = json_error(_call(server, "GET", "/v1/admin/audit", None, token), 401)
        assert "token" in body["detail"]
    basic = httpx.get(
        server.url + "/v1/admin/audit", headers={"Authorization": f"Basic {world.admin_token}"}
    )
    json_error(basic, 401)


@pytest.mark.parametrize("method,path,body", ADMIN_ONLY)
def test_registrar_scope_is_403_for_admin_calls(
    served: tuple[World, Server], method: str, path: str, body: object
) -> None:
    world, server = served
    created = _call(
        server,
        "POST",
        "/v1/admin/feedstocks",
        {"name": "authtest", "outputs": ["authtest"]},
        world.registrar_token,
    )
    assert created.status_code in (201, 409), created.text
    body_json = json_error(_call(server, method, path, body, world.registrar_token), 403)
    assert "admin" in body_json["detail"]


def test_registrar_may_register(served: tuple[World, Server]) -> None:
    world, server = served
    _, pub = world.feedstock_key("regok")
    response = _call(
        server,
        "POST",
        "/v1/admin/feedstocks",
        {"name": "regok", "outputs": ["regok"], "keys": [pub]},
        world.registrar_token,
    )
    assert response.status_code == 201, response.text
    response = _call(server, "GET", "/v1/admin/feedstocks/regok", None, world.registrar_token)
    assert response.status_code == 200 and response.json()["delegated"] is True


def test_revoked_token_is_401_and_secrets_are_not_stored(served: tuple[World, Server]) -> None:
    world, server = served
    token = world.token("admin", name="short-lived")
    assert _call(server, "GET", "/v1/admin/audit", None, token).status_code == 200
    db = Database(world.db_url)
    try:
        with db.read() as session:
            rows = session.scalars(select(Token)).all()
            row = next(
                t for t in rows if t.token_hash == hashlib.sha256(token.encode()).hexdigest()
            )
            for t in rows:  # no column holds a secret
                assert token not in (t.name, t.token_hash, t.scopes)
    finally:
        db.dispose()
    code, out, err = run_cli("service", "token", "revoke", str(row.id), "--db", world.db_url)
    assert code == 0, err
    json_error(_call(server, "GET", "/v1/admin/audit", None, token), 401)
    code, out, _ = run_cli("service", "token", "list", "--db", world.db_url)
    assert code == 0 and "short-lived" in out and token not in out
