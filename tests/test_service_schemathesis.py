"""schemathesis over the service's OpenAPI document (issue 9 item 14): every operation
gets generated requests, valid and not, in-process against the real app on a real
database (SQLite and PostgreSQL) with an admin token; no answer may be a 500, and nothing
may be logged as an internal error. Examples are bounded to keep this under a minute."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from test_service_support import database_for, make_world

from signer.service.app import create_app
from signer.service.config import load_settings

pytest_plugins = ("test_service_support",)

EXAMPLES = 10  # per operation and database: ~20 operations


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_no_request_gets_a_500(kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(tmp_path, database_for(kind, tmp_path))
    app = create_app(
        load_settings(world.db_url, world.publish_dir, env={}).with_overrides(
            refresh_interval=0.0, sync_interval=0.0
        )
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    auth = {"Authorization": f"Bearer {world.admin_token}"}
    seen: list[str] = []
    failures: list[str] = []
    caplog.set_level(logging.WARNING, logger="cf_sign.service")
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=auth)
            seen.append(f"{case.method} {case.path}")
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:200]}")

        run()
    assert not failures, failures[:5]
    assert len(set(seen)) >= 18, sorted(set(seen))  # every operation was exercised
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:3]
