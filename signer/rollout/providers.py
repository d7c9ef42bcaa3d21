"""The CI providers' secret stores, through their REST APIs (the requests conda-smithy makes).

GitHub Actions: `GET /repos/{owner}/{repo}/actions/secrets/public-key` gives the repository's
X25519 key (`key_id`, base64 `key`); the value is sealed with libsodium's sealed box
(PyNaCl's `SealedBox`) and sent as `PUT /repos/{owner}/{repo}/actions/secrets/{name}`
`{"encrypted_value", "key_id"}` (201 created, 204 updated). Only GitHub can open it.

Azure DevOps: the feedstock's build definition (`GET
{org}/{project}/_apis/build/definitions?name=<name>-feedstock`, then by id) is PUT back with
`variables[NAME] = {"value", "isSecret": true, "allowOverride": false}` and its current
`revision` (the API refuses a stale one). Azure never returns a secret's value; a
non-secret companion variable records which key the secret holds, so that an interrupted
run can tell whether its write landed.
"""

from __future__ import annotations

import base64
import urllib.parse
from datetime import datetime
from typing import Any

from signer.rollout.http import ApiError, JsonClient

SECRET_NAME = "CF_SIGN_KEY"
KEYID_VARIABLE = "CF_SIGN_KEY_ID"
GITHUB_ORG = "conda-forge"
AZURE_ORG = "conda-forge"
AZURE_PROJECT = "feedstock-builds"
AZURE_API = "api-version=7.1"


def seal(public_key_b64: str, value: bytes) -> str:
    from nacl.public import PublicKey, SealedBox

    key = PublicKey(base64.b64decode(public_key_b64, validate=True))
    return base64.b64encode(SealedBox(key).encrypt(value)).decode("ascii")


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class GitHubSecrets:
    def __init__(self, client: JsonClient, owner: str = GITHUB_ORG) -> None:
        self.client = client
        self.owner = owner

    def _repo(self, feedstock: str) -> str:
        return f"/repos/{self.owner}/{urllib.parse.quote(feedstock)}-feedstock/actions/secrets"

    def put(self, feedstock: str, value: bytes) -> None:
        repo = self._repo(feedstock)
        got = self.client.request("GET", f"{repo}/public-key").body
        if not isinstance(got, dict) or not isinstance(got.get("key"), str):
            raise ApiError(f"github {repo}/public-key", 200, "no public key in the answer")
        try:
            sealed = seal(got["key"], value)
        except (ValueError, TypeError) as exc:
            raise ApiError(f"github {repo}/public-key", 200, f"unusable key: {exc}") from None
        self.client.request(
            "PUT",
            f"{repo}/{SECRET_NAME}",
            {"encrypted_value": sealed, "key_id": got.get("key_id")},
            ok=(201, 204),
        )

    def updated_since(self, feedstock: str, since: datetime) -> bool:
        """The secret exists and was written at or after `since` (an interrupted write)."""
        try:
            got = self.client.request("GET", f"{self._repo(feedstock)}/{SECRET_NAME}").body
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        when = _when(got.get("updated_at")) if isinstance(got, dict) else None
        return when is not None and when >= since.replace(microsecond=0)


class AzureVariables:
    def __init__(
        self, client: JsonClient, org: str = AZURE_ORG, project: str = AZURE_PROJECT
    ) -> None:
        self.client = client
        self.base = f"/{urllib.parse.quote(org)}/{urllib.parse.quote(project)}/_apis/build"

    def _definition(self, feedstock: str) -> dict[str, Any]:
        name = urllib.parse.quote(f"{feedstock}-feedstock")
        found = self.client.request("GET", f"{self.base}/definitions?name={name}&{AZURE_API}")
        body = found.body
        values = body.get("value") if isinstance(body, dict) else None
        if not isinstance(values, list) or len(values) != 1 or "id" not in values[0]:
            raise ApiError(f"azure definition {feedstock}-feedstock", 404, "no such pipeline")
        got = self.client.request(
            "GET", f"{self.base}/definitions/{int(values[0]['id'])}?{AZURE_API}"
        )
        if not isinstance(got.body, dict) or "revision" not in got.body:
            raise ApiError(f"azure definition {feedstock}-feedstock", 200, "not a definition")
        return got.body

    def put(self, feedstock: str, value: str, keyid: str) -> None:
        for attempt in range(3):
            definition = self._definition(feedstock)
            variables = dict(definition.get("variables") or {})
            variables[SECRET_NAME] = {"value": value, "isSecret": True, "allowOverride": False}
            variables[KEYID_VARIABLE] = {"value": keyid, "isSecret": False,
                                         "allowOverride": False}  # fmt: skip
            definition["variables"] = variables
            try:
                self.client.request(
                    "PUT", f"{self.base}/definitions/{int(definition['id'])}?{AZURE_API}",
                    definition,
                )  # fmt: skip
                return
            except ApiError as exc:
                # 409: someone saved the definition in between (a stale revision): re-read.
                if exc.status != 409 or attempt == 2:
                    raise

    def holds(self, feedstock: str, keyid: str) -> bool:
        """The secret is set and its companion names `keyid` (an interrupted write landed)."""
        variables = self._definition(feedstock).get("variables") or {}
        secret, marker = variables.get(SECRET_NAME), variables.get(KEYID_VARIABLE)
        return (
            isinstance(secret, dict)
            and secret.get("isSecret") is True
            and isinstance(marker, dict)
            and marker.get("value") == keyid
        )
