"""Applying the Alembic migrations from code (`cf-sign db upgrade`, and server start-up).

The migration scripts ship inside the package (`signer/service/migrations`). Upgrades run
under the publication lock, so several processes starting at once on one database apply
each migration exactly once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from signer.service.db.session import Database

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database) -> tuple[str | None, str | None]:
    """Bring the schema to the newest revision; returns (before, after)."""
    with db.publication_lock() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        if conn.in_transaction():
            conn.commit()
        config = _config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        if conn.in_transaction():
            conn.commit()
    return before, current_revision(db)
