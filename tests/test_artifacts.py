"""Reading real packages in both formats, and refusing hostile or broken archives."""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from signer.artifacts import (
    check_filename_matches_index,
    parse_filename,
    read_artifact,
)
from signer.artifacts.build import build_package
from signer.repodata.index import DROPPED_KEYS, index_directory
from signer.trust import FormatError, VerificationError


@pytest.mark.parametrize("fmt", ["conda", "tar.bz2"])
def test_read_built_package(tmp_path: Path, fmt: str) -> None:
    path = build_package(tmp_path, "numpy", "1.26.4", "py311h64a7726_0", subdir="linux-64",
                         fmt=fmt, depends=["python >=3.11"])  # fmt: skip
    info = read_artifact(path, md5=True)
    data = path.read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.md5 == hashlib.md5(data).hexdigest()
    assert info.size == len(data)
    assert (info.name, info.version, info.build, info.subdir) == (
        "numpy", "1.26.4", "py311h64a7726_0", "linux-64")  # fmt: skip
    assert info.index["depends"] == ["python >=3.11"] and info.format == fmt
    check_filename_matches_index(info)


def test_build_is_deterministic(tmp_path: Path) -> None:
    a = build_package(tmp_path / "a", "x", "1", "0")
    b = build_package(tmp_path / "b", "x", "1", "0")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("numpy-1.26.4-py311h64a7726_0.conda", ("numpy", "1.26.4", "py311h64a7726_0", ".conda")),
        ("python-dateutil-2.8.2-pyhd8ed1ab_0.tar.bz2",
         ("python-dateutil", "2.8.2", "pyhd8ed1ab_0", ".tar.bz2")),
    ],
)  # fmt: skip
def test_parse_filename(name: str, expected: tuple[str, ...]) -> None:
    assert parse_filename(name) == expected


@pytest.mark.parametrize("name", ["first.tar.bz2", "a-b.conda", "x-1-0.zip", "--.conda"])
def test_parse_filename_refuses(name: str) -> None:
    with pytest.raises(FormatError, match="file name"):
        parse_filename(name)


@pytest.mark.parametrize("fmt", ["conda", "tar.bz2"])
def test_renamed_artifact_detected(tmp_path: Path, fmt: str) -> None:
    path = build_package(tmp_path, "evil", "1.0", "0", fmt=fmt)
    renamed = path.with_name(f"numpy-1.0-0.{fmt}")
    path.rename(renamed)
    info = read_artifact(renamed)
    assert info.name == "evil"
    with pytest.raises(VerificationError, match="name 'numpy' in the file name but 'evil'"):
        check_filename_matches_index(info)


def _tar_bz2(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in members:
            payload = data.get(member.name)
            if payload is not None:
                member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload) if payload is not None else None)
    path.write_bytes(bz2.compress(buffer.getvalue()))
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


INDEX = json.dumps({"name": "x", "version": "1", "build": "0"}).encode()


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("../evil"), "escapes"),
        (_member("/etc/passwd"), "absolute"),
        (_member("info/link", tarfile.SYMTYPE, "../../etc/passwd"), "escapes"),
        (_member("info/link", tarfile.SYMTYPE, "/etc/passwd"), "absolute"),
        (_member("info/hard", tarfile.LNKTYPE, "../x"), "escapes"),
        (_member("info/dev", tarfile.CHRTYPE), "special"),
    ],
)
def test_hostile_tar_members_refused(tmp_path: Path, member: tarfile.TarInfo, reason: str) -> None:
    # The hostile member comes before index.json, so the reader must see it.
    path = _tar_bz2(tmp_path / "x-1-0.tar.bz2", [member, _member("info/index.json")],
                    {"info/index.json": INDEX, member.name: b"x"} if member.isfile() else
                    {"info/index.json": INDEX})  # fmt: skip
    with pytest.raises(FormatError, match=reason) as err:
        read_artifact(path)
    assert str(path) in str(err.value)


def test_hostile_conda_zip_entry_refused(tmp_path: Path) -> None:
    path = tmp_path / "x-1-0.conda"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../escape", b"x")
    with pytest.raises(FormatError, match="escapes"):
        read_artifact(path)


def test_conda_with_hostile_info_member(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(_member("info/l", tarfile.SYMTYPE, "../../../root"))
    path = tmp_path / "x-1-0.conda"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", b"{}")
        archive.writestr(
            "info-x-1-0.tar.zst", zstandard.ZstdCompressor().compress(buffer.getvalue())
        )
    with pytest.raises(FormatError, match="escapes"):
        read_artifact(path)


def test_oversized_index_json_refused(tmp_path: Path) -> None:
    path = build_package(tmp_path, "x", "1", "0", index_overrides={"pad": "p" * 5000})
    with pytest.raises(FormatError, match="cap"):
        read_artifact(path, max_index_bytes=1000)
    assert read_artifact(path).name == "x"


@pytest.mark.parametrize("fmt", ["conda", "tar.bz2"])
def test_truncated_and_garbage_refused(tmp_path: Path, fmt: str) -> None:
    path = build_package(tmp_path, "x", "1", "0", fmt=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FormatError) as err:
        read_artifact(path)
    assert str(path) in str(err.value)
    path.write_bytes(b"not an archive at all")
    with pytest.raises(FormatError):
        read_artifact(path)


def test_missing_index_and_missing_file(tmp_path: Path) -> None:
    path = _tar_bz2(tmp_path / "x-1-0.tar.bz2", [_member("info/files")], {"info/files": b""})
    with pytest.raises(FormatError, match=r"info/index\.json: missing"):
        read_artifact(path)
    with pytest.raises(FormatError, match="no such file"):
        read_artifact(tmp_path / "absent-1-0.conda")


def test_index_json_fields_checked(tmp_path: Path) -> None:
    path = _tar_bz2(tmp_path / "x-1-0.tar.bz2", [_member("info/index.json")],
                    {"info/index.json": b'{"name": "x", "version": 1, "build": "0"}'})  # fmt: skip
    with pytest.raises(FormatError, match="version"):
        read_artifact(path)


def test_index_directory_like_conda_index(tmp_path: Path) -> None:
    sub = tmp_path / "linux-64"
    a = build_package(sub, "a", "1", "0", subdir="linux-64", fmt="conda")
    b = build_package(sub, "b", "2", "1", subdir="linux-64", fmt="tar.bz2")
    repodata = index_directory(sub)
    assert repodata["info"] == {"subdir": "linux-64"} and repodata["removed"] == []
    assert list(repodata["packages.conda"]) == [a.name]
    record = repodata["packages"][b.name]
    assert record["sha256"] == hashlib.sha256(b.read_bytes()).hexdigest()
    assert record["size"] == b.stat().st_size and len(record["md5"]) == 32
    assert not DROPPED_KEYS & set(record)
    assert {"arch", "platform"} <= set(read_artifact(b).index)
