"""Staged enforcement in the service (migration 0004) and `cf-sign rollout status|stage`.

On SQLite and PostgreSQL, against `cf-sign serve`: a feedstock's stage is off until an admin
sets it, is readable without a token, cannot be `enforce` without an active key, and each
change is in the audit log; status counts provisioned, signing (attested recently) and
enforced feedstocks, also as Prometheus text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from test_service_support import Server, World, build_artifacts, run_process

pytest_plugins = ("test_service_support",)  # fixtures: served, db_url


def _admin(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.admin_token}"}


def _env(world: World) -> dict[str, str]:
    return {"CF_SIGN_ADMIN_TOKEN": world.admin_token}


def _status(world: World, server: Server, *extra: str) -> tuple[int, str, str]:
    return run_process("rollout", "status", "--service", server.url, *extra, env=_env(world))


def test_stages_and_coverage(served: tuple[World, Server], tmp_path: Path) -> None:
    world, server = served
    code, out, err = _status(world, server, "--json")
    assert code == 0, err
    before = json.loads(out)

    keyref, pub = world.feedstock_key("stagefoo")
    for name, keys in (("stagefoo", [pub]), ("stagebar", [])):
        body = {"name": name, "outputs": [name], "keys": keys}
        r = httpx.post(
            f"{server.url}/v1/admin/feedstocks", headers=_admin(world), json=body, timeout=60
        )
        assert r.status_code == 201, r.text

    # Public read, default off.
    r = httpx.get(f"{server.url}/v1/stages/stagefoo", timeout=30)
    assert r.status_code == 200 and r.json() == {"name": "stagefoo", "stage": "off",
                                                 "since": None, "previous": None}  # fmt: skip
    assert httpx.get(f"{server.url}/v1/stages/nosuch", timeout=30).status_code == 404

    # Only admins set it; a registrar token is refused; a bad stage is a 422 with JSON.
    url = f"{server.url}/v1/admin/feedstocks/stagefoo/stage"
    bot = {"Authorization": f"Bearer {world.registrar_token}"}
    assert httpx.put(url, json={"stage": "observe"}, headers=bot, timeout=30).status_code == 403
    r = httpx.put(url, json={"stage": "strict"}, headers=_admin(world), timeout=30)
    assert r.status_code == 422 and r.json()["error"]

    code, out, err = run_process("rollout", "stage", "observe", "stagefoo", "--service",
                                 server.url, env=_env(world))  # fmt: skip
    assert code == 0 and "stagefoo: off -> observe" in out, out + err
    # Enforcing a feedstock without a key would refuse everything it builds: refused.
    code, out, err = run_process("rollout", "stage", "enforce", "stagebar", "--service",
                                 server.url, env=_env(world))  # fmt: skip
    assert code == 2 and "no active key" in err and "Traceback" not in err
    code, out, err = run_process("rollout", "stage", "enforce", "stagefoo", "--service",
                                 server.url, env=_env(world))  # fmt: skip
    assert code == 0 and "stagefoo: observe -> enforce" in out

    listed = httpx.get(f"{server.url}/v1/stages", params={"after": "stage"}, timeout=30).json()
    (foo,) = [s for s in listed["stages"] if s["name"] == "stagefoo"]
    # Since when: channel signing can enforce on records uploaded after this moment only.
    assert foo["stage"] == "enforce" and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", foo["since"]
    )

    audit = httpx.get(f"{server.url}/v1/admin/audit", headers=_admin(world), timeout=30).json()
    changes = [e for e in audit["entries"] if e["action"] == "feedstock.stage"]
    assert [(e["detail"]["from"], e["detail"]["to"]) for e in changes][-2:] == [
        ("off", "observe"),
        ("observe", "enforce"),
    ]

    # One build of stagefoo attested: it now counts as signing.
    build = tmp_path / "build"
    build_artifacts(build, [("stagefoo", "noarch")])
    secret = Path(keyref[len("file:") :]).read_text()
    code, out, err = run_process("sign", "--build-dir", build, "--output", "stagefoo",
                                 "--feedstock", "stagefoo", "--key", "env:K",
                                 env={"K": secret})  # fmt: skip
    assert code == 0, err
    code, out, err = run_process("submit", "--build-dir", build, "--service", server.url)
    assert code == 0, out + err

    code, out, err = _status(world, server, "--json")
    after = json.loads(out)
    assert after["feedstocks"] == before["feedstocks"] + 2
    assert after["provisioned"] == before["provisioned"] + 1
    assert after["signing"] == before["signing"] + 1
    assert after["enforced"] == before["enforced"] + 1
    code, out, err = _status(world, server, "--metrics")
    assert code == 0
    assert f'cf_sign_rollout_feedstocks{{state="enforced"}} {after["enforced"]}' in out
    code, out, err = _status(world, server)
    assert f"enforced: {after['enforced']}" in out

    # A channel subdir with that artifact and one nobody attested: half of it is attested.
    (artifact,) = (build / "noarch").glob("*.conda")
    record = {"name": "x", "version": "1.0", "build": "py_0", "build_number": 0,
              "subdir": "noarch", "depends": []}  # fmt: skip
    repodata = tmp_path / "repodata.json"
    repodata.write_text(json.dumps({
        "info": {"subdir": "noarch"}, "packages": {}, "removed": [], "repodata_version": 1,
        "packages.conda": {artifact.name: record, "other-1.0-py_0.conda": record},
    }))  # fmt: skip
    code, out, err = _status(world, server, "--repodata", str(repodata), "--sample", "0",
                             "--json")  # fmt: skip
    assert code == 0, err
    channel = json.loads(out)["channel"]
    assert (channel["records"], channel["attested"], channel["attested_share"]) == (2, 1, 0.5)
    code, out, err = _status(world, server, "--repodata", str(repodata), "--metrics")
    assert 'cf_sign_rollout_channel_attested_share{subdir="noarch"} 0.5' in out


def test_migration_0004_down_and_up(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import IntegrityError

    from signer.service.db import migrate
    from signer.service.db.session import Database

    db = Database(db_url)
    try:
        before, after = migrate.upgrade(db)
        assert before is None and after == migrate.head_revision() >= "0004"

        def columns() -> set[str]:
            with db.connect() as conn:
                return {c["name"] for c in inspect(conn).get_columns("feedstocks")}

        assert "stage" in columns()
        with db.connect() as conn:
            conn.execute(text("INSERT INTO feedstocks (name, threshold, created_at) "
                              "VALUES ('m', 1, CURRENT_TIMESTAMP)"))  # fmt: skip
            assert conn.execute(text("SELECT stage FROM feedstocks")).scalar() == "off"
            conn.commit()
        with db.connect() as conn, pytest.raises(IntegrityError):
            conn.execute(text("UPDATE feedstocks SET stage = 'strict'"))
            conn.commit()
        with db.connect() as conn:
            config = migrate._config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0003")
            conn.commit()
        assert "stage" not in columns()
        assert migrate.upgrade(db) == ("0003", migrate.head_revision())
        assert "stage" in columns()
    finally:
        db.engine.dispose()
