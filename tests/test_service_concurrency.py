"""Several server processes on one database behave as one.

Many key registrations in parallel, spread over two server processes: every key ends up in
the published delegations, every document version is used once, versions increase
strictly in the order the changes committed, and both processes serve the same bytes.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import select
from test_service_support import World

from signer.service.db.models import AuditEntry, DocumentVersion
from signer.service.db.session import Database
from signer.trust.feedstocks import INDEX_PATH, resolve_feedstock
from signer.trust.metadata import Root, parse_metadata
from signer.trust.timefmt import system_clock

pytest_plugins = ("test_service_support",)  # fixtures: db_url, world

FEEDSTOCKS = [f"pkg{i}" for i in range(6)]
KEYS_EACH = 5


def test_parallel_key_registrations_on_two_processes(world: World) -> None:
    first, second = world.server(), world.server()
    auth = {"Authorization": f"Bearer {world.registrar_token}"}
    for name in FEEDSTOCKS:
        _, pub = world.feedstock_key(f"{name}-0")
        response = httpx.post(
            f"{first.url}/v1/admin/feedstocks",
            json={"name": name, "outputs": [name], "keys": [pub]},
            headers=auth,
            timeout=60,
        )
        assert response.status_code == 201, response.text

    jobs: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(KEYS_EACH):
        for j, name in enumerate(FEEDSTOCKS):
            _, pub = world.feedstock_key(f"{name}-{i + 1}")
            url = (first if (i + j) % 2 else second).url
            jobs.append((url, name, pub))

    # Further keys of a feedstock that has one are an admin's to add (section 7).
    admin = {"Authorization": f"Bearer {world.admin_token}"}

    def register(job: tuple[str, str, dict[str, Any]]) -> httpx.Response:
        url, name, pub = job
        return httpx.post(
            f"{url}/v1/admin/feedstocks/{name}/keys", json={"key": pub}, headers=admin, timeout=120
        )

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(register, jobs))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses][:3]

    # Each registration published its own index version: no two share one.
    versions = [r.json()["published"][INDEX_PATH] for r in responses]
    assert len(set(versions)) == len(versions)

    db = Database(world.db_url)
    try:
        with db.read() as session:
            published: dict[str, list[int]] = {}
            for row in session.scalars(select(DocumentVersion)):
                published.setdefault(row.path, []).append(row.version)
            entries = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    finally:
        db.dispose()
    for path, seen in published.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), path  # every version once
    # In commit order (the audit log's), the index versions strictly increase.
    in_order = [
        json.loads(e.detail)["published"][INDEX_PATH]
        for e in entries
        if INDEX_PATH in json.loads(e.detail).get("published", {})
    ]
    assert in_order == sorted(in_order) and len(set(in_order)) == len(in_order)
    assert len(in_order) == 1 + len(FEEDSTOCKS) + len(jobs)  # init + registrations

    # Both processes serve the same documents (after their 1 s cache), as on disk.
    time.sleep(1.2)
    index_bytes = {httpx.get(f"{s.url}/trust/{INDEX_PATH}").content for s in (first, second)}
    assert index_bytes == {(world.publish_dir / INDEX_PATH).read_bytes()}

    # Every key is in the published, verified delegations.
    root = parse_metadata(world.repo.root_file.read_bytes(), "root", "root").meta
    assert isinstance(root, Root)

    def fetch(path: str, _max: int) -> bytes | None:
        response = httpx.get(f"{second.url}/trust/{path}")
        return response.content if response.status_code == 200 else None

    for name in FEEDSTOCKS:
        delegation = resolve_feedstock(fetch, root, name, system_clock()).delegation
        assert len(delegation.keys) == KEYS_EACH + 1, name
