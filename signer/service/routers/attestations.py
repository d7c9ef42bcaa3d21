"""`POST /v1/attestations`: feedstock CI submits the sidecars of what it built.

No token: each artifact's signature, by a key delegated to the feedstock for that package
name, is the credential. The answer has a verdict per artifact (like conda-forge's
`/feedstock-outputs/copy`); refusals of the whole request (unknown feedstock, rate limit,
size) are 4xx with a JSON error.
"""

from __future__ import annotations

from fastapi import APIRouter

from signer.service.deps import State
from signer.service.schemas import AttestationRequest, AttestationResponse, ErrorBody

router = APIRouter(tags=["feedstock CI"])


@router.post(
    "/v1/attestations",
    summary="Submit artifact attestations (sidecars) for verification and publication",
    response_model=AttestationResponse,
    responses={
        400: {"model": ErrorBody, "description": "Invalid feedstock name"},
        403: {"model": ErrorBody, "description": "Feedstock has no active keys"},
        404: {"model": ErrorBody, "description": "Unknown feedstock"},
        413: {"model": ErrorBody, "description": "Request too large or too many artifacts"},
        422: {"model": ErrorBody, "description": "Malformed request body"},
        429: {"model": ErrorBody, "description": "Over the feedstock's rate limit"},
        503: {"model": ErrorBody, "description": "Service not initialized"},
    },
)
def submit_attestations(body: AttestationRequest, state: State) -> AttestationResponse:
    artifacts = {k: (v.sha256, v.attestation) for k, v in body.artifacts.items()}
    result = state.intake.submit(body.feedstock, artifacts)
    for verdict in result.verdicts.values():
        state.metrics.attestations.labels(verdict.status).inc()
    return AttestationResponse.model_validate(result.to_json())
