"""Artifact attestations: DSSE envelopes holding in-toto statements (CEP 27), verified.

Written without securesystemslib on purpose: importing `securesystemslib.signer` costs about
0.4 s, several times the whole start-up budget of `cf-sign verify`. The signing side uses
securesystemslib's `dsse.Envelope`; both produce and read the same JSON, and PAE is DSSE's:
``"DSSEv1" SP len(type) SP type SP len(payload) SP payload``.

Sidecar (`<artifact>.sig.json`): ``{"feedstock": hint, "envelopes": [publish, *optional]}``.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from signer.trust.errors import FormatError, ThresholdError, VerificationError
from signer.trust.feedstocks import FeedstockDelegation, check_name
from signer.trust.jsonload import MAX_SIDECAR, load_json
from signer.trust.layout import SIDECAR_SUFFIX as SIDECAR_SUFFIX  # re-exported (its home)
from signer.trust.layout import sidecar_name as sidecar_name  # re-exported (its home)
from signer.trust.metadata import is_hex64, require_exact_keys, require_str
from signer.trust.threshold import ThresholdResult, tally

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PUBLISH_PREDICATE = "https://schemas.conda.org/attestations-publish-1.schema.json"

MAX_ENVELOPES = 16
MAX_SIGNATURES = 64  # per envelope: bounds the work an oversized sidecar can cause
ARTIFACT_SUFFIXES = (".conda", ".tar.bz2")

_CHANNEL = re.compile(r"\Ahttps?://[!-~]+\Z")
# conda subdirs: `noarch`, `linux-64`, `osx-arm64`, `emscripten-wasm32`, ...
_SUBDIR = re.compile(r"\A[a-z0-9]+(-[a-z0-9_]+)?\Z")
SUBDIR_ANNOTATION = "subdir"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what every signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def package_name_of(filename: str) -> str | None:
    """`name` of `name-version-build.conda|.tar.bz2`, or None if the name has no such form."""
    for suffix in ARTIFACT_SUFFIXES:
        if filename.endswith(suffix):
            parts = filename[: -len(suffix)].rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return parts[0]
    return None


def check_channel(channel: object, source: str, where: str) -> str:
    if not isinstance(channel, str) or not _CHANNEL.match(channel) or channel.endswith("/"):
        raise FormatError(source, where, "expected an http(s) channel URL without trailing slash")
    return channel


# --------------------------------------------------------------------------- statements


def check_subdir(value: object, source: str, where: str) -> str:
    if not isinstance(value, str) or not _SUBDIR.match(value):
        raise FormatError(source, where, "expected a conda subdir such as linux-64 or noarch")
    return value


def statement(
    subject_name: str,
    sha256: str,
    predicate_type: str,
    predicate: Mapping[str, Any],
    subdir: str | None = None,
) -> dict[str, Any]:
    """An in-toto Statement v1 about one file (its subdir as a subject annotation)."""
    subject: dict[str, Any] = {"digest": {"sha256": sha256}, "name": subject_name}
    if subdir is not None:
        subject["annotations"] = {SUBDIR_ANNOTATION: check_subdir(subdir, "statement", "subdir")}
    return {
        "_type": STATEMENT_TYPE,
        "predicate": dict(predicate),
        "predicateType": predicate_type,
        "subject": [subject],
    }


def publish_statement(
    artifact_filename: str, sha256: str, channel: str, subdir: str
) -> dict[str, Any]:
    """The CEP-27 publish attestation: this file, with this hash, in this subdir, for this
    channel. The subdir is an in-toto subject annotation: the predicate stays CEP 27's."""
    return statement(
        artifact_filename, sha256, PUBLISH_PREDICATE, {"targetChannel": channel}, subdir
    )


def statement_bytes(obj: Mapping[str, Any]) -> bytes:
    """Payload bytes: compact, sorted JSON (any JSON verifies; this one is reproducible)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Statement(NamedTuple):
    subject_name: str
    sha256: str
    predicate_type: str
    predicate: Mapping[str, Any]
    subdir: str | None = None  # the subject's subdir annotation (required when publishing)


def parse_statement(payload: bytes, source: str, where: str, *, publish: bool) -> Statement:
    """Exact Statement v1 shape, one subject with a sha256 digest; CEP 27 when `publish`."""
    obj = load_json(payload, f"{source}: {where}.payload", MAX_SIDECAR)
    data = require_exact_keys(
        obj, {"_type", "subject", "predicateType", "predicate"}, source, f"{where}.statement"
    )
    if data["_type"] != STATEMENT_TYPE:
        raise FormatError(source, f"{where}.statement._type", f"expected {STATEMENT_TYPE!r}")
    subjects = data["subject"]
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise FormatError(source, f"{where}.statement.subject", "expected exactly one subject")
    subject = require_exact_keys(
        subjects[0], {"name", "digest"}, source, f"{where}.statement.subject[0]", {"annotations"}
    )
    name = require_str(subject, "name", source, f"{where}.statement.subject[0]")
    subdir: str | None = None
    if "annotations" in subject:
        notes = require_exact_keys(
            subject["annotations"],
            {SUBDIR_ANNOTATION},
            source,
            f"{where}.statement.subject[0].annotations",
        )
        subdir = check_subdir(
            notes[SUBDIR_ANNOTATION], source, f"{where}.statement.subject[0].annotations.subdir"
        )
    digest = require_exact_keys(
        subject["digest"], {"sha256"}, source, f"{where}.statement.subject[0].digest"
    )
    sha256 = digest["sha256"]
    if not is_hex64(sha256):
        raise FormatError(
            source,
            f"{where}.statement.subject[0].digest.sha256",
            "expected 64 lowercase hex digits",
        )
    predicate_type = require_str(data, "predicateType", source, f"{where}.statement")
    predicate = data["predicate"]
    if publish:
        if predicate_type != PUBLISH_PREDICATE:
            raise FormatError(
                source,
                f"{where}.statement.predicateType",
                f"the first envelope must be {PUBLISH_PREDICATE}",
            )
        fields = require_exact_keys(
            predicate, {"targetChannel"}, source, f"{where}.statement.predicate"
        )
        check_channel(fields["targetChannel"], source, f"{where}.statement.predicate.targetChannel")
        if subdir is None:
            raise FormatError(
                source,
                f"{where}.statement.subject[0].annotations.subdir",
                "missing: the publish attestation must name the artifact's subdir",
            )
    elif not isinstance(predicate, dict):
        raise FormatError(source, f"{where}.statement.predicate", "expected an object")
    return Statement(name, sha256, predicate_type, predicate, subdir)


# --------------------------------------------------------------------------- envelopes


class DsseEnvelope(NamedTuple):
    payload: bytes
    payload_type: str
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, signature), in file order

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)


def _b64(value: object, source: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(source, where, "expected a base64 string")
    try:
        # binascii directly: the `base64` module costs more to import than this whole check.
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise FormatError(source, where, "invalid base64") from None


def parse_envelope(obj: object, source: str, where: str) -> DsseEnvelope:
    data = require_exact_keys(obj, {"payload", "payloadType", "signatures"}, source, where)
    payload = _b64(data["payload"], source, f"{where}.payload")
    payload_type = require_str(data, "payloadType", source, where)
    raw = data["signatures"]
    if not isinstance(raw, list) or not raw:
        raise FormatError(source, f"{where}.signatures", "expected a non-empty array")
    if len(raw) > MAX_SIGNATURES:
        raise FormatError(source, f"{where}.signatures", f"more than {MAX_SIGNATURES} signatures")
    sigs: list[tuple[str, bytes]] = []
    for i, entry in enumerate(raw):
        sig = require_exact_keys(entry, {"keyid", "sig"}, source, f"{where}.signatures[{i}]")
        keyid = sig["keyid"]
        if not is_hex64(keyid):
            raise FormatError(source, f"{where}.signatures[{i}].keyid", "expected a 64-hex keyid")
        sigs.append((keyid, _b64(sig["sig"], source, f"{where}.signatures[{i}].sig")))
    return DsseEnvelope(payload, payload_type, tuple(sigs))


class Sidecar(NamedTuple):
    feedstock: str  # unsigned hint: which delegation to check against
    envelopes: tuple[DsseEnvelope, ...]


def sidecar_file_bytes(sidecar: Mapping[str, Any]) -> bytes:
    """A sidecar's file form, as `cf-sign sign` writes it and the service serves it."""
    return (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse_sidecar(data: bytes, source: str) -> Sidecar:
    """Strict sidecar parsing under the 1 MiB cap (FormatError on any deviation)."""
    obj = load_json(data, source, MAX_SIDECAR)
    top = require_exact_keys(obj, {"feedstock", "envelopes"}, source, "")
    feedstock = check_name(top["feedstock"], source, "feedstock")
    raw = top["envelopes"]
    if not isinstance(raw, list) or not raw:
        raise FormatError(source, "envelopes", "expected a non-empty array of DSSE envelopes")
    if len(raw) > MAX_ENVELOPES:
        raise FormatError(source, "envelopes", f"more than {MAX_ENVELOPES} envelopes")
    envelopes = tuple(parse_envelope(e, source, f"envelopes[{i}]") for i, e in enumerate(raw))
    return Sidecar(feedstock, envelopes)


def count_signatures(
    envelope: DsseEnvelope, delegation: FeedstockDelegation, role: str
) -> ThresholdResult:
    """Valid signatures over the envelope's PAE by the delegation's keys, each key once."""
    message = envelope.pae()

    def check(keyid: str, signature: bytes) -> str | None:
        return None if delegation.keys[keyid].verify(signature, message) else "bad signature"

    return tally(role, delegation.threshold, sorted(delegation.keys), envelope.signatures, check)


# --------------------------------------------------------------------------- verification


class EnvelopeCheck(NamedTuple):
    predicate_type: str
    predicate: Mapping[str, Any]
    signatures: ThresholdResult


class AttestationResult(NamedTuple):
    """A verified sidecar: the publish envelope first, then any further ones."""

    feedstock: str
    artifact: str
    sha256: str
    package: str
    channel: str
    envelopes: tuple[EnvelopeCheck, ...]
    subdir: str = ""  # the publish statement's subdir (checked against the expected one)

    @property
    def signatures(self) -> ThresholdResult:
        return self.envelopes[0].signatures

    @property
    def keyids(self) -> tuple[str, ...]:
        """Keys whose signature on the publish attestation verified."""
        return self.signatures.signed

    @property
    def ok(self) -> bool:
        return all(e.signatures.ok for e in self.envelopes)


def verify_sidecar(
    sidecar_bytes: bytes,
    artifact_filename: str,
    artifact_sha256: str,
    delegation: FeedstockDelegation,
    source: str,
    *,
    subdir: str,
    package_name: str | None = None,
    parsed: Sidecar | None = None,
) -> AttestationResult:
    """Rule 4 for one artifact, given the verified delegation of the sidecar's feedstock.

    `subdir` is where the artifact is (its `info/index.json` subdir, or the path it is
    served or submitted under): the publish statement must name the same one, so a sidecar
    cannot stand for a same-named file of another subdir.

    `parsed` is `parse_sidecar(sidecar_bytes, source)` when the caller already has it (the
    session parses once for the hint): the bytes are then not parsed again.

    `artifact_filename` is the base name (the statement's subject); `package_name` defaults
    to the name part of it (callers that read `info/index.json` pass the name found there,
    after checking it agrees with the file name). Raises FormatError when the sidecar does
    not parse and VerificationError (check: subject, digest, signature, scope) otherwise.
    """
    sidecar = parsed if parsed is not None else parse_sidecar(sidecar_bytes, source)
    subject = artifact_filename
    name = package_name if package_name is not None else package_name_of(artifact_filename)
    if name is None:
        raise VerificationError(subject, "file-name", "not name-version-build.conda|.tar.bz2")
    checks: list[EnvelopeCheck] = []
    channel = ""
    for i, envelope in enumerate(sidecar.envelopes):
        where = f"envelopes[{i}]"
        if envelope.payload_type != PAYLOAD_TYPE:
            raise FormatError(source, f"{where}.payloadType", f"expected {PAYLOAD_TYPE!r}")
        stmt = parse_statement(envelope.payload, source, where, publish=i == 0)
        if stmt.subject_name != artifact_filename:
            raise VerificationError(
                subject,
                "subject",
                f"{source} attests {stmt.subject_name!r}, not this file (sidecar moved?)",
            )
        if stmt.sha256 != artifact_sha256:
            raise VerificationError(
                subject,
                "digest",
                f"sha256 {artifact_sha256[:16]}… differs from the attested "
                f"{stmt.sha256[:16]}… (artifact modified?)",
            )
        if stmt.subdir is not None and stmt.subdir != subdir:
            raise VerificationError(
                subject,
                "subdir",
                f"{source} attests the file in {stmt.subdir}, not in {subdir}",
            )
        role = f"feedstock {sidecar.feedstock}"
        result = count_signatures(envelope, delegation, role)
        if not result.ok:
            what = "publish attestation" if i == 0 else f"envelope {i} ({stmt.predicate_type})"
            raise ThresholdError(subject, f"{what}: {result.describe()}")
        if i == 0:
            channel = str(stmt.predicate["targetChannel"])
        checks.append(EnvelopeCheck(stmt.predicate_type, stmt.predicate, result))
    if not delegation.in_scope(name):
        raise VerificationError(
            subject,
            "scope",
            f"package {name!r} is not among feedstock {sidecar.feedstock}'s names "
            f"({delegation.describe_scope()})",
        )
    return AttestationResult(
        sidecar.feedstock, artifact_filename, artifact_sha256, name, channel, tuple(checks), subdir
    )
