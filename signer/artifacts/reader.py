"""Reading conda artifacts: info/index.json, sha256/md5 and size, refusing hostile archives.

The hashes come from one sequential pass over the file (large `readinto` reads: signing a
1 GiB artifact is benchmarked against `sha256sum`); info/index.json comes from
conda-package-streaming, which reads only the small info component of a `.conda`.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from signer.trust.errors import FormatError, VerificationError

MIB = 1024 * 1024
MAX_INDEX_JSON = 1 * MIB
MAX_ARTIFACT = 64 * 1024 * MIB
MAX_ZIP_ENTRIES = 1000
MAX_INFO_MEMBER = 256 * MIB
_CHUNK = 4 * MIB
EXTENSIONS = (".conda", ".tar.bz2")


def parse_filename(filename: str) -> tuple[str, str, str, str]:
    """`name-version-build.ext` -> (name, version, build, ext)."""
    ext = next((e for e in EXTENSIONS if filename.endswith(e)), None)
    if ext is None:
        raise FormatError(filename, "file name", "not a .conda or .tar.bz2 artifact")
    parts = filename[: -len(ext)].rsplit("-", 2)
    if len(parts) != 3 or not all(parts) or "/" in filename:
        raise FormatError(filename, "file name", "expected name-version-build" + ext)
    return parts[0], parts[1], parts[2], ext


class ArtifactInfo:
    """What was read from one artifact file (a plain class: start-up cost matters here)."""

    __slots__ = ("filename", "format", "index", "md5", "path", "sha256", "size")

    def __init__(
        self,
        path: Path,
        filename: str,
        format: str,  # "conda" | "tar.bz2"
        index: dict[str, Any],
        sha256: str,
        size: int,
        md5: str | None = None,
    ) -> None:
        self.path = path
        self.filename = filename
        self.format = format
        self.index = index
        self.sha256 = sha256
        self.size = size
        self.md5 = md5

    @property
    def name(self) -> str:
        return str(self.index["name"])

    @property
    def version(self) -> str:
        return str(self.index["version"])

    @property
    def build(self) -> str:
        return str(self.index["build"])

    @property
    def subdir(self) -> str:
        value = self.index.get("subdir")
        return value if isinstance(value, str) and value else "noarch"


def hash_file(
    path: Path, *, md5: bool = False, max_size: int = MAX_ARTIFACT
) -> tuple[str, str | None, int]:
    """(sha256 hex, md5 hex or None, size) in one pass."""
    sha = hashlib.sha256()
    md = hashlib.md5(usedforsecurity=False) if md5 else None
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    size = 0
    try:
        with open(path, "rb", buffering=0) as handle:
            if os.fstat(handle.fileno()).st_size > max_size:
                raise FormatError(str(path), "size", f"larger than the {max_size}-byte cap")
            while n := handle.readinto(buffer):
                chunk = view[:n]
                sha.update(chunk)
                if md is not None:
                    md.update(chunk)
                size += n
    except FileNotFoundError:
        raise FormatError(str(path), "", "no such file") from None
    except IsADirectoryError:
        raise FormatError(str(path), "", "is a directory") from None
    except OSError as exc:
        raise FormatError(str(path), "", f"cannot read: {exc.strerror}") from None
    return sha.hexdigest(), (md.hexdigest() if md is not None else None), size


def _check_member_name(name: str, source: str) -> None:
    if name.startswith("/") or name.startswith("\\") or ":" in name.split("/")[0][1:2]:
        raise FormatError(source, name, "absolute path in archive")
    if ".." in name.replace("\\", "/").split("/"):
        raise FormatError(source, name, "path escapes the archive ('..')")


def _check_tar_member(member: tarfile.TarInfo, source: str) -> None:
    _check_member_name(member.name, source)
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/"):
            raise FormatError(source, member.name, f"link to absolute path {target!r}")
        base = posixpath.dirname(member.name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise FormatError(source, member.name, f"link escapes the archive ({target!r})")
    elif not (member.isfile() or member.isdir()):
        raise FormatError(source, member.name, "device, fifo or other special file in archive")


def _read_index(
    tar: tarfile.TarFile, member: tarfile.TarInfo, source: str, cap: int
) -> dict[str, Any]:
    if member.size > cap:
        raise FormatError(
            source, "info/index.json", f"{member.size} bytes exceeds the {cap}-byte cap"
        )
    handle = tar.extractfile(member)
    if handle is None:
        raise FormatError(source, "info/index.json", "is not a regular file")
    data = handle.read(cap + 1)
    try:
        index = json.loads(data)
    except ValueError:
        raise FormatError(source, "info/index.json", "malformed JSON") from None
    if not isinstance(index, dict):
        raise FormatError(source, "info/index.json", "expected a JSON object")
    for field in ("name", "version", "build"):
        if not isinstance(index.get(field), str) or not index[field]:
            raise FormatError(source, f"info/index.json: {field}", "missing or not a string")
    return index


def _conda_info_stem(path: Path, source: str) -> str:
    """Stem of the .conda's info component, found from the zip itself (survives renames)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FormatError(source, "", f"not a valid .conda (zip): {exc}") from None
    if len(entries) > MAX_ZIP_ENTRIES:
        raise FormatError(source, "", f"{len(entries)} zip entries (more than {MAX_ZIP_ENTRIES})")
    infos = []
    for entry in entries:
        _check_member_name(entry.filename, source)
        if entry.filename.startswith("info-") and entry.filename.endswith(".tar.zst"):
            if entry.file_size > MAX_INFO_MEMBER:
                raise FormatError(source, entry.filename, "info component is absurdly large")
            infos.append(entry.filename)
    if len(infos) != 1:
        raise FormatError(
            source, "info-*.tar.zst", f"expected one info component, found {len(infos)}"
        )
    return infos[0][len("info-") : -len(".tar.zst")]


def read_index_json(
    path: Path, *, max_index_bytes: int = MAX_INDEX_JSON
) -> tuple[str, dict[str, Any]]:
    """(format, info/index.json) of an artifact, checking the members it walks."""
    from conda_package_streaming.package_streaming import stream_conda_component

    source = str(path)
    if path.name.endswith(".conda"):
        fmt = "conda"
        stem = _conda_info_stem(path, source)
        opener: Any = lambda handle: stream_conda_component(f"{stem}.conda", handle, "info")  # noqa: E731
    elif path.name.endswith(".tar.bz2"):
        fmt = "tar.bz2"
        opener = lambda handle: stream_conda_component(f"{path.name}", handle, "pkg")  # noqa: E731
    else:
        raise FormatError(source, "file name", "not a .conda or .tar.bz2 artifact")
    index: dict[str, Any] | None = None
    try:
        with open(path, "rb") as handle:
            for tar, member in opener(handle):
                _check_tar_member(member, source)
                if member.name == "info/index.json":
                    index = _read_index(tar, member, source, max_index_bytes)
                    if fmt == "tar.bz2":
                        break  # do not decompress the payload just to look for index.json
    except FormatError:
        raise
    except FileNotFoundError:
        raise FormatError(source, "", "no such file") from None
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        EOFError,
        OSError,
        ValueError,
        LookupError,
    ) as exc:
        raise FormatError(source, "", f"corrupt or truncated archive: {exc}") from None
    except Exception as exc:  # zstd/bz2 decoders raise their own error types
        raise FormatError(source, "", f"corrupt or truncated archive: {exc}") from None
    if index is None:
        raise FormatError(source, "info/index.json", "missing from the archive")
    return fmt, index


def read_artifact(
    path: Path | str,
    *,
    md5: bool = False,
    max_index_bytes: int = MAX_INDEX_JSON,
    max_size: int = MAX_ARTIFACT,
) -> ArtifactInfo:
    """Index, hashes and size of an artifact; FormatError naming the file on anything odd."""
    path = Path(path)
    sha256, md5_hex, size = hash_file(path, md5=md5, max_size=max_size)
    fmt, index = read_index_json(path, max_index_bytes=max_index_bytes)
    return ArtifactInfo(path, path.name, fmt, index, sha256, size, md5_hex)


def check_filename_matches_index(info: ArtifactInfo) -> None:
    """The file name's name-version-build must be the one in info/index.json."""
    try:
        name, version, build, _ = parse_filename(info.filename)
    except FormatError as exc:
        raise VerificationError(info.filename, "file-name", exc.reason) from None
    for field, in_name in (("name", name), ("version", version), ("build", build)):
        in_index = info.index[field]
        if in_name != in_index:
            raise VerificationError(
                info.filename,
                "file-name",
                f"{field} {in_name!r} in the file name but {in_index!r} in info/index.json",
            )
