"""`keys import`: the public half of any KEYREF, as the `.pub` that root authoring takes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from signer.trust.errors import FormatError
from signer.trust.keys import PublicKey


def public_key_of_keyref(keyref: str, *, passphrase_env: str | None = None) -> PublicKey:
    """Read the public key of `pkcs11:`, `gpg:`, `file:` or `env:` without signing anything.

    A token's public object is read without the PIN where the token allows it.
    """
    scheme, sep, _ = keyref.partition(":")
    if scheme == "pkcs11" and sep:
        from signer.keys.pkcs11 import read_public_key

        return read_public_key(keyref)
    if scheme == "gpg" and sep:
        from signer.keys.gpg import load_gpg_key

        return load_gpg_key(keyref).public
    if scheme in ("file", "env") and sep:
        from signer.keys import resolve_keyref

        return resolve_keyref(keyref, passphrase_env=passphrase_env).public
    raise FormatError(
        keyref if sep and scheme.isalnum() else "KEYREF",
        "",
        "expected pkcs11:, gpg:, file: or env:",
    )


def pub_file_bytes(public: PublicKey) -> bytes:
    """The `.pub` form, as `keys generate` writes it."""
    return (json.dumps(public.to_dict(), indent=2, sort_keys=True) + "\n").encode("ascii")


def write_pub_file(path: Path, public: PublicKey) -> None:
    """Write `path` (never replacing another key's file; the same key again is fine)."""
    data = pub_file_bytes(public)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            same = path.read_bytes()[: 64 * 1024] == data
        except OSError:
            same = False
        if same:
            return
        raise FormatError(str(path), "", "already exists (another key); not overwriting") from None
    except OSError as exc:
        raise FormatError(str(path), "", f"cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
