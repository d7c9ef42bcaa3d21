"""A development trust repository on local files (demo, tests, benchmarks): not for production.

Generated keys are written unencrypted next to the repository: development only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from signer.keys import KeyHandle, generate_key, load_key
from signer.trust import layout
from signer.trust.metadata import Delegation, KeyMgr, PkgMgr, Root, Signable
from signer.trust.signing import sign_envelope
from signer.trust.state import write_atomic
from signer.trust.timefmt import format_time, system_clock


@dataclass
class DevTrustRepo:
    """Paths and key handles of a generated repository."""

    trust_dir: Path
    keys_dir: Path
    root_keys: list[KeyHandle] = field(default_factory=list)
    key_mgr_key: KeyHandle | None = None
    pkg_mgr_key: KeyHandle | None = None
    mamba_key: KeyHandle | None = None

    @property
    def root_file(self) -> Path:
        return self.trust_dir / layout.root_path(1)

    def keyref(self, name: str) -> str:
        return f"file:{self.keys_dir / (name + '.key')}"


def _key(keys_dir: Path, name: str) -> KeyHandle:
    key_path = keys_dir / f"{name}.key"
    if not key_path.exists():
        generate_key(name, keys_dir)
    return load_key(f"file:{key_path}").artifact_signer()  # file: keys serve every purpose


def _signed(meta: Root | KeyMgr | PkgMgr, signers: list[KeyHandle], *, openpgp: bool) -> bytes:
    envelope = Signable(meta.to_signed(), {}, meta.ROLE)
    for signer in signers:
        sign_envelope(envelope, signer.root_signer() if openpgp else signer.channel_signer())
    return envelope.to_bytes()


def make_dev_trust_repo(
    base: Path,
    *,
    root_threshold: int = 2,
    root_keys: int = 3,
    with_mamba_key: bool = True,
    now: datetime | None = None,
    days: float = 365,
) -> DevTrustRepo:
    """Keys in base/keys, and base/trust with 1.root.json (t of n), key_mgr, pkg_mgr."""
    now = (now or system_clock()).replace(microsecond=0)
    stamp, expires = format_time(now), format_time(now + timedelta(days=days))
    repo = DevTrustRepo(base / "trust", base / "keys")
    repo.root_keys = [_key(repo.keys_dir, f"root{i + 1}") for i in range(root_keys)]
    repo.key_mgr_key = _key(repo.keys_dir, "key_mgr")
    repo.pkg_mgr_key = _key(repo.keys_dir, "pkg_mgr")
    pkg_mgr_keys = [repo.pkg_mgr_key.public_key_hex]
    if with_mamba_key:
        repo.mamba_key = _key(repo.keys_dir, "pkg_mgr_mamba")
        pkg_mgr_keys.append(repo.mamba_key.public_key_hex)

    root = Root(1, stamp, expires, {
        "root": Delegation(tuple(k.public_key_hex for k in repo.root_keys), root_threshold),
        "key_mgr": Delegation((repo.key_mgr_key.public_key_hex,), 1),
    })  # fmt: skip
    key_mgr = KeyMgr(1, stamp, expires, {"pkg_mgr": Delegation(tuple(pkg_mgr_keys), 1)})
    pkg_mgr = PkgMgr(1, stamp, expires, {})
    write_atomic(
        repo.trust_dir / layout.root_path(1),
        _signed(root, repo.root_keys[:root_threshold], openpgp=True),
    )
    write_atomic(
        repo.trust_dir / layout.KEY_MGR, _signed(key_mgr, [repo.key_mgr_key], openpgp=False)
    )
    pkg_signers = [repo.pkg_mgr_key] + ([repo.mamba_key] if repo.mamba_key else [])
    write_atomic(repo.trust_dir / layout.PKG_MGR, _signed(pkg_mgr, pkg_signers, openpgp=False))
    return repo
