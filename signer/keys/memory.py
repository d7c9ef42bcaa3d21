"""`file:` and `env:` keys, read into process memory (no securesystemslib import here)."""

from __future__ import annotations

import os

from signer.keys.handle import KeyHandle
from signer.keys.material import parse_private_key, public_key_of, read_key_source
from signer.keys.registry import KeyRequest
from signer.trust.errors import FormatError

DEFAULT_PASSPHRASE_ENV = "CF_SIGN_KEY_PASSPHRASE"


def passphrase_from_env(variable: str | None, what: str = "passphrase") -> str:
    """The passphrase of an encrypted key, from `variable` (default $CF_SIGN_KEY_PASSPHRASE)."""
    var = variable or DEFAULT_PASSPHRASE_ENV
    value = os.environ.get(var)
    if value is None:
        raise FormatError(var, "", f"key is encrypted and ${var} (its {what}) is not set")
    return value


def load(request: KeyRequest) -> KeyHandle:
    data, described = read_key_source(request.scheme, request.location)
    passphrase = (
        passphrase_from_env(request.passphrase_env).encode("utf-8")
        if b"ENCRYPTED" in data
        else None
    )
    key = parse_private_key(data, described, passphrase)
    return KeyHandle(request.keyref, public_key_of(key), private_key=key)
