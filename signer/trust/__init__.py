"""The trust core: formats, canonical bytes and verification.

Imports nothing else of the package; every other part builds on this one.
"""

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
from signer.trust.timefmt import DEFAULT_CLOCK_SKEW, Clock, format_time, parse_time, system_clock

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "SPEC_VERSION",
    "Clock",
    "DelegatingMetadata",
    "Delegation",
    "ExpiredError",
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
    "canonical_bytes",
    "check_not_expired",
    "choose_anchor",
    "format_time",
    "load_key_mgr",
    "parse_metadata",
    "parse_time",
    "sign_envelope",
    "system_clock",
    "update_root",
    "verify_key_mgr",
    "verify_root_self",
    "verify_root_update",
    "verify_threshold",
    "write_atomic",
]
