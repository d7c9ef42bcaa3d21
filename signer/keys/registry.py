"""Where KEYREF schemes are registered: one table, one function to add to it.

A backend is a loader `(KeyRequest) -> SigningKey`, named as `"module:function"` so that
its module (and what it imports: python-pkcs11, GnuPG, the Azure SDK) loads only when a
KEYREF of its scheme is used. A scheme found nowhere here but registered in
securesystemslib's `SIGNER_FOR_URI_SCHEME` is reached through `Signer.from_priv_key_uri`
(it then needs the public key). cf-sign's own securesystemslib Signers (`file:`, `env:`,
and the backends that plug in) also register themselves in `SIGNER_FOR_URI_SCHEME`, so
`Signer.from_priv_key_uri` reaches every scheme too (DESIGN.md section 6).

To add a backend: `register_backend("<scheme>", "signer.keys.<module>:load")`, or a line in
`BUILTIN_BACKENDS` below, or at run time from a plugin.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from signer.keys.handle import SigningKey
    from signer.trust.keys import PublicKey


class KeyRequest(NamedTuple):
    """What a backend gets: the KEYREF split once, and what the caller knows."""

    keyref: str
    scheme: str
    location: str
    public: PublicKey | None = None  # for backends that cannot derive it
    passphrase_env: str | None = None  # environment variable holding a passphrase


Loader = Callable[[KeyRequest], "SigningKey"]

BUILTIN_BACKENDS: dict[str, str] = {
    "file": "signer.keys.memory:load",
    "env": "signer.keys.memory:load",
    "gpg": "signer.keys.gpg:load",
    "azurekms": "signer.keys.azure:load_azurekms",
    "wrapped": "signer.keys.azure:load_wrapped",
    "pkcs11": "signer.keys.pkcs11:load",  # ed25519 on a PKCS#11 token (CKM_EDDSA)
}

_backends: dict[str, Loader | str] = dict(BUILTIN_BACKENDS)


def register_backend(scheme: str, loader: Loader | str) -> None:
    """Make `scheme:` KEYREFs resolve through `loader` (a callable or "module:function")."""
    if not scheme or ":" in scheme:
        raise ValueError(f"invalid KEYREF scheme {scheme!r}")
    _backends[scheme] = loader


def backend_for(scheme: str) -> Loader | None:
    """The loader of `scheme`, importing its module on first use; None when unknown."""
    entry = _backends.get(scheme)
    if entry is None or callable(entry):
        return entry
    module, _, name = entry.partition(":")
    loader: Loader = getattr(importlib.import_module(module), name)
    _backends[scheme] = loader
    return loader


def schemes() -> tuple[str, ...]:
    return tuple(sorted(_backends))
