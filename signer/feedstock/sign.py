"""Signing artifacts in a feedstock's CI: `<artifact>.sig.json` next to each one.

Each artifact gets the CEP-27 publish statement in a DSSE envelope (securesystemslib's
`dsse.Envelope` and `Signer`, so any KEYREF backend works), and, in CI, a second envelope
with SLSA provenance. Hashing is the whole cost for big artifacts: it starts in worker
threads at once (hashlib releases the GIL) while the key and securesystemslib load.
The private key is only ever held by the Signer: never printed, logged or written.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signer.feedstock.provenance import ci_facts, provenance_statement
from signer.trust.attestation import (
    ARTIFACT_SUFFIXES,
    PAYLOAD_TYPE,
    count_signatures,
    package_name_of,
    parse_sidecar,
    publish_statement,
    sidecar_file_bytes,
    sidecar_name,
    statement_bytes,
)
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import FeedstockDelegation
from signer.trust.feedstocks import normalize_feedstock as normalize_feedstock  # re-export
from signer.trust.state import write_atomic

if TYPE_CHECKING:
    from signer.artifacts import ArtifactInfo
    from signer.keys import KeyHandle

DEFAULT_CHANNEL = "https://conda.anaconda.org/conda-forge"
# conda-build output subdirectories; everything else under a build dir (pkg_cache, work
# and test environments, src_cache) holds packages that were downloaded, not built.
_SUBDIR = re.compile(r"\A(noarch|(linux|osx|win|emscripten|wasi|zos|freebsd)-[a-z0-9_]+)\Z")


@dataclass(frozen=True)
class SignedArtifact:
    artifact: Path
    sidecar: Path
    name: str
    sha256: str
    keyid: str
    provenance: bool


def find_artifacts(build_dir: Path, outputs: Collection[str] | None = None) -> list[Path]:
    """Built packages under a conda-build output dir: `<dir>/<subdir>/*.conda|.tar.bz2`.

    With `outputs` (the recipe variant's output names), only packages of those names: a
    build dir also holds what earlier variants or other recipes left there, which this
    build must not vouch for.
    """
    if not build_dir.is_dir():
        raise FormatError(str(build_dir), "build directory", "not a directory")
    found: list[Path] = []
    for child in sorted(build_dir.iterdir()):
        if not child.is_dir() or not _SUBDIR.match(child.name):
            continue
        for path in sorted(child.iterdir()):
            if not path.is_file() or not path.name.endswith(ARTIFACT_SUFFIXES):
                continue
            if outputs is not None and package_name_of(path.name) not in outputs:
                continue
            found.append(path)
    return found


def gather_artifacts(
    artifacts: Sequence[Path],
    build_dir: Path | None,
    command: str,
    outputs: Collection[str] | None = None,
) -> list[Path]:
    """The artifacts named, then the packages under `build_dir` (of `outputs` only, when
    given: see find_artifacts), for `sign` and `submit`.

    FormatError names the artifact or the build directory (the CLI adds its flags)."""
    paths = list(artifacts)
    for path in paths:
        if not path.is_file():
            why = "a directory, not an artifact" if path.is_dir() else "no such file"
            raise FormatError(str(path), "ARTIFACT", why)
    if build_dir is not None:
        found = find_artifacts(build_dir, outputs)
        if not found:
            what = "no package of the named outputs" if outputs is not None else "no packages"
            raise FormatError(str(build_dir), "build directory", f"{what} in <subdir>/")
        paths += found
    if not paths:
        raise FormatError(command, "ARTIFACT", "give artifacts or a build directory")
    return paths


def _sign_envelope(payload: bytes, key: KeyHandle) -> dict[str, Any]:
    from securesystemslib.dsse import Envelope

    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    envelope.sign(key.signer)
    return dict(envelope.to_dict())


def build_sidecar(
    info: ArtifactInfo,
    feedstock: str,
    key: KeyHandle,
    channel: str,
    facts: Mapping[str, str] | None,
) -> bytes:
    """Sidecar bytes for one artifact, checked against the key before they are returned."""
    envelopes = [
        _sign_envelope(statement_bytes(publish_statement(info.filename, info.sha256, channel)), key)
    ]
    if facts:
        provenance = provenance_statement(info.filename, info.sha256, facts, feedstock)
        envelopes.append(_sign_envelope(statement_bytes(provenance), key))
    data = sidecar_file_bytes({"envelopes": envelopes, "feedstock": feedstock})
    # Self-check: a backend (KMS, token) that returned a bad signature fails here, in CI.
    own = FeedstockDelegation.of([key.public], 1, (info.name,))
    for envelope in parse_sidecar(data, sidecar_name(info.filename)).envelopes:
        if not count_signatures(envelope, own, "signing key").ok:
            raise FormatError(key.keyref, "", "the key's signature does not verify")
    return data


def _check_artifact(info: ArtifactInfo) -> None:
    from signer.artifacts import check_filename_matches_index

    try:
        check_filename_matches_index(info)
    except VerificationError as exc:
        # Refused before signing (exit 2): a signature would vouch for a mislabelled file.
        raise FormatError(info.filename, "info/index.json", exc.reason) from None


def check_delegated(
    info: ArtifactInfo, key: KeyHandle, feedstock: str, delegation: FeedstockDelegation
) -> None:
    if key.keyid not in delegation.keys:
        raise FormatError(
            key.keyref, "key", f"key {key.keyid} is not delegated for feedstock {feedstock}"
        )
    if not delegation.in_scope(info.name):
        raise FormatError(
            info.filename,
            "feedstock",
            f"package {info.name!r} is not in feedstock {feedstock}'s scope",
        )


def sign_artifacts(
    artifacts: Sequence[Path],
    *,
    feedstock: str,
    load_key: Callable[[], KeyHandle],
    channel: str = DEFAULT_CHANNEL,
    out_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    delegation: FeedstockDelegation | None = None,
    jobs: int | None = None,
) -> list[SignedArtifact]:
    """Sign every artifact; nothing is written unless all of them can be signed."""
    from signer.artifacts import read_artifact

    facts = ci_facts(os.environ if env is None else env)
    workers = jobs or min(len(artifacts), os.cpu_count() or 1, 8) or 1
    # While the key loads (imports hold the GIL), hashing threads wait up to a switch
    # interval for the GIL after each chunk; a shorter interval keeps them hashing.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, 0.0005))
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reads: list[Future[ArtifactInfo]] = [pool.submit(read_artifact, p) for p in artifacts]
            key = load_key()  # overlaps with the hashing above
            infos = [future.result() for future in reads]
    finally:
        sys.setswitchinterval(interval)
    planned: list[tuple[Path, bytes, SignedArtifact]] = []
    for path, info in zip(artifacts, infos, strict=True):
        _check_artifact(info)
        if delegation is not None:
            check_delegated(info, key, feedstock, delegation)
        data = build_sidecar(info, feedstock, key, channel, facts)
        target = (out_dir or path.parent) / sidecar_name(path.name)
        planned.append(
            (
                target,
                data,
                SignedArtifact(path, target, info.name, info.sha256, key.keyid, bool(facts)),
            )
        )
    targets = [target for target, _, _ in planned]
    if len(set(targets)) != len(targets):
        raise FormatError(str(out_dir), "output directory", "two artifacts share a file name")
    for target, data, _ in planned:
        write_atomic(target, data)
    return [signed for _, _, signed in planned]
