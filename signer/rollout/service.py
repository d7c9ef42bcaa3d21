"""The trust service's admin API, as the roll-out uses it (bearer token, JSON)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from signer.rollout.http import ApiError, JsonClient


@dataclass(frozen=True)
class Registered:
    name: str
    active_keys: tuple[str, ...]
    stage: str | None = None


def _registered(view: Any) -> Registered:
    keys = tuple(
        k["keyid"] for k in view.get("keys", []) if isinstance(k, dict) and not k.get("revoked_at")
    )
    return Registered(str(view["name"]), keys, view.get("stage"))


class ServiceAdmin:
    def __init__(self, client: JsonClient) -> None:
        self.client = client

    def feedstocks(self, page: int = 1000) -> Iterator[Registered]:
        after = ""
        while True:
            query = urllib.parse.urlencode({"after": after, "limit": page})
            body = self.client.request("GET", f"/v1/admin/feedstocks?{query}").body
            for view in body.get("feedstocks", []):
                yield _registered(view)
            after = body.get("next_after") or ""
            if not after:
                return

    def get(self, name: str) -> Registered | None:
        try:
            body = self.client.request("GET", f"/v1/admin/feedstocks/{urllib.parse.quote(name)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _registered(body.body)

    def register(
        self,
        name: str,
        outputs: Sequence[str],
        globs: Sequence[str],
        key: dict[str, Any],
        keyid: str,
    ) -> None:
        """Register `name` with its first key; already there with this key is fine."""
        body = {"name": name, "outputs": list(outputs), "output_globs": list(globs),
                "keys": [key]}  # fmt: skip
        try:
            self.client.request("POST", "/v1/admin/feedstocks", body, ok=(201,))
        except ApiError as exc:
            if exc.status != 409:
                raise
            current = self.get(name)
            if current is not None and keyid in current.active_keys:
                return  # an earlier, interrupted run registered it
            if current is not None and current.active_keys:
                raise ApiError(
                    f"service {name}", 409, "already has a key (rotation replaces keys)"
                ) from None
            self.add_key(name, key, keyid)  # registered without keys (imported outputs)

    def add_key(self, name: str, key: dict[str, Any], keyid: str) -> None:
        try:
            self.client.request(
                "POST", f"/v1/admin/feedstocks/{urllib.parse.quote(name)}/keys", {"key": key},
                ok=(201,),
            )  # fmt: skip
        except ApiError as exc:
            if exc.status != 409:
                raise
            current = self.get(name)
            if current is None or keyid not in current.active_keys:
                raise

    def revoke_key(self, name: str, keyid: str) -> None:
        try:
            self.client.request(
                "DELETE", f"/v1/admin/feedstocks/{urllib.parse.quote(name)}/keys/{keyid}"
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    def set_stage(self, name: str, stage: str) -> dict[str, Any]:
        response = self.client.request(
            "PUT", f"/v1/admin/feedstocks/{urllib.parse.quote(name)}/stage", {"stage": stage}
        )
        return dict(response.body or {})
