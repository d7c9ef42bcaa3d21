"""Keys by purpose: one KEYREF resolves to the signer a caller needs, or a clear refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer.keys import (
    KeyRequest,
    artifact_signer,
    channel_signer,
    generate_key,
    load_key,
    register_backend,
    root_signer,
)
from signer.keys.handle import SigningKey
from signer.keys.material import new_private_key, secret_text, split_keyref
from signer.keys.registry import backend_for, schemes
from signer.trust.canonical import canonical_bytes
from signer.trust.ed25519 import verify_openpgp, verify_raw
from signer.trust.errors import FormatError
from signer.trust.metadata import Signable
from signer.trust.signing import sign_envelope


def _key(tmp_path: Path, keytype: str = "ed25519") -> str:
    key_path, _, _ = generate_key(f"k-{keytype}", tmp_path, keytype)
    return f"file:{key_path}"


def test_ed25519_file_key_serves_every_purpose(tmp_path: Path) -> None:
    ref = _key(tmp_path)
    message = canonical_bytes({"a": 1})
    raw = channel_signer(ref)
    public = bytes.fromhex(raw.public_key_hex)
    sig = raw.signature(message)
    assert sig.other_headers is None
    assert verify_raw(public, bytes.fromhex(sig.signature), message)
    pgp = root_signer(ref).signature(message)
    assert pgp.other_headers is not None and pgp.see_also is not None
    assert verify_openpgp(
        public, bytes.fromhex(pgp.signature), message, bytes.fromhex(pgp.other_headers)
    )
    # Control: the raw signature is not an OpenPGP-style one and vice versa.
    assert not verify_raw(public, bytes.fromhex(pgp.signature), message)
    artifact = artifact_signer(ref)
    assert artifact.keyid == artifact.public.keyid
    made = artifact.signer.sign(b"payload")
    assert artifact.public.verify(bytes.fromhex(made.signature), b"payload")


def test_ecdsa_key_signs_artifacts_only(tmp_path: Path) -> None:
    ref = _key(tmp_path, "ecdsa-p256")
    artifact = artifact_signer(ref)
    made = artifact.signer.sign(b"payload")
    assert artifact.public.verify(bytes.fromhex(made.signature), b"payload")
    for purpose in (channel_signer, root_signer):
        with pytest.raises(FormatError, match="ed25519") as caught:
            purpose(ref)
        assert ref in str(caught.value)


def test_one_envelope_signer_for_raw_and_openpgp(tmp_path: Path) -> None:
    ref = _key(tmp_path)
    envelope = Signable({"type": "x"}, {}, "doc")
    sign_envelope(envelope, channel_signer(ref))
    (sig,) = envelope.signatures.values()
    assert not sig.is_openpgp
    sign_envelope(envelope, root_signer(ref))  # replaces the same key's signature
    (sig,) = envelope.signatures.values()
    assert sig.is_openpgp


class _Refusing(SigningKey):
    KIND = "a test backend's key"


def test_registered_backend_and_refusals(tmp_path: Path) -> None:
    ref = _key(tmp_path)
    seen: list[KeyRequest] = []

    def load(request: KeyRequest) -> SigningKey:
        seen.append(request)
        inner = load_key(f"file:{request.location}")
        return _Refusing(request.keyref, inner.public)

    register_backend("cfsigntest", load)
    assert "cfsigntest" in schemes() and backend_for("cfsigntest") is load
    path = ref.removeprefix("file:")
    key = load_key(f"cfsigntest:{path}", passphrase_env="X")
    assert seen == [KeyRequest(f"cfsigntest:{path}", "cfsigntest", path, None, "X")]
    for purpose in (key.artifact_signer, key.channel_signer, key.root_signer):
        with pytest.raises(FormatError, match="a test backend's key cannot"):
            purpose()
    with pytest.raises(ValueError):
        register_backend("bad:scheme", load)


def test_keyref_parsing_and_unknown_schemes() -> None:
    assert split_keyref("file:/a/b") == ("file", "/a/b")
    assert split_keyref("env:VAR") == ("env", "VAR")
    for bad in ("nocolon", ":x", "file:", "env:"):
        with pytest.raises(FormatError):
            split_keyref(bad)
    with pytest.raises(FormatError, match="unsupported key scheme"):
        load_key("nosuchscheme:thing")


def test_one_generator_and_ci_secret_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for keytype in ("ed25519", "ecdsa-p256"):
        key = new_private_key(keytype)
        text = secret_text(key)
        assert "\n" not in text
        monkeypatch.setenv("CF_SIGN_TEST_SECRET", text)
        assert artifact_signer("env:CF_SIGN_TEST_SECRET").public.keytype in ("ed25519", "ecdsa")
    with pytest.raises(FormatError, match="key type"):
        new_private_key("rsa")
