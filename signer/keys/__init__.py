"""KEYREF resolution, key generation and public-key arguments.

A KEYREF is a signer URI: `file:PATH`, `env:VAR` (here), and the backends registered in
securesystemslib's `SIGNER_FOR_URI_SCHEME`. Everything returns a `KeyHandle`, which is both
the securesystemslib `Signer` (for DSSE) and the core's `MessageSigner` (channel layer).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from signer.keys.material import (
    PrivateKey,
    ed25519_seed,
    parse_private_key,
    private_pem,
    public_key_of,
    read_key_source,
)
from signer.trust import ed25519 as _ed25519
from signer.trust.errors import FormatError
from signer.trust.keys import PublicKey
from signer.trust.metadata import is_public_key_hex

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

    from signer.keys.gpg import GpgKey

DEFAULT_PASSPHRASE_ENV = "CF_SIGN_KEY_PASSPHRASE"


class KeyHandle:
    """A resolved private key: securesystemslib Signer plus fast raw ed25519 signing.

    For `file:` and `env:` keys the securesystemslib Signer is made on first use: importing
    securesystemslib costs ~0.4 s, which channel-layer signing never needs.
    """

    def __init__(
        self,
        keyref: str,
        public: PublicKey,
        *,
        signer: Signer | None = None,
        private_key: PrivateKey | None = None,
    ) -> None:
        self.keyref = keyref
        self.public = public
        self._signer = signer
        self._private_key = private_key
        seed = ed25519_seed(private_key) if private_key is not None else None
        self._nacl_secret = _ed25519.keypair_from_seed(seed)[1] if seed is not None else None

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            from securesystemslib.signer import SSlibKey

            from signer.keys.local import EnvSigner, FileSigner

            assert self._private_key is not None
            cls = EnvSigner if self.keyref.startswith("env:") else FileSigner
            pub = self.public
            sslib = SSlibKey(pub.keyid, pub.keytype, pub.scheme, {"public": pub.public})
            self._signer = cls(self._private_key, sslib)
        return self._signer

    @property
    def keyid(self) -> str:
        return self.public.keyid

    @property
    def public_key_hex(self) -> str:
        if not self.public.is_ed25519:
            raise FormatError(self.keyref, "", "channel-layer keys must be ed25519")
        return self.public.public

    def sign_message(self, message: bytes) -> bytes:
        if self._nacl_secret is not None:
            return _ed25519.sign_raw(self._nacl_secret, message)
        return bytes.fromhex(self.signer.sign(message).signature)


class _Ref(NamedTuple):
    keyref: str


def _passphrase_handler(passphrase_env: str | None):  # type: ignore[no-untyped-def]
    def handler(secret: str) -> str:
        var = passphrase_env or DEFAULT_PASSPHRASE_ENV
        value = os.environ.get(var)
        if value is None:
            raise FormatError(var, "", f"key is encrypted and ${var} (its {secret}) is not set")
        return value

    return handler


# A seed in hex (alone or after a scheme), PEM armour, or a PIN inside a PKCS#11 URI
# (RFC 7512 allows `pin-value`): a KEYREF that is secret material pasted on a command line.
_SEED = re.compile(r"\A\s*([a-z0-9+.-]+:)?\s*[0-9a-fA-F]{64}\s*\Z", re.IGNORECASE)
_SECRET = re.compile(r"-----BEGIN|PRIVATE KEY|pin-value|pin-source=", re.IGNORECASE)
NOT_SHOWN = "KEYREF (not shown)"


def check_keyref_not_secret(keyref: str) -> None:
    """Refuse, without echoing it, a KEYREF that is (or holds) the secret itself."""
    if _SEED.match(keyref) or _SECRET.search(keyref):
        raise FormatError(
            NOT_SHOWN,
            "",
            "looks like secret key material (a seed, a PEM key or a PIN), not a reference "
            "to one: put it in an environment variable and pass env:VAR; it was not printed",
        )


def resolve_keyref(
    keyref: str, *, public: PublicKey | None = None, passphrase_env: str | None = None
) -> KeyHandle | GpgKey:
    """Turn a KEYREF into a KeyHandle; a bad reference is a FormatError naming it.

    The KEYREF is echoed in errors only after it is known not to be secret material.
    """
    check_keyref_not_secret(keyref)
    scheme, sep, _ = keyref.partition(":")
    if not sep:
        raise FormatError(
            NOT_SHOWN, "", "a KEYREF looks like file:PATH or env:VAR (the value is not shown)"
        )
    if scheme == "gpg":
        from signer.keys.gpg import load_gpg_key

        return load_gpg_key(keyref)
    if scheme == "pkcs11":
        from signer.keys.pkcs11 import load as load_pkcs11

        return load_pkcs11(_Ref(keyref))
    handler = _passphrase_handler(passphrase_env)
    if scheme in ("file", "env"):
        location = keyref[len(scheme) + 1 :]
        if not location:
            raise FormatError(keyref, "", f"expected {scheme}:LOCATION")
        data, described = read_key_source(scheme, location)
        passphrase = handler("passphrase").encode("utf-8") if b"ENCRYPTED" in data else None
        key = parse_private_key(data, described, passphrase)
        return KeyHandle(keyref, public_key_of(key), private_key=key)
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME, Signer, SSlibKey

    from signer.keys.local import LOCAL_SIGNERS

    assert set(LOCAL_SIGNERS) <= set(SIGNER_FOR_URI_SCHEME)  # file:/env: registered too

    if scheme not in SIGNER_FOR_URI_SCHEME:
        raise FormatError(keyref, "", f"unsupported key scheme {scheme!r}")
    if public is None:
        raise FormatError(keyref, "", "this key scheme needs the public key (--public-key)")
    sslib = SSlibKey(public.keyid, public.keytype, public.scheme, {"public": public.public})
    try:
        signer = Signer.from_priv_key_uri(keyref, sslib, handler)
    except FormatError:
        raise
    except Exception as exc:  # backend errors (network, token, agent) vary by backend
        raise FormatError(keyref, "", f"cannot load signer: {exc}") from None
    return KeyHandle(keyref, public, signer=signer)


def load_public_key(arg: str) -> PublicKey:
    """PUB argument: a `.pub` file written by `keys generate`, or 64 hex digits."""
    if is_public_key_hex(arg):
        return PublicKey.ed25519(arg)
    path = Path(arg)
    try:
        data = path.read_bytes()[: 64 * 1024 + 1]
    except FileNotFoundError:
        raise FormatError(arg, "", "no such public key file (or not 64 lowercase hex)") from None
    except OSError as exc:
        raise FormatError(arg, "", f"cannot read: {exc.strerror}") from None
    try:
        obj = json.loads(data)
    except ValueError:
        raise FormatError(arg, "", "not a JSON key file") from None
    return PublicKey.from_dict(obj, arg, "")


def ed25519_hex(pub: PublicKey, source: str) -> str:
    if not pub.is_ed25519:
        raise FormatError(source, "keytype", "channel-layer keys must be ed25519")
    return pub.public


def generate_key(
    name: str, directory: Path, keytype: str = "ed25519", passphrase: bytes | None = None
) -> tuple[Path, Path, PublicKey]:
    """Write NAME.key (PKCS#8 PEM, 0600) and NAME.pub (key dict); refuse to overwrite."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if not name or "/" in name or name.startswith("."):
        raise FormatError(name, "NAME", "must be a plain file name")
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (key_path, pub_path):
        if path.exists():
            raise FormatError(str(path), "", "already exists; not overwriting a key")
    if keytype == "ed25519":
        key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
            ed25519.Ed25519PrivateKey.generate()
        )
    elif keytype == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise FormatError(keytype, "--type", "expected ed25519 or ecdsa-p256")
    public = public_key_of(key)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem(key, passphrase))
    pub_path.write_text(json.dumps(public.to_dict(), indent=2, sort_keys=True) + "\n")
    return key_path, pub_path, public


__all__ = [
    "KeyHandle",
    "ed25519_hex",
    "generate_key",
    "load_public_key",
    "parse_private_key",
    "resolve_keyref",
]
