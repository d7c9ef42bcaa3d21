"""The online keys (key_mgr, pkg_mgr) and the service-wide settings `service init` stored.

The database holds KEYREF strings only (`file:/run/secrets/key_mgr.key`, `azurekv:...`,
`env:VAR`), never key material: each process resolves them when it first signs, so the
private keys stay wherever the KEYREF points (a mounted secret, a key vault).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from signer.keys import KeyHandle, resolve_keyref
from signer.service.db.models import Setting
from signer.service.errors import NotInitialized
from signer.trust.signing import MessageSigner

CONFIG_SETTING = "service_config"


@dataclass(frozen=True)
class ServiceConfig:
    key_mgr_keyrefs: tuple[str, ...]
    pkg_mgr_keyrefs: tuple[str, ...]
    pkg_mgr_threshold: int = 1
    bins: int = 256
    expires_days: float = 90.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "bins": self.bins,
                "expires_days": self.expires_days,
                "key_mgr_keyrefs": list(self.key_mgr_keyrefs),
                "pkg_mgr_keyrefs": list(self.pkg_mgr_keyrefs),
                "pkg_mgr_threshold": self.pkg_mgr_threshold,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ServiceConfig:
        obj = json.loads(text)
        return cls(
            key_mgr_keyrefs=tuple(obj["key_mgr_keyrefs"]),
            pkg_mgr_keyrefs=tuple(obj["pkg_mgr_keyrefs"]),
            pkg_mgr_threshold=int(obj["pkg_mgr_threshold"]),
            bins=int(obj["bins"]),
            expires_days=float(obj["expires_days"]),
        )


def load_config(session: Session) -> ServiceConfig | None:
    text = session.scalar(select(Setting.value).where(Setting.name == CONFIG_SETTING))
    return ServiceConfig.from_json(text) if text is not None else None


def require_config(session: Session) -> ServiceConfig:
    config = load_config(session)
    if config is None:
        raise NotInitialized("the service is not initialized: run `cf-sign service init`")
    return config


def store_config(session: Session, config: ServiceConfig) -> None:
    session.merge(Setting(name=CONFIG_SETTING, value=config.to_json()))


def absolute_keyref(keyref: str) -> str:
    """`file:relative/path` -> `file:/absolute/path`: the server may run elsewhere."""
    if keyref.startswith("file:") and not keyref[5:].startswith("/"):
        from pathlib import Path

        return "file:" + str(Path(keyref[5:]).resolve())
    return keyref


def resolve_online_key(keyref: str) -> KeyHandle:
    key = resolve_keyref(keyref)
    key.channel_signer()  # refuses a key that cannot sign raw ed25519 (gpg:, ECDSA)
    return key.artifact_signer()


class OnlineKeys:
    """KEYREF -> resolved signer, cached per process (thread-safe)."""

    def __init__(self) -> None:
        self._cache: dict[str, KeyHandle] = {}
        self._raw: dict[str, MessageSigner] = {}
        self._lock = threading.Lock()

    def get(self, keyref: str) -> KeyHandle:
        with self._lock:
            key = self._cache.get(keyref)
            if key is None:
                key = self._cache[keyref] = resolve_online_key(keyref)
            return key

    def signers(self, keyrefs: tuple[str, ...]) -> list[KeyHandle]:
        return [self.get(ref) for ref in keyrefs]

    def channel_signers(self, keyrefs: tuple[str, ...]) -> list[MessageSigner]:
        """The same keys as raw repodata signers (channel signing)."""
        out: list[MessageSigner] = []
        for ref in keyrefs:
            with self._lock:
                signer = self._raw.get(ref)
            if signer is None:
                signer = resolve_keyref(ref).channel_signer()
                with self._lock:
                    self._raw.setdefault(ref, signer)
            out.append(signer)
        return out
