"""A channel made with cf-sign, judged by a real conda with conda-content-trust.

cf-sign indexes real packages, signs both profiles and publishes the trust files next to
the subdirs; conda (classic solver, `--dry-run`) is configured as conda-content-trust
0.3.2 reads it: `extra_safety_checks`, `signing_metadata_url_base`, and the trusted root
in `sys.prefix/etc/conda/` (conda's `av_data_dir`). conda marks each package of the plan
"(package metadata is TRUSTED)" or "UNTRUSTED"; it never blocks (cf-sign's plugin does).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from signer.artifacts.build import build_package
from signer.devrepo import DevTrustRepo
from tests.conftest import CliResult
from tests.real_clients import Conda, conda_cct_venv

Cli = Callable[..., CliResult]
TRUST_FILES = ("1.root.json", "key_mgr.json", "pkg_mgr.json")


@pytest.fixture(autouse=True)
def _needs_conda() -> None:
    conda_cct_venv()  # skip (or fail, when required) before building anything


def make_channel(cli: Cli, repo: DevTrustRepo, base: Path) -> tuple[Path, dict[str, str]]:
    """A signed channel with the trust files published at its root; {package: subdir}."""
    channel = base / "channel"
    linux, noarch = channel / "linux-64", channel / "noarch"
    build_package(linux, "demo-lib", "1.0", "h0_0", subdir="linux-64", fmt="conda",
                  license="MIT © Jörg Müller", depends=["demo-base", "demo-base"])
    build_package(linux, "demo-base", "0.5", "h1_0", subdir="linux-64", fmt="tar.bz2",
                  license="BSD-3-Clause", timestamp_ms=1_700_000_000_000)
    build_package(linux, "demo-app", "2.0", "h0_0", subdir="linux-64", fmt="tar.bz2",
                  depends=["demo-lib >=1.0", "demo-py"])
    build_package(noarch, "demo-py", "3.0", "pyh0_0", subdir="noarch", fmt="conda",
                  index_overrides={"noarch": "python", "license": None})  # fmt: skip
    for subdir in (linux, noarch):
        repodata = subdir / "repodata.json"
        assert cli("repodata", "index", subdir, "-o", repodata).code == 0
        signed = cli("repodata", "sign", repodata, "--key", repo.keyref("pkg_mgr"),
                     "--mamba-key", repo.keyref("pkg_mgr_mamba"))  # fmt: skip
        assert signed.code == 0, signed.err
    for name in TRUST_FILES:
        shutil.copy(repo.trust_dir / name, channel / name)
    packages = {"demo-app": "linux-64", "demo-lib": "linux-64", "demo-base": "linux-64",
                "demo-py": "noarch"}  # fmt: skip
    return channel, packages


def test_conda_trusts_every_package_of_a_cf_sign_channel(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    channel, packages = make_channel(cli, dev_repo, tmp_path)
    conda = Conda(tmp_path / "conda", dev_repo.root_file, channel.as_uri(), channel.as_uri())
    out, marks = conda.dry_run("demo-app")
    assert set(marks) == set(packages), out
    assert all(mark == "package metadata is TRUSTED" for mark in marks.values()), out
    # conda stores the key_mgr it verified next to the root.
    assert (conda.av_data_dir / "key_mgr.json").exists()

    # A record changed after signing: UNTRUSTED for it, TRUSTED for the others.
    repodata = channel / "linux-64" / "repodata.json"
    doc = json.loads(repodata.read_text(encoding="utf-8"))
    doc["packages.conda"]["demo-lib-1.0-h0_0.conda"]["license"] = "Proprietary"
    repodata.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    out, marks = conda.dry_run("demo-app")
    assert marks.pop("demo-lib") == "package metadata is UNTRUSTED", out
    assert set(marks) == set(packages) - {"demo-lib"}
    assert all(mark == "package metadata is TRUSTED" for mark in marks.values()), out


def _rotation(cli: Cli, repo: DevTrustRepo, channel: Path, tmp_path: Path,
              signers: list[str]) -> None:  # fmt: skip
    """Root 2 moves key_mgr to a new key; key_mgr.json re-signed by that key only."""
    keys = tmp_path / "new-keys"
    assert cli("keys", "generate", "key_mgr2", "--dir", keys).code == 0
    rotated = channel / "2.root.json"
    made = cli("root", "rotate", repo.root_file, "-o", rotated,
               "--key-mgr-key", keys / "key_mgr2.pub")  # fmt: skip
    assert made.code == 0, made.err
    for name in signers:
        signed = cli("metadata", "sign", "--key", repo.keyref(name), rotated)
        assert signed.code == 0, signed.err
    key_mgr = keys / "key_mgr.json"  # cf-sign never overwrites a signed document
    made = cli("key-mgr", "create", "--pkg-mgr-key", repo.keys_dir / "pkg_mgr.pub",
               "--pkg-mgr-key", repo.keys_dir / "pkg_mgr_mamba.pub", "-o", key_mgr)  # fmt: skip
    assert made.code == 0, made.err
    signed = cli("metadata", "sign", "--key", f"file:{keys / 'key_mgr2.key'}", key_mgr)
    assert signed.code == 0, signed.err
    key_mgr.replace(channel / "key_mgr.json")  # published


def test_conda_follows_a_cf_sign_root_rotation(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    channel, packages = make_channel(cli, dev_repo, tmp_path)
    _rotation(cli, dev_repo, channel, tmp_path, ["root1", "root3"])
    conda = Conda(tmp_path / "conda", dev_repo.root_file, channel.as_uri(), channel.as_uri())
    out, marks = conda.dry_run("demo-app")
    # Only root 2 delegates to the key that now signs key_mgr.json: TRUSTED means conda
    # walked 1 -> 2, and it keeps root 2 as its trusted root from now on.
    assert set(marks) == set(packages), out
    assert all(mark == "package metadata is TRUSTED" for mark in marks.values()), out
    kept = conda.av_data_dir / "2.root.json"
    assert json.loads(kept.read_text()) == json.loads((channel / "2.root.json").read_text())


def test_conda_refuses_a_rotation_short_of_the_threshold(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    channel, _ = make_channel(cli, dev_repo, tmp_path)
    _rotation(cli, dev_repo, channel, tmp_path, ["root1"])  # 1 of the 2 signatures needed
    conda = Conda(tmp_path / "conda", dev_repo.root_file, channel.as_uri(), channel.as_uri())
    out, _ = conda.dry_run("demo-app")
    assert not (conda.av_data_dir / "2.root.json").exists(), out
    # Still on root 1, conda cannot verify the new key_mgr: conda-content-trust raises
    # (conda reports an unexpected error) and nothing is marked TRUSTED.
    assert "SignatureError" in out and "good signatures" in out, out
    assert "package metadata is TRUSTED" not in out, out


def test_conda_counts_co_signatures_toward_a_threshold_of_two(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    from tests.test_repodata_cosign import _threshold_two

    keys = _threshold_two(cli, dev_repo, tmp_path / "keys")
    channel, packages = make_channel(cli, dev_repo, tmp_path)  # signed by other keys: replaced
    for name in TRUST_FILES:
        shutil.copy(dev_repo.trust_dir / name, channel / name)
    subdirs = [channel / "linux-64" / "repodata.json", channel / "noarch" / "repodata.json"]
    for repodata in subdirs:
        signed = cli("repodata", "sign", repodata, "--key", keys["conda1"],
                     "--mamba-key", keys["mamba1"], "--drop-other-signatures")  # fmt: skip
        assert signed.code == 0, signed.err
    conda = Conda(tmp_path / "conda", dev_repo.root_file, channel.as_uri(), channel.as_uri())
    out, marks = conda.dry_run("demo-app")
    assert set(marks) == set(packages), out
    assert all(mark == "package metadata is UNTRUSTED" for mark in marks.values()), out
    for repodata in subdirs:  # the second holder's pass keeps the first one's signatures
        signed = cli("repodata", "sign", repodata, "--key", keys["conda2"],
                     "--mamba-key", keys["mamba2"])  # fmt: skip
        assert signed.code == 0, signed.err
    out, marks = conda.dry_run("demo-app")
    assert all(mark == "package metadata is TRUSTED" for mark in marks.values()), out
