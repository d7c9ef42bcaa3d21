"""Azure Key Vault keys (DESIGN.md sections 6 and 14).

- `azurekms://<vault host>/keys/<name>/<version>`: an EC P-256 key that never leaves the vault,
  signing through securesystemslib's `AzureSigner` (feedstock-layer and attestation keys).
- `wrapped:FILE`: a channel-layer ed25519 seed (Key Vault has no Ed25519) kept encrypted by a
  Key Vault RSA key; unwrapped with one `unwrapKey` call per process and held in memory only.

Credentials come from azure-identity, chosen by what the environment offers: Azure Pipelines
OIDC through a service connection, GitHub Actions OIDC, else `DefaultAzureCredential`
(managed identity, workload identity token file, environment, CLI).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from signer.keys.handle import KeyHandle
from signer.keys.registry import KeyRequest
from signer.trust.errors import FormatError
from signer.trust.keys import PublicKey

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.keys.crypto import CryptographyClient
    from securesystemslib.signer import SecretsHandler, Signature, Signer, SSlibKey

AZURE_SCHEME = "azurekms"
WRAPPED_SCHEME = "wrapped"
WRAPPED_TYPE = "cf-sign-wrapped-ed25519"
WRAP_ALGORITHM = "RSA-OAEP-256"
MAX_WRAPPED_FILE = 64 * 1024
# Key Vault throttles per vault (DESIGN section 8); the SDK backs off on 429 with Retry-After.
RETRY_TOTAL = 4

_AZURE_EXTRA = "pip install 'cf-sign[azure]'"


def _require_sdk() -> None:
    try:
        import azure.identity
        import azure.keyvault.keys  # noqa: F401
    except ImportError:
        raise FormatError(
            "azure", "", f"Azure Key Vault keys need the azure extra: {_AZURE_EXTRA}"
        ) from None


# --------------------------------------------------------------------------- credentials


def _github_oidc_token(audience: str = "api://AzureADTokenExchange") -> str:
    """A fresh GitHub Actions OIDC token (the job needs `permissions: id-token: write`)."""
    import urllib.request

    url = os.environ["ACTIONS_ID_TOKEN_REQUEST_URL"]
    sep = "&" if "?" in url else "?"
    request = urllib.request.Request(
        f"{url}{sep}audience={audience}",
        headers={"Authorization": f"bearer {os.environ['ACTIONS_ID_TOKEN_REQUEST_TOKEN']}"},
    )
    from azure.core.exceptions import ClientAuthenticationError

    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            value = json.loads(response.read(64 * 1024)).get("value")
    except (OSError, ValueError, AttributeError) as exc:
        # Surfaces through the SDK as an authentication failure, reported in one line.
        raise ClientAuthenticationError(f"GitHub OIDC token request failed: {exc}") from None
    if not isinstance(value, str) or not value:
        raise ClientAuthenticationError("GitHub OIDC token request: no token in the answer")
    return value


def credential_source() -> str:
    """Which credential `azure_credential()` picks here (for messages and tests)."""
    env = os.environ
    if env.get("SYSTEM_OIDCREQUESTURI") and env.get("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID"):
        return "azure-pipelines"
    if env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("AZURE_CLIENT_ID"):
        return "github-oidc"
    return "default"


def azure_credential() -> TokenCredential:
    """The credential for Key Vault calls in this environment (no stored secret in CI)."""
    _require_sdk()
    from azure.identity import (
        AzurePipelinesCredential,
        ClientAssertionCredential,
        DefaultAzureCredential,
    )

    env = os.environ
    source = credential_source()
    if source == "azure-pipelines":
        # The AzureCLI@2 task's variable names; System.AccessToken mapped into the step's env.
        missing = [
            name
            for name in (
                "AZURESUBSCRIPTION_CLIENT_ID",
                "AZURESUBSCRIPTION_TENANT_ID",
                "SYSTEM_ACCESSTOKEN",
            )
            if not env.get(name)
        ]
        if missing:
            raise FormatError(missing[0], "", "needed for Azure Pipelines OIDC, not set")
        return AzurePipelinesCredential(
            tenant_id=env["AZURESUBSCRIPTION_TENANT_ID"],
            client_id=env["AZURESUBSCRIPTION_CLIENT_ID"],
            service_connection_id=env["AZURESUBSCRIPTION_SERVICE_CONNECTION_ID"],
            system_access_token=env["SYSTEM_ACCESSTOKEN"],
        )
    if source == "github-oidc":
        tenant = env.get("AZURE_TENANT_ID")
        if not tenant:
            raise FormatError("AZURE_TENANT_ID", "", "needed for GitHub OIDC, not set")
        return ClientAssertionCredential(tenant, env["AZURE_CLIENT_ID"], _github_oidc_token)
    # Managed identity (the service), AZURE_FEDERATED_TOKEN_FILE (workload identity, or a CI
    # token file passed into the docker build), environment, Azure CLI.
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


# --------------------------------------------------------------------------- errors


def describe_azure_error(exc: BaseException) -> str:
    """One line for a Key Vault failure: status, Key Vault's code and message."""
    status = getattr(exc, "status_code", None)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or str(exc).splitlines()[0] if str(exc) else ""
    inner = _inner_code(exc)
    if status == 429:
        retry = _retry_after(exc)
        wait = f"; retry after {retry} s" if retry else ""
        return f"Key Vault throttled the request (429{wait}): too many operations on this vault"
    if status == 403 and inner == "KeyDisabled":
        return "the key is disabled in Key Vault (403 KeyDisabled)"
    if status == 403:
        return (
            f"Key Vault refused the operation (403 {code or 'Forbidden'}): the identity needs "
            "the 'Key Vault Crypto User' role on this key"
        )
    if status == 404:
        return "no such key or version in Key Vault (404)"
    if status is not None:
        return f"Key Vault answered {status} {code or ''}: {message}".replace("  ", " ")
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else name
    if name in ("ClientAuthenticationError", "CredentialUnavailableError"):
        return f"no Azure credential: {text}"
    return f"{name}: {text}"


def _inner_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    try:
        body = json.loads(response.text()) if response is not None else None
    except (ValueError, AttributeError, TypeError):
        return None
    inner = body.get("error", {}).get("innererror", {}) if isinstance(body, dict) else {}
    code = inner.get("code") if isinstance(inner, dict) else None
    return code if isinstance(code, str) else None


def _retry_after(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers.get("Retry-After") if headers is not None else None


def _key_vault_call(keyref: str, what: str, call: Any) -> Any:
    from azure.core.exceptions import AzureError, ClientAuthenticationError

    try:
        return call()
    except (AzureError, ClientAuthenticationError) as exc:
        raise FormatError(keyref, "", f"{what}: {describe_azure_error(exc)}") from None
    except ValueError as exc:  # e.g. the SDK's own challenge-resource check
        raise FormatError(keyref, "", f"{what}: {exc}") from None


# --------------------------------------------------------------------------- azurekms://


def key_id_url(keyref: str) -> str:
    """`azurekms://<host>/keys/<name>/<version>` -> the Key Vault key id (https URL)."""
    parsed = urlparse(keyref)
    parts = parsed.path.strip("/").split("/")
    if parsed.scheme != AZURE_SCHEME or not parsed.netloc or len(parts) != 3 or parts[0] != "keys":
        raise FormatError(keyref, "", "expected azurekms://<vault host>/keys/<name>/<version>")
    return f"https://{parsed.netloc}/keys/{parts[1]}/{parts[2]}"


def crypto_client(keyref: str) -> CryptographyClient:
    _require_sdk()
    from azure.keyvault.keys.crypto import CryptographyClient

    return CryptographyClient(key_id_url(keyref), azure_credential(), retry_total=RETRY_TOTAL)


def import_azure_key(keyref: str) -> PublicKey:
    """The public key of an `azurekms://` EC P-256 key, read from the vault."""
    _require_sdk()
    from azure.keyvault.keys import KeyClient
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    url = key_id_url(keyref)
    vault, _, rest = url.partition("/keys/")
    name, _, version = rest.partition("/")
    client = KeyClient(vault, azure_credential(), retry_total=RETRY_TOTAL)
    key = _key_vault_call(keyref, "cannot read the key", lambda: client.get_key(name, version))
    if key.key.kty not in ("EC", "EC-HSM") or key.key.crv != "P-256":
        raise FormatError(keyref, "", f"expected an EC P-256 key, got {key.key.kty} {key.key.crv}")
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"), ec.SECP256R1()
    )
    pem = numbers.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey("ecdsa", "ecdsa-sha2-nistp256", pem.decode("ascii"))


def _azure_signer_class() -> type[Signer]:
    from securesystemslib.signer import AzureSigner

    class KeyVaultSigner(AzureSigner):
        """securesystemslib's AzureSigner with cf-sign's credential choice and messages."""

        def __init__(self, az_key_uri: str, public_key: SSlibKey) -> None:
            from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

            if public_key.scheme != "ecdsa-sha2-nistp256":
                raise FormatError(az_key_uri, "", "Key Vault keys sign as ecdsa-sha2-nistp256")
            self.crypto_client = CryptographyClient(
                az_key_uri, azure_credential(), retry_total=RETRY_TOTAL
            )
            self.signature_algorithm = SignatureAlgorithm.es256
            self.hash_algorithm = "sha256"
            self._public_key = public_key
            self._keyref = az_key_uri.replace("https:", f"{AZURE_SCHEME}:", 1)

        def sign(self, payload: bytes) -> Signature:
            return _key_vault_call(  # type: ignore[no-any-return]
                self._keyref, "Key Vault sign failed", lambda: AzureSigner.sign(self, payload)
            )

        @classmethod
        def from_priv_key_uri(
            cls,
            priv_key_uri: str,
            public_key: Any,
            secrets_handler: SecretsHandler | None = None,
        ) -> KeyVaultSigner:
            return cls(key_id_url(priv_key_uri), public_key)

    return KeyVaultSigner


def register_schemes() -> None:
    """Put cf-sign's `azurekms` signer in securesystemslib's scheme table."""
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME

    _require_sdk()
    SIGNER_FOR_URI_SCHEME[AZURE_SCHEME] = _azure_signer_class()


def load_azurekms(request: KeyRequest) -> KeyHandle:
    """Backend of `azurekms://` KEYREFs (signer.keys.registry): an EC key in Key Vault."""
    from securesystemslib.signer import Signer, SSlibKey

    register_schemes()
    public = request.public or import_azure_key(request.keyref)
    sslib = SSlibKey(public.keyid, public.keytype, public.scheme, {"public": public.public})
    signer = Signer.from_priv_key_uri(request.keyref, sslib)
    return KeyHandle(request.keyref, public, signer=signer)


def load_wrapped(request: KeyRequest) -> KeyHandle:
    """Backend of `wrapped:FILE`: the seed unwrapped by Key Vault once, then held in memory."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if not request.location:
        raise FormatError(request.keyref, "", "expected wrapped:FILE")
    wrapped = WrappedFile.read(request.location)
    key = ed25519.Ed25519PrivateKey.from_private_bytes(unwrap_seed(wrapped))
    return KeyHandle(request.keyref, wrapped.public, private_key=key)


# --------------------------------------------------------------------------- wrapped:FILE


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wrap_seed(seed: bytes, vault_key: str) -> dict[str, Any]:
    """The `wrapped:` file content for an ed25519 seed, encrypted by a Key Vault RSA key.

    The SDK fetches the RSA public key and encrypts locally: the seed never reaches the vault.
    """
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from signer.keys.material import public_key_of

    if len(seed) != 32:
        raise FormatError("seed", "", "an ed25519 seed is 32 bytes")
    from azure.keyvault.keys.crypto import KeyWrapAlgorithm

    client = crypto_client(vault_key)
    result = _key_vault_call(
        vault_key,
        "cannot wrap with the vault key",
        lambda: client.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, seed),
    )
    public = public_key_of(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    return {
        "algorithm": WRAP_ALGORITHM,
        "ciphertext": _b64(result.encrypted_key),
        "public": public.to_dict(),
        "type": WRAPPED_TYPE,
        "vault_key": vault_key.replace("https:", f"{AZURE_SCHEME}:", 1),
    }


def wrap_keyref(keyref: str | None, vault_key: str) -> dict[str, Any]:
    """The `wrapped:` file content for the ed25519 seed of `keyref` (or a new seed)."""
    from signer.keys.material import ed25519_seed, parse_private_key, read_key_source

    if keyref is None:
        return wrap_seed(os.urandom(32), vault_key)
    scheme, _, location = keyref.partition(":")
    if scheme not in ("file", "env") or not location:
        raise FormatError(keyref, "", "only file: and env: keys can be wrapped")
    data, described = read_key_source(scheme, location)
    seed = ed25519_seed(parse_private_key(data, described, None))
    if seed is None:
        raise FormatError(described, "", "only ed25519 keys are wrapped (channel-layer keys)")
    return wrap_seed(seed, vault_key)


class WrappedFile:
    """A parsed `wrapped:` file."""

    def __init__(self, path: str, vault_key: str, ciphertext: bytes, public: PublicKey) -> None:
        self.path = path
        self.vault_key = vault_key
        self.ciphertext = ciphertext
        self.public = public

    @classmethod
    def read(cls, path: str) -> WrappedFile:
        from signer.keys.material import read_key_source

        data, described = read_key_source("file", path)
        try:
            obj = json.loads(data)
        except ValueError:
            raise FormatError(described, "", "not a JSON wrapped-key file") from None
        if not isinstance(obj, dict) or obj.get("type") != WRAPPED_TYPE:
            raise FormatError(described, "type", f"expected {WRAPPED_TYPE!r}")
        if obj.get("algorithm") != WRAP_ALGORITHM:
            raise FormatError(described, "algorithm", f"expected {WRAP_ALGORITHM}")
        vault_key = obj.get("vault_key")
        if not isinstance(vault_key, str):
            raise FormatError(described, "vault_key", "expected an azurekms:// key URI")
        key_id_url(vault_key)
        try:
            ciphertext = base64.b64decode(str(obj.get("ciphertext")), validate=True)
        except ValueError:
            raise FormatError(described, "ciphertext", "not base64") from None
        public = PublicKey.from_dict(obj.get("public"), described, "public")
        if not public.is_ed25519:
            raise FormatError(described, "public", "a wrapped channel-layer key is ed25519")
        return cls(described, vault_key, ciphertext, public)


_UNWRAPPED: dict[str, bytes] = {}  # file digest -> seed: one unwrapKey per process
_UNWRAP_LOCK = threading.Lock()


def unwrap_seed(wrapped: WrappedFile) -> bytes:
    """The seed behind `wrapped`, unwrapped by the vault once per process."""
    from azure.keyvault.keys.crypto import KeyWrapAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from signer.keys.material import public_key_of

    cache_key = hashlib.sha256(wrapped.vault_key.encode() + b"\0" + wrapped.ciphertext).hexdigest()
    with _UNWRAP_LOCK:
        seed = _UNWRAPPED.get(cache_key)
        if seed is None:
            client = crypto_client(wrapped.vault_key)
            result = _key_vault_call(
                f"{WRAPPED_SCHEME}:{wrapped.path}",
                "Key Vault unwrapKey failed",
                lambda: client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.ciphertext),
            )
            seed = bytes(result.key)
            if len(seed) != 32:
                raise FormatError(wrapped.path, "ciphertext", "does not unwrap to a 32-byte seed")
            _UNWRAPPED[cache_key] = seed
    # Checked on every use: a cached seed never stands for another file's public key.
    if public_key_of(ed25519.Ed25519PrivateKey.from_private_bytes(seed)) != wrapped.public:
        raise FormatError(
            wrapped.path, "public", "the unwrapped seed is not this file's public key"
        )
    return seed


def write_wrapped_file(path: Path, content: dict[str, Any]) -> None:
    """Write a wrapped-key file (0600: ciphertext only, but nobody else needs to read it)."""
    from signer.trust.state import write_atomic

    if path.exists():
        raise FormatError(str(path), "", "already exists; not overwriting a key")
    write_atomic(path, (json.dumps(content, indent=2, sort_keys=True) + "\n").encode(), 0o600)


__all__ = [
    "AZURE_SCHEME",
    "WRAPPED_SCHEME",
    "WrappedFile",
    "azure_credential",
    "credential_source",
    "describe_azure_error",
    "import_azure_key",
    "key_id_url",
    "load_azurekms",
    "load_wrapped",
    "register_schemes",
    "unwrap_seed",
    "wrap_keyref",
    "wrap_seed",
    "write_wrapped_file",
]
