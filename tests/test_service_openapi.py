"""The published OpenAPI schema matches the behaviour.

Every operation the service has is in the schema; every answer a battery of requests gets
has a status the schema declares for that operation, and a JSON body valid against the
schema declared for it (checked by a small validator for the subset FastAPI emits).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from test_service_support import Server, World, build_artifacts

from signer.artifacts import read_artifact
from signer.feedstock.sign import build_sidecar
from signer.keys import KeyHandle, resolve_keyref

pytest_plugins = ("test_service_support",)  # fixtures: served

EXPECTED = {
    ("get", "/trust/{path}"),
    ("head", "/trust/{path}"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("post", "/v1/attestations"),
    ("get", "/v1/admin/feedstocks"),
    ("post", "/v1/admin/feedstocks"),
    ("get", "/v1/admin/feedstocks/{name}"),
    ("patch", "/v1/admin/feedstocks/{name}"),
    ("delete", "/v1/admin/feedstocks/{name}"),
    ("post", "/v1/admin/feedstocks/{name}/keys"),
    ("delete", "/v1/admin/feedstocks/{name}/keys/{keyid}"),
    ("post", "/v1/admin/outputs/import"),
    ("post", "/v1/admin/attestations/{subdir}/{filename}/withdraw"),
    ("get", "/v1/admin/audit"),
    # Roll-out stages (signer/service/routers/rollout.py)
    ("put", "/v1/admin/feedstocks/{name}/stage"),
    ("get", "/v1/stages/{name}"),
    ("get", "/v1/stages"),
    ("get", "/v1/admin/rollout/coverage"),
    ("post", "/v1/admin/refresh"),
    ("post", "/v1/admin/roots"),
    ("put", "/v1/admin/pkg-mgr-keys"),
    ("post", "/v1/admin/signing-events"),
    ("get", "/v1/admin/signing-events/{event_id}"),
    ("post", "/v1/admin/signing-events/{event_id}/signatures"),
    ("post", "/v1/admin/signing-events/{event_id}/publish"),
    # Signed overlay channels (signer/service/routers/channels.py)
    ("get", "/trust/channels/{channel}/{subdir}/{filename}"),
    ("head", "/trust/channels/{channel}/{subdir}/{filename}"),
    ("get", "/v1/admin/channels"),
    ("post", "/v1/admin/channels"),
    ("get", "/v1/admin/channels/{name}"),
    ("delete", "/v1/admin/channels/{name}"),
    ("post", "/v1/admin/channels/{name}/refresh"),
}


class Schema:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            node = self.doc["components"]["schemas"][name]
        return node

    def validate(self, value: Any, node: dict[str, Any], where: str = "$") -> None:
        node = self.resolve(node)
        if "anyOf" in node:
            errors = []
            for option in node["anyOf"]:
                try:
                    self.validate(value, option, where)
                    return
                except AssertionError as exc:
                    errors.append(str(exc))
            raise AssertionError(f"{where}: matches no anyOf option: {errors}")
        if "enum" in node:
            assert value in node["enum"], f"{where}: {value!r} not in {node['enum']}"
        kind = node.get("type")
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
        }
        if kind is not None:
            assert checks[kind](value), f"{where}: {value!r:.80} is not {kind}"
        if isinstance(value, dict):
            for key in node.get("required", []):
                assert key in value, f"{where}: missing required {key!r}"
            props = node.get("properties", {})
            extra = node.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    self.validate(item, props[key], f"{where}.{key}")
                elif isinstance(extra, dict):
                    self.validate(item, extra, f"{where}.{key}")
        if isinstance(value, list) and "items" in node:
            for i, item in enumerate(value):
                self.validate(item, node["items"], f"{where}[{i}]")

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        for template, ops in self.doc["paths"].items():
            pattern = (
                "^"
                + re.sub(r"\{(\w+)\}", lambda m: "(.+)" if m[1] == "path" else "([^/]+)", template)
                + "$"
            )
            if re.match(pattern, path.split("?")[0]) and method in ops:
                return template, ops[method]
        raise AssertionError(f"{method.upper()} {path} is not in the OpenAPI schema")


def test_schema_lists_every_operation(served: tuple[World, Server]) -> None:
    _, server = served
    doc = httpx.get(f"{server.url}/openapi.json").json()
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert found == EXPECTED
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path.startswith("/v1/admin/"):
                assert op.get("security") == [{"HTTPBearer": []}], (method, path)
                assert {"401", "403"} <= set(op["responses"]), (method, path)
    assert {"404", "413", "422", "429"} <= set(
        doc["paths"]["/v1/attestations"]["post"]["responses"]
    )
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert httpx.get(f"{server.url}/docs").status_code == 200


def _battery(
    world: World, server: Server, tmp_path: Path
) -> list[tuple[str, str, Any, str | None]]:
    _, pub = world.feedstock_key("oa")
    _, pub2 = world.feedstock_key("oa-second")
    artifact = build_artifacts(tmp_path, [("oa", "noarch")])[0]
    info = read_artifact(artifact)
    admin, bot = world.admin_token, world.registrar_token
    calls: list[tuple[str, str, Any, str | None]] = [
        ("get", "/healthz", None, None),
        ("get", "/trust/1.root.json", None, None),
        ("head", "/trust/key_mgr.json", None, None),
        ("get", "/trust/missing.json", None, None),
        ("post", "/v1/admin/feedstocks", {"name": "oa", "outputs": ["oa"], "keys": [pub]}, bot),
        ("post", "/v1/admin/feedstocks", {"name": "oa"}, bot),
        ("post", "/v1/admin/feedstocks", {"name": 5}, bot),
        ("get", "/v1/admin/feedstocks?limit=2", None, bot),
        ("get", "/v1/admin/feedstocks/oa", None, bot),
        ("post", "/v1/admin/feedstocks/oa/keys", {"key": pub2}, bot),
        ("post", "/v1/admin/feedstocks/oa/keys", {"key": {"keytype": "rsa"}}, bot),
        ("get", "/v1/admin/feedstocks/none", None, None),
        ("patch", "/v1/admin/feedstocks/oa", {"add_globs": ["oa-*"]}, bot),
        ("patch", "/v1/admin/feedstocks/oa", {"remove_globs": ["oa-*"]}, bot),
        ("post", "/v1/admin/outputs/import", {"outputs": {"oa-extra": ["oa", "oa2"]}}, bot),
        ("put", "/v1/admin/feedstocks/oa/stage", {"stage": "observe"}, admin),
        ("put", "/v1/admin/feedstocks/oa/stage", {"stage": "strict"}, admin),
        ("put", "/v1/admin/feedstocks/oa/stage", {"stage": "enforce"}, bot),
        ("get", "/v1/stages/oa", None, None),
        ("get", "/v1/stages?limit=2", None, None),
        ("get", "/v1/admin/rollout/coverage?days=7", None, bot),
        ("get", "/v1/admin/audit?limit=3", None, admin),
        ("get", "/v1/admin/audit", None, bot),
        ("post", "/v1/admin/refresh", {"within_days": 1}, admin),
        ("post", "/v1/admin/refresh", b"`\x80 not json", admin),  # found by schemathesis
        ("get", "/v1/admin/audit?after=" + "9" * 40, None, admin),  # likewise (was a 500)
        ("post", "/v1/admin/roots", {"root": world.repo.root_file.read_text()}, admin),
        ("put", "/v1/admin/pkg-mgr-keys", {"keyrefs": [world.repo.keyref("pkg_mgr")]}, admin),
        ("post", "/v1/admin/signing-events", {"proposed": world.repo.root_file.read_text()},
         admin),
        ("get", "/v1/admin/signing-events/999", None, admin),
        ("post", "/v1/admin/signing-events/999/signatures",
         {"key": "ab" * 32, "signature": {"signature": "00"}}, admin),
        ("post", "/v1/admin/signing-events/999/publish", None, admin),
        ("post", "/v1/admin/channels", {"name": "oc", "subdirs": [
            {"subdir": "noarch", "upstream": "ftp://x/noarch/repodata.json"}]}, admin),
        ("post", "/v1/admin/channels", {"name": "oc", "subdirs": [
            {"subdir": "noarch", "upstream": "http://127.0.0.1:9/noarch/repodata.json"}]}, admin),
        ("post", "/v1/admin/channels", {"name": "oc", "subdirs": [
            {"subdir": "noarch", "upstream": "http://127.0.0.1:9/noarch/repodata.json"}]}, admin),
        ("get", "/v1/admin/channels", None, admin),
        ("get", "/v1/admin/channels/oc", None, admin),
        ("get", "/v1/admin/channels/none", None, admin),
        ("post", "/v1/admin/channels/oc/refresh", None, admin),
        ("get", "/trust/channels/oc/noarch/repodata.json", None, None),
        ("head", "/trust/channels/oc/noarch/repodata.json", None, None),
        ("get", "/trust/channels/oc/noarch/other.json", None, None),
        ("delete", "/v1/admin/channels/oc", None, admin),
        ("post", "/v1/attestations", {"feedstock": "none", "artifacts": {
            "a": {"sha256": "", "attestation": {}}}}, None),
        ("post", "/v1/attestations", {"feedstock": "oa"}, None),
    ]  # fmt: skip
    key = resolve_keyref(f"file:{world.base / 'feedstock-keys' / 'oa.key'}")
    assert isinstance(key, KeyHandle)

    def sidecar() -> Any:
        import json

        return json.loads(build_sidecar(info, "oa", key, "https://example.org/ch", None))

    return [
        *calls,
        ("post", "/v1/attestations", {"feedstock": "oa", "artifacts": {
            f"noarch/{artifact.name}": {"sha256": info.sha256, "attestation": sidecar()},
            "noarch/bad.conda": {"sha256": info.sha256, "attestation": {}}}}, None),
        ("get", f"/trust/attestations/noarch/{artifact.name}.sig.json", None, None),
        ("post", f"/v1/admin/attestations/noarch/{artifact.name}/withdraw",
         {"reason": "test"}, admin),
        ("post", f"/v1/admin/attestations/noarch/{artifact.name}/withdraw",
         {"reason": "again"}, admin),
        ("delete", "/v1/admin/feedstocks/oa/keys/" + key.keyid, None, admin),
        ("delete", "/v1/admin/feedstocks/oa", None, admin),
        ("get", "/metrics", None, None),
    ]  # fmt: skip


def test_answers_match_the_schema(served: tuple[World, Server], tmp_path: Path) -> None:
    world, server = served
    schema = Schema(httpx.get(f"{server.url}/openapi.json").json())
    seen: set[tuple[str, str]] = set()
    for method, path, body, token in _battery(world, server, tmp_path):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if isinstance(body, bytes):  # sent as it is, claiming to be JSON
            headers["Content-Type"] = "application/json"
            response = httpx.request(
                method.upper(), server.url + path, content=body, headers=headers, timeout=60
            )
        else:
            response = httpx.request(
                method.upper(), server.url + path, json=body, headers=headers, timeout=60
            )
        assert response.status_code < 500, (method, path, response.text)
        template, op = schema.operation(method, path)
        status = str(response.status_code)
        assert status in op["responses"], f"{method} {template}: {status} not declared"
        seen.add((method, template))
        content = op["responses"][status].get("content", {})
        if (
            response.headers.get("content-type", "").startswith("application/json")
            and method != "head"
        ):
            declared = content.get("application/json", {}).get("schema")
            if declared:
                schema.validate(response.json(), declared)
        elif response.status_code == 200 and method != "head":
            assert content, f"{method} {template}: undeclared body"
    assert seen == EXPECTED
