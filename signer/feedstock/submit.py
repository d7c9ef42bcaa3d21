"""`cf-sign submit`: post the sidecars of built artifacts to the service, from CI.

The feedstock side of the service, next to `sign` (whose artifact gathering it shares).
Standard library only (urllib): CI installs cf-sign to sign and submit, and needs none of
the service's dependencies for it. Requests are retried with exponential backoff (and the
service's Retry-After) on network errors, 5xx and 429; any other 4xx refuses the batch.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signer.feedstock.sign import gather_artifacts
from signer.trust.errors import FormatError
from signer.trust.jsonload import MAX_SIDECAR, load_json, read_file

MAX_BACKOFF = 30.0
UNSENT = "unsent"  # the service never judged it (unreachable, 5xx, 429 until we gave up)


@dataclass
class Submission:
    artifact: str  # "<subdir>/<file name>"
    feedstock: str
    sha256: str
    sidecar: dict[str, Any]


@dataclass
class SubmitResult:
    artifact: str
    accepted: bool
    status: str
    check: str | None = None
    reason: str | None = None
    keyids: tuple[str, ...] = ()

    def line(self) -> str:
        if self.accepted:
            keys = ",".join(k[:16] for k in self.keyids)
            return f"ACCEPTED {self.artifact}  ({self.status}; key {keys})"
        if self.status == UNSENT:
            return f"UNSENT   {self.artifact}: {self.reason}"
        return f"REFUSED  {self.artifact}: {self.check}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "artifact": self.artifact,
            "accepted": self.accepted,
            "status": self.status,
        }
        if self.accepted:
            out["keyids"] = list(self.keyids)
        else:
            out["check"], out["reason"] = self.check, self.reason
        return out


def collect(
    artifacts: Sequence[Path], build_dir: Path | None, sig_dir: Path | None
) -> list[Submission]:
    """Each artifact's subdir, hash and sidecar (`<artifact>.sig.json`, from `cf-sign sign`)."""
    from signer.artifacts import read_artifact

    paths = gather_artifacts(artifacts, build_dir, "submit")
    out: list[Submission] = []
    for path in paths:
        info = read_artifact(path)
        sig = (sig_dir or path.parent) / f"{path.name}.sig.json"
        if not sig.is_file():
            raise FormatError(str(sig), "", "no sidecar: sign the artifact first (cf-sign sign)")
        sidecar = load_json(read_file(str(sig), MAX_SIDECAR), str(sig), MAX_SIDECAR)
        if not isinstance(sidecar, dict) or not isinstance(sidecar.get("feedstock"), str):
            raise FormatError(str(sig), "feedstock", "not a cf-sign sidecar")
        out.append(
            Submission(f"{info.subdir}/{path.name}", sidecar["feedstock"], info.sha256, sidecar)
        )
    return out


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


def _post(url: str, body: bytes, timeout: float) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "cf-sign submit"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read() or b"{}")
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        if exc.code == 429 or exc.code >= 500:
            retry_after = exc.headers.get("Retry-After")
            wait = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise _Retry(f"HTTP {exc.code}: {payload.get('detail', exc.reason)}", wait) from None
        return exc.code, payload
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Retry(f"network error: {reason}") from None


def post_batch(
    url: str,
    feedstock: str,
    items: Sequence[Submission],
    *,
    retries: int,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SubmitResult]:
    body = json.dumps(
        {
            "feedstock": feedstock,
            "artifacts": {
                s.artifact: {"sha256": s.sha256, "attestation": s.sidecar} for s in items
            },
        }
    ).encode("utf-8")
    reason = ""
    for attempt in range(retries):
        try:
            status, payload = _post(url, body, timeout)
        except _Retry as exc:
            reason = exc.reason
            if attempt + 1 < retries:
                backoff = min(MAX_BACKOFF, 2.0**attempt) * (0.5 + random.random() / 2)
                sleep(min(MAX_BACKOFF, exc.wait) if exc.wait is not None else backoff)
            continue
        if status != 200:
            detail = f"HTTP {status}: {payload.get('detail', 'refused')}"
            check = str(payload.get("error", "request"))
            return [SubmitResult(s.artifact, False, "refused", check, detail) for s in items]
        verdicts = payload.get("artifacts", {})
        results = []
        for s in items:
            v = verdicts.get(s.artifact) or {}
            results.append(
                SubmitResult(
                    s.artifact,
                    bool(v.get("accepted")),
                    str(v.get("status", "refused")),
                    v.get("check") or ("response" if not v else None),
                    v.get("reason") or ("no verdict in the answer" if not v else None),
                    tuple(v.get("keyids") or ()),
                )
            )
        return results
    why = f"POST {url}: gave up after {retries} attempt(s): {reason}"
    return [SubmitResult(s.artifact, False, UNSENT, "service", why) for s in items]


def post_all(
    service: str,
    submissions: Sequence[Submission],
    *,
    retries: int = 5,
    timeout: float = 60.0,
    batch: int = 100,
) -> list[SubmitResult]:
    url = service.rstrip("/") + "/v1/attestations"
    by_feedstock: dict[str, list[Submission]] = {}
    for s in submissions:
        by_feedstock.setdefault(s.feedstock, []).append(s)
    results: list[SubmitResult] = []
    for feedstock, items in by_feedstock.items():
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            results += post_batch(url, feedstock, chunk, retries=retries, timeout=timeout)
    return results
