"""Indexing a subdir into repodata.json the way conda-index does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signer.artifacts import ArtifactInfo, read_artifact

# conda-index drops these from info/index.json when it makes a record.
DROPPED_KEYS = frozenset({
    "arch", "has_prefix", "mtime", "platform", "ucs", "requires_features", "binstar",
    "target-triplet", "machine", "operatingsystem",
})  # fmt: skip


def record_from_artifact(info: ArtifactInfo) -> dict[str, Any]:
    """The repodata record of an artifact read with md5=True."""
    if info.md5 is None:
        raise ValueError("record_from_artifact needs the md5: read_artifact(path, md5=True)")
    record = {k: v for k, v in info.index.items() if k not in DROPPED_KEYS}
    record.update(md5=info.md5, sha256=info.sha256, size=info.size)
    return record


def index_directory(subdir_dir: Path, subdir: str | None = None) -> dict[str, Any]:
    """`{"info", "packages", "packages.conda", "removed", "repodata_version"}` of a folder."""
    packages: dict[str, Any] = {}
    conda: dict[str, Any] = {}
    for path in sorted(subdir_dir.iterdir()):
        if path.name.endswith(".tar.bz2"):
            packages[path.name] = record_from_artifact(read_artifact(path, md5=True))
        elif path.name.endswith(".conda"):
            conda[path.name] = record_from_artifact(read_artifact(path, md5=True))
    return {
        "info": {"subdir": subdir or subdir_dir.name},
        "packages": packages,
        "packages.conda": conda,
        "removed": [],
        "repodata_version": 1,
    }
