"""The verifier's memory: newest verified root and highest version seen of each document."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from signer.trust.errors import FormatError, RollbackError

_VERSIONS = "versions.json"
_ROOT = "root.json"


def write_atomic(path: Path, data: bytes | Iterable[bytes | memoryview], mode: int = 0o644) -> None:
    """Temp file, fsync, rename: a reader sees the old file or the new one, never half.

    `data` may be a sequence of pieces (a big document is written without joining it).
    """
    import tempfile  # only writers pay for it; verifiers mostly read

    # A symlink is followed, never replaced (`-o /dev/stdout` must not swap the system's
    # link for a file): the target is written, atomically when it is a regular file.
    try:
        mode_now: int | None = os.stat(path).st_mode  # through any symlink
    except (FileNotFoundError, NotADirectoryError):
        mode_now = None  # mkdir below names a bad parent
    if mode_now is not None and not stat.S_ISREG(mode_now):
        _write_through(path, data)  # a pipe, terminal or device: no rename possible
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                handle.writelines(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_through(path: Path, data: bytes | Iterable[bytes | memoryview]) -> None:
    if stat.S_ISDIR(os.stat(path).st_mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    with open(path, "wb") as handle:
        if isinstance(data, bytes):
            handle.write(data)
        else:
            handle.writelines(data)


class TrustState:
    """A state directory; documents are named by their path in the trust repository."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._versions: dict[str, int] | None = None

    def trusted_root(self) -> bytes | None:
        try:
            return (self.path / _ROOT).read_bytes()
        except FileNotFoundError:
            return None

    def store_root(self, data: bytes) -> None:
        write_atomic(self.path / _ROOT, data)

    def _load_versions(self) -> dict[str, int]:
        if self._versions is None:
            file = self.path / _VERSIONS
            try:
                raw = json.loads(file.read_bytes())
            except FileNotFoundError:
                raw = {}
            except ValueError:
                raise FormatError(str(file), "", "corrupt state file") from None
            if not isinstance(raw, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in raw.values()
            ):
                raise FormatError(str(file), "", "corrupt state file")
            self._versions = raw
        return self._versions

    def seen_version(self, document: str) -> int:
        return self._load_versions().get(document, 0)

    def check_version(self, document: str, version: int, subject: str) -> None:
        seen = self.seen_version(document)
        if version < seen:
            raise RollbackError(
                subject, f"version {version} is older than version {seen} seen before"
            )

    def record_versions(self, versions: dict[str, int]) -> None:
        current = dict(self._load_versions())
        changed = False
        for name, version in versions.items():
            if version > current.get(name, 0):
                current[name] = version
                changed = True
        if changed:
            write_atomic(
                self.path / _VERSIONS, json.dumps(current, indent=1, sort_keys=True).encode()
            )
            self._versions = current
