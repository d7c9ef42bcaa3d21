"""Is this database one `cf-sign service init` made? (A typo in `--db` must not silently
create a new, empty database, nor issue a working token into one.)"""

from __future__ import annotations

from sqlalchemy import inspect, select

from signer.service.db.models import Setting
from signer.service.db.session import Database, sqlite_path
from signer.service.online_keys import CONFIG_SETTING
from signer.trust.errors import FormatError

NOT_INITIALIZED = "not an initialized cf-sign database (make one with `cf-sign service init`)"


def check_exists(url: str) -> None:
    """Before connecting: an SQLite file that does not exist is refused, not created."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise FormatError(str(path), "database", f"no such file; {NOT_INITIALIZED}")


def check_initialized(db: Database) -> None:
    where = db.url.split("@")[-1]
    with db.connect() as conn:
        if not inspect(conn).has_table(Setting.__tablename__):
            raise FormatError(where, "database", NOT_INITIALIZED)
        if conn.scalar(select(Setting.name).where(Setting.name == CONFIG_SETTING)) is None:
            raise FormatError(where, "database", NOT_INITIALIZED)
