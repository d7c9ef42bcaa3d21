"""conda artifacts: reading (`reader`) and building real packages (`build`)."""

from signer.artifacts.reader import (
    MAX_INDEX_JSON,
    ArtifactInfo,
    check_filename_matches_index,
    hash_file,
    parse_filename,
    read_artifact,
    read_index_json,
)

__all__ = [
    "MAX_INDEX_JSON",
    "ArtifactInfo",
    "check_filename_matches_index",
    "hash_file",
    "parse_filename",
    "read_artifact",
    "read_index_json",
]
