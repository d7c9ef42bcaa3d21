"""Deprecated: verify through `signer.client.TrustSession.verify_artifact` instead.

Kept, unchanged, only until the branches written against it (the conda plugin) move to the
session; `cf-sign verify` no longer uses it. One artifact end to end (section 4, rules 2-4).

Kept lean on purpose (start-up budget): the trust core, the stdlib fetcher and the artifact
reader only; no securesystemslib, no web or database framework.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from signer.trust.attestation import AttestationResult, parse_sidecar, sidecar_name, verify_sidecar
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import ResolvedDelegation, resolve_feedstock
from signer.trust.jsonload import MAX_SIDECAR, read_file
from signer.trust.metadata import Root
from signer.trust.state import TrustState

if TYPE_CHECKING:
    from signer.fetch import TrustSource


class Verdict(NamedTuple):
    """The outcome for one artifact, as printed (one line) or emitted as JSON."""

    artifact: str
    ok: bool
    feedstock: str | None = None
    keyids: tuple[str, ...] = ()
    package: str | None = None
    sha256: str | None = None
    channel: str | None = None
    sidecar: str | None = None
    check: str | None = None
    reason: str | None = None
    extra: dict[str, Any] | None = None

    def line(self) -> str:
        if self.ok:
            keys = ",".join(self.keyids)
            return f"OK   {self.artifact}  feedstock {self.feedstock}  key {keys}"
        return f"FAIL {self.artifact}: {self.check}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"artifact": self.artifact, "ok": self.ok}
        for name in ("feedstock", "package", "sha256", "channel", "sidecar", "check", "reason"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.ok:
            out["keyids"] = list(self.keyids)
        out.update(self.extra or {})
        return out


def failed(artifact: str, exc: VerificationError) -> Verdict:
    # Failures about a document other than the artifact name it in the reason.
    reason = exc.reason if exc.subject == artifact else f"{exc.subject}: {exc.reason}"
    return Verdict(artifact, False, check=exc.check, reason=reason)


def find_sidecar(
    path: Path, subdir: str, source: TrustSource, sig: Path | None
) -> tuple[bytes, str, bool]:
    """(bytes, where, named by the user): --sig, next to the artifact, else the repository."""
    if sig is not None:
        return read_file(str(sig), MAX_SIDECAR), str(sig), True
    beside = path.with_name(sidecar_name(path.name))
    try:
        with open(beside, "rb") as handle:
            data = handle.read(MAX_SIDECAR + 1)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise VerificationError(
            str(beside), "attestation", f"cannot read: {exc.strerror}"
        ) from None
    else:
        if len(data) > MAX_SIDECAR:
            raise VerificationError(
                str(beside), "size", f"larger than the {MAX_SIDECAR}-byte sidecar cap"
            )
        return data, str(beside), False
    remote = f"attestations/{subdir}/{sidecar_name(path.name)}"
    fetched = source.fetch(remote, MAX_SIDECAR)
    if fetched is None:
        raise VerificationError(
            path.name,
            "attestation",
            f"unsigned: no {beside.name} next to it and no {remote} in the trust repository",
        )
    return fetched, source.describe(remote), False


def _resolve(
    feedstock: str,
    source: TrustSource,
    root: Root,
    state: TrustState | None,
    now: datetime,
    skew: timedelta,
    cache: dict[str, ResolvedDelegation | VerificationError] | None,
) -> ResolvedDelegation:
    # Many artifacts of one feedstock share one index and bin: fetch and check them once.
    known = cache.get(feedstock) if cache is not None else None
    if known is None:
        try:
            known = resolve_feedstock(source.fetch, root, feedstock, now, skew, state)
        except VerificationError as exc:
            known = exc
        if cache is not None:
            cache[feedstock] = known
    if isinstance(known, VerificationError):
        raise known
    return known


def verify_artifact(
    path: Path,
    *,
    source: TrustSource,
    root: Root,
    state: TrustState | None,
    now: datetime,
    skew: timedelta,
    sig: Path | None = None,
    cache: dict[str, ResolvedDelegation | VerificationError] | None = None,
) -> Verdict:
    """Verify one artifact; VerificationError for any failed check, FormatError for bad input."""
    from signer.artifacts import check_filename_matches_index, read_artifact

    try:
        info = read_artifact(path)
    except FormatError as exc:
        # A corrupt or hostile archive did not verify (exit 1); the other artifacts go on.
        detail = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
        raise VerificationError(path.name, "archive", detail) from None
    check_filename_matches_index(info)
    data, where, named = find_sidecar(path, info.subdir, source, sig)
    try:
        hint = parse_sidecar(data, where).feedstock
        resolved = _resolve(hint, source, root, state, now, skew, cache)
        result: AttestationResult = verify_sidecar(
            data,
            info.filename,
            info.sha256,
            resolved.delegation,
            where,
            subdir=info.subdir,
            package_name=info.name,
        )
    except FormatError as exc:
        if named:
            raise  # a file given on the command line that does not parse: exit 2
        detail = f"{exc.field}: {exc.reason}" if exc.field else exc.reason
        raise VerificationError(where, "format", detail) from None
    return Verdict(
        info.filename,
        True,
        feedstock=result.feedstock,
        keyids=result.keyids,
        package=result.package,
        sha256=info.sha256,
        channel=result.channel,
        sidecar=where,
        extra={
            "delegation": {
                "bin": resolved.bin,
                "bin_version": resolved.bin_version,
                "index_version": resolved.index_version,
            },
            "attestations": [e.predicate_type for e in result.envelopes],
        },
    )
