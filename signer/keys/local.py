"""`file:` and `env:` signers: keys read from a file or from a CI secret variable.

Both are securesystemslib `Signer`s registered under their URI scheme, so every backend
(these, `azurekv:`, `pkcs11:`, `gpg:`) is reached through `Signer.from_priv_key_uri`.
The secret's value is never put in a message, a log or an exception.
"""

from __future__ import annotations

from typing import Any

from securesystemslib.signer import (
    SIGNER_FOR_URI_SCHEME,
    CryptoSigner,
    Key,
    SecretsHandler,
    Signature,
    Signer,
    SSlibKey,
)

from signer.keys.material import (
    PrivateKey,
    parse_private_key,
    public_key_of,
    read_key_source,
    split_keyref,
)
from signer.trust.errors import FormatError

PASSPHRASE_SECRET = "passphrase"


class _LocalSigner(Signer):
    """A private key held in process memory, loaded from a local source."""

    SCHEME = ""

    def __init__(self, private_key: PrivateKey, public_key: Key) -> None:
        self.private_key = private_key
        self._public_key = public_key
        self._crypto = CryptoSigner(private_key, public_key)  # type: ignore[arg-type]

    @property
    def public_key(self) -> Key:
        return self._public_key

    def sign(self, payload: bytes) -> Signature:
        return self._crypto.sign(payload)

    @classmethod
    def _read(cls, location: str) -> bytes:
        raise NotImplementedError

    @classmethod
    def load(cls, uri: str, secrets_handler: SecretsHandler | None = None) -> _LocalSigner:
        """Load from `uri` and derive the public key from the private one."""
        scheme, location = split_keyref(uri)
        if scheme != cls.SCHEME:
            raise FormatError(uri, "", f"expected {cls.SCHEME}:LOCATION")
        data = cls._read(location)
        passphrase = None
        if b"ENCRYPTED" in data and secrets_handler is not None:
            passphrase = secrets_handler(PASSPHRASE_SECRET).encode("utf-8")
        key = parse_private_key(data, cls._describe(location), passphrase)
        public = public_key_of(key)
        sslib_key = SSlibKey(public.keyid, public.keytype, public.scheme, {"public": public.public})
        return cls(key, sslib_key)

    @classmethod
    def _describe(cls, location: str) -> str:
        return f"{cls.SCHEME}:{location}"

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> _LocalSigner:
        signer = cls.load(priv_key_uri, secrets_handler)
        if signer.public_key.keyval != public_key.keyval:
            raise FormatError(priv_key_uri, "", "private key does not match the given public key")
        return signer


class FileSigner(_LocalSigner):
    SCHEME = "file"

    @classmethod
    def _read(cls, location: str) -> bytes:
        return read_key_source(cls.SCHEME, location)[0]

    @classmethod
    def _describe(cls, location: str) -> str:
        return location


class EnvSigner(_LocalSigner):
    SCHEME = "env"

    @classmethod
    def _read(cls, location: str) -> bytes:
        return read_key_source(cls.SCHEME, location)[0]


LOCAL_SIGNERS: dict[str, Any] = {FileSigner.SCHEME: FileSigner, EnvSigner.SCHEME: EnvSigner}
SIGNER_FOR_URI_SCHEME.update(LOCAL_SIGNERS)
