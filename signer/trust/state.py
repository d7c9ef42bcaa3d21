"""The verifier's memory: newest verified root and highest version seen of each document.

Files: `root.json` (the newest verified root), `roots/N.root.json` (each verified root, so a
stored root can be checked to chain from the user's anchor without the repository),
`versions.json` (highest version seen per document path) and `keys.json` (the keys under
which those versions were seen: when they change, the versions they guarded are dropped,
DESIGN.md rule 11).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from signer.trust.errors import FormatError, RollbackError

_VERSIONS = "versions.json"
_ROOT = "root.json"
_ROOTS = "roots"
_KEYS = "keys.json"


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
        self._batching = 0
        self._unwritten = False

    def trusted_root(self) -> bytes | None:
        try:
            return (self.path / _ROOT).read_bytes()
        except FileNotFoundError:
            return None

    def store_root(self, data: bytes, version: int | None = None) -> None:
        """Keep `data` as the newest root (and, with its version, as `roots/N.root.json`)."""
        if version is not None:
            write_atomic(self.path / _ROOTS / f"{version}.root.json", data)
        write_atomic(self.path / _ROOT, data)

    def root_copy(self, version: int) -> bytes | None:
        """A root verified before (None when this state never kept version `version`)."""
        try:
            return (self.path / _ROOTS / f"{version}.root.json").read_bytes()
        except FileNotFoundError:
            return None

    def _load_keys(self) -> dict[str, str]:
        file = self.path / _KEYS
        try:
            raw = json.loads(file.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise FormatError(str(file), "", "corrupt state file") from None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise FormatError(str(file), "", "corrupt state file")
        return raw

    def follow_keys(
        self,
        role: str,
        fingerprint: str,
        guarded: Callable[[str], bool],
        *,
        changed: bool = False,
    ) -> list[str]:
        """Fast-forward recovery (rule 11): `role`'s keys now have `fingerprint`.

        When they differ from the keys the stored versions were seen under (or, in a state
        that never recorded them, when `changed` says a verified root just changed them),
        the versions of the documents `guarded` selects are dropped: a rotation away from
        a stolen key must not leave clients stuck on versions that key signed.
        Returns the dropped document paths.
        """
        keys = self._load_keys()
        recorded = keys.get(role)
        dropped: list[str] = []
        if (recorded is not None and recorded != fingerprint) or (recorded is None and changed):
            dropped = self.forget_versions(guarded)
        if recorded != fingerprint:
            keys[role] = fingerprint
            write_atomic(self.path / _KEYS, json.dumps(keys, indent=1, sort_keys=True).encode())
        return dropped

    def forget_versions(self, which: Callable[[str], bool]) -> list[str]:
        current = dict(self._load_versions())
        gone = sorted(name for name in current if which(name))
        if gone:
            for name in gone:
                del current[name]
            write_atomic(
                self.path / _VERSIONS, json.dumps(current, indent=1, sort_keys=True).encode()
            )
            self._versions = current
        return gone

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
            self._versions = current
            if self._batching:
                self._unwritten = True
            else:
                self._write_versions()

    def _write_versions(self) -> None:
        write_atomic(
            self.path / _VERSIONS, json.dumps(self._versions, indent=1, sort_keys=True).encode()
        )
        self._unwritten = False

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Versions recorded inside are written once, on the way out (a bulk run seeing
        hundreds of bins). They are in memory at once, so rollback checks inside see them."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching and self._unwritten:
                self._write_versions()
