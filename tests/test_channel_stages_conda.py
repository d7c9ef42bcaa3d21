"""A real conda (with conda-content-trust) judges what staged enforcement signed.

An overlay (the library the service runs) of a channel with an attested `numpy` and an
unattested `libllvm-extra` (llvmdev's glob `libllvm*`): with llvmdev in `observe` conda
reports both TRUSTED; after llvmdev moves to `enforce` (a stages file, the same JSON as
the service's `GET /v1/stages`) the next refresh leaves `libllvm-extra` unsigned and conda
no longer trusts it, while `numpy` (the control) stays TRUSTED.

Needs CF_SIGN_CONDA_CCT_VENV; skips without it, fails when CF_SIGN_REQUIRE_REAL_CLIENTS=1.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path
from threading import Thread

from real_clients import TRUSTED, Conda, conda_cct_venv
from test_channel_overlay_conda import _Quiet
from test_feedstock_support import make_world
from test_mirror_support import serve

from signer.artifacts.build import build_package
from signer.channel.attestations import AttestationStore
from signer.channel.gate import Gate
from signer.channel.overlay import refresh_overlay
from signer.channel.stages import StagePolicy, load_stages
from signer.keys import KeyHandle
from signer.repodata.index import index_directory

SUBDIR = "linux-64"


def test_conda_trusts_observed_records_until_enforced(tmp_path: Path) -> None:
    conda_cct_venv()  # skip (or fail, when required) before building anything
    world = make_world(tmp_path)
    upstream = world.base / "upstream"
    numpy = build_package(upstream / SUBDIR, "numpy", "1.0", "h0_0", subdir=SUBDIR)
    assert world.sign(numpy, "numpy", "--out-dir", world.trust / "attestations" / SUBDIR) == 0
    build_package(upstream / SUBDIR, "libllvm-extra", "1.0", "h0_0", subdir=SUBDIR)
    doc = index_directory(upstream / SUBDIR, SUBDIR)
    (upstream / SUBDIR / "repodata.json").write_text(json.dumps(doc, indent=2))
    build_package(upstream / "noarch", "placeholder", "1.0", "h0_0", subdir="noarch")
    noarch = index_directory(upstream / "noarch", "noarch")
    (upstream / "noarch" / "repodata.json").write_text(json.dumps(noarch))

    stages_file = world.base / "stages.json"

    def set_stage(stage: str) -> None:
        rows = [{"name": "llvmdev", "stage": stage, "since": None},
                {"name": "numpy", "stage": "enforce", "since": None}]  # fmt: skip
        stages_file.write_text(json.dumps({"stages": rows, "next_after": None}))

    publish = world.base / "publish"
    key, mamba = world.repo.pkg_mgr_key, world.repo.mamba_key
    assert isinstance(key, KeyHandle) and isinstance(mamba, KeyHandle)
    overlay = publish / "channels" / "staged"
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(publish)))
    Thread(target=server.serve_forever, daemon=True).start()
    overlay_url = f"http://127.0.0.1:{server.server_address[1]}/channels/staged"
    conda = Conda(world.base / "conda", world.root, overlay_url, overlay_url,
                  root_name="1.root.json")  # fmt: skip

    def refresh(upstream_url: str) -> None:
        for subdir in (SUBDIR, "noarch"):
            gate = Gate.open(str(world.trust), root=world.root, state_dir=world.state)
            policy = StagePolicy.open(load_stages(str(stages_file)), gate.session)
            refresh_overlay(
                "staged", subdir, f"{upstream_url}/{subdir}/repodata.json", gate=gate,
                store=AttestationStore(str(world.trust)), keys=[key], mamba_key=mamba,
                publish_root=publish, state_dir=world.base / "overlay-state", policy=policy,
            )  # fmt: skip
        for name in ("1.root.json", "key_mgr.json", "pkg_mgr.json"):
            shutil.copy(world.trust / name, overlay / name)

    def plan() -> tuple[dict[str, str], str]:
        result = conda.create("numpy", "libllvm-extra")
        assert result.code == 0, result.out
        return result.marks, result.out

    try:
        with serve(upstream) as (upstream_url, _faults):
            set_stage("observe")
            refresh(upstream_url)
            marks, out = plan()
            assert marks.get("numpy") == TRUSTED, out
            assert marks.get("libllvm-extra") == TRUSTED, out  # observed: signed

            set_stage("enforce")
            refresh(upstream_url)
            marks, out = plan()
            assert marks.get("numpy") == TRUSTED, out  # control
            assert "libllvm-extra" in marks and marks["libllvm-extra"] != TRUSTED, out
    finally:
        server.shutdown()
        server.server_close()
