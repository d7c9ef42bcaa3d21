"""A real conda (with conda-content-trust) installs from a signed overlay whose artifacts are on
another HTTP server (upstream's, named by info.base_url): attested records TRUSTED.

Needs CF_SIGN_CONDA_CCT_VENV (tests/real_clients.py); skips without it, fails instead when
CF_SIGN_REQUIRE_REAL_CLIENTS=1.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
from real_clients import TRUSTED, Conda, conda_cct_venv
from test_feedstock_support import World, make_world
from test_mirror_support import serve

from signer.artifacts.build import build_package
from signer.channel.attestations import AttestationStore
from signer.channel.gate import Gate
from signer.channel.overlay import refresh_overlay
from signer.keys import KeyHandle
from signer.repodata.index import index_directory


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def test_conda_installs_from_the_overlay_with_trusted_metadata(world: World) -> None:
    conda_cct_venv()  # skip (or fail, when required) before building anything
    upstream = world.base / "upstream"
    att = world.trust / "attestations"
    for name, subdir, feedstock in (("numpy", "linux-64", "numpy"),
                                    ("libnumpy-core", "noarch", "numpy"),
                                    ("stray", "linux-64", None)):  # fmt: skip
        deps = ["libnumpy-core"] if name == "numpy" else []
        pkg = build_package(upstream / subdir, name, "1.0", "h0_0", subdir=subdir, depends=deps)
        if feedstock is not None:
            assert world.sign(pkg, feedstock, "--out-dir", att / subdir) == 0
    for subdir in ("linux-64", "noarch"):
        doc = index_directory(upstream / subdir, subdir)
        (upstream / subdir / "repodata.json").write_text(json.dumps(doc, indent=2))

    publish = world.base / "publish"
    key, mamba = world.repo.pkg_mgr_key, world.repo.mamba_key
    assert isinstance(key, KeyHandle) and isinstance(mamba, KeyHandle)
    overlay = publish / "channels" / "conda-forge"
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(publish)))
    Thread(target=server.serve_forever, daemon=True).start()
    overlay_url = f"http://127.0.0.1:{server.server_address[1]}/channels/conda-forge"
    try:
        with serve(upstream) as (upstream_url, faults):
            for subdir in ("linux-64", "noarch"):
                gate = Gate.open(str(world.trust), root=world.root, state_dir=world.state)
                result = refresh_overlay(
                    "conda-forge", subdir, f"{upstream_url}/{subdir}/repodata.json", gate=gate,
                    store=AttestationStore(str(world.trust)), keys=[key], mamba_key=mamba,
                    publish_root=publish, state_dir=world.base / "overlay-state",
                )  # fmt: skip
                assert result.published
            for name in ("1.root.json", "key_mgr.json", "pkg_mgr.json"):
                shutil.copy(world.trust / name, overlay / name)

            conda = Conda(world.base / "conda", world.root, overlay_url, overlay_url,
                          root_name="1.root.json")  # fmt: skip
            plan = conda.create("numpy", "stray")
            assert plan.code == 0, plan.out
            assert plan.marks.get("numpy") == TRUSTED, plan.out
            assert plan.marks.get("libnumpy-core") == TRUSTED, plan.out
            assert "stray" in plan.marks and plan.marks["stray"] != TRUSTED, plan.out
            fetched = {p for p, _ in faults.requests}
            assert "linux-64/numpy-1.0-h0_0.conda" in fetched  # from upstream, by base_url
            assert "noarch/libnumpy-core-1.0-h0_0.conda" in fetched
        installed = plan.prefix / "conda-meta"
        assert any(p.name.startswith("numpy-1.0-h0_0") for p in installed.iterdir())
    finally:
        server.shutdown()
        server.server_close()
