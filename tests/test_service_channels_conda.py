"""Real clients against the service's signed overlay, everything over HTTP.

A `cf-sign serve` process signs an upstream channel whose artifacts sit on a second
loopback HTTP server. A real conda (with conda-content-trust) installs from
`<service>/trust/channels/conda-forge` with the service's `/trust` as its signing metadata:
the attested packages are "package metadata is TRUSTED", the unattested one is not, and the
artifacts are downloaded from upstream (`info.base_url`). libmamba's own verifier judges the
same documents: the attested records verify, the unattested one does not.

Needs CF_SIGN_CONDA_CCT_VENV and CF_SIGN_LIBMAMBA_JUDGE (see tests/real_clients.py); each
test skips without its client, and fails instead when CF_SIGN_REQUIRE_REAL_CLIENTS=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from real_clients import TRUSTED, Conda, conda_cct_venv, libmamba_judge, run_judge
from test_mirror_support import serve
from test_service_channels import CHANNEL, Upstream, _add, _attest, _refresh, _register
from test_service_support import Server, World, database_for, make_world

from signer.artifacts.build import build_package


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[tuple[World, Server, str, Any]]:
    """An initialized service with the overlay refreshed: numpy and libnumpy-core attested,
    stray nobody's (SQLite: the database is not what these tests are about)."""
    world = make_world(tmp_path, database_for("sqlite", tmp_path))
    up = Upstream(tmp_path / "upstream")
    try:
        server = world.server("--channel-interval", "0")
        keyref = _register(world, server, "numpy", ["numpy", "libnumpy-core"])
        numpy = build_package(up.root / "linux-64", "numpy", "1.0", "h0_0", subdir="linux-64",
                              depends=["libnumpy-core"])  # fmt: skip
        core = up.build("libnumpy-core", "noarch")
        up.build("stray", "linux-64")
        _attest(server, "numpy", keyref, numpy, core)
        up.index("linux-64", "noarch")
        with serve(up.root) as (url, faults):
            _add(world, url)
            results = _refresh(world, server)
            assert all(r["ok"] and r["published"] for r in results.values()), results
            yield world, server, url, faults
    finally:
        for s in world.servers:
            s.stop()


def test_conda_installs_from_the_service_overlay_with_trusted_metadata(
    overlay: tuple[World, Server, str, Any], tmp_path: Path
) -> None:
    conda_cct_venv()  # skip (or fail, when required) before anything else
    world, server, _, faults = overlay
    conda = Conda(tmp_path / "conda", world.repo.root_file,
                  f"{server.url}/trust/channels/{CHANNEL}", f"{server.url}/trust")  # fmt: skip
    plan = conda.create("numpy", "stray")
    assert plan.code == 0, plan.out
    assert plan.marks.get("numpy") == TRUSTED, plan.out
    assert plan.marks.get("libnumpy-core") == TRUSTED, plan.out
    assert "stray" in plan.marks and plan.marks["stray"] != TRUSTED, plan.out
    fetched = {path for path, _ in faults.requests}
    assert "linux-64/numpy-1.0-h0_0.conda" in fetched  # from upstream, by info.base_url
    assert "noarch/libnumpy-core-1.0-h0_0.conda" in fetched
    installed = {p.name for p in (plan.prefix / "conda-meta").iterdir()}
    assert any(name.startswith("numpy-1.0-h0_0") for name in installed), installed


def test_libmamba_verifies_the_attested_records_of_the_service_overlay(
    overlay: tuple[World, Server, str, Any], tmp_path: Path
) -> None:
    judge = libmamba_judge()
    world, server, _, _ = overlay
    repodata = tmp_path / "linux-64-repodata.json"
    response = httpx.get(f"{server.url}/trust/channels/{CHANNEL}/linux-64/repodata.json")
    assert response.status_code == 200
    repodata.write_bytes(response.content)
    trust = tmp_path / "trust"  # what the service serves under /trust, as files
    trust.mkdir()
    for name in ("1.root.json", "key_mgr.json", "pkg_mgr.json"):
        served = httpx.get(f"{server.url}/trust/{name}")
        assert served.status_code == 200, name
        (trust / name).write_bytes(served.content)
    verdict = run_judge(judge, "channel", trust, world.repo.root_file, "--repodata", repodata)
    assert verdict["ok"], verdict
    result = verdict["repodata"][str(repodata)]["mamba"]
    assert result["loaded"] == 2 and result["verified"] == 1, result
    assert list(result["failed"]) == ["stray-1.0-h0_0.conda"], result  # unattested: unsigned
