"""`ceremony push`: send an offline event's proposal and detached signatures to the service.

Standard library HTTP only (the base install has no HTTP client dependency). The service
opens the online event for the proposal, or finds the open one with the same signed bytes,
so pushing again after more admins signed only adds their signatures.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from signer.ceremony import event as offline
from signer.ceremony import transcript
from signer.trust.errors import FormatError

MAX_ANSWER = 1024 * 1024


@dataclass
class PushResult:
    event_id: int
    status: dict[str, Any]
    added: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # key -> the service's reason


def _call(url: str, token: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                 "User-Agent": "cf-sign ceremony push"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read(MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read(MAX_ANSWER) or b"{}")
        except ValueError:
            payload = {}
        return exc.code, payload if isinstance(payload, dict) else {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FormatError(url, "", f"cannot reach the service: {reason}") from None


def push(event: offline.Event, service: str, token: str, *, timeout: float = 60.0) -> PushResult:
    """Open (or find) the online event and add every valid detached signature."""
    if event.role != "root":
        raise FormatError(str(event.directory), "role", "the service runs root events only")
    offline.verify(event)
    base = service.rstrip("/") + "/v1/admin/signing-events"
    proposed = (event.directory / offline.PROPOSED).read_text("utf-8")
    code, answer = _call(base, token, {"proposed": proposed, "holders": dict(event.holders)},
                         timeout)  # fmt: skip
    if code not in (200, 201) or not isinstance(answer.get("id"), int):
        detail = answer.get("detail", f"HTTP {code}")
        raise FormatError(base, "", f"the service refused the proposal: {detail}")
    if answer.get("signed_sha256") != event.signed_sha256:
        raise FormatError(base, "", "the service's event signs other bytes than this event")
    result = PushResult(answer["id"], answer)
    tally = event.tally()
    for key, sig in sorted(tally.valid.items()):
        if key in answer.get("signatures", []):
            continue
        url = f"{base}/{result.event_id}/signatures"
        code, reply = _call(url, token, {"key": key, "signature": sig.signature.to_dict()},
                            timeout)  # fmt: skip
        if code == 200:
            result.added.append(key)
            result.status = reply
        else:
            result.refused[key] = str(reply.get("detail", f"HTTP {code}"))
    transcript.append(
        event.transcript_path, "push", time=offline._now(), service=service,
        online_event=result.event_id, added=result.added, refused=sorted(result.refused),
    )  # fmt: skip
    return result
