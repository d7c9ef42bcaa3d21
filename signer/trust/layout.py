"""The trust repository layout (DESIGN.md section 5): every document's path, in one place.

`1.root.json ... N.root.json`, `key_mgr.json`, `pkg_mgr.json`, `feedstocks/index.json`,
`feedstocks/<bin>.json`, `attestations/<subdir>/<artifact>.sig.json` and signed channels'
`channels/<name>/<subdir>/repodata.json`. The verifier, the publisher (`delegations
publish` and the service), the service's routes, metrics and health, the development
repository and the CLI all name documents through this module, and write them in
`write_order`: a reader never sees an index naming a bin, or a key_mgr delegating keys,
that is not there yet.
"""

from __future__ import annotations

from collections.abc import Iterable

ROOT_SUFFIX = ".root.json"
KEY_MGR = "key_mgr.json"
PKG_MGR = "pkg_mgr.json"
FEEDSTOCKS_DIR = "feedstocks"
INDEX = f"{FEEDSTOCKS_DIR}/index.json"
ATTESTATIONS_DIR = "attestations"
CHANNELS_DIR = "channels"
SIDECAR_SUFFIX = ".sig.json"
REPODATA = "repodata.json"


def root_path(version: int) -> str:
    """`N.root.json`."""
    return f"{version}{ROOT_SUFFIX}"


def root_version(path: str) -> int | None:
    """N of `N.root.json` (N >= 1, plain decimal digits), else None."""
    if not path.endswith(ROOT_SUFFIX) or "/" in path:
        return None
    head = path[: -len(ROOT_SUFFIX)]
    if not head.isascii() or not head.isdigit() or head.startswith("0"):
        return None
    return int(head)


def is_root_path(path: str) -> bool:
    return root_version(path) is not None


def newest_root(paths: Iterable[str]) -> str | None:
    """The `N.root.json` with the highest N among `paths`, None when there is none."""
    best: tuple[int, str] | None = None
    for path in paths:
        version = root_version(path)
        if version is not None and (best is None or version > best[0]):
            best = (version, path)
    return best[1] if best else None


def bin_path(bin_name: str) -> str:
    """`feedstocks/<bin>.json`."""
    return f"{FEEDSTOCKS_DIR}/{bin_name}.json"


def is_bin_path(path: str) -> bool:
    return path.startswith(FEEDSTOCKS_DIR + "/") and path != INDEX and path.endswith(".json")


def is_feedstocks_path(path: str) -> bool:
    """The index or a bin: the documents signed by the key_mgr keys besides key_mgr.json."""
    return path == INDEX or is_bin_path(path)


def sidecar_name(artifact_filename: str) -> str:
    """`<artifact>.sig.json`."""
    return artifact_filename + SIDECAR_SUFFIX


def attestation_path(subdir: str, artifact_filename: str) -> str:
    """`attestations/<subdir>/<artifact>.sig.json`."""
    return f"{ATTESTATIONS_DIR}/{subdir}/{sidecar_name(artifact_filename)}"


def channel_repodata_path(channel: str, subdir: str, name: str = REPODATA) -> str:
    """`channels/<name>/<subdir>/repodata.json` (or another file of that subdir)."""
    return f"{CHANNELS_DIR}/{channel}/{subdir}/{name}"


def is_immutable(path: str) -> bool:
    """Documents that never change once published (cacheable forever): the roots."""
    return is_root_path(path)


def write_rank(path: str) -> tuple[int, int, str]:
    """Sort key of `write_order`."""
    version = root_version(path)
    if version is not None:
        return (0, version, path)
    if path == KEY_MGR:
        return (1, 0, path)
    if path == PKG_MGR:
        return (2, 0, path)
    if path == INDEX:
        return (5, 0, path)
    if is_bin_path(path):
        return (3, 0, path)
    return (4, 0, path)  # attestations, channels: before the index that may name them


def write_order(paths: Iterable[str]) -> list[str]:
    """Roots (in version order), key_mgr, pkg_mgr, bins, the rest, and the index last."""
    return sorted(paths, key=write_rank)
