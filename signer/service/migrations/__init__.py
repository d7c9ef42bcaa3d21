"""Alembic migrations of the service database, applied programmatically (see db/migrate.py)."""
