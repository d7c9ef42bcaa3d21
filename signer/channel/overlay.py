"""A signed overlay of an upstream channel subdir (section 10): verifiable metadata, upstream's
artifacts.

`refresh_overlay` fetches the upstream repodata with a conditional request (ETag /
Last-Modified kept in the overlay's state), signs the attested records with
`sign_channel` (incremental: its cache makes a run after a small change cost in proportion
to the change, and newly arrived attestations are picked up on every run), and publishes
`channels/<name>/<subdir>/repodata.json` and `.zst` as repodata v2 whose `info.base_url`
points at upstream's subdir, so clients fetch the packages from upstream (the CDN) and the
metadata from here. With a `StagePolicy`, observe-stage unattested records are signed too
(`observed`, not counted in `coverage`). The service runs it per channel; it needs nothing
of the service.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zstandard

from signer.channel.attestations import AttestationStore
from signer.channel.document import info_subdir, split_strict
from signer.channel.gate import Gate
from signer.channel.sign import ChannelSignResult, sign_channel
from signer.channel.stages import StagePolicy
from signer.repodata.document import SplitRepodata
from signer.trust import layout
from signer.trust.errors import FormatError, VerificationError
from signer.trust.signing import MessageSigner
from signer.trust.state import write_atomic

MAX_UPSTREAM = 2 * 1024 * 1024 * 1024 - 1
# What an overlay subdir publishes: the full repodata, and conda's optional reduced one.
DOCUMENTS = ("repodata.json", "current_repodata.json")
_NAME = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")
_SUBDIR = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,63}\Z")


def check_channel_name(name: str, source: str = "channel") -> str:
    if not _NAME.match(name):
        raise FormatError(source, "name", f"{name!r}: lowercase letters, digits, . _ - only")
    return name


def check_subdir(subdir: str, source: str = "channel") -> str:
    if not _SUBDIR.match(subdir):
        raise FormatError(source, "subdir", f"{subdir!r} is not a subdir name")
    return subdir


def base_url_of(upstream: str) -> str:
    """The directory of the upstream repodata URL: where its artifacts are."""
    return upstream.rsplit("/", 1)[0]


@dataclass
class OverlayResult:
    name: str
    subdir: str
    upstream_changed: bool
    published: bool  # the published document changed
    records: int
    signed: int
    unattested: int
    refused: int
    cached: int
    lag_seconds: float  # upstream's change seen -> published (0 when nothing to publish)
    observed: int = 0  # signed without an attestation: their feedstocks are not enforced

    @property
    def coverage(self) -> float:
        """Share of records signed on an attestation (observed ones do not count)."""
        return (self.signed - self.observed) / self.records if self.records else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "subdir": self.subdir, "upstream_changed": self.upstream_changed,
            "published": self.published, "records": self.records, "signed": self.signed,
            "unattested": self.unattested, "refused": self.refused, "cached": self.cached,
            "coverage": round(self.coverage, 6), "lag_seconds": round(self.lag_seconds, 3),
            "observed": self.observed,
        }  # fmt: skip


class _State:
    """The overlay's memory: upstream's validators and last bytes (state_dir/<name>/<subdir>)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.meta: dict[str, Any] = {}
        try:
            self.meta = json.loads((directory / "state.json").read_bytes())
        except (OSError, ValueError):
            self.meta = {}

    @property
    def upstream(self) -> bytes | None:
        try:
            data = (self.directory / "upstream.json").read_bytes()
        except OSError:
            return None
        # Kept bytes are used only if they are the ones whose hash was recorded.
        if hashlib.sha256(data).hexdigest() != self.meta.get("sha256"):
            return None
        return data

    def store(self, data: bytes, etag: str | None, modified: str | None, seen: float) -> None:
        write_atomic(self.directory / "upstream.json", data)
        self.meta = {"sha256": hashlib.sha256(data).hexdigest(), "etag": etag,
                     "last_modified": modified, "seen": seen}  # fmt: skip
        self.save()

    def save(self) -> None:
        write_atomic(self.directory / "state.json", json.dumps(self.meta, sort_keys=True).encode())


def fetch_upstream(
    url: str, state: _State, *, timeout: float = 60.0, max_bytes: int = MAX_UPSTREAM
) -> tuple[bytes | None, str | None, str | None]:
    """(bytes or None when not modified, ETag, Last-Modified); VerificationError on failure."""
    headers = {"User-Agent": "cf-sign-overlay"}
    if state.upstream is not None:
        if state.meta.get("etag"):
            headers["If-None-Match"] = str(state.meta["etag"])
        if state.meta.get("last_modified"):
            headers["If-Modified-Since"] = str(state.meta["last_modified"])
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise VerificationError(url, "size", f"{length} bytes exceeds the cap")
            data: bytes = response.read(max_bytes + 1)
            etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None, state.meta.get("etag"), state.meta.get("last_modified")
        raise VerificationError(url, "fetch", f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise VerificationError(url, "fetch", f"network error: {exc}") from None
    if len(data) > max_bytes:
        raise VerificationError(url, "size", "exceeds the cap")
    if url.endswith(".zst"):
        out = bytearray()
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(data)
            while len(out) <= max_bytes and (block := reader.read(16 * 1024 * 1024)):
                out += block
        except zstandard.ZstdError as exc:
            raise VerificationError(url, "format", f"not zstd: {exc}") from None
        if len(out) > max_bytes:
            raise VerificationError(url, "size", "inflates past the cap")
        data = bytes(out)
    return data, etag, modified


def write_document(target: Path, body: bytes) -> None:
    """A published overlay document: the `.zst` beside it first, the plain one last (a
    client that sees the new repodata.json finds its compressed twin already there)."""
    write_atomic(target.with_name(target.name + ".zst"),
                 zstandard.ZstdCompressor(level=10).compress(body))  # fmt: skip
    write_atomic(target, body)


def _as_v2(split: SplitRepodata, base_url: str) -> SplitRepodata:
    info = orjson.loads(bytes(split.top["info"])) if "info" in split.top else {}
    info = dict(info) if isinstance(info, dict) else {}
    info["base_url"] = base_url
    top = dict(split.top)
    top["info"] = orjson.dumps(info, option=orjson.OPT_SORT_KEYS)  # type: ignore[assignment]
    top["repodata_version"] = b"2"  # type: ignore[assignment]
    return SplitRepodata(split.source, top, split.records, split.signatures)


def refresh_overlay(
    name: str,
    subdir: str,
    upstream: str,
    *,
    gate: Gate,
    store: AttestationStore,
    keys: list[MessageSigner],
    mamba_key: MessageSigner | None,
    publish_root: Path,
    state_dir: Path,
    timeout: float = 60.0,
    jobs: int = 1,
    policy: StagePolicy | None = None,
    document: str = "repodata.json",
) -> OverlayResult:
    """Fetch (conditionally), sign what is attested, publish when the document changed.

    `document`: the file published (`repodata.json`, or `current_repodata.json` from an
    upstream URL of its own); each has its own state and cache.
    """
    check_channel_name(name)
    check_subdir(subdir)
    if document not in DOCUMENTS:
        raise FormatError("overlay", "document", f"{document!r}: one of {', '.join(DOCUMENTS)}")
    place = state_dir / name / subdir
    if document != "repodata.json":
        place = place / document.removesuffix(".json")
    state = _State(place)
    data, etag, modified = fetch_upstream(upstream, state, timeout=timeout)
    changed = data is not None
    if data is not None:
        split = split_strict(data, upstream)  # hostile upstream: FormatError, nothing published
        state.store(data, etag, modified, time.time())
    else:
        kept = state.upstream
        if kept is None:
            raise VerificationError(upstream, "fetch", "not modified, but no copy is kept")
        split = split_strict(kept, upstream)
    found = info_subdir(split)
    if found != subdir:  # never publish one subdir's records as another's
        raise FormatError(upstream, "info.subdir", f"{found!r}, but this is the {subdir} overlay")
    result: ChannelSignResult = sign_channel(
        split, gate, store, keys, mamba_key, unattested="unsigned", jobs=jobs,
        cache_dir=place, policy=policy,
    )  # fmt: skip
    body = b"".join(_as_v2(split, base_url_of(upstream)).to_pieces(result.signatures))
    target = publish_root / layout.channel_repodata_path(name, subdir, document)
    try:
        published = target.read_bytes() != body
    except OSError:
        published = True
    lag = 0.0
    if published:
        write_document(target, body)
        lag = max(0.0, time.time() - float(state.meta.get("seen", time.time())))
    return OverlayResult(
        name, subdir, changed, published, result.records, result.signed,
        len(result.unattested), len(result.refused), result.cached, lag,
        len(result.observed or ()),
    )  # fmt: skip
