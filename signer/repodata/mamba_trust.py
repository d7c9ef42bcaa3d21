"""The trust document only mamba reads: pkg_mgr.json.

libmamba's `RepoChecker` fails a channel whose `pkg_mgr.json` is missing, short of the
threshold of key_mgr's pkg_mgr keys, or expired, before it looks at any record. conda
never reads it. Checking it tells a mirror operator whether mamba will get that far.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from signer.trust.chain import check_not_expired
from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import MAX_DELEGATING
from signer.trust.metadata import KeyMgr, PkgMgr, parse_metadata
from signer.trust.repository import Fetch
from signer.trust.threshold import verify_threshold

PKG_MGR_FILE = "pkg_mgr.json"


def check_pkg_mgr(fetch: Fetch, key_mgr: KeyMgr, now: datetime, skew: timedelta) -> PkgMgr:
    """pkg_mgr.json as mamba requires it; VerificationError (exit 1) otherwise."""
    data = fetch(PKG_MGR_FILE, MAX_DELEGATING)
    if data is None:
        why = "not found in the trust repository (mamba requires it)"
        raise VerificationError(PKG_MGR_FILE, "missing", why)
    try:
        doc = parse_metadata(data, PKG_MGR_FILE, "pkg_mgr")
    except FormatError as exc:
        reason = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
        raise VerificationError(PKG_MGR_FILE, "format", reason) from None
    assert isinstance(doc.meta, PkgMgr)
    verify_threshold(doc.envelope.canonical, doc.envelope.signatures, key_mgr.pkg_mgr_keys,
                     "pkg_mgr").require(PKG_MGR_FILE)  # fmt: skip
    check_not_expired(doc.meta, PKG_MGR_FILE, now, skew)
    return doc.meta
