"""A real conda (with conda-content-trust) installs from a signed overlay whose artifacts are on
another HTTP server (upstream's, named by info.base_url): attested records TRUSTED.

Needs CF_SIGN_CONDA_CCT_VENV (../shared/tools/install-conda VENV --with-cct); skips without
it, fails instead when CF_SIGN_REQUIRE_REAL_CLIENTS=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
from test_feedstock_support import World, make_world
from test_mirror_support import serve

from signer.artifacts.build import build_package
from signer.channel.attestations import AttestationStore
from signer.channel.gate import Gate
from signer.channel.overlay import refresh_overlay
from signer.keys import KeyHandle
from signer.repodata.index import index_directory

PLAN_LINE = re.compile(r"^\s+(\S+)\s+\S+::(\S+)(?: \((.+)\))?$", re.M)


def _conda_venv() -> Path:
    value = os.environ.get("CF_SIGN_CONDA_CCT_VENV", "")
    venv = Path(value) if value else None
    if (
        venv is None
        or not (venv / "bin" / "python").exists()
        or not list(venv.glob("lib/python3*/site-packages/conda_content_trust"))
    ):
        reason = "CF_SIGN_CONDA_CCT_VENV is not a venv with conda and conda-content-trust"
        if os.environ.get("CF_SIGN_REQUIRE_REAL_CLIENTS") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return venv


def _own_conda(base: Path, shared: Path) -> Path:
    """A venv that runs the shared venv's conda with a prefix (etc/conda) of its own."""
    subprocess.run([str(shared / "bin" / "python"), "-m", "venv", "--without-pip", str(base)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    (shared_site,) = shared.glob("lib/python3*/site-packages")
    (own_site,) = base.glob("lib/python3*/site-packages")
    (own_site / "_shared.pth").write_text(f"import site; site.addsitedir({str(shared_site)!r})\n")
    (base / "etc" / "conda").mkdir(parents=True, exist_ok=True)
    return base / "bin" / "python"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def test_conda_installs_from_the_overlay_with_trusted_metadata(world: World) -> None:
    venv = _conda_venv()
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

            base = world.base / "conda"
            python = _own_conda(base / "venv", venv)
            shutil.copy(world.root, base / "venv" / "etc" / "conda" / "1.root.json")
            condarc = base / "condarc"
            settings = ("extra_safety_checks: true\n"
                        f"signing_metadata_url_base: {overlay_url}\n"
                        "number_channel_notices: 0\nnotify_outdated_conda: false\n")  # fmt: skip
            condarc.write_text(settings)
            keep = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "PYTHON"))}
            env = {**keep, "CONDARC": str(condarc), "CONDA_PKGS_DIRS": str(base / "pkgs"),
                   "HOME": str(base / "home"), "PYTHONNOUSERSITE": "1",
                   "NO_COLOR": "1"}  # fmt: skip
            proc = subprocess.run(
                [str(python), "-m", "conda", "create", "--yes", "-p", str(base / "env"),
                 "--override-channels", "-c", overlay_url, "--solver", "classic",
                 "--repodata-fn", "repodata.json", "numpy", "stray"],
                capture_output=True, text=True, env=env, timeout=600,
            )  # fmt: skip
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, out
            marks = {m.group(1): m.group(3) or "" for m in PLAN_LINE.finditer(proc.stdout)}
            assert marks.get("numpy") == "package metadata is TRUSTED", out
            assert marks.get("libnumpy-core") == "package metadata is TRUSTED", out
            assert marks.get("stray") != "package metadata is TRUSTED", out  # unattested
            fetched = {p for p, _ in faults.requests}
            assert "linux-64/numpy-1.0-h0_0.conda" in fetched  # from upstream, by base_url
            assert "noarch/libnumpy-core-1.0-h0_0.conda" in fetched
        installed = base / "env" / "conda-meta"
        assert any(p.name.startswith("numpy-1.0-h0_0") for p in installed.iterdir())
    finally:
        server.shutdown()
        server.server_close()
