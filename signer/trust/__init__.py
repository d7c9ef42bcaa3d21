"""The trust core: formats, canonical bytes and verification.

Imports nothing else of the package; every other part builds on this one. Names are
imported on first use (PEP 562): the CLI needs `signer.trust.errors` at start-up, and
loading every module of the core there would cost more than `cf-sign verify` may take.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signer.trust.attestation import AttestationResult, verify_sidecar
    from signer.trust.canonical import canonical_bytes
    from signer.trust.chain import (
        RootUpdate,
        check_not_expired,
        verify_root_self,
        verify_root_update,
    )
    from signer.trust.errors import (
        ExpiredError,
        FormatError,
        RollbackError,
        ThresholdError,
        TrustError,
        VerificationError,
    )
    from signer.trust.feedstocks import (
        FeedstockBin,
        FeedstockDelegation,
        FeedstocksIndex,
        bin_id,
        resolve_feedstock,
        verify_feedstock_delegation,
    )
    from signer.trust.keys import PublicKey
    from signer.trust.metadata import (
        SPEC_VERSION,
        DelegatingMetadata,
        Delegation,
        KeyMgr,
        PkgMgr,
        Root,
        Signable,
        Signature,
        SignedMetadata,
        parse_metadata,
    )
    from signer.trust.repository import (
        Fetch,
        TrustedKeyMgr,
        TrustedRoot,
        choose_anchor,
        load_key_mgr,
        update_root,
        verify_key_mgr,
    )
    from signer.trust.signing import MessageSigner, sign_envelope
    from signer.trust.state import TrustState, write_atomic
    from signer.trust.threshold import ThresholdResult, verify_threshold
    from signer.trust.timefmt import (
        DEFAULT_CLOCK_SKEW,
        Clock,
        format_time,
        parse_time,
        system_clock,
    )

_MODULE_OF = {
    "FeedstockDelegation": "signer.trust.feedstocks",
    "FeedstocksIndex": "signer.trust.feedstocks",
    "FeedstockBin": "signer.trust.feedstocks",
    "bin_id": "signer.trust.feedstocks",
    "verify_feedstock_delegation": "signer.trust.feedstocks",
    "resolve_feedstock": "signer.trust.feedstocks",
    "verify_sidecar": "signer.trust.attestation",
    "AttestationResult": "signer.trust.attestation",
    "Clock": "signer.trust.timefmt",
    "DEFAULT_CLOCK_SKEW": "signer.trust.timefmt",
    "DelegatingMetadata": "signer.trust.metadata",
    "Delegation": "signer.trust.metadata",
    "ExpiredError": "signer.trust.errors",
    "Fetch": "signer.trust.repository",
    "FormatError": "signer.trust.errors",
    "KeyMgr": "signer.trust.metadata",
    "MessageSigner": "signer.trust.signing",
    "PkgMgr": "signer.trust.metadata",
    "PublicKey": "signer.trust.keys",
    "RollbackError": "signer.trust.errors",
    "Root": "signer.trust.metadata",
    "RootUpdate": "signer.trust.chain",
    "SPEC_VERSION": "signer.trust.metadata",
    "Signable": "signer.trust.metadata",
    "Signature": "signer.trust.metadata",
    "SignedMetadata": "signer.trust.metadata",
    "ThresholdError": "signer.trust.errors",
    "ThresholdResult": "signer.trust.threshold",
    "TrustError": "signer.trust.errors",
    "TrustState": "signer.trust.state",
    "TrustedKeyMgr": "signer.trust.repository",
    "TrustedRoot": "signer.trust.repository",
    "VerificationError": "signer.trust.errors",
    "canonical_bytes": "signer.trust.canonical",
    "check_not_expired": "signer.trust.chain",
    "choose_anchor": "signer.trust.repository",
    "format_time": "signer.trust.timefmt",
    "load_key_mgr": "signer.trust.repository",
    "parse_metadata": "signer.trust.metadata",
    "parse_time": "signer.trust.timefmt",
    "sign_envelope": "signer.trust.signing",
    "system_clock": "signer.trust.timefmt",
    "update_root": "signer.trust.repository",
    "verify_key_mgr": "signer.trust.repository",
    "verify_root_self": "signer.trust.chain",
    "verify_root_update": "signer.trust.chain",
    "verify_threshold": "signer.trust.threshold",
    "write_atomic": "signer.trust.state",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'signer.trust' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "SPEC_VERSION",
    "AttestationResult",
    "Clock",
    "DelegatingMetadata",
    "Delegation",
    "ExpiredError",
    "FeedstockBin",
    "FeedstockDelegation",
    "FeedstocksIndex",
    "Fetch",
    "FormatError",
    "KeyMgr",
    "MessageSigner",
    "PkgMgr",
    "PublicKey",
    "RollbackError",
    "Root",
    "RootUpdate",
    "Signable",
    "Signature",
    "SignedMetadata",
    "ThresholdError",
    "ThresholdResult",
    "TrustError",
    "TrustState",
    "TrustedKeyMgr",
    "TrustedRoot",
    "VerificationError",
    "bin_id",
    "canonical_bytes",
    "check_not_expired",
    "choose_anchor",
    "format_time",
    "load_key_mgr",
    "parse_metadata",
    "parse_time",
    "resolve_feedstock",
    "sign_envelope",
    "system_clock",
    "update_root",
    "verify_feedstock_delegation",
    "verify_key_mgr",
    "verify_root_self",
    "verify_root_update",
    "verify_sidecar",
    "verify_threshold",
    "write_atomic",
]
