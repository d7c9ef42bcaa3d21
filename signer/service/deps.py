"""FastAPI dependencies: the service state, and bearer-token authentication with scopes.

Routes declare what they need by type: `state: State`, `actor: Registrar` or
`actor: Admin` (an `Annotated` dependency each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from signer.service.config import Settings
from signer.service.db.session import Database
from signer.service.documents import TrustFiles
from signer.service.errors import Forbidden, Unauthorized
from signer.service.intake import Intake
from signer.service.metrics import Metrics
from signer.service.overlays import OverlaySigner
from signer.service.publisher import Publisher
from signer.service.tokens import authenticate


@dataclass
class ServiceState:
    settings: Settings
    db: Database
    publisher: Publisher
    intake: Intake
    metrics: Metrics
    trust_files: TrustFiles
    overlays: OverlaySigner
    # Wakes the overlay loop early (a channel was added, attestations arrived); set by app.py.
    overlay_soon: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class Actor:
    """Who made an admin request, as written to the audit log."""

    name: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def has(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.has(scope):
            raise Forbidden(f"this needs a token with scope {scope!r}")


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]

_bearer = HTTPBearer(auto_error=False, description="a token from `cf-sign service token create`")


def _authenticate(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer ...)")
    with state.db.read() as session:
        token = authenticate(session, credentials.credentials)
        if token is None:
            raise Unauthorized("invalid or revoked token")
        return Actor(f"token {token.id} ({token.name})", frozenset(token.scopes.split()))


def require_scope(scope: str) -> Callable[..., Actor]:
    """A dependency: the caller's token must carry `scope` (or `admin`)."""

    def dependency(actor: Annotated[Actor, Depends(_authenticate)]) -> Actor:
        actor.require(scope)
        return actor

    return dependency


Registrar = Annotated[Actor, Depends(require_scope("registrar"))]
Admin = Annotated[Actor, Depends(require_scope("admin"))]
