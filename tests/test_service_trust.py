"""`/trust/...`: exact bytes, strong ETags, conditional requests and cache headers.

Both ways of answering are checked against each other: the ASGI fast path in front of
FastAPI (the default) and the documented FastAPI route (`trust_fast_path=False`). The app
runs in-process through Starlette's TestClient (real ASGI, real database, lifespan run).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from test_service_support import World

from signer.service.app import create_app
from signer.service.config import load_settings
from signer.trust.feedstocks import INDEX_PATH

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

pytest_plugins = ("test_service_support",)  # fixtures: db_url, world

HEADERS = ("etag", "cache-control", "content-type", "content-length")


def _client(world: World, fast_path: bool) -> TestClient:
    with warnings.catch_warnings():
        # Starlette now suggests httpx2 for its TestClient; httpx still drives it correctly.
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    settings = load_settings(world.db_url, world.publish_dir, env={}).with_overrides(
        refresh_interval=0.0, trust_fast_path=fast_path
    )
    return TestClient(create_app(settings))


@pytest.fixture
def clients(world: World) -> Iterator[tuple[TestClient, TestClient]]:
    with _client(world, True) as fast, _client(world, False) as routed:
        yield fast, routed


def _etag(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def test_exact_bytes_etags_and_cache_headers(
    world: World, clients: tuple[TestClient, TestClient]
) -> None:
    for client in clients:
        root = client.get("/trust/1.root.json")
        assert root.status_code == 200
        assert root.content == world.repo.root_file.read_bytes()  # byte-identical
        assert root.headers["etag"] == _etag(root.content)
        assert root.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert root.headers["content-type"] == "application/json"

        key_mgr = client.get("/trust/key_mgr.json")
        assert key_mgr.content == (world.publish_dir / "key_mgr.json").read_bytes()
        assert key_mgr.headers["cache-control"] == "public, max-age=60, must-revalidate"

        # Conditional requests: the current ETag is 304 with no body; any other is 200.
        etag = key_mgr.headers["etag"]
        same = client.get("/trust/key_mgr.json", headers={"If-None-Match": etag})
        assert same.status_code == 304 and same.content == b""
        assert same.headers["etag"] == etag
        listed = client.get("/trust/key_mgr.json", headers={"If-None-Match": f'"x", {etag}'})
        assert listed.status_code == 304
        other = client.get("/trust/key_mgr.json", headers={"If-None-Match": _etag(b"old")})
        assert other.status_code == 200 and other.content == key_mgr.content

        head = client.head("/trust/key_mgr.json")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(key_mgr.content)
        assert head.headers["etag"] == etag

        missing = client.get("/trust/feedstocks/zz.json")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"


def test_a_publication_changes_the_etag_at_once(
    world: World, clients: tuple[TestClient, TestClient]
) -> None:
    fast, routed = clients
    before = {c: c.get(f"/trust/{INDEX_PATH}") for c in clients}
    _, pub = world.feedstock_key("etag")
    answer = fast.post(
        "/v1/admin/feedstocks",
        json={"name": "etag", "outputs": ["etag"], "keys": [pub]},
        headers={"Authorization": f"Bearer {world.registrar_token}"},
    )
    assert answer.status_code == 201, answer.text
    on_disk = (world.publish_dir / INDEX_PATH).read_bytes()
    # The app that published dropped its cached copy at once: the old ETag is stale.
    new = fast.get(f"/trust/{INDEX_PATH}", headers={"If-None-Match": before[fast].headers["etag"]})
    assert new.status_code == 200 and new.content == on_disk
    assert new.headers["etag"] == _etag(on_disk) != before[fast].headers["etag"]
    # The other app (a replica, for this publication) serves it once its 1 s cache expires.
    time.sleep(1.1)
    assert routed.get(f"/trust/{INDEX_PATH}").content == on_disk


@pytest.mark.parametrize(
    "path",
    [
        "1.root.json",
        "key_mgr.json",
        "pkg_mgr.json",
        INDEX_PATH,
        "missing.json",
        "attestations/noarch/none-1-0.conda.sig.json",
        "attestations/bad",
    ],
)
def test_both_paths_answer_alike(clients: tuple[TestClient, TestClient], path: str) -> None:
    fast, routed = clients
    for method in ("GET", "HEAD"):
        a = fast.request(method, f"/trust/{path}")
        b = routed.request(method, f"/trust/{path}")
        assert (a.status_code, a.content) == (b.status_code, b.content), (method, path)
        for name in HEADERS:
            assert a.headers.get(name) == b.headers.get(name), (method, path, name)
