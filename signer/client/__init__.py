"""The verifier session: what every client of cf-sign verifies through.

`TrustSession` (built with `TrustSession.open(location, root=..., state_dir=...,
config=SessionConfig(...))`, or from an injected `TrustSource`) walks the root chain,
checks key_mgr and pkg_mgr once, resolves and caches feedstock delegations, and verifies
attestations, artifacts and repodata. See docs/architecture.md.
"""

from signer.client.artifact import ArtifactVerdict
from signer.client.session import SessionConfig, TrustSession, TrustSource

__all__ = ["ArtifactVerdict", "SessionConfig", "TrustSession", "TrustSource"]
