"""Reading conda artifacts: info/index.json, sha256/md5 and size, refusing hostile archives.

The hashes come from one sequential pass over the file (large `readinto` reads: signing a
1 GiB artifact is benchmarked against `sha256sum`); info/index.json comes from
walking every member of every component (rule 7: what conda-index reads first must be
what extraction keeps last), with inflated sizes capped while streaming.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import IO, Any

from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import load_json

MIB = 1024 * 1024
MAX_INDEX_JSON = 1 * MIB
MAX_ARTIFACT = 64 * 1024 * MIB
MAX_ZIP_ENTRIES = 1000
MAX_MEMBERS = 1_000_000  # tar members over all components (the largest packages hold ~10^5)
MAX_INFO_INFLATED = 64 * MIB  # rule 7: the info component (or info/ members), inflated
MIN_PAYLOAD_CAP = 1024 * MIB
PAYLOAD_RATIO = 100  # a payload may inflate to 1 GiB + 100x its compressed size
_CHUNK = 4 * MIB
_PARALLEL_FROM = 64 * MIB  # smaller files: a thread costs more than it saves
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
    path: Path, *, md5: bool = False, max_size: int = MAX_ARTIFACT, stop: Any = None
) -> tuple[str, str | None, int]:
    """(sha256 hex, md5 hex or None, size) in one pass (`stop`: an Event that cancels it)."""
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
                if stop is not None and stop.is_set():
                    raise FormatError(str(path), "", "hashing cancelled")
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


def _member_key(name: str) -> str:
    """The path a member extracts to: `./info//index.json` and `info/index.json` are one."""
    return posixpath.normpath(name.replace("\\", "/")).lstrip("/")


class _CappedReader:
    """Inflated bytes of an archive component, refused past `cap` while streaming.

    Seekable forward only (a skip reads and discards), so tarfile walks it in its fast
    seeking mode without buffering whole members. Every read is clipped to what the cap
    still allows: a hostile header that asks for gigabytes at once allocates nothing big.
    """

    def __init__(self, raw: Any, cap: int, source: str, component: str) -> None:
        self.raw = raw
        self.cap = cap
        self.used = 0
        self.source = source
        self.component = component
        self._scratch: bytearray | None = None

    def _over(self) -> FormatError:
        return FormatError(
            self.source, self.component, f"inflates past the {self.cap}-byte cap (bomb?)"
        )

    def read(self, n: int | None = -1) -> bytes:
        allowed = self.cap - self.used + 1
        n = allowed if n is None or n < 0 else min(n, allowed)
        data: bytes = self.raw.read(n)
        self.used += len(data)
        if self.used > self.cap:
            raise self._over()
        return data

    def tell(self) -> int:
        return self.used

    def seek(self, pos: int, whence: int = 0) -> int:
        target = pos if whence == 0 else self.used + pos if whence == 1 else -1
        if target < self.used:
            raise OSError("archive stream cannot seek backwards")
        if target > self.cap:
            raise self._over()
        if self._scratch is None:
            self._scratch = bytearray(_CHUNK)
        view = memoryview(self._scratch)
        while self.used < target:
            got = self.raw.readinto(view[: min(_CHUNK, target - self.used)])
            if not got:
                break  # past the end: tarfile reports the truncation itself
            self.used += got
        return self.used


class _Window:
    """A stored zip entry's bytes, read straight from the file (no second CRC pass)."""

    def __init__(self, handle: IO[bytes], start: int, size: int) -> None:
        self.handle = handle
        self.pos = start
        self.end = start + size

    def read(self, n: int = -1) -> bytes:
        n = self.end - self.pos if n < 0 else min(n, self.end - self.pos)
        self.handle.seek(self.pos)
        data = self.handle.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Walk:
    """State of one artifact's walk: member names seen, info/index.json found."""

    def __init__(self, source: str, max_index_bytes: int) -> None:
        self.source = source
        self.max_index_bytes = max_index_bytes
        self.seen: dict[str, str] = {}  # extraction path -> component it came from
        self.index: dict[str, Any] | None = None
        self.info_bytes = 0

    def member(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, component: str, info_cap: int
    ) -> None:
        _check_tar_member(member, self.source)
        key = _member_key(member.name)
        earlier = self.seen.get(key)
        if earlier is not None:
            where = "" if earlier == component else f" (also in {earlier})"
            # conda-index reads the first copy, extraction keeps the last: never both.
            raise FormatError(self.source, member.name, f"duplicate member name{where}")
        self.seen[key] = component
        if key.startswith("info/") and member.isfile():
            self.info_bytes += member.size
            if self.info_bytes > info_cap:
                raise FormatError(self.source, "info/", f"inflates past the {info_cap}-byte cap")
        # Case-folded: on Windows and macOS `info/INDEX.json` lands on the same file.
        if key.casefold() == "info/index.json":
            if key != "info/index.json":
                raise FormatError(self.source, member.name, "a second spelling of info/index.json")
            if component.startswith("pkg-"):
                raise FormatError(self.source, member.name, "info/index.json in the pkg component")
            self.index = _read_index(tar, member, self.source, self.max_index_bytes)

    def walk(self, stream: Any, component: str, info_cap: int) -> None:
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            while (member := tar.next()) is not None:
                if len(self.seen) >= MAX_MEMBERS:
                    raise FormatError(self.source, component, f"more than {MAX_MEMBERS} members")
                self.member(tar, member, component, info_cap)
                # tarfile keeps every header it read (not in its stubs): memory, not needed.
                tar.members.clear()  # type: ignore[attr-defined]


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
        index = load_json(data, f"{source}: info/index.json", cap)
    except FormatError as exc:
        raise FormatError(source, "info/index.json", exc.reason) from None
    if not isinstance(index, dict):
        raise FormatError(source, "info/index.json", "expected a JSON object")
    for field in ("name", "version", "build"):
        if not isinstance(index.get(field), str) or not index[field]:
            raise FormatError(source, f"info/index.json: {field}", "missing or not a string")
    return index


class _Caps:
    __slots__ = ("floor", "info", "ratio")

    def __init__(self, info: int, ratio: int, floor: int) -> None:
        self.info, self.ratio, self.floor = info, ratio, floor

    def payload(self, compressed: int) -> int:
        # Real packages inflate a few times over; a bomb inflates thousands of times.
        return self.floor + self.ratio * compressed


def _conda_components(
    archive: zipfile.ZipFile, source: str, info_cap: int
) -> tuple[zipfile.ZipInfo, zipfile.ZipInfo | None]:
    """The info and pkg entries of a .conda's zip, refusing duplicate or odd entries."""
    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise FormatError(source, "", f"{len(entries)} zip entries (more than {MAX_ZIP_ENTRIES})")
    names: set[str] = set()
    infos: list[zipfile.ZipInfo] = []
    pkgs: list[zipfile.ZipInfo] = []
    for entry in entries:
        _check_member_name(entry.filename, source)
        if entry.filename in names:
            # zipfile keeps the last of two same-named entries, other readers the first.
            raise FormatError(source, entry.filename, "duplicate zip entry")
        names.add(entry.filename)
        if entry.filename.startswith("info-") and entry.filename.endswith(".tar.zst"):
            infos.append(entry)
        elif entry.filename.startswith("pkg-") and entry.filename.endswith(".tar.zst"):
            pkgs.append(entry)
    if len(infos) != 1:
        raise FormatError(
            source, "info-*.tar.zst", f"expected one info component, found {len(infos)}"
        )
    if len(pkgs) > 1:
        raise FormatError(source, "pkg-*.tar.zst", f"expected one pkg component, found {len(pkgs)}")
    info = infos[0]
    if info.compress_size > info_cap:
        raise FormatError(source, info.filename, f"larger than the {info_cap}-byte info cap")
    pkg = pkgs[0] if pkgs else None
    if pkg is not None and pkg.filename[len("pkg-") :] != info.filename[len("info-") :]:
        raise FormatError(source, pkg.filename, f"does not pair with {info.filename}")
    return info, pkg


def _check_tiling(archive: zipfile.ZipFile, handle: IO[bytes], source: str) -> None:
    """The entries, local header after local header, fill the file up to the central
    directory: no bytes a stream-reading extractor could take for a hidden entry, no
    overlapping entries, and each local header names its central-directory entry."""
    at = 0
    for entry in sorted(archive.infolist(), key=lambda e: e.header_offset):
        if entry.header_offset != at:
            raise FormatError(source, entry.filename, "zip entries do not follow each other")
        handle.seek(at)
        header = handle.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise FormatError(source, entry.filename, "bad zip local header")
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        encoding = "utf-8" if entry.flag_bits & 0x800 else "cp437"  # zipfile's rule
        try:
            expected = entry.orig_filename.encode(encoding)
        except UnicodeEncodeError:
            expected = b""
        if handle.read(name_len) != expected:
            raise FormatError(source, entry.filename, "local header names another file")
        at += 30 + name_len + extra_len + entry.compress_size
        if entry.flag_bits & 0x08:  # a data descriptor follows: optional signature, 32/64-bit
            handle.seek(at)
            tail = handle.read(24)
            size = 4 if tail[:4] == b"PK\x07\x08" else 0
            at += size + (20 if entry.compress_size >= 0xFFFFFFFF else 12)
    if at != archive.start_dir:
        raise FormatError(source, "", "bytes between the zip entries and the central directory")


def _open_entry(archive: zipfile.ZipFile, handle: IO[bytes], entry: zipfile.ZipInfo) -> Any:
    if entry.compress_type != zipfile.ZIP_STORED:
        return archive.open(entry)
    handle.seek(entry.header_offset)
    header = handle.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {entry.filename}")
    skip = int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    return _Window(handle, entry.header_offset + 30 + skip, entry.compress_size)


def _walk_conda(handle: IO[bytes], walk: _Walk, caps: _Caps) -> None:
    import zstandard

    with zipfile.ZipFile(handle) as archive:
        info, pkg = _conda_components(archive, walk.source, caps.info)
        _check_tiling(archive, handle, walk.source)
        # info first: conda-index reads only it; the pkg component must not shadow it.
        for entry, cap in ((info, caps.info), (pkg, 0)):
            if entry is None:
                continue
            limit = cap or caps.payload(entry.compress_size)
            raw = _open_entry(archive, handle, entry)
            reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)
            capped = _CappedReader(reader, limit, walk.source, entry.filename)
            walk.walk(capped, entry.filename, caps.info)


def _walk_tar_bz2(handle: IO[bytes], walk: _Walk, caps: _Caps) -> None:
    import bz2

    size = os.fstat(handle.fileno()).st_size
    with bz2.BZ2File(handle) as raw:
        capped = _CappedReader(raw, caps.payload(size), walk.source, "tar.bz2 stream")
        walk.walk(capped, "the archive", caps.info)


def read_index_json(
    path: Path,
    *,
    max_index_bytes: int = MAX_INDEX_JSON,
    max_info_bytes: int = MAX_INFO_INFLATED,
    payload_ratio: int = PAYLOAD_RATIO,
    payload_floor: int = MIN_PAYLOAD_CAP,
) -> tuple[str, dict[str, Any]]:
    """(format, info/index.json) of an artifact, after walking every member (rule 7).

    Refuses duplicate member names (zip entries, and tar members of every component,
    compared by the path they extract to), `info/index.json` other than exactly once,
    unsafe members, and components inflating past their cap (the info part at
    `max_info_bytes`; a payload at `payload_ratio` times its compressed size, plus
    `payload_floor`).
    """
    source = str(path)
    if path.name.endswith(".conda"):
        fmt, walker = "conda", _walk_conda
    elif path.name.endswith(".tar.bz2"):
        fmt, walker = "tar.bz2", _walk_tar_bz2
    else:
        raise FormatError(source, "file name", "not a .conda or .tar.bz2 artifact")
    from zstandard import ZstdError as zstd_error

    walk = _Walk(source, max_index_bytes)
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise FormatError(source, "", "not a regular file")
            walker(handle, walk, _Caps(max_info_bytes, payload_ratio, payload_floor))
    except FormatError:
        raise
    except FileNotFoundError:
        raise FormatError(source, "", "no such file") from None
    except IsADirectoryError:
        raise FormatError(source, "", "is a directory, not an artifact") from None
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise FormatError(source, "", f"corrupt or truncated archive: {exc}") from None
    except (EOFError, OSError, ValueError, LookupError, NotImplementedError) as exc:
        raise FormatError(source, "", f"corrupt or truncated archive: {exc}") from None
    except zstd_error as exc:  # the zstd decoder raises its own error type
        raise FormatError(source, "", f"corrupt or truncated archive: {exc}") from None
    if walk.index is None:
        raise FormatError(source, "info/index.json", "missing from the archive")
    return fmt, walk.index


def read_artifact(
    path: Path | str,
    *,
    md5: bool = False,
    max_index_bytes: int = MAX_INDEX_JSON,
    max_size: int = MAX_ARTIFACT,
    max_info_bytes: int = MAX_INFO_INFLATED,
    payload_ratio: int = PAYLOAD_RATIO,
    payload_floor: int = MIN_PAYLOAD_CAP,
) -> ArtifactInfo:
    """Index, hashes and size of an artifact; FormatError naming the file on anything odd."""
    path = Path(path)

    def walk() -> tuple[str, dict[str, Any]]:
        return read_index_json(
            path,
            max_index_bytes=max_index_bytes,
            max_info_bytes=max_info_bytes,
            payload_ratio=payload_ratio,
            payload_floor=payload_floor,
        )

    try:
        big = path.stat().st_size > _PARALLEL_FROM
    except OSError:
        big = False  # hash_file names the problem
    if not big:
        sha256, md5_hex, size = hash_file(path, md5=md5, max_size=max_size)
        fmt, index = walk()
        return ArtifactInfo(path, path.name, fmt, index, sha256, size, md5_hex)
    # Hashing and walking the members each read the whole file: overlap them (hashlib,
    # zstd and file reads release the GIL), so signing stays as fast as sha256sum.
    import threading

    hashed: list[tuple[str, str | None, int]] = []
    failure: list[BaseException] = []
    stop = threading.Event()

    def run_hash() -> None:
        try:
            hashed.append(hash_file(path, md5=md5, max_size=max_size, stop=stop))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run_hash, name="cf-sign-hash", daemon=True)
    worker.start()
    try:
        fmt, index = walk()
    except BaseException:
        stop.set()  # a refused archive: do not hash the rest of it
        raise
    finally:
        worker.join()
    if failure:
        raise failure[0]
    sha256, md5_hex, size = hashed[0]
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
