"""What a verifier says about one artifact, and where its sidecar is found (section 6)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from signer.trust.errors import VerificationError
from signer.trust.jsonload import MAX_SIDECAR, read_file
from signer.trust.layout import attestation_path, sidecar_name

if TYPE_CHECKING:
    from signer.client.session import TrustSource


class ArtifactVerdict(NamedTuple):
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


def failed(artifact: str, exc: VerificationError) -> ArtifactVerdict:
    """A failed verdict; a failure about another document names it in the reason."""
    reason = exc.reason if exc.subject == artifact else f"{exc.subject}: {exc.reason}"
    return ArtifactVerdict(artifact, False, check=exc.check, reason=reason)


def find_sidecar(
    path: Path, subdir: str, source: TrustSource, sig: Path | None
) -> tuple[bytes, str, bool]:
    """(bytes, where, named by the user): `sig`, next to the artifact, else the repository."""
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
    remote = attestation_path(subdir, path.name)
    fetched = source.fetch(remote, MAX_SIDECAR)
    if fetched is None:
        raise VerificationError(
            path.name,
            "attestation",
            f"unsigned: no {beside.name} next to it and no {remote} in the trust repository",
        )
    return fetched, source.describe(remote), False
