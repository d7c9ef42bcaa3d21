"""Database models, engines and migrations of the service."""

from signer.service.db.session import Database

__all__ = ["Database"]
