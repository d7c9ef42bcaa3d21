"""What each client verifies of a repodata record.

conda (conda-content-trust) verifies the canonical bytes of the whole record as served.
mamba rebuilds a subset from its parsed package info (libmamba `PackageInfo::json_signable`,
libmamba/src/specs/package_info.cpp): name, version, subdir, size, timestamp (seconds, as
libsolv stores it), build, build_number, noarch when set, license, md5, sha256, depends, and
constrains when non-empty. Both serialise with the same canonical bytes for ASCII content.
"""

from __future__ import annotations

from typing import Any

from signer.trust.canonical import canonical_bytes_fast

# libsolv's conda reader takes timestamps above this (year 9999, in seconds) as milliseconds.
_MAX_SECONDS = 253402300799


def conda_message(record: dict[str, Any], *, float_free: bool = False) -> bytes:
    return canonical_bytes_fast(record, float_free=float_free)


def mamba_subset(record: dict[str, Any]) -> dict[str, Any]:
    timestamp = record.get("timestamp", 0)
    if isinstance(timestamp, int) and timestamp > _MAX_SECONDS:
        timestamp //= 1000
    subset: dict[str, Any] = {
        "build": record.get("build", ""),
        "build_number": record.get("build_number", 0),
        "depends": record.get("depends") or [],
        "license": record.get("license", ""),
        "md5": record.get("md5", ""),
        "name": record.get("name", ""),
        "sha256": record.get("sha256", ""),
        "size": record.get("size", 0),
        "subdir": record.get("subdir", ""),
        "timestamp": timestamp,
        "version": record.get("version", ""),
    }
    noarch = record.get("noarch")
    if isinstance(noarch, str) and noarch:
        subset["noarch"] = noarch
    constrains = record.get("constrains")
    if constrains:
        subset["constrains"] = constrains
    return subset


def mamba_message(record: dict[str, Any]) -> bytes:
    return canonical_bytes_fast(mamba_subset(record))
