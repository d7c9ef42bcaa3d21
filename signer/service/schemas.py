"""Request and response bodies of the API (pydantic); the OpenAPI schema is built from them.

Request models forbid unknown fields, so a misspelt field is a 422, not silently ignored,
and are strict: `"replace": 0` or `"threshold": "2"` is a 422, never coerced.
The sidecar inside an attestation request is a free-form object on purpose: it is checked
by the trust core's strict parser, and a malformed one refuses that artifact only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME = Field(min_length=1, max_length=256)
# A KEYREF (`file:/run/secrets/k`, `env:VAR`, `azurekv:...`): no control characters (a NUL
# in a path is not a file name the OS takes).
KeyRef = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]+$")]
MAX_NAMES = 100_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code, e.g. unknown_feedstock")
    detail: str = Field(description="one line for people")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="field errors of a 422 answer"
    )


Responses = dict[int | str, dict[str, Any]]
_AUTH_ERRORS = {
    401: "Missing, invalid or revoked token",
    403: "The token lacks the scope",
    422: "Malformed request",
}


def error_responses(errors: dict[int, str], *, auth: bool = True) -> Responses:
    """The `responses=` of a route: each status with its JSON error body and description
    (with `auth`, also 401, 403 and 422 of a token-protected route)."""
    described = {**(_AUTH_ERRORS if auth else {}), **errors}
    return {code: {"model": ErrorBody, "description": text} for code, text in described.items()}


# ----------------------------------------------------------------------------- attestations


class ArtifactSubmission(Strict):
    sha256: str = Field(description="sha256 of the artifact file (64 lowercase hex)")
    attestation: dict[str, Any] = Field(
        description='the sidecar: {"feedstock": NAME, "envelopes": [DSSE envelope, ...]}'
    )


class AttestationRequest(Strict):
    feedstock: str = Field(min_length=1, max_length=256, description="without -feedstock")
    artifacts: dict[str, ArtifactSubmission] = Field(
        min_length=1, description='"<subdir>/<file name>" -> hash and sidecar'
    )


class ArtifactVerdict(BaseModel):
    accepted: bool
    status: Literal["stored", "unchanged", "replaced", "refused"]
    keyids: list[str] | None = Field(default=None, description="keys whose signature counted")
    package: str | None = None
    check: str | None = Field(default=None, description="the check that failed")
    reason: str | None = Field(default=None, description="why, in one line")


class AttestationResponse(BaseModel):
    feedstock: str
    accepted: int
    refused: int
    artifacts: dict[str, ArtifactVerdict]


# ----------------------------------------------------------------------------- admin


class KeyVal(Strict):
    public: str = Field(max_length=4096)


class KeyModel(Strict):
    """A public key in securesystemslib's form (ed25519 or ecdsa-sha2-nistp256)."""

    keytype: str = Field(max_length=32)
    scheme: str = Field(max_length=64)
    keyval: KeyVal


class FeedstockCreate(Strict):
    name: str = Field(min_length=1, max_length=256, description="without -feedstock")
    outputs: list[str] = Field(default_factory=list, max_length=MAX_NAMES)
    output_globs: list[str] = Field(default_factory=list, max_length=1000)
    keys: list[KeyModel] = Field(default_factory=list, max_length=16)
    threshold: int = Field(default=1, ge=1, le=16)


class FeedstockUpdate(Strict):
    add_outputs: list[str] = Field(default_factory=list, max_length=MAX_NAMES)
    remove_outputs: list[str] = Field(default_factory=list, max_length=MAX_NAMES)
    add_globs: list[str] = Field(default_factory=list, max_length=1000)
    remove_globs: list[str] = Field(default_factory=list, max_length=1000)
    threshold: int | None = Field(default=None, ge=1, le=16)


class KeyAdd(Strict):
    key: KeyModel


class KeyView(BaseModel):
    keyid: str
    key: dict[str, Any]
    added_at: str
    revoked_at: str | None


class FeedstockView(BaseModel):
    name: str
    threshold: int
    delegated: bool = Field(description="has enough active keys to be in the delegations")
    outputs: list[str]
    output_globs: list[str]
    keys: list[KeyView]


class Published(BaseModel):
    published: dict[str, int] = Field(description="documents published: path -> new version")
    notes: list[str] = Field(default_factory=list)


class FeedstockChange(Published):
    feedstock: FeedstockView | None = None


class FeedstockList(BaseModel):
    feedstocks: list[FeedstockView]
    next_after: str | None = Field(description="pass as ?after= for the next page")


class OutputsImport(Strict):
    """conda-forge/feedstock-outputs: package name -> feedstocks, and autoreg globs."""

    outputs: dict[str, list[str]] = Field(default_factory=dict)
    output_globs: dict[str, list[str]] = Field(default_factory=dict)
    replace: bool = Field(
        default=False, description="set each named feedstock's names exactly (admin only)"
    )


class ImportResult(Published):
    feedstocks: int
    created: int
    names: int
    globs: int
    normalized: int = Field(0, description="feedstock names given with -feedstock, read without")
    needs_admin: list[str] = Field(
        default_factory=list, description="entries left out: they take names others own"
    )


class AttestationWithdraw(Strict):
    reason: str = Field(min_length=1, max_length=1024, description="for the audit log")


class WithdrawnView(BaseModel):
    artifact: str
    feedstock: str
    sha256: str
    withdrawn: bool = True


class AuditEntryView(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntryView]
    next_after: int | None


class RefreshRequest(Strict):
    within_days: float | None = Field(
        default=None, gt=0, le=3650, description="default: half of the documents' lifetime"
    )


class RootPublish(Strict):
    root: str = Field(max_length=512 * 1024, description="N+1.root.json, its exact text")
    key_mgr_keyrefs: list[KeyRef] | None = Field(
        default=None, description="KEYREFs of the new root's key_mgr keys, if they changed"
    )


class PkgMgrKeys(Strict):
    keyrefs: list[KeyRef] = Field(min_length=1, max_length=8)
    threshold: int = Field(default=1, ge=1, le=8)


# ----------------------------------------------------------------------------- channels


class ChannelSubdirSpec(Strict):
    subdir: str = Field(min_length=1, max_length=64, description="e.g. linux-64, noarch")
    upstream: str = Field(
        min_length=1, max_length=2048, description="upstream's repodata URL (.json or .json.zst)"
    )
    current_upstream: str | None = Field(
        default=None, max_length=2048, description="upstream's current_repodata.json (optional)"
    )


class ChannelCreate(Strict):
    name: str = Field(min_length=1, max_length=64, description="published as channels/<name>/")
    subdirs: list[ChannelSubdirSpec] = Field(min_length=1, max_length=64)


class ChannelSubdirView(BaseModel):
    subdir: str
    upstream: str
    current_upstream: str | None
    refreshed_at: str | None = Field(description="last refresh (UTC), by any replica")
    published_at: str | None = Field(description="last time the signed document changed")
    records: int
    attested: int = Field(description="signed on a verified attestation")
    observed: int = Field(description="signed without one (feedstock in off/observe)")
    unattested: int
    refused: int
    coverage: float = Field(description="attested / records (1.0 for an empty subdir)")
    lag_seconds: float = Field(description="upstream change seen -> published, last time")
    error: str | None = Field(description="why the last refresh failed (null: it did not)")


class ChannelView(BaseModel):
    name: str
    created_at: str
    created_by: str
    subdirs: list[ChannelSubdirView]


class ChannelList(BaseModel):
    channels: list[ChannelView]


class ChannelRefresh(BaseModel):
    channel: str
    subdir: str
    document: str
    ok: bool
    published: bool = False
    upstream_changed: bool = False
    records: int = 0
    attested: int = 0
    observed: int = 0
    unattested: int = 0
    refused: int = 0
    cached: int = 0
    coverage: float = 0.0
    error: str | None = None


class ChannelRefreshResult(BaseModel):
    results: list[ChannelRefresh]


# ----------------------------------------------------------------------------- health


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    initialized: bool
    root_version: int | None = None
    root_expires: str | None = None
    index_version: int | None = None
