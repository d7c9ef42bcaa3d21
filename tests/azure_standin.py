"""A local HTTPS stand-in for the few Azure REST calls cf-sign makes, so the real SDKs run.

Serves, on one loopback TLS port with a self-signed certificate the SDKs are told to trust
(REQUESTS_CA_BUNDLE):
- Key Vault: GET a key, sign (ES256 over a digest), wrapKey/unwrapKey (RSA-OAEP-256), with
  the 401 bearer challenge first, as Key Vault answers an unauthenticated request;
- a managed-identity token endpoint (App Service / Container Apps protocol, 2019-08-01);
- Microsoft Entra ID's token endpoint and metadata for client-assertion (OIDC) credentials;
- Azure Pipelines' OIDC token request endpoint and GitHub Actions' ID-token endpoint.
Only what the SDKs send is implemented; every request is recorded for the tests to check.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.x509.oid import NameOID

TENANT = "00000000-0000-0000-0000-00000000beef"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_tls_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cf-sign azure stand-in")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "standin-cert.pem", directory / "standin-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class VaultKey:
    name: str
    version: str
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    enabled: bool = True

    def jwk(self, host: str) -> dict[str, Any]:
        kid = f"https://{host}/keys/{self.name}/{self.version}"
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            numbers = self.private.public_key().public_numbers()
            return {
                "kid": kid,
                "kty": "EC",
                "crv": "P-256",
                "x": _b64url(numbers.x.to_bytes(32, "big")),
                "y": _b64url(numbers.y.to_bytes(32, "big")),
                "key_ops": ["sign", "verify"],
            }
        rsa_numbers = self.private.public_key().public_numbers()
        return {
            "kid": kid,
            "kty": "RSA",
            "n": _b64url(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(rsa_numbers.e.to_bytes(3, "big")),
            "key_ops": ["wrapKey", "unwrapKey", "encrypt", "decrypt"],
        }


@dataclass
class StandIn:
    """State of the stand-in; tests add keys and read `requests`."""

    port: int = 0
    keys: dict[str, VaultKey] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # access token -> resource
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    identity_header: str = field(default_factory=lambda: secrets.token_hex(8))
    system_access_token: str = field(default_factory=lambda: secrets.token_hex(8))
    github_request_token: str = field(default_factory=lambda: secrets.token_hex(8))
    issued_assertions: set[str] = field(default_factory=set)
    throttle: int = 0  # answer this many Key Vault requests with 429 first
    retry_after: str = "0"
    challenge_resource: str | None = None  # None: a resource the vault host matches

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def resource(self) -> str:
        # The SDK checks that the vault host ends with ".<resource host>": 127.0.0.1 ends
        # with ".0.0.1", so this resource passes the real check for a loopback vault.
        return self.challenge_resource or f"https://0.0.1:{self.port}"

    def add_ec_key(self, name: str) -> VaultKey:
        key = VaultKey(name, secrets.token_hex(16), ec.generate_private_key(ec.SECP256R1()))
        self.keys[name] = key
        return key

    def add_rsa_key(self, name: str) -> VaultKey:
        key = VaultKey(
            name,
            secrets.token_hex(16),
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
        )
        self.keys[name] = key
        return key

    def keyref(self, key: VaultKey) -> str:
        return f"azurekms://{self.host}/keys/{key.name}/{key.version}"

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.endswith(suffix))

    def issue_token(self, resource: str) -> str:
        token = secrets.token_hex(16)
        self.tokens[token] = resource
        return token

    def env(self, cert: Path) -> dict[str, str]:
        """Environment for managed identity against this stand-in."""
        return {
            "REQUESTS_CA_BUNDLE": str(cert),
            "SSL_CERT_FILE": str(cert),
            "IDENTITY_ENDPOINT": f"{self.url}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
            "AZURE_AUTHORITY_HOST": self.url,
        }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(
        self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            return json.loads(raw)  # type: ignore[no-any-return]
        except ValueError:
            return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        url = urlparse(self.path)
        state.requests.append((method, url.path))
        body = self._body() if method == "POST" else {}
        parts = url.path.strip("/").split("/")
        if parts[:2] == ["msi", "token"]:
            return self._msi(parse_qs(url.query))
        if len(parts) >= 2 and parts[0] == TENANT:
            return self._entra(parts[1:], body)
        if parts[:1] == ["pipelines-oidc"]:
            return self._pipelines_oidc()
        if parts[:1] == ["github-oidc"]:
            return self._github_oidc(parse_qs(url.query))
        if parts[:1] == ["keys"]:
            return self._vault(method, parts[1:], body)
        self._send(404, {"error": {"code": "NotFound", "message": url.path}})

    # ------------------------------------------------------------------ identity

    def _msi(self, query: dict[str, list[str]]) -> None:
        state = self.server.state
        if self.headers.get("X-IDENTITY-HEADER") != state.identity_header:
            return self._send(401, {"error": "invalid identity header"})
        resource = (query.get("resource") or [""])[0]
        token = state.issue_token(resource)
        self._send(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _entra(self, rest: list[str], body: dict[str, Any]) -> None:
        state = self.server.state
        base = f"{state.url}/{TENANT}"
        if rest[-1] == "openid-configuration":
            return self._send(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                },
            )
        if rest[-1] == "token":
            assertion = body.get("client_assertion")
            if body.get("client_id") != CLIENT_ID or assertion not in state.issued_assertions:
                return self._send(
                    401, {"error": "invalid_client", "error_description": "bad assertion"}
                )
            scope = str(body.get("scope", "")).split()[0]
            resource = scope.rsplit("/.default", 1)[0]
            return self._send(
                200,
                {
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "access_token": state.issue_token(resource),
                },
            )
        self._send(404, {"error": "not_found"})

    def _pipelines_oidc(self) -> None:
        state = self.server.state
        if self.headers.get("Authorization") != f"Bearer {state.system_access_token}":
            return self._send(401, {"message": "bad System.AccessToken"})
        assertion = secrets.token_hex(12)
        state.issued_assertions.add(assertion)
        self._send(200, {"oidcToken": assertion})

    def _github_oidc(self, query: dict[str, list[str]]) -> None:
        state = self.server.state
        if self.headers.get("Authorization") != f"bearer {state.github_request_token}":
            return self._send(401, {"message": "bad request token"})
        if (query.get("audience") or [""])[0] != "api://AzureADTokenExchange":
            return self._send(400, {"message": "wrong audience"})
        assertion = secrets.token_hex(12)
        state.issued_assertions.add(assertion)
        self._send(200, {"value": assertion})

    # ------------------------------------------------------------------ key vault

    def _vault(self, method: str, rest: list[str], body: dict[str, Any]) -> None:
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if (
            state.tokens.get(token) != state.resource.rstrip("/")
            and state.tokens.get(token) != state.resource
        ):
            challenge = f'Bearer authorization="{state.url}/{TENANT}", resource="{state.resource}"'
            return self._send(
                401,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer",
                    }
                },
                {"WWW-Authenticate": challenge},
            )
        if state.throttle > 0:
            state.throttle -= 1
            return self._send(
                429,
                {
                    "error": {
                        "code": "Throttled",
                        "message": "Too many requests were received.",
                    }
                },
                {"Retry-After": state.retry_after},
            )
        key = state.keys.get(rest[0]) if rest else None
        if key is None or (len(rest) > 1 and rest[1] not in ("", key.version)):
            return self._send(
                404,
                {
                    "error": {
                        "code": "KeyNotFound",
                        "message": "A key with (name/id) was not found in this key vault.",
                    }
                },
            )
        if method == "GET" and len(rest) <= 2:
            return self._send(
                200,
                {"key": key.jwk(state.host), "attributes": {"enabled": key.enabled}},
            )
        op = rest[2] if len(rest) > 2 else ""
        if not key.enabled:
            return self._send(
                403,
                {
                    "error": {
                        "code": "Forbidden",
                        "message": f"Operation {op} is not allowed on a disabled key.",
                        "innererror": {"code": "KeyDisabled"},
                    }
                },
            )
        kid = f"{state.url}/keys/{key.name}/{key.version}"
        value = _unb64url(str(body.get("value", "")))
        if op == "sign" and isinstance(key.private, ec.EllipticCurvePrivateKey):
            if body.get("alg") != "ES256" or len(value) != 32:
                return self._send(400, {"error": {"code": "BadParameter", "message": "alg/digest"}})
            der = key.private.sign(value, ec.ECDSA(Prehashed(hashes.SHA256())))
            r, s = decode_dss_signature(der)
            raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            return self._send(200, {"kid": kid, "value": _b64url(raw)})
        if op in ("unwrapkey", "wrapkey") and isinstance(key.private, rsa.RSAPrivateKey):
            if body.get("alg") != "RSA-OAEP-256":
                return self._send(400, {"error": {"code": "BadParameter", "message": "alg"}})
            oaep = padding.OAEP(
                mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
            )
            try:
                out = (
                    key.private.decrypt(value, oaep)
                    if op == "unwrapkey"
                    else key.private.public_key().encrypt(value, oaep)
                )
            except ValueError:
                return self._send(
                    400, {"error": {"code": "BadParameter", "message": "decryption failed"}}
                )
            return self._send(200, {"kid": kid, "value": _b64url(out)})
        self._send(400, {"error": {"code": "BadParameter", "message": f"unsupported {op}"}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: StandIn, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.socket = context.wrap_socket(self.socket, server_side=True)


@contextmanager
def running_standin(directory: Path) -> Iterator[tuple[StandIn, Path]]:
    """Start the stand-in; yields (state, certificate path)."""
    cert, key = make_tls_cert(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    state = StandIn()
    server = _Server(state, context)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, cert
    finally:
        server.shutdown()
        server.server_close()


def ecdsa_raw_to_der_ok(public_pem: str, der: bytes, message: bytes) -> bool:
    """Independent check of an ECDSA P-256 signature (the test's own verifier)."""
    from cryptography.exceptions import InvalidSignature

    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
