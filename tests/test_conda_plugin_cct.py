"""cf-sign's plugin beside conda-content-trust's (conda's own signature check).

Needs CF_SIGN_CONDA_PLUGIN_CCT_VENV: a venv with conda, conda-content-trust and cf-sign.
conda-content-trust reads its root from `<venv>/etc/conda/` (conda's av_data_dir, not
configurable): the fixture puts the channel's root there and removes it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_conda_plugin_support import (
    CCT_VAR,
    Channel,
    Conda,
    Served,
    conda_venv,
    make_channel,
    serve,
)

ALPHA = "alpha-1.0-0.conda"


@pytest.fixture
def venv() -> Path:
    return conda_venv(CCT_VAR)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Channel, Served]]:
    channel = make_channel(tmp_path / "site")
    # As a CDN does (conda-forge's repodata has a max-age): conda's cache stays fresh.
    with serve(tmp_path / "site", cache_control="public, max-age=600") as served:
        yield channel, served


@pytest.fixture
def conda(venv: Path, tmp_path: Path, site: tuple[Channel, Served]) -> Iterator[Conda]:
    """A conda whose conda-content-trust check is on, for the served trust repository."""
    channel, served = site
    av_dir = venv / "etc" / "conda"
    av_dir.mkdir(parents=True, exist_ok=True)
    ours = [av_dir / "1.root.json", av_dir / "key_mgr.json"]
    if any(p.exists() for p in ours):
        pytest.fail(f"{av_dir} already holds trust files: another run is using this venv")
    ours[0].write_bytes(channel.repo.root_file.read_bytes())
    conda = Conda(venv, tmp_path / "conda")
    conda.user_condarc.write_text(_cct_condarc(served))
    try:
        yield conda
    finally:
        for path in ours:
            path.unlink(missing_ok=True)


def _cct_condarc(served: Served) -> str:
    return f"extra_safety_checks: true\nsigning_metadata_url_base: {served.base_url}/dev/trust\n"


def _url(served: Served) -> str:
    return f"{served.base_url}/chan"


def _enforce(conda: Conda, channel: Channel, served: Served, *extra: str) -> None:
    trust = f"{served.base_url}/dev/trust"
    conda.trust(_url(served), trust, channel.repo.root_file, "--user", *extra)


def test_cct_alone_installs_a_tampered_record(conda: Conda, site: tuple[Channel, Served]) -> None:
    # The gap cf-sign closes: conda's own check is on, and a bad record still installs.
    channel, served = site
    channel.tamper(ALPHA, "license", "tampered")
    res = conda.create(_url(served), "alpha")
    assert res.code == 0 and res.linked("alpha"), res.out
    assert "cf-sign" not in res.out


def test_both_plugins_good_channel_installs_with_one_repodata_fetch(
    conda: Conda, site: tuple[Channel, Served]
) -> None:
    channel, served = site
    _enforce(conda, channel, served)
    served.counts.clear()
    res = conda.create(_url(served), "alpha")
    assert res.code == 0 and res.linked("alpha") and res.linked("beta"), res.out
    assert f"cf-sign: verified 2 record(s) from {_url(served)}" in res.out
    # conda-content-trust ran too: it fetched key_mgr.json (so did cf-sign, its own check).
    assert served.counts["/dev/trust/key_mgr.json"] == 2, served.counts
    # Neither plugin fetched the repodata again: both read conda's fresh cache.
    assert served.counts["/chan/noarch/repodata.json"] == 1, served.counts


def test_cf_sign_adds_no_repodata_fetch_when_the_cache_goes_stale(
    venv: Path, tmp_path: Path
) -> None:
    # Without max-age conda-content-trust revalidates the repodata once per record it
    # checks; cf-sign reads the file conda just solved from and adds no request.
    channel = make_channel(tmp_path / "site")
    av_dir = venv / "etc" / "conda"
    counts = []
    with serve(tmp_path / "site") as served:
        for configured in (False, True):
            conda = Conda(venv, tmp_path / f"conda-{configured}")
            conda.user_condarc.write_text(_cct_condarc(served))
            if configured:
                _enforce(conda, channel, served)
            (av_dir / "1.root.json").write_bytes(channel.repo.root_file.read_bytes())
            try:
                served.counts.clear()
                res = conda.create(_url(served), "alpha")
            finally:
                (av_dir / "1.root.json").unlink(missing_ok=True)
                (av_dir / "key_mgr.json").unlink(missing_ok=True)
            assert res.code == 0 and res.linked("alpha"), res.out
            assert ("cf-sign: verified 2 record(s)" in res.out) == configured
            counts.append(served.counts["/chan/noarch/repodata.json"])
    assert counts[0] == counts[1] and counts[0] >= 1, counts


def test_both_plugins_cf_sign_refusal_wins(conda: Conda, site: tuple[Channel, Served]) -> None:
    channel, served = site
    _enforce(conda, channel, served)
    channel.tamper(ALPHA, "license", "tampered")
    res = conda.create(_url(served), "alpha")
    assert res.code != 0, res.out
    assert "cf-sign refused the transaction" in res.out
    assert f"{ALPHA} from {_url(served)}: signature" in res.out
    assert not res.linked("alpha") and not res.downloaded("alpha")
    assert "Traceback" not in res.out


def test_both_plugins_observe_installs_and_reports(
    conda: Conda, site: tuple[Channel, Served]
) -> None:
    channel, served = site
    _enforce(conda, channel, served, "--policy", "observe")
    channel.tamper(ALPHA, "license", "tampered")
    res = conda.create(_url(served), "alpha")
    assert res.code == 0 and res.linked("alpha"), res.out
    assert f"cf-sign (observe, not refused): {ALPHA}" in res.out
