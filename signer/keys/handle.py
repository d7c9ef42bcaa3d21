"""Resolved keys and what each can be used for.

Every backend returns a `SigningKey`; callers ask it for the signer their purpose needs
(`artifact_signer`, `channel_signer`, `root_signer`) and get a clear refusal when the key
cannot serve that purpose. No caller checks a key's class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from signer.trust import ed25519 as _ed25519
from signer.trust.errors import FormatError
from signer.trust.keys import PublicKey
from signer.trust.signing import EnvelopeSigner, OpenPGPStyleSigner, RawSigner

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

    from signer.keys.material import PrivateKey


class SigningKey:
    """A private key reached through a KEYREF. Subclasses enable the purposes they serve."""

    KIND = "this key"

    def __init__(self, keyref: str, public: PublicKey) -> None:
        self.keyref = keyref
        self.public = public

    @property
    def keyid(self) -> str:
        return self.public.keyid

    @property
    def public_key_hex(self) -> str:
        """The raw ed25519 public key (channel layer); refused for other key types."""
        if not self.public.is_ed25519:
            raise FormatError(self.keyref, "", "channel-layer keys must be ed25519")
        return self.public.public

    def sign_message(self, message: bytes) -> bytes:
        """Raw signature of `message`; prefer `channel_signer()`, which says the purpose."""
        raise self._refuse("make raw signatures")

    def _refuse(self, purpose: str) -> FormatError:
        return FormatError(self.keyref, "", f"{self.KIND} cannot {purpose}")

    def artifact_signer(self) -> KeyHandle:
        """The securesystemslib Signer behind DSSE attestations."""
        raise self._refuse("sign artifacts")

    def channel_signer(self) -> RawSigner:
        """Raw ed25519 signatures: key_mgr, pkg_mgr, delegations, repodata records."""
        raise self._refuse("make raw ed25519 signatures (key_mgr, pkg_mgr, repodata)")

    def root_signer(self) -> EnvelopeSigner:
        """OpenPGP-style signatures, the form conda reads on roots."""
        raise self._refuse("sign roots")


class KeyHandle(SigningKey):
    """A key held in memory (`file:`, `env:`) or by a securesystemslib Signer backend.

    For `file:` and `env:` keys the securesystemslib Signer is made on first use: importing
    securesystemslib costs ~0.4 s, which channel-layer signing never needs.
    """

    KIND = "key"

    def __init__(
        self,
        keyref: str,
        public: PublicKey,
        *,
        signer: Signer | None = None,
        private_key: PrivateKey | None = None,
    ) -> None:
        super().__init__(keyref, public)
        self._signer = signer
        self._private_key = private_key
        self._nacl_secret: bytes | None = None
        if private_key is not None:
            from signer.keys.material import ed25519_seed

            seed = ed25519_seed(private_key)
            if seed is not None:
                self._nacl_secret = _ed25519.keypair_from_seed(seed)[1]

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

    def sign_message(self, message: bytes) -> bytes:
        """Raw signature of `message` (ed25519: libsodium for keys in memory)."""
        if self._nacl_secret is not None:
            return _ed25519.sign_raw(self._nacl_secret, message)
        return bytes.fromhex(self.signer.sign(message).signature)

    def artifact_signer(self) -> KeyHandle:
        return self

    def channel_signer(self) -> RawSigner:
        self.public_key_hex  # noqa: B018  (refuses a non-ed25519 key here, not mid-signing)
        return RawSigner(self)

    def root_signer(self) -> EnvelopeSigner:
        self.public_key_hex  # noqa: B018
        return OpenPGPStyleSigner(self)
