"""Moved to `signer.devrepo`; this name stays until branches written against it have merged."""

from signer.devrepo import DevTrustRepo, make_dev_trust_repo

__all__ = ["DevTrustRepo", "make_dev_trust_repo"]
