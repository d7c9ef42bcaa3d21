"""The audit log is append-only (the database refuses edits) and hash-chained:
`cf-sign service audit verify` finds any edited or deleted entry, even by someone who got
past the database's refusal."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from test_service_support import World, run_cli

from signer.service.db.session import Database

pytest_plugins = ("test_service_support",)  # fixtures: db_url, world


def _with_changes(world: World) -> None:
    for i in range(3):
        world.token("registrar", name=f"bot{i}")  # each is an audit entry
    code, out, err = run_cli("service", "audit", "verify", "--db", world.db_url)
    assert code == 0 and "audit log OK: 6 entries" in out, out + err


def _sql(world: World, *statements: str) -> None:
    db = Database(world.db_url)
    try:
        with db.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        db.dispose()


def _drop_guards(world: World) -> None:
    """What an attacker with the database's owner rights would do first."""
    if world.db_url.startswith("sqlite"):
        _sql(world, "DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete")
    else:
        _sql(world, "ALTER TABLE audit_log DISABLE TRIGGER USER")


def test_database_refuses_edits(world: World) -> None:
    _with_changes(world)
    for statement in (
        "UPDATE audit_log SET actor = 'someone else' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 3",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            _sql(world, statement)
    code, out, _ = run_cli("service", "audit", "verify", "--db", world.db_url)
    assert code == 0, out


TAMPERING = {
    "edited": (["UPDATE audit_log SET detail = '{}' WHERE seq = 4"], "entry 4: content"),
    "rehashed": (
        ["UPDATE audit_log SET entry_hash = '" + "a" * 64 + "' WHERE seq = 2"],
        "entry 3: prev_hash",
    ),
    "deleted": (["DELETE FROM audit_log WHERE seq = 3"], "entry 3: missing"),
    "truncated": (["DELETE FROM audit_log WHERE seq >= 5"], "recorded head is entry 6"),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_verify_detects_tampering(world: World, kind: str) -> None:
    _with_changes(world)
    _drop_guards(world)
    statements, expected = TAMPERING[kind]
    _sql(world, *statements)
    code, out, err = run_cli("service", "audit", "verify", "--db", world.db_url)
    assert code == 1, out + err
    assert expected in err, err
