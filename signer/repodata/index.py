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
    """`{"info", "packages", "packages.conda", "removed", "repodata_version"}` of a folder.

    Every package must be what its file name says (name-version-build of its
    `info/index.json`) and belong to the subdir (given, or the folder's name): a repodata
    whose records disagree with their files or their subdir would mislead every client.
    """
    from signer.artifacts import check_filename_matches_index
    from signer.trust.errors import FormatError, VerificationError

    subdir = subdir or subdir_dir.name
    packages: dict[str, Any] = {}
    conda: dict[str, Any] = {}
    for path in sorted(subdir_dir.iterdir()):
        if path.name.endswith(".tar.bz2"):
            section = packages
        elif path.name.endswith(".conda"):
            section = conda
        else:
            continue
        info = read_artifact(path, md5=True)
        try:
            check_filename_matches_index(info)
        except VerificationError as exc:
            raise FormatError(str(path), "info/index.json", exc.reason) from None
        if info.subdir != subdir:
            raise FormatError(
                str(path),
                "info/index.json: subdir",
                f"the package is {info.subdir!r}, not {subdir!r} like the repodata",
            )
        section[path.name] = record_from_artifact(info)
    return {
        "info": {"subdir": subdir},
        "packages": packages,
        "packages.conda": conda,
        "removed": [],
        "repodata_version": 1,
    }
