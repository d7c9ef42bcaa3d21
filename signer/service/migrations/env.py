"""Alembic environment: runs on the connection `db/migrate.py` passes (it holds the lock).

From the `alembic` command line (developers), it connects to `$CF_SIGN_DB` instead.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine

from signer.service.db.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite has little ALTER
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    url = os.environ.get("CF_SIGN_DB")
    if not url:
        raise SystemExit("set CF_SIGN_DB to the database URL")
    with create_engine(url).connect() as connection:
        _run(connection)


run()
