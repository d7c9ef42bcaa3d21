"""libmamba's own verifier judges what `channel sign` and `mirror sync --key` publish.

The judge is ../shared/tools/libmamba-judge (`mamba-harness`), given by
CF_SIGN_LIBMAMBA_JUDGE; unset, these tests skip with the reason, and fail instead when
CF_SIGN_REQUIRE_REAL_CLIENTS=1 (CI).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_feedstock_support import World, make_world

from signer.artifacts.build import build_package
from signer.devrepo import make_dev_trust_repo
from signer.repodata import profiles
from signer.repodata.index import index_directory

SUBDIR = "linux-64"


def _judge() -> Path:
    value = os.environ.get("CF_SIGN_LIBMAMBA_JUDGE", "")
    if not value or not os.access(value, os.X_OK):
        reason = "CF_SIGN_LIBMAMBA_JUDGE is not set to a built mamba-harness " \
                 "(../shared/tools/libmamba-judge/build)"  # fmt: skip
        if os.environ.get("CF_SIGN_REQUIRE_REAL_CLIENTS") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return Path(value)


def _verdict(judge: Path, trust: Path, root: Path, repodata: Path) -> dict[str, Any]:
    proc = subprocess.run([str(judge), "channel", str(trust), str(root), "--repodata",
                           str(repodata)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    verdict: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdict["ok"], verdict
    result: dict[str, Any] = verdict["repodata"][str(repodata)]["mamba"]
    return result


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


# Match specs as libsolv prints them; `raw` ones libmamba normalises before verifying (the
# mamba profile must rebuild that: signer.repodata.profiles.mamba_signable, interop issue).
PLAIN_DEPS = (["python >=3.10", "libnumpy-core 1.*"], ["libgcc-ng >=12"])
RAW_DEPS = (["python>=3.10", "libnumpy-core 1.*", "python>=3.10"], ["libgcc-ng>=12"])


def _channel(world: World, deps: tuple[list[str], list[str]] = PLAIN_DEPS) -> Path:
    pkgs = world.base / "channel" / SUBDIR
    att = world.trust / "attestations" / SUBDIR
    for name, feedstock, dep in (("numpy", "numpy", deps[0]), ("libnumpy-core", "numpy", deps[1]),
                                 ("libllvm17", "llvmdev", []), ("stray", None, [])):  # fmt: skip
        pkg = build_package(pkgs, name, "1.0", "h0_0", subdir=SUBDIR, depends=dep)
        if feedstock is not None:
            assert world.sign(pkg, feedstock, "--out-dir", att) == 0
    repodata = pkgs / "repodata.json"
    repodata.write_text(json.dumps(index_directory(pkgs, SUBDIR), indent=2))
    return repodata


@pytest.mark.parametrize("deps", ["plain", "raw"])
def test_libmamba_accepts_attested_records_only(
    world: World, cli: Callable[..., Any], deps: str
) -> None:
    judge = _judge()
    if deps == "raw" and not hasattr(profiles, "mamba_signable"):
        pytest.skip("needs the libsolv-normalising mamba profile (interop branch, not merged)")
    repodata = _channel(world, PLAIN_DEPS if deps == "plain" else RAW_DEPS)
    res = cli("channel", "sign", repodata, "--trust", world.trust, "--root", world.root,
              "--state-dir", world.state, "--key", world.repo.keyref("pkg_mgr"),
              "--mamba-key", world.repo.keyref("pkg_mgr_mamba"))  # fmt: skip
    assert res.code == 0, res.err
    result = _verdict(judge, world.trust, world.root, repodata)
    assert result["loaded"] == 4 and result["verified"] == 3, result
    assert list(result["failed"]) == ["stray-1.0-h0_0.conda"]  # unattested: unsigned


def test_libmamba_accepts_the_resigned_mirror(world: World, cli: Callable[..., Any]) -> None:
    judge = _judge()
    repodata = _channel(world)
    res = cli("channel", "sign", repodata, "--trust", world.trust, "--root", world.root,
              "--state-dir", world.state, "--key", world.repo.keyref("pkg_mgr"))  # fmt: skip
    assert res.code == 0
    mine = make_dev_trust_repo(world.base / "mine")
    dest = world.base / "mirror"
    res = cli("mirror", "sync", repodata.parent.parent, dest, "--trust", world.trust,
              "--root", world.root, "--state-dir", world.state, "--subdir", SUBDIR,
              "--key", mine.keyref("pkg_mgr"),
              "--mamba-key", mine.keyref("pkg_mgr_mamba"))  # fmt: skip
    assert res.code == 1  # the unattested record is refused, the rest published
    result = _verdict(judge, mine.trust_dir, mine.root_file, dest / SUBDIR / "repodata.json")
    assert result["loaded"] == 3 and result["verified"] == 3, result


def test_libmamba_accepts_a_record_without_subdir(world: World, cli: Callable[..., Any]) -> None:
    """libmamba gives such a record info.subdir; the mamba profile must sign that."""
    judge = _judge()
    repodata = _channel(world)
    doc = json.loads(repodata.read_bytes())
    del doc["packages.conda"]["numpy-1.0-h0_0.conda"]["subdir"]
    repodata.write_text(json.dumps(doc, indent=2))
    res = cli("channel", "sign", repodata, "--trust", world.trust, "--root", world.root,
              "--state-dir", world.state, "--key", world.repo.keyref("pkg_mgr"),
              "--mamba-key", world.repo.keyref("pkg_mgr_mamba"))  # fmt: skip
    assert res.code == 0, res.err
    result = _verdict(judge, world.trust, world.root, repodata)
    assert result["verified"] == 3 and list(result["failed"]) == ["stray-1.0-h0_0.conda"], result
