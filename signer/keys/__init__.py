"""Keys by purpose: KEYREF resolution, key generation and public-key arguments.

A KEYREF is a signer URI: `file:PATH`, `env:VAR`, `gpg:FPR` and the backends registered in
`signer.keys.registry` (which also reaches securesystemslib's `SIGNER_FOR_URI_SCHEME`).
Callers say what they need the key for:

- `artifact_signer(ref)`: a securesystemslib Signer for DSSE attestations (any key type);
- `channel_signer(ref)`: raw ed25519 signatures (key_mgr, pkg_mgr, delegations, repodata);
- `root_signer(ref)`: OpenPGP-style signatures, the form conda reads on roots (GnuPG
  natively; a raw ed25519 key with a synthesised header).

A key that cannot serve the purpose is refused with a FormatError naming the KEYREF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from signer.keys.handle import KeyHandle, SigningKey
from signer.keys.material import (
    new_private_key,
    parse_private_key,
    private_pem,
    public_key_of,
    split_keyref,
)
from signer.keys.memory import DEFAULT_PASSPHRASE_ENV, passphrase_from_env
from signer.keys.registry import KeyRequest, backend_for, register_backend
from signer.trust.errors import FormatError
from signer.trust.keys import PublicKey
from signer.trust.metadata import is_public_key_hex

if TYPE_CHECKING:
    from signer.trust.signing import EnvelopeSigner, RawSigner


def load_key(
    keyref: str, *, public: PublicKey | None = None, passphrase_env: str | None = None
) -> SigningKey:
    """Resolve a KEYREF through its backend; a bad reference is a FormatError naming it."""
    scheme, location = split_keyref(keyref)
    request = KeyRequest(keyref, scheme, location, public, passphrase_env)
    loader = backend_for(scheme)
    if loader is not None:
        return loader(request)
    return _securesystemslib_key(request)


# The name other modules have used; the same function.
resolve_keyref = load_key


def artifact_signer(
    keyref: str, *, public: PublicKey | None = None, passphrase_env: str | None = None
) -> KeyHandle:
    """A key that signs DSSE attestations (ed25519 or ECDSA; any Signer backend)."""
    return load_key(keyref, public=public, passphrase_env=passphrase_env).artifact_signer()


def channel_signer(keyref: str, *, passphrase_env: str | None = None) -> RawSigner:
    """An ed25519 key making raw signatures (key_mgr, pkg_mgr, delegations, repodata)."""
    return load_key(keyref, passphrase_env=passphrase_env).channel_signer()


def root_signer(keyref: str, *, passphrase_env: str | None = None) -> EnvelopeSigner:
    """An ed25519 key making OpenPGP-style signatures (roots)."""
    return load_key(keyref, passphrase_env=passphrase_env).root_signer()


def _securesystemslib_key(request: KeyRequest) -> KeyHandle:
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME, Signer, SSlibKey

    from signer.keys import local  # registers file: and env: with securesystemslib

    assert set(local.LOCAL_SIGNERS) <= set(SIGNER_FOR_URI_SCHEME)

    if request.scheme not in SIGNER_FOR_URI_SCHEME:
        raise FormatError(request.keyref, "", f"unsupported key scheme {request.scheme!r}")
    public = request.public
    if public is None:
        raise FormatError(request.keyref, "", "this key scheme needs the public key")
    sslib = SSlibKey(public.keyid, public.keytype, public.scheme, {"public": public.public})
    try:
        backend = Signer.from_priv_key_uri(
            request.keyref, sslib, lambda what: passphrase_from_env(request.passphrase_env, what)
        )
    except FormatError:
        raise
    except Exception as exc:  # backend errors (network, token, agent) vary by backend
        raise FormatError(request.keyref, "", f"cannot load signer: {exc}") from None
    return KeyHandle(request.keyref, public, signer=backend)


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
    import os

    if not name or "/" in name or name.startswith("."):
        raise FormatError(name, "NAME", "must be a plain file name")
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (key_path, pub_path):
        if path.exists():
            raise FormatError(str(path), "", "already exists; not overwriting a key")
    key = new_private_key(keytype)
    public = public_key_of(key)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem(key, passphrase))
    pub_path.write_text(json.dumps(public.to_dict(), indent=2, sort_keys=True) + "\n")
    return key_path, pub_path, public


__all__ = [
    "DEFAULT_PASSPHRASE_ENV",
    "KeyHandle",
    "KeyRequest",
    "SigningKey",
    "artifact_signer",
    "channel_signer",
    "ed25519_hex",
    "generate_key",
    "load_key",
    "load_public_key",
    "parse_private_key",
    "register_backend",
    "resolve_keyref",
    "root_signer",
]
