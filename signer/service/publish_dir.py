"""The publish directory, switched from one consistent set of documents to the next at once.

`--publish-dir D` is a symbolic link to a snapshot directory. A publication builds the next
snapshot beside it (unchanged documents hard-linked from the current one, changed ones
written with temp file, fsync, rename: roots, key_mgr, pkg_mgr, bins, and the index last),
then points D at it with one atomic rename of a new link. A web server serving D, or a
crash at any moment, therefore sees either the previous complete set or the new one, never
a bin that the index it sits next to does not name. Attestations, one file per artifact
and never part of a set, and the signed overlay channels (written by `overlays.py`, each
document atomically and on its own schedule) live in shared directories that every
snapshot links to.

Layout (for D = /srv/trust):
    /srv/trust -> .trust.d/snapshots/000042
    /srv/.trust.d/snapshots/000042/{1.root.json,...,attestations -> ../../attestations,
                                    channels -> ../../channels}
    /srv/.trust.d/attestations/<subdir>/<file>.sig.json
    /srv/.trust.d/channels/<name>/<subdir>/repodata.json

Callers serialize `publish` (the publication lock) and attestation writes (`attestation_lock`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from signer.service.faults import crashpoint
from signer.trust import layout
from signer.trust.state import write_atomic

ATTESTATIONS = "attestations"
CHANNELS = layout.CHANNELS_DIR
SHARED = (ATTESTATIONS, CHANNELS)  # directories outside the snapshots, linked into each
KEEP_SNAPSHOTS = 3  # the current one and two before it (readers may still be in them)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PublishDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(path))  # never resolved: it is the link itself
        path = self.path
        self.store = path.parent / f".{path.name}.d"
        self.snapshots = self.store / "snapshots"
        self.attestations = self.store / ATTESTATIONS
        self.channels = self.store / CHANNELS

    def check_writable(self) -> None:
        """Raise the OSError a publication would meet (read-only or missing parent)."""
        self.store.mkdir(parents=True, exist_ok=True)
        probe = self.store / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        if not os.access(self.path.parent, os.W_OK):
            raise PermissionError(13, "Permission denied", str(self.path.parent))

    def current(self) -> Path | None:
        """The snapshot D points at (None before the first publication)."""
        if self.path.is_symlink():
            return (self.path.parent / os.readlink(self.path)).resolve()
        return None

    def read(self, relpath: str) -> bytes | None:
        try:
            return (self.path / relpath).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _adopt_plain_directory(self) -> Path | None:
        # D exists as a plain directory (made by hand, or by an older cf-sign): its documents
        # become the first snapshot and its attestations move to the shared directory.
        if not self.path.is_dir() or self.path.is_symlink():
            return None
        self.snapshots.mkdir(parents=True, exist_ok=True)
        legacy = self.snapshots / "000000"
        old_attestations = self.path / ATTESTATIONS
        if old_attestations.is_dir() and not self.attestations.exists():
            os.replace(old_attestations, self.attestations)
        os.replace(self.path, legacy)
        return legacy

    def publish(
        self, files: Mapping[str, bytes], order: Callable[[str], tuple[int, int, str]] | None = None
    ) -> Path | None:
        """Make the next snapshot with `files` changed and switch D to it."""
        if not files:
            return self.current()
        current = self.current() or self._adopt_plain_directory()
        self.snapshots.mkdir(parents=True, exist_ok=True)
        for shared in SHARED:
            (self.store / shared).mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in self.snapshots.iterdir() if p.name.isdigit())
        number = int(names[-1]) + 1 if names else 1
        target = self.snapshots / f"{number:06d}"
        staging = self.snapshots / f".{number:06d}.tmp"
        if staging.exists():
            shutil.rmtree(staging)  # left by a crash: never pointed at, safe to drop
        staging.mkdir()
        if current is not None and current.is_dir():
            self._link_unchanged(current, staging, set(files))
        for i, relpath in enumerate(sorted(files, key=order) if order else sorted(files)):
            if i == 1:
                crashpoint("publish.mid-snapshot")
            write_atomic(staging / relpath, files[relpath])
        for shared in SHARED:
            (staging / shared).symlink_to(Path("..") / ".." / shared)
        for directory in {staging} | {(staging / p).parent for p in files}:
            _fsync_dir(directory)
        os.replace(staging, target)
        crashpoint("publish.before-switch")
        link = self.path.with_name(f".{self.path.name}.link-{os.getpid()}")
        link.unlink(missing_ok=True)
        link.symlink_to(target.relative_to(self.path.parent))
        os.replace(link, self.path)  # the switch: atomic
        _fsync_dir(self.path.parent)
        crashpoint("publish.after-switch")
        self._collect(keep=target)
        return target

    def _link_unchanged(self, current: Path, staging: Path, changed: set[str]) -> None:
        for dirpath, dirnames, filenames in os.walk(current):
            base = Path(dirpath)
            rel_dir = base.relative_to(current)
            dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
            for name in filenames:
                source = base / name
                rel = (rel_dir / name).as_posix()
                if rel in changed or source.is_symlink() or name.startswith("."):
                    continue
                (staging / rel_dir).mkdir(parents=True, exist_ok=True)
                os.link(source, staging / rel)

    def _collect(self, keep: Path) -> None:
        snapshots = sorted(p for p in self.snapshots.iterdir() if p.name.isdigit())
        for old in snapshots[:-KEEP_SNAPSHOTS]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)

    def link_channels(self) -> None:
        """The shared `channels/` home, linked into the current snapshot if it predates it
        (a snapshot made before overlays existed); later snapshots are made with the link."""
        self.channels.mkdir(parents=True, exist_ok=True)
        current = self.current()
        if current is None or not current.is_dir():
            return
        link = current / CHANNELS
        if not link.is_symlink() and not link.exists():
            temp = current / f".{CHANNELS}.link-{os.getpid()}"
            temp.unlink(missing_ok=True)
            temp.symlink_to(Path("..") / ".." / CHANNELS)
            os.replace(temp, link)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock on this directory's `name` across processes (a lock file)."""
        self.store.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.store / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def attestation_lock(self) -> AbstractContextManager[None]:
        """Serializes attestation writes to this directory across processes."""
        return self.lock(ATTESTATIONS)

    def _attestation(self, relpath: str) -> Path:
        return self.attestations / relpath.removeprefix(ATTESTATIONS + "/")

    def write_attestation(self, relpath: str, data: bytes) -> None:
        """`attestations/<subdir>/<file>.sig.json`, visible in every snapshot at once."""
        write_atomic(self._attestation(relpath), data)

    def read_attestation(self, relpath: str) -> bytes | None:
        try:
            return self._attestation(relpath).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def remove_attestation(self, relpath: str) -> bool:
        try:
            self._attestation(relpath).unlink()
        except FileNotFoundError:
            return False
        return True

    def attestation_files(self) -> Iterator[str]:
        """Every `attestations/<subdir>/<file>.sig.json` on disk (temp files left out)."""
        if not self.attestations.is_dir():
            return
        for subdir in sorted(self.attestations.iterdir()):
            if not subdir.is_dir() or subdir.is_symlink():
                continue
            for entry in sorted(subdir.iterdir()):
                if entry.name.endswith(".sig.json") and not entry.name.startswith("."):
                    yield f"{ATTESTATIONS}/{subdir.name}/{entry.name}"
