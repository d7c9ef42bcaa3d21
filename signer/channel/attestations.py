"""Where a record's attestation is looked up: `attestations/<subdir>/<artifact>.sig.json`.

A trust-repository layout in a local directory or over HTTP(S). A local file also yields a
change token (device, inode, size, mtime and ctime in ns): the cache reuses an earlier
verdict only while the file that was verified is still there unchanged. ctime cannot be
set from user space, so rewriting the file in place always changes the token.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path
from typing import NamedTuple

from signer.fetch import TrustSource, open_source
from signer.trust.attestation import SIDECAR_SUFFIX, sidecar_name
from signer.trust.errors import VerificationError
from signer.trust.jsonload import MAX_SIDECAR

Token = tuple[int, int, int, int, int]
TOKEN = struct.Struct("<5q")  # a token packed (signer.channel.cache keeps it so)


class Found(NamedTuple):
    data: bytes
    where: str
    token: Token | None  # local files only


def attestation_path(subdir: str, filename: str) -> str:
    return f"attestations/{subdir}/{sidecar_name(filename)}"


def _token(st: os.stat_result) -> Token:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class AttestationStore:
    """Sidecars by (subdir, file name), from a directory or a URL."""

    def __init__(self, location: str, *, timeout: float = 20.0) -> None:
        if not location.startswith(("http://", "https://")):
            location = str(Path(location).resolve())  # one cache scope however it is spelt
        self.location = location
        self._source: TrustSource = open_source(location, timeout=timeout)
        self.directory = None if location.startswith(("http://", "https://")) else Path(location)
        # Plain strings on the hot path: a Path per record costs more than the stat.
        self._base = os.path.join(location, "attestations") if self.directory else ""

    def describe(self, subdir: str, filename: str) -> str:
        return self._source.describe(attestation_path(subdir, filename))

    def _local(self, subdir: str, filename: str) -> str:
        assert self.directory is not None
        if (
            "/" in subdir
            or "/" in filename
            or subdir in ("", ".", "..")
            or filename in ("", "..", ".")
        ):
            raise VerificationError(filename, "attestation", "refusing a path outside the store")
        return f"{self._base}/{subdir}/{filename}{SIDECAR_SUFFIX}"

    def token(self, subdir: str, filename: str) -> Token | None:
        """The change token of a local sidecar (None: absent, not a regular file, or remote)."""
        if self.directory is None:
            return None
        try:
            st = os.stat(self._local(subdir, filename))
        except (OSError, VerificationError):
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDECAR:
            return None
        return _token(st)

    def tokens_bytes(self, filenames: list[str], dir_fd: int) -> list[bytes | None]:
        """`token` of many files of one subdir, packed as the cache keeps it
        (`cache.TOKEN_AT`), from a descriptor of `directory_of(subdir)`: the cache's hot
        path, one call per chunk of work, one path component looked up per file."""
        out: list[bytes | None] = []
        append, stat_, is_reg, pack = out.append, os.stat, stat.S_ISREG, TOKEN.pack
        for filename in filenames:
            if "/" in filename or filename in ("", "..", "."):
                append(None)
                continue
            try:
                st = stat_(filename + SIDECAR_SUFFIX, dir_fd=dir_fd)
            except OSError:
                append(None)
                continue
            if not is_reg(st.st_mode) or st.st_size > MAX_SIDECAR:
                append(None)
            else:
                append(b"\x01" + pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                      st.st_ctime_ns))  # fmt: skip
        return out

    def directory_of(self, subdir: str) -> int | None:
        """A descriptor of the local `attestations/<subdir>/` (None: remote or absent)."""
        if self.directory is None:
            return None
        try:
            path = self._local(subdir, "x")
            return os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (OSError, VerificationError):
            return None

    def get(self, subdir: str, filename: str) -> Found | None:
        """The sidecar's bytes, None when absent; VerificationError when it cannot be told."""
        where = self.describe(subdir, filename)
        if self.directory is None:
            data = self._source.fetch(attestation_path(subdir, filename), MAX_SIDECAR)
            return None if data is None else Found(data, where, None)
        path = self._local(subdir, filename)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VerificationError(where, "attestation", exc.strerror or str(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise VerificationError(where, "attestation", "not a regular file")
            if st.st_size > MAX_SIDECAR:
                raise VerificationError(
                    where, "size", f"{st.st_size} bytes exceeds the {MAX_SIDECAR}-byte cap"
                )
            # Sized by fstat (a 1 MiB buffer per read costs more than the read); a file that
            # grew meanwhile is read on, up to the cap.
            chunks: list[bytes] = []
            total, want = 0, min(st.st_size, MAX_SIDECAR) + 1
            while total <= MAX_SIDECAR:
                chunk = os.read(fd, want)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                want = MAX_SIDECAR + 1 - total
            data = b"".join(chunks)
        finally:
            os.close(fd)
        if len(data) > MAX_SIDECAR:
            raise VerificationError(where, "size", f"exceeds the {MAX_SIDECAR}-byte cap")
        return Found(data, where, _token(st))
