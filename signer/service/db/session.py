"""Engines, sessions and the publication lock, for SQLite and PostgreSQL alike.

SQLite: WAL (readers never wait for the writer), a busy timeout, foreign keys on, and
transactions begun by us: `BEGIN IMMEDIATE` for writes, so two writers queue up instead of
failing when they both try to upgrade a read lock. PostgreSQL: psycopg 3, a pool sized for
FastAPI's thread pool.

The publication lock serializes everything that signs or publishes: a session-level
advisory lock on PostgreSQL (held across the commit and the file writes that follow it, so
files are never written out of order by two processes), and on SQLite an OS lock on a file
next to the database (every process using an SQLite file runs on the same machine).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# pg_advisory_lock key: "cfsign" in ASCII. Advisory locks are per database.
PUBLICATION_LOCK_KEY = 0x636673696760
_IMMEDIATE = "cf_sign_immediate"


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is None or str(path) == ":memory:":
        raise ValueError("the service needs an SQLite file, not an in-memory database")
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 60}, pool_size=10, max_overflow=30)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below): pysqlite's implicit BEGIN is always DEFERRED.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    # 40 = Starlette's default thread pool; overflow for the background tasks.
    return create_engine(url, pool_size=20, max_overflow=30, pool_pre_ping=True)


class Database:
    """An engine with read and write sessions and the publication lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgresql = self.engine.dialect.name == "postgresql"
        writer = self.engine.execution_options(**{_IMMEDIATE: True})
        self._writer = writer
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(writer, expire_on_commit=False)

    def read(self) -> Session:
        return self._reads()

    def write(self) -> Session:
        """A session whose transaction takes the write lock at once on SQLite."""
        return self._writes()

    def connect(self) -> Connection:
        return self.engine.connect()

    @contextmanager
    def publication_lock(self) -> Iterator[Connection]:
        """A connection holding the publication lock until the block ends.

        Use it for one or more transactions (`Session(bind=conn)`); whatever the block
        does after committing (writing files) still happens under the lock.
        """
        if self.is_postgresql:
            with self._pg_lock() as conn:
                yield conn
        else:
            with self._file_lock(), self._writer.connect() as conn:
                yield conn

    @contextmanager
    def _pg_lock(self) -> Iterator[Connection]:
        conn = self.engine.connect()
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PUBLICATION_LOCK_KEY})
            conn.commit()
            yield conn
        except BaseException:
            # The lock is released with the connection; never hand a locked one to the pool.
            conn.invalidate()
            conn.close()
            raise
        try:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PUBLICATION_LOCK_KEY})
            conn.commit()
        except BaseException:
            conn.invalidate()
            raise
        finally:
            conn.close()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        path = sqlite_path(self.url)
        assert path is not None
        lock_path = path.with_name(path.name + ".publish-lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def dispose(self) -> None:
        self.engine.dispose()
