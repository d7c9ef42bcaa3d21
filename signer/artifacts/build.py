"""Building real conda packages (`.tar.bz2` and `.conda`) for tests, the demo and benchmarks.

Layouts follow conda-build and conda-package-handling: a `.tar.bz2` holds `info/` first,
then the payload; a `.conda` is a stored zip of `metadata.json`, `pkg-<stem>.tar.zst` and
`info-<stem>.tar.zst`. Mtimes are fixed, so the same inputs give the same bytes.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, cast

import zstandard

_MTIME = 1_700_000_000


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _MTIME
    info.mode = 0o755 if name.startswith("bin/") else 0o644
    tar.addfile(info, io.BytesIO(data))


def _tar_bytes(
    members: Mapping[str, bytes],
    before: Sequence[tuple[str, bytes]] = (),
    after: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [*before, *members.items(), *after]:
            _add(tar, name, data)
    return buffer.getvalue()


def _info_members(index: Mapping[str, object], files: Mapping[str, bytes]) -> dict[str, bytes]:
    paths = {
        "paths": [
            {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(d).hexdigest(),
             "size_in_bytes": len(d)}
            for p, d in sorted(files.items())
        ],
        "paths_version": 1,
    }  # fmt: skip
    return {
        "info/index.json": json.dumps(index, indent=2, sort_keys=True).encode(),
        "info/files": "".join(f"{p}\n" for p in sorted(files)).encode(),
        "info/paths.json": json.dumps(paths, indent=2, sort_keys=True).encode(),
    }


def make_index(
    name: str,
    version: str,
    build: str,
    *,
    build_number: int = 0,
    subdir: str = "noarch",
    depends: Sequence[str] = (),
    license: str = "BSD-3-Clause",
    timestamp_ms: int | None = None,
) -> dict[str, object]:
    """info/index.json as conda-build writes it."""
    arch, _, platform = subdir.partition("-")
    index: dict[str, object] = {
        "build": build,
        "build_number": build_number,
        "depends": list(depends),
        "license": license,
        "name": name,
        "subdir": subdir,
        "timestamp": timestamp_ms if timestamp_ms is not None else _MTIME * 1000,
        "version": version,
    }
    if subdir == "noarch":
        index.update(arch=None, platform=None)
    else:
        index.update(arch={"64": "x86_64"}.get(platform, platform), platform=arch)
    return index


def build_package(
    out_dir: Path,
    name: str,
    version: str,
    build: str,
    *,
    build_number: int = 0,
    subdir: str = "noarch",
    fmt: str = "conda",
    depends: Sequence[str] = (),
    license: str = "BSD-3-Clause",
    files: Mapping[str, bytes] | None = None,
    index_overrides: Mapping[str, object] | None = None,
    timestamp_ms: int | None = None,
    info_before: Sequence[tuple[str, bytes]] = (),
    info_after: Sequence[tuple[str, bytes]] = (),
) -> Path:
    """Write `name-version-build.<fmt>` into out_dir and return its path.

    `info_before`/`info_after` add raw members around the info ones (same names allowed):
    how the tests build hostile archives, e.g. two `info/index.json`.
    """
    files = dict(files if files is not None else {f"share/{name}/README": f"{name}\n".encode()})
    index = make_index(name, version, build, build_number=build_number, subdir=subdir,
                       depends=depends, license=license, timestamp_ms=timestamp_ms)  # fmt: skip
    index.update(index_overrides or {})
    info = _info_members(index, files)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{version}-{build}"
    if fmt == "tar.bz2":
        path = out_dir / f"{stem}.tar.bz2"
        tar = _tar_bytes({**info, **files}, info_before, info_after)
        path.write_bytes(bz2.compress(tar, 9))
        return path
    if fmt != "conda":
        raise ValueError(f"unknown package format {fmt!r}")
    path = out_dir / f"{stem}.conda"
    compressor = zstandard.ZstdCompressor(level=3)
    pkg = compressor.compress(_tar_bytes(files))
    info_zst = compressor.compress(_tar_bytes(info, info_before, info_after))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for member, data in (
            ("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
            (f"pkg-{stem}.tar.zst", pkg),
            (f"info-{stem}.tar.zst", info_zst),
        ):
            entry = zipfile.ZipInfo(member, date_time=(2023, 11, 14, 22, 13, 20))
            archive.writestr(entry, data)
    return path


class _RandomBytes:
    """A file-like source of `size` random bytes (only `read` is used by tarfile)."""

    def __init__(self, size: int) -> None:
        self.remaining = size

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        self.remaining -= n
        return os.urandom(n)


def build_large_conda(out: Path, size_bytes: int, name: str = "bigpkg") -> Path:
    """A valid .conda of about `size_bytes` (incompressible payload), written in chunks."""
    stem = out.name[: -len(".conda")] if out.name.endswith(".conda") else f"{name}-1.0-0"
    pkg_name, version, build = stem.rsplit("-", 2)
    payload_name = f"share/{pkg_name}/blob.bin"
    index = make_index(pkg_name, version, build)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        with archive.open(f"pkg-{stem}.tar.zst", "w", force_zip64=True) as raw:
            # Level 1 on random bytes stores them nearly verbatim: the file is ~size_bytes.
            writer = zstandard.ZstdCompressor(level=1).stream_writer(raw, closefd=False)
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(payload_name)
                info.size = size_bytes
                info.mtime = _MTIME

                tar.addfile(info, cast(IO[bytes], _RandomBytes(size_bytes)))
            writer.flush(zstandard.FLUSH_FRAME)
        archive.writestr(f"info-{stem}.tar.zst", zstandard.ZstdCompressor().compress(
            _tar_bytes(_info_members(index, {payload_name: b""}))))  # fmt: skip
    return out


def build_bomb_conda(
    out_dir: Path, name: str, inflated_bytes: int, *, component: str = "info"
) -> Path:
    """A .conda whose `component` ("info" or "pkg") inflates to `inflated_bytes` of zeros.

    The compressed file stays tiny (zstd turns megabytes of zeros into a few bytes); the
    archive is otherwise valid, so only an inflated-size cap refuses it.
    """
    stem = f"{name}-1.0-0"
    blob = f"info/blob-{name}" if component == "info" else f"share/{name}/blob.bin"
    index = make_index(name, "1.0", "0")
    members = _info_members(index, {} if component == "info" else {blob: b""})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.conda"

    def component_bytes(small: Mapping[str, bytes], big: str | None) -> bytes:
        buffer = io.BytesIO()
        writer = zstandard.ZstdCompressor(level=3).stream_writer(buffer, closefd=False)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for member, data in small.items():
                _add(tar, member, data)
            if big is not None:
                info = tarfile.TarInfo(big)
                info.size = inflated_bytes
                info.mtime = _MTIME
                tar.addfile(info, cast(IO[bytes], _Zeros(inflated_bytes)))
        writer.flush(zstandard.FLUSH_FRAME)
        return buffer.getvalue()

    info_part = component_bytes(members, blob if component == "info" else None)
    pkg_part = component_bytes({}, blob if component == "pkg" else None)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"pkg-{stem}.tar.zst", pkg_part)
        archive.writestr(f"info-{stem}.tar.zst", info_part)
    return path


class _Zeros:
    def __init__(self, size: int) -> None:
        self.remaining = size

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n < 0 else min(n, self.remaining)
        self.remaining -= n
        return bytes(n)
