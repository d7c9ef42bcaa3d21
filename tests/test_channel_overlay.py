"""Signed overlay channels: upstream's records signed where attested, upstream's artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_feedstock_support import World, make_world
from test_mirror_support import serve

from signer.artifacts.build import build_package
from signer.channel.attestations import AttestationStore
from signer.channel.gate import Gate
from signer.channel.overlay import OverlayResult, refresh_overlay
from signer.keys import KeyHandle
from signer.repodata.document import read_repodata
from signer.repodata.index import index_directory
from signer.repodata.verify import verify_repodata
from signer.trust.errors import FormatError
from signer.trust.metadata import parse_metadata

SUBDIR = "linux-64"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _upstream(world: World) -> Path:
    root = world.base / "upstream"
    pkgs = root / SUBDIR
    for name, feedstock in (("numpy", "numpy"), ("libllvm17", "llvmdev"), ("stray", None)):
        pkg = build_package(pkgs, name, "1.0", "h0_0", subdir=SUBDIR)
        if feedstock is not None:
            assert (
                world.sign(pkg, feedstock, "--out-dir", world.trust / "attestations" / SUBDIR) == 0
            )
    (pkgs / "repodata.json").write_text(json.dumps(index_directory(pkgs, SUBDIR), indent=2))
    return root


def _refresh(world: World, url: str, publish: Path) -> OverlayResult:
    gate = Gate.open(str(world.trust), root=world.root, state_dir=world.state)
    keys = [world.repo.pkg_mgr_key]
    assert isinstance(keys[0], KeyHandle) and isinstance(world.repo.mamba_key, KeyHandle)
    return refresh_overlay(
        "conda-forge", SUBDIR, f"{url}/{SUBDIR}/repodata.json", gate=gate,
        store=AttestationStore(str(world.trust)), keys=list(keys),
        mamba_key=world.repo.mamba_key, publish_root=publish, state_dir=world.base / "overlay",
    )  # fmt: skip


def test_overlay_signs_attested_records_and_points_at_upstream(world: World) -> None:
    root = _upstream(world)
    publish = world.base / "publish"
    published = publish / "channels" / "conda-forge" / SUBDIR / "repodata.json"
    with serve(root) as (url, faults):
        first = _refresh(world, url, publish)
        assert (first.published, first.records, first.signed, first.unattested) == (True, 3, 2, 1)
        doc = json.loads(published.read_bytes())
        assert doc["info"]["base_url"] == f"{url}/{SUBDIR}" and doc["repodata_version"] == 2
        assert (published.parent / "repodata.json.zst").is_file()
        key_mgr = parse_metadata((world.trust / "key_mgr.json").read_bytes(), "k", "key_mgr")
        report = verify_repodata(read_repodata(published), key_mgr.meta.pkg_mgr_keys)  # type: ignore[attr-defined]
        assert (report.valid, report.unsigned, report.invalid) == (2, 1, 0)

        # Nothing changed: a conditional request (304), nothing re-verified, nothing written.
        again = _refresh(world, url, publish)
        assert f"{SUBDIR}/repodata.json" in faults.conditional
        assert (again.upstream_changed, again.published, again.cached) == (False, False, 2)

        # An attestation arrives for the stray package, out of numpy's scope: refused; once
        # the delegation names it, signed (the upstream is still not modified).
        stray = root / SUBDIR / "stray-1.0-h0_0.conda"
        assert world.sign(stray, "numpy", "--out-dir", world.trust / "attestations" / SUBDIR) == 0
        third = _refresh(world, url, publish)
        assert (third.upstream_changed, third.refused, third.signed) == (False, 1, 2)
        entries = world.default_entries()
        entries["numpy"]["outputs"].append("stray")
        world.write_source(entries)
        assert world.publish() == 0
        third = _refresh(world, url, publish)
        assert (third.upstream_changed, third.published, third.signed) == (False, True, 3)
        assert third.coverage == 1.0


def test_hostile_upstream_publishes_nothing(world: World) -> None:
    root = _upstream(world)
    (root / SUBDIR / "repodata.json").write_bytes(b'{"info": {}, "info": {}}')
    publish = world.base / "publish"
    with serve(root) as (url, _), pytest.raises(FormatError, match="duplicate key"):
        _refresh(world, url, publish)
    assert not (publish / "channels").exists()
