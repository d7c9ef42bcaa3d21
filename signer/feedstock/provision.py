"""Provisioning a feedstock: its key pair, its delegations entry, its CI secret.

The CI secret is the private key in a form that fits a secret variable on one line: the
64-hex ed25519 seed (what `env:VAR` and `file:PATH` KEYREFs read), or for ECDSA P-256 the
PKCS#8 PEM with its line breaks written as `\\n` (which `env:` turns back). It goes to exactly
one place: a new file of mode 0600, or stdout when asked, never both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signer.feedstock.source import source_entry
from signer.trust.errors import FormatError
from signer.trust.feedstocks import FeedstockDelegation, check_feedstock_name
from signer.trust.keys import PublicKey

DEFAULT_SECRET_VAR = "CF_SIGN_KEY"


@dataclass(frozen=True)
class Provisioned:
    feedstock: str
    public: PublicKey
    pub_path: Path
    secret: str  # the CI secret's value: handle with care
    entry: dict[str, Any]

    def source_snippet(self) -> str:
        return json.dumps({self.feedstock: self.entry}, indent=2, sort_keys=True)


def make_feedstock_key(
    feedstock: str,
    directory: Path,
    *,
    keytype: str = "ed25519",
    outputs: tuple[str, ...] = (),
) -> Provisioned:
    """A new key pair; writes only `<dir>/<feedstock>.pub` (the secret is returned)."""
    from signer.keys.material import new_private_key, public_key_of, secret_text

    check_feedstock_name(feedstock, feedstock, "feedstock name")
    pub_path = directory / f"{feedstock}.pub"
    if pub_path.exists():
        raise FormatError(str(pub_path), "", "already exists; not replacing a feedstock's key")
    key = new_private_key(keytype)
    secret = secret_text(key)
    public = public_key_of(key)
    directory.mkdir(parents=True, exist_ok=True)
    pub_path.write_text(json.dumps(public.to_dict(), indent=2, sort_keys=True) + "\n")
    delegation = FeedstockDelegation.of([public], 1, outputs or (feedstock,))
    return Provisioned(feedstock, public, pub_path, secret, source_entry(delegation))


def write_secret_file(path: Path, secret: str) -> None:
    """A new file, mode 0600 from the start (never world-readable, not even briefly)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FormatError(str(path), "", "already exists; not overwriting a secret") from None
    except OSError as exc:
        raise FormatError(str(path), "", f"cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
