"""The conda plugin against a real conda (classic solver), on cf-sign-made channels.

Needs CF_SIGN_CONDA_PLUGIN_VENV: a venv with conda (../shared/tools/install-conda) and
cf-sign installed into it (.ci/run makes one). Each attack has its control: the same
channel, unmodified, installs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_conda_plugin_support import (
    PLAIN_VAR,
    Channel,
    Conda,
    CondaResult,
    conda_venv,
    make_channel,
    serve,
)

from signer.devrepo import make_dev_trust_repo

ALPHA = "alpha-1.0-0.conda"


@pytest.fixture
def venv() -> Path:
    return conda_venv(PLAIN_VAR)


@pytest.fixture
def conda(venv: Path, tmp_path: Path) -> Conda:
    return Conda(venv, tmp_path / "conda")


@pytest.fixture
def channel(tmp_path: Path) -> Channel:
    return make_channel(tmp_path / "site")


def _enforce(conda: Conda, channel: Channel, *extra: str) -> None:
    # ~/.condarc: conda reads a prefix's .condarc only for commands on that prefix, and
    # each test creates a new one.
    conda.trust(channel.url, channel.repo.trust_dir, channel.repo.root_file, "--user", *extra)


def _installed(res: CondaResult) -> None:
    assert res.code == 0, res.out
    assert res.linked("alpha") and res.linked("beta"), res.out


def _refused(res: CondaResult, channel_url: str, *why: str) -> None:
    assert res.code != 0, res.out
    assert "cf-sign refused the transaction" in res.out, res.out
    line = next(li for li in res.out.splitlines() if ALPHA in li or "beta-2.0" in li)
    assert channel_url in line, res.out
    for word in why:
        assert word in res.out, res.out
    # Nothing linked and nothing downloaded: the refusal came before the fetch.
    assert not res.linked("alpha") and not res.linked("beta")
    assert not res.downloaded("alpha") and not res.downloaded("beta")
    assert "Traceback" not in res.out


def test_good_channel_installs_and_says_so(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel)
    res = conda.create(channel.url, "alpha")
    _installed(res)
    assert f"cf-sign: verified 2 record(s) from {channel.url}" in res.out
    dry = conda.create(channel.url, "alpha", dry_run=True)
    assert "cf-sign: verified 2 record(s)" in dry.out and "DryRunExit" in dry.out


def test_default_repodata_name_falls_back_like_conda(conda: Conda, channel: Channel) -> None:
    # Without --repodata-fn conda asks for current_repodata.json first, finds none and
    # solves from repodata.json, still reporting the first name to the hook.
    _enforce(conda, channel)
    res = conda.create(channel.url, "alpha", repodata_fn=None)
    _installed(res)
    assert "current_repodata.json" in res.out and "cf-sign: verified 2 record(s)" in res.out
    channel.tamper(ALPHA, "license", "tampered")
    _refused(conda.create(channel.url, "alpha", repodata_fn=None), channel.url, "signature")


def test_two_subdirs_and_both_formats(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel)
    res = conda.create(channel.url, "alpha", "delta")
    assert res.code == 0 and res.linked("delta") and res.linked("alpha"), res.out
    assert f"cf-sign: verified 3 record(s) from {channel.url}" in res.out
    channel.tamper("delta-4.0-0.tar.bz2", "depends", ["beta"], subdir="linux-64")
    res = conda.create(channel.url, "alpha", "delta")
    assert res.code != 0 and "delta-4.0-0.tar.bz2 from" in res.out and "signature" in res.out
    assert not res.linked("delta") and not res.linked("alpha"), res.out


def test_tampered_record_refused(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel)
    channel.tamper(ALPHA, "depends", [])  # the signature stays: it no longer matches
    _refused(conda.create(channel.url, "alpha"), channel.url, ALPHA, "signature")
    dry = conda.create(channel.url, "alpha", dry_run=True)
    assert dry.code != 0 and "cf-sign refused" in dry.out and "DryRunExit" not in dry.out


def test_tampered_dependency_refused_even_when_not_asked_for(
    conda: Conda, channel: Channel
) -> None:
    _enforce(conda, channel)
    channel.tamper("beta-2.0-0.conda", "license", "other")
    res = conda.create(channel.url, "alpha")
    _refused(res, channel.url, "beta-2.0-0.conda", "signature")
    assert ALPHA not in res.out.split("cf-sign refused", 1)[1]  # alpha itself verified


def test_unsigned_record_refused(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel)
    channel.unsign(ALPHA)
    _refused(conda.create(channel.url, "alpha"), channel.url, ALPHA, "unsigned")


def test_record_signed_by_another_key_refused(
    conda: Conda, channel: Channel, tmp_path: Path
) -> None:
    _enforce(conda, channel)
    other = make_dev_trust_repo(tmp_path / "other")
    from test_feedstock_support import run

    # Only the other key's signatures: `repodata sign` would otherwise keep the valid ones.
    args = ("repodata", "sign", channel.repodata, "--key", other.keyref("pkg_mgr"))
    assert run(*args, "--drop-other-signatures") == 0
    _refused(conda.create(channel.url, "alpha"), channel.url, ALPHA, "unsigned")


def test_expired_key_mgr_refused(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel)
    channel.key_mgr(2, expires_in=-timedelta(hours=1))
    _refused(conda.create(channel.url, "alpha"), channel.url, "key_mgr.json", "expired")


def test_rolled_back_key_mgr_refused(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel)
    v1 = (channel.repo.trust_dir / "key_mgr.json").read_bytes()
    channel.key_mgr(2)
    _installed(conda.create(channel.url, "alpha"))  # version 2 is now remembered (XDG state)
    (channel.repo.trust_dir / "key_mgr.json").write_bytes(v1)
    _refused(conda.create(channel.url, "alpha"), channel.url, "key_mgr.json", "rollback")


def test_root_that_does_not_chain_refused(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel)
    channel.rogue_root_update()
    _refused(conda.create(channel.url, "alpha"), channel.url, "2.root.json")


def test_anchor_of_another_repository_refused(
    conda: Conda, channel: Channel, tmp_path: Path
) -> None:
    # `cf-sign conda trust` checks before writing: the mismatch is refused there...
    other = make_dev_trust_repo(tmp_path / "other")
    proc = conda.cf_sign("conda", "trust", channel.url, "--trust", channel.repo.trust_dir,
                         "--root", other.root_file, "--user")  # fmt: skip
    assert proc.returncode == 1 and "key_mgr.json" in proc.stdout + proc.stderr
    assert not (conda.user_condarc).exists()
    # ...and a .condarc written by hand with it is refused at install time.
    (conda.user_condarc).write_text(
        "plugins:\n  cf_sign_channels:\n"
        f"    {channel.url}:\n      trust: {channel.repo.trust_dir}\n"
        f"      root: {other.root_file}\n"
    )
    _refused(conda.create(channel.url, "alpha"), channel.url, "key_mgr.json", "signature")


def test_observe_mode_installs_and_reports(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel, "--policy", "observe")
    _installed(conda.create(channel.url, "alpha"))
    channel.tamper(ALPHA, "license", "tampered")
    res = conda.create(channel.url, "alpha")
    _installed(res)
    assert f"cf-sign (observe, not refused): {ALPHA} from {channel.url}: signature" in res.out
    assert "1 of 2 record(s)" in res.out


def test_unconfigured_channel_untouched(conda: Conda, channel: Channel, tmp_path: Path) -> None:
    elsewhere = make_channel(tmp_path / "elsewhere")
    elsewhere.tamper(ALPHA, "license", "tampered")
    _enforce(conda, channel)  # a different channel is enforced
    res = conda.create(elsewhere.url, "alpha")
    _installed(res)
    assert "cf-sign" not in res.out
    # Control: the same tampered channel, once configured, is refused.
    _enforce(conda, elsewhere)
    _refused(conda.create(elsewhere.url, "alpha"), elsewhere.url, "signature")


def test_bad_configuration_is_a_clear_error(conda: Conda, channel: Channel) -> None:
    (conda.user_condarc).write_text(
        "plugins:\n  cf_sign_channels:\n"
        f"    {channel.url}:\n      trust: {channel.repo.trust_dir}\n"
        f"      root: {channel.repo.root_file}\n      policy: enforcing\n"
    )
    res = conda.create(channel.url, "alpha")
    assert res.code != 0 and not res.linked("alpha")
    assert "policy" in res.out and "'enforcing'" in res.out and "Traceback" not in res.out
    (conda.user_condarc).write_text(
        "plugins:\n  cf_sign_channels:\n"
        f"    {channel.url}:\n      trust: {channel.repo.trust_dir}\n"
        f"      root: {channel.repo.trust_dir / 'missing.root.json'}\n"
    )
    res = conda.create(channel.url, "alpha")
    assert res.code != 0 and not res.linked("alpha")
    assert "missing.root.json" in res.out and "no such file" in res.out


def test_over_http_good_and_tampered(conda: Conda, channel: Channel, tmp_path: Path) -> None:
    with serve(tmp_path / "site") as site:
        url = f"{site.base_url}/chan"
        conda.trust(url, f"{site.base_url}/dev/trust", channel.repo.root_file, "--user")
        site.counts.clear()
        res = conda.create(url, "alpha")
        _installed(res)
        assert f"cf-sign: verified 2 record(s) from {url}" in res.out
        # The plugin reads conda's cache: the repodata is fetched once, by conda.
        assert site.counts["/chan/noarch/repodata.json"] == 1, site.counts
        assert site.counts["/dev/trust/key_mgr.json"] == 1
        assert site.counts["/dev/trust/2.root.json"] == 1
        channel.tamper(ALPHA, "size", 1)
        _refused(conda.create(url, "alpha"), url, ALPHA, "signature")


def test_status_lists_what_is_enforced(conda: Conda, channel: Channel) -> None:
    proc = conda.cf_sign("conda", "status")
    assert proc.returncode == 0 and "no channel is configured" in proc.stdout
    _enforce(conda, channel)
    proc = conda.cf_sign("conda", "status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert channel.url in proc.stdout and "enforce" in proc.stdout and "v1" in proc.stdout
    channel.key_mgr(2, expires_in=-timedelta(hours=1))
    proc = conda.cf_sign("conda", "status")
    assert proc.returncode == 1 and "expired" in proc.stdout


def test_prefix_configuration_applies_to_that_prefix(conda: Conda, channel: Channel) -> None:
    env = conda.base / "target"
    _installed(conda.create(channel.url, "alpha", prefix=env))  # nothing configured yet
    channel.tamper("gamma-3.0-0.conda", "license", "tampered")
    args = ("conda", "trust", channel.url, "--trust", channel.repo.trust_dir,
            "--root", channel.repo.root_file)  # fmt: skip
    proc = conda.cf_sign(*args, env_extra={"CONDA_PREFIX": str(env)})
    assert proc.returncode == 0 and (env / ".condarc").is_file(), proc.stdout + proc.stderr
    assert not conda.user_condarc.exists()
    res = conda.create(channel.url, "gamma", prefix=env, command="install")
    assert res.code != 0 and "gamma-3.0-0.conda" in res.out and "signature" in res.out, res.out
    assert not res.linked("gamma") and res.linked("alpha")
    # Another prefix does not read it: the same tampered record installs there.
    res = conda.create(channel.url, "gamma")
    assert res.code == 0 and res.linked("gamma") and "cf-sign" not in res.out, res.out


def test_verify_cache_on_what_conda_downloaded(conda: Conda, tmp_path: Path) -> None:
    from test_feedstock_support import make_world

    world = make_world(tmp_path / "w")
    numpy = ("numpy", "2.1.0", "0", (), "noarch", "conda")
    channel = make_channel(tmp_path / "site", repo=world.repo, extra=(numpy,))
    attestations = world.trust / "attestations" / "noarch"
    noarch = channel.path / "noarch"
    assert world.sign(noarch / "numpy-2.1.0-0.conda", "numpy", "--out-dir", attestations) == 0
    # A feedstock key signing a name outside its delegation.
    assert world.sign(noarch / ALPHA, "evil", "--out-dir", attestations) == 0
    _enforce(conda, channel)
    res = conda.create(channel.url, "numpy", "alpha")
    _installed(res)  # the channel layer verifies: the feedstock layer is not seen by conda
    proc = conda.cf_sign("conda", "verify-cache", env_extra={"CONDA_PKGS_DIRS": str(res.pkgs)})
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "OK   numpy-2.1.0-0.conda  feedstock numpy" in out
    assert f"FAIL {ALPHA}: scope" in out, out
    assert "FAIL beta-2.0-0.conda: attestation: unsigned" in out, out
    assert "1 of 3 checked archive(s) verified, 0 skipped" in out


def test_explicit_install_checked_before_linking(
    conda: Conda, channel: Channel, tmp_path: Path
) -> None:
    # An @EXPLICIT file skips the solver (and the post-solve hook): the pre-transaction
    # check catches it after the download, before anything is linked.
    lock = channel.explicit_file(tmp_path / "explicit.txt", "beta-2.0-0.conda", ALPHA)
    _enforce(conda, channel)
    res = conda.create(channel.url, explicit=lock)
    _installed(res)
    assert res.out.count("cf-sign: verified 2 record(s)") == 1, res.out
    channel.tamper(ALPHA, "license", "tampered")  # the archive and its md5 are unchanged
    res = conda.create(channel.url, explicit=lock)
    assert res.code != 0 and f"{ALPHA} from {channel.url}: signature" in res.out, res.out
    assert "nothing was linked" in res.out and "Traceback" not in res.out
    assert not res.linked("alpha") and not res.linked("beta")


def test_solved_install_checked_once(conda: Conda, channel: Channel) -> None:
    _enforce(conda, channel)
    res = conda.create(channel.url, "alpha")
    _installed(res)
    assert res.out.count("cf-sign: verified") == 1, res.out  # not again before linking


def test_unreachable_trust_repository_refuses(conda: Conda, channel: Channel) -> None:
    import socket

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conda.user_condarc.write_text(
        "plugins:\n  cf_sign_channels:\n"
        f"    {channel.url}:\n      trust: http://127.0.0.1:{port}/trust\n"
        f"      root: {channel.repo.root_file}\n"
    )
    _refused(conda.create(channel.url, "alpha"), channel.url, "network error")
    # Control: the same channel with its reachable trust repository installs.
    _enforce(conda, channel)
    _installed(conda.create(channel.url, "alpha"))
