"""`pkcs11:` keys: ed25519 on a PKCS#11 token (SoftHSM2, a YubiKey's PIV applet) via CKM_EDDSA.

The KEYREF is an RFC 7512 URI, `pkcs11:token=<label>;object=<label>` or `;id=%01`, with an
optional `?module-path=<library>` (default `$PKCS11_MODULE`). The PIN comes from
`$CF_SIGN_PKCS11_PIN` or a prompt on the terminal: a URI carrying `pin-value`/`pin-source`
is refused without being printed (it would put the PIN in shell history and process lists).

The token signs raw ed25519 only; OpenPGP-style root signatures are made over the digest
with a synthesised header (signer.trust.signing), like any raw ed25519 key. Each operation
initialises the library and finalises it afterwards, so a process holds no session open
between signatures (and SoftHSM2 rereads `$SOFTHSM2_CONF`).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import unquote_to_bytes

from securesystemslib.signer import (
    SIGNER_FOR_URI_SCHEME,
    Key,
    SecretsHandler,
    Signature,
    Signer,
    SSlibKey,
)

from signer.trust import ed25519 as _ed25519
from signer.trust.errors import FormatError
from signer.trust.keys import PublicKey

if TYPE_CHECKING:
    from pkcs11 import ObjectClass, Session
    from pkcs11.types import Key as P11Key

    from signer.keys import KeyHandle

SCHEME = "pkcs11"
PIN_ENV = "CF_SIGN_PKCS11_PIN"
MODULE_ENV = "PKCS11_MODULE"
PIN_SECRET = "PIN"
_PATH_ATTRS = {"token", "object", "id", "serial", "type"}
_QUERY_ATTRS = {"module-path"}
_SECRET_QUERY = {"pin-value", "pin-source"}
_MAX_URI = 4096

T = TypeVar("T")


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI that select one ed25519 key."""

    uri: str
    token: str
    module_path: str
    label: str | None = None
    key_id: bytes | None = None
    serial: str | None = None

    @property
    def describe(self) -> str:
        which = f"object={self.label}" if self.label is not None else f"id={self.key_id!r}"
        return f"pkcs11:token={self.token};{which}"


def _decode(value: str, uri: str, attr: str) -> bytes:
    try:
        return unquote_to_bytes(value)
    except ValueError:
        raise FormatError(uri, attr, "bad percent-encoding") from None


def parse_uri(uri: str, *, environ: dict[str, str] | None = None) -> Pkcs11Uri:
    """Parse and check a `pkcs11:` KEYREF; never echoes a URI that carries a PIN."""
    env = os.environ if environ is None else environ
    if len(uri) > _MAX_URI:
        raise FormatError("pkcs11: URI", "", "too long")
    scheme, sep, rest = uri.partition(":")
    if scheme != SCHEME or not sep:
        raise FormatError(uri, "", "expected pkcs11:token=LABEL;object=LABEL")
    path, _, query = rest.partition("?")
    query_attrs: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        if name in _SECRET_QUERY:
            # Do not print the URI: it holds the PIN or where it lives.
            raise FormatError(
                "pkcs11: URI", name, f"the PIN is never given in the URI; set ${PIN_ENV}"
            )
        if name not in _QUERY_ATTRS:
            raise FormatError(uri, name, "unsupported query attribute (module-path only)")
        if name in query_attrs:
            raise FormatError(uri, name, "given twice")
        query_attrs[name] = _decode(value, uri, name).decode("utf-8", "replace")
    path_attrs: dict[str, bytes] = {}
    for part in filter(None, path.split(";")):
        name, eq, value = part.partition("=")
        if not eq or name not in _PATH_ATTRS:
            raise FormatError(uri, name or part, "unsupported path attribute")
        if name in path_attrs:
            raise FormatError(uri, name, "given twice")
        path_attrs[name] = _decode(value, uri, name)
    if "token" not in path_attrs:
        raise FormatError(uri, "token", "missing (the token's label)")
    if "object" not in path_attrs and "id" not in path_attrs:
        raise FormatError(uri, "object", "missing (give object=LABEL or id=%NN)")
    kind = path_attrs.get("type")
    if kind is not None and kind != b"private":
        raise FormatError(uri, "type", "must be 'private' (the signing key)")
    module = query_attrs.get("module-path") or env.get(MODULE_ENV, "")
    if not module:
        raise FormatError(
            uri, "module-path", f"no PKCS#11 library: add ?module-path= or set ${MODULE_ENV}"
        )
    label = path_attrs.get("object")
    serial = path_attrs.get("serial")
    return Pkcs11Uri(
        uri,
        path_attrs["token"].decode("utf-8", "replace"),
        module,
        label.decode("utf-8", "replace") if label is not None else None,
        path_attrs.get("id"),
        serial.decode("utf-8", "replace") if serial is not None else None,
    )


def pin_from_env_or_prompt(ref: Pkcs11Uri) -> str:
    """The user PIN: `$CF_SIGN_PKCS11_PIN`, else asked on the terminal (never echoed)."""
    value = os.environ.get(PIN_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise FormatError(
            ref.describe, "", f"${PIN_ENV} is not set and there is no terminal to ask for the PIN"
        )
    value = getpass.getpass(f"PIN for PKCS#11 token {ref.token!r}: ")
    if not value:
        raise FormatError(ref.describe, "", "no PIN given")
    return value


def _ed25519_point(raw: bytes, where: str) -> str:
    """CKA_EC_POINT as a 64-hex key: DER OCTET STRING `04 20 || key`, or the bare 32 bytes."""
    if len(raw) == 34 and raw[:2] == b"\x04\x20":
        return raw[2:].hex()
    if len(raw) == 32:
        return raw.hex()
    raise FormatError(where, "CKA_EC_POINT", "not an ed25519 public key")


class _Token:
    """One library load, one token, sessions opened on demand."""

    def __init__(self, ref: Pkcs11Uri) -> None:
        self.ref = ref

    def run(self, action: Callable[[Session], T], pin: str | None) -> T:
        import pkcs11
        from pkcs11 import exceptions as p11

        ref = self.ref
        try:
            lib = pkcs11.lib(ref.module_path)
        except (OSError, p11.PKCS11Error) as exc:
            raise FormatError(
                ref.describe, "module-path", f"cannot load {ref.module_path}: {exc}"
            ) from None
        try:
            kwargs: dict[str, object] = {"token_label": ref.token}
            if ref.serial is not None:
                kwargs["token_serial"] = ref.serial.encode()
            token = lib.get_token(**kwargs)
            with token.open(user_pin=pin) as session:
                return action(session)
        except p11.NoSuchToken:
            raise FormatError(ref.describe, "token", f"no token labelled {ref.token!r}") from None
        except p11.MultipleTokensReturned:
            raise FormatError(
                ref.describe, "token", "several tokens carry this label (add serial=)"
            ) from None
        except p11.PinIncorrect:
            raise FormatError(ref.describe, "", "wrong PIN") from None
        except p11.PinLocked:
            raise FormatError(ref.describe, "", "the PIN is locked") from None
        except (p11.PinLenRange, p11.PinInvalid):
            raise FormatError(ref.describe, "", "the PIN is not valid for this token") from None
        except p11.PKCS11Error as exc:
            raise FormatError(ref.describe, "", f"token error: {type(exc).__name__}") from None
        finally:
            with contextlib.suppress(p11.PKCS11Error):
                lib.finalize()

    def _find(self, session: Session, object_class: ObjectClass) -> P11Key:
        from pkcs11 import KeyType
        from pkcs11 import exceptions as p11

        ref = self.ref
        try:
            return session.get_key(
                object_class=object_class,
                key_type=KeyType.EC_EDWARDS,
                label=ref.label,
                id=ref.key_id,
            )
        except p11.NoSuchKey:
            raise FormatError(
                ref.describe, "object", "no ed25519 key with this label/id on the token"
            ) from None
        except p11.MultipleObjectsReturned:
            raise FormatError(ref.describe, "object", "several keys match (give id= too)") from None

    def public_key(self, pin: str | None) -> PublicKey:
        from pkcs11 import Attribute, ObjectClass

        def read(session: Session) -> PublicKey:
            key = self._find(session, ObjectClass.PUBLIC_KEY)
            point = key[Attribute.EC_POINT]
            return PublicKey.ed25519(_ed25519_point(bytes(point), self.ref.describe))

        return self.run(read, pin)

    def sign(self, message: bytes, pin: str) -> bytes:
        from pkcs11 import Mechanism, ObjectClass, SignMixin

        def sign(session: Session) -> bytes:
            key = self._find(session, ObjectClass.PRIVATE_KEY)
            if not isinstance(key, SignMixin):
                raise FormatError(self.ref.describe, "object", "the token's key cannot sign")
            return bytes(key.sign(message, mechanism=Mechanism.EDDSA))

        return self.run(sign, pin)


class Pkcs11Signer(Signer):
    """securesystemslib Signer for `pkcs11:` URIs (ed25519 via CKM_EDDSA)."""

    SCHEME = SCHEME

    def __init__(self, ref: Pkcs11Uri, public_key: Key, pin_source: Callable[[], str]) -> None:
        self.ref = ref
        self._public_key = public_key
        self._pin_source = pin_source
        self._pin: str | None = None
        self._token = _Token(ref)

    @property
    def public_key(self) -> Key:
        return self._public_key

    def _get_pin(self) -> str:
        if self._pin is None:  # asked once per process, kept in memory only
            self._pin = self._pin_source()
        return self._pin

    def sign(self, payload: bytes) -> Signature:
        signature = self._token.sign(payload, self._get_pin())
        public = bytes.fromhex(self._public_key.keyval["public"])
        # A token that signs with another key than the one named must not go unnoticed.
        if not _ed25519.verify_raw(public, signature, payload):
            raise FormatError(
                self.ref.describe, "", "the token's signature does not verify with its public key"
            )
        return Signature(self._public_key.keyid, signature.hex())

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> Pkcs11Signer:
        ref = parse_uri(priv_key_uri)
        if public_key.keytype != "ed25519":
            raise FormatError(ref.describe, "", "pkcs11: keys are ed25519 only")

        def pin() -> str:
            if secrets_handler is not None and not os.environ.get(PIN_ENV):
                return secrets_handler(PIN_SECRET)
            return pin_from_env_or_prompt(ref)

        return cls(ref, public_key, pin)

    @classmethod
    def import_(cls, uri: str) -> tuple[str, SSlibKey]:
        """(uri, public key) read from the token (no PIN needed for public objects)."""
        public = read_public_key(uri)
        return uri, SSlibKey(public.keyid, public.keytype, public.scheme, {"public": public.public})


def read_public_key(uri: str) -> PublicKey:
    """The key's public half, from the token's public-key object.

    Logs in only when the token hides public objects from anonymous sessions.
    """
    ref = parse_uri(uri)
    token = _Token(ref)
    try:
        return token.public_key(None)
    except FormatError as exc:
        if "no ed25519 key" not in str(exc):
            raise
    return token.public_key(pin_from_env_or_prompt(ref))


def load_pkcs11_key(uri: str) -> tuple[PublicKey, Pkcs11Signer]:
    """Resolve a `pkcs11:` KEYREF to its public key and a Signer (PIN asked on first use)."""
    public = read_public_key(uri)
    sslib = SSlibKey(public.keyid, public.keytype, public.scheme, {"public": public.public})
    return public, Pkcs11Signer.from_priv_key_uri(uri, sslib)


class _Request(Protocol):
    @property
    def keyref(self) -> str: ...


def load(request: _Request) -> KeyHandle:
    """The KEYREF backend: a KeyHandle whose Signer is the token (PIN asked on first use)."""
    from signer.keys import KeyHandle

    public, signer = load_pkcs11_key(request.keyref)
    return KeyHandle(request.keyref, public, signer=signer)


SIGNER_FOR_URI_SCHEME[SCHEME] = Pkcs11Signer
