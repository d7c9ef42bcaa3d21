"""Co-signing: several pkg_mgr keys, one pass or one after another, meet a threshold > 1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from signer.artifacts.build import build_package
from signer.devrepo import DevTrustRepo
from signer.keys import generate_key
from tests.conftest import CliResult

Cli = Callable[..., CliResult]


def _channel(cli: Cli, tmp_path: Path) -> Path:
    sub = tmp_path / "linux-64"
    build_package(sub, "a", "1.0", "h0_0", subdir="linux-64", fmt="conda", license="MIT ©")
    build_package(sub, "b", "2.0", "h0_0", subdir="linux-64", fmt="tar.bz2", depends=["a", "a"])
    build_package(sub, "c", "3.0", "py_0", subdir="linux-64", fmt="conda",
                  index_overrides={"noarch": "python", "license": None})  # fmt: skip
    out = tmp_path / "repodata.json"
    assert cli("repodata", "index", sub, "-o", out).code == 0
    return out


def _threshold_two(cli: Cli, repo: DevTrustRepo, keys: Path) -> dict[str, str]:
    """key_mgr delegating pkg_mgr to two conda and two mamba keys at threshold 2."""
    names = ("conda1", "conda2", "mamba1", "mamba2")
    for name in names:
        generate_key(name, keys)
    pubs: list[object] = []
    for name in names:
        pubs += ["--pkg-mgr-key", keys / f"{name}.pub"]
    key_mgr = keys / "key_mgr.json"  # made aside: cf-sign never overwrites a signed document
    assert cli("key-mgr", "create", *pubs, "--threshold", "2", "--version", "2",
               "-o", key_mgr).code == 0  # fmt: skip
    assert cli("metadata", "sign", "--key", repo.keyref("key_mgr"), key_mgr).code == 0
    pkg_mgr = keys / "pkg_mgr.json"  # mamba wants it signed by a threshold too
    assert cli("pkg-mgr", "create", "-o", pkg_mgr).code == 0
    for name in ("mamba1", "mamba2"):
        assert cli("metadata", "sign", "--key", f"file:{keys / name}.key", pkg_mgr).code == 0
    key_mgr.replace(repo.trust_dir / "key_mgr.json")  # published
    pkg_mgr.replace(repo.trust_dir / "pkg_mgr.json")
    return {name: f"file:{keys / name}.key" for name in names}


def _verify(cli: Cli, repo: DevTrustRepo, path: Path, *extra: object) -> tuple[int, Any]:
    result = cli("repodata", "verify", path, "--trust", repo.trust_dir, "--root",
                 repo.root_file, "--json", *extra)  # fmt: skip
    return result.code, json.loads(result.out) if result.out else result.err


def _sign(cli: Cli, path: Path, *args: str) -> CliResult:
    result = cli("repodata", "sign", path, *args)
    assert result.code == 0, result.err
    return result


def test_second_pass_keeps_the_first_keys_signatures(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    keys = _threshold_two(cli, dev_repo, tmp_path / "keys")
    path = _channel(cli, tmp_path)
    _sign(cli, path, "--key", keys["conda1"], "--mamba-key", keys["mamba1"])
    code, report = _verify(cli, dev_repo, path, "--profile", "both")
    assert code == 1 and report["conda"]["invalid"] == report["mamba"]["invalid"] == 3
    assert "(1 of 2 valid" in report["failures"][0]["reason"]
    second = _sign(cli, path, "--key", keys["conda2"], "--mamba-key", keys["mamba2"])
    assert "6 kept (still valid), 0 dropped" in second.out
    assert all(len(s) == 4 for s in json.loads(path.read_text())["signatures"].values())
    code, report = _verify(cli, dev_repo, path, "--profile", "both")
    assert code == 0, report
    assert report["conda"]["valid"] == report["mamba"]["valid"] == report["records"] == 3
    # Control: a second pass that drops the others leaves one signature per profile.
    _sign(cli, path, "--key", keys["conda2"], "--mamba-key", keys["mamba2"],
          "--drop-other-signatures")  # fmt: skip
    code, report = _verify(cli, dev_repo, path, "--profile", "both")
    assert code == 1 and report["conda"]["valid"] == report["mamba"]["valid"] == 0


def test_repeated_keys_all_sign_in_one_pass(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    keys = _threshold_two(cli, dev_repo, tmp_path / "keys")
    path = _channel(cli, tmp_path)
    _sign(cli, path, "--key", keys["conda1"], "--key", keys["conda2"],
          "--mamba-key", keys["mamba1"], "--mamba-key", keys["mamba2"])  # fmt: skip
    code, report = _verify(cli, dev_repo, path, "--profile", "both")
    assert code == 0 and report["conda"]["valid"] == report["mamba"]["valid"] == 3
    # Only the conda keys: mamba users would refuse the channel, and the report says so.
    _sign(cli, path, "--key", keys["conda1"], "--key", keys["conda2"], "--drop-other-signatures")
    code, report = _verify(cli, dev_repo, path, "--profile", "mamba")
    assert code == 1 and report["profiles"] == ["mamba"] and "conda" not in report
    assert report["mamba"]["invalid"] == 3 and report["mamba"]["ok"] is False
    assert report["failures"][0]["reason"].startswith("only conda-profile signatures")
    assert _verify(cli, dev_repo, path)[0] == 0  # conda users accept it


def test_a_changed_record_loses_the_stale_signatures_only(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    keys = _threshold_two(cli, dev_repo, tmp_path / "keys")
    path = _channel(cli, tmp_path)
    _sign(cli, path, "--key", keys["conda1"], "--mamba-key", keys["mamba1"])
    doc = json.loads(path.read_text())
    doc["packages.conda"]["a-1.0-h0_0.conda"]["size"] += 1  # changed after the first pass
    path.write_text(json.dumps(doc))
    second = _sign(cli, path, "--key", keys["conda2"], "--mamba-key", keys["mamba2"])
    assert "4 kept (still valid), 2 dropped (stale or unreadable)" in second.out
    sigs = json.loads(path.read_text())["signatures"]
    assert len(sigs["a-1.0-h0_0.conda"]) == 2 and len(sigs["b-2.0-h0_0.tar.bz2"]) == 4
    code, report = _verify(cli, dev_repo, path, "--profile", "both")
    assert code == 1 and report["conda"]["valid"] == report["mamba"]["valid"] == 2
    assert {f["filename"] for f in report["failures"]} == {"a-1.0-h0_0.conda"}


def test_text_report_names_each_profile(cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    path = _channel(cli, tmp_path)
    _sign(cli, path, "--key", dev_repo.keyref("pkg_mgr"))
    out = cli("repodata", "verify", path, "--trust", dev_repo.trust_dir,
              "--root", dev_repo.root_file, "--profile", "both")  # fmt: skip
    assert out.code == 1
    assert "conda profile         3 valid, 0 invalid, 0 unsigned: accepted" in out.out
    assert "mamba profile         0 valid, 3 invalid, 0 unsigned: NOT accepted" in out.out
    assert "FAIL linux-64/a-1.0-h0_0.conda: signature [mamba]: only conda-profile" in out.out
    _sign(cli, path, "--mamba-key", dev_repo.keyref("pkg_mgr_mamba"))  # keeps the conda ones
    out = cli("repodata", "verify", path, "--trust", dev_repo.trust_dir,
              "--root", dev_repo.root_file, "--mamba")  # fmt: skip
    assert out.code == 0, out.out
    assert "OK: every record is validly signed (conda and mamba profiles)" in out.out


@pytest.mark.parametrize("args", [("--key", "KEY", "--mamba-key", "KEY"), ()])
def test_a_key_twice_or_no_key_is_exit_2(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path, args: tuple[str, ...]
) -> None:
    path = _channel(cli, tmp_path)
    before = path.read_bytes()
    result = cli("repodata", "sign", path,
                 *(dev_repo.keyref("pkg_mgr") if a == "KEY" else a for a in args))  # fmt: skip
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert path.read_bytes() == before


def test_mamba_profile_needs_a_valid_pkg_mgr_json(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    path = _channel(cli, tmp_path)
    _sign(cli, path, "--key", dev_repo.keyref("pkg_mgr"),
          "--mamba-key", dev_repo.keyref("pkg_mgr_mamba"))  # fmt: skip
    assert _verify(cli, dev_repo, path, "--profile", "mamba")[0] == 0
    pkg_mgr = dev_repo.trust_dir / "pkg_mgr.json"
    doc = json.loads(pkg_mgr.read_text())
    doc["signatures"] = {}
    pkg_mgr.write_text(json.dumps(doc))
    result = cli("repodata", "verify", path, "--trust", dev_repo.trust_dir,
                 "--root", dev_repo.root_file, "--profile", "mamba")  # fmt: skip
    assert result.code == 1 and "pkg_mgr.json" in result.err
    # A published pkg_mgr.json must verify whatever the profile (the verifier session).
    assert _verify(cli, dev_repo, path)[0] == 1
    pkg_mgr.unlink()  # none published: conda users are fine, mamba users are not
    assert _verify(cli, dev_repo, path)[0] == 0
    result = cli("repodata", "verify", path, "--trust", dev_repo.trust_dir,
                 "--root", dev_repo.root_file, "--profile", "mamba")  # fmt: skip
    assert result.code == 1 and "pkg_mgr.json" in result.err and "mamba requires" in result.err
