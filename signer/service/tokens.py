"""Bearer tokens for the admin API: random secrets, stored only as their SHA-256.

A token is shown once, when made (`cf-sign service token create --scope ...`). Scopes:
`admin` (everything) and `registrar` (register a new feedstock, give it names nobody owns
and its first key, import the outputs mapping's unowned entries: what provisioning bots
need, nothing that takes, removes or revokes).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from signer.service.db.models import Token
from signer.service.publisher import Change

SCOPES = ("admin", "registrar")
PREFIX = "cfs_"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(change: Change, name: str, scopes: Sequence[str]) -> tuple[Token, str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
    secret = PREFIX + secrets.token_urlsafe(32)
    token = Token(
        name=name[:128],
        token_hash=hash_token(secret),
        scopes=" ".join(sorted(set(scopes))),
        created_at=change.now,
    )
    change.session.add(token)
    change.session.flush()
    change.audit("token.create", {"token_id": token.id, "name": token.name, "scopes": token.scopes})
    return token, secret


def revoke_token(change: Change, token_id: int) -> Token | None:
    token = change.session.get(Token, token_id)
    if token is None or token.revoked_at is not None:
        return None
    token.revoked_at = change.now
    change.audit("token.revoke", {"token_id": token.id, "name": token.name})
    return token


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.id)))


def authenticate(session: Session, secret: str) -> Token | None:
    """The live token with this secret, or None (compared by hash, so in constant time)."""
    if not secret.startswith(PREFIX) or len(secret) > 256:
        return None
    token = session.scalars(select(Token).where(Token.token_hash == hash_token(secret))).first()
    if token is None or token.revoked_at is not None:
        return None
    return token
