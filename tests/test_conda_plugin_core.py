"""The conda plugin's conda-free parts: configuration, the record check, the commands.

These run everywhere (no conda needed); test_conda_plugin.py runs the same checks inside
a real conda.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_conda_plugin_support import Channel, make_channel
from test_feedstock_support import make_world, run

from signer.client import TrustSession
from signer.conda_plugin.config import (
    ChannelTrust,
    parse_channels,
    parse_entry,
    read_condarc_channels,
    write_channel,
)
from signer.conda_plugin.enforce import Candidate, check_subdir
from signer.conda_plugin.trust import open_channel_trust
from signer.trust.errors import FormatError

ALPHA = "alpha-1.0-0.conda"


@pytest.fixture
def channel(tmp_path: Path) -> Channel:
    return make_channel(tmp_path / "site")


def _session(channel: Channel) -> TrustSession:
    entry = parse_entry("c", {"trust": str(channel.repo.trust_dir),
                              "root": str(channel.repo.root_file)})  # fmt: skip
    return open_channel_trust(entry).session


def _record(channel: Channel, filename: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(channel.repodata.read_bytes())["packages.conda"][filename]
    return data


# ----------------------------------------------------------------------------- configuration


def test_entry_defaults_and_normalises(tmp_path: Path) -> None:
    entry = parse_entry("conda-forge", {"trust": "https://t.example/x/", "root": "/r.json"})
    assert entry == ChannelTrust("conda-forge", "https://t.example/x", Path("/r.json"), "enforce")
    local = parse_entry("c", {"trust": f"file://{tmp_path}", "root": "/r", "policy": "observe"})
    assert local.trust == str(tmp_path) and not local.enforcing


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"root": "/r"}, "trust", "missing"),
        ({"trust": "https://t"}, "root", "missing"),
        ({"trust": "https://t", "root": "r.json"}, "root", "absolute"),
        ({"trust": "relative/dir", "root": "/r"}, "trust", "absolute directory"),
        ({"trust": "https://t", "root": "/r", "policy": "enforcing"}, "policy", "'enforcing'"),
        ({"trust": "https://t", "root": "/r", "polcy": "observe"}, "polcy", "unknown field"),
        ({"trust": 5, "root": "/r"}, "trust", "non-empty string"),
        ("https://t", "", "must be a mapping"),
    ],
)
def test_entry_errors_name_channel_and_field(raw: object, field: str, words: str) -> None:
    with pytest.raises(FormatError) as err:
        parse_entry("conda-forge", raw)
    assert err.value.field == field and words in str(err.value)
    assert "'conda-forge'" in str(err.value)


def test_setting_must_be_a_mapping() -> None:
    assert parse_channels(None) == []
    with pytest.raises(FormatError, match="mapping of channel"):
        parse_channels(["conda-forge"])


def test_write_keeps_the_rest_of_the_condarc(tmp_path: Path) -> None:
    condarc = tmp_path / ".condarc"
    condarc.write_text("channels:\n  - conda-forge\nplugins:\n  other_setting: 1\n")
    entry = parse_entry("conda-forge", {"trust": "https://t", "root": "/r"})
    write_channel(condarc, entry)
    write_channel(condarc, parse_entry("bioconda", {"trust": "https://b", "root": "/b"}))
    write_channel(condarc, parse_entry("conda-forge", {"trust": "https://t2", "root": "/r"}))
    import yaml

    data = yaml.safe_load(condarc.read_text())
    assert data["channels"] == ["conda-forge"] and data["plugins"]["other_setting"] == 1
    entries = {e.channel: e for e in read_condarc_channels(condarc)}
    assert set(entries) == {"conda-forge", "bioconda"}
    assert entries["conda-forge"].trust == "https://t2"


def test_write_refuses_a_broken_condarc_and_leaves_it(tmp_path: Path) -> None:
    condarc = tmp_path / ".condarc"
    condarc.write_text("channels: [unclosed\n")
    with pytest.raises(FormatError, match="not valid YAML"):
        write_channel(condarc, parse_entry("c", {"trust": "https://t", "root": "/r"}))
    assert condarc.read_text() == "channels: [unclosed\n"


# ----------------------------------------------------------------------------- record check


def test_good_records_verify(channel: Channel) -> None:
    cands = [Candidate(ALPHA, "noarch", _record(channel, ALPHA)),
             Candidate("beta-2.0-0.conda", "noarch", {})]  # fmt: skip
    assert check_subdir(channel.repodata, cands, _session(channel)) == []


def test_tampered_unsigned_and_missing_records(channel: Channel) -> None:
    session = _session(channel)
    channel.tamper(ALPHA, "depends", [])
    channel.unsign("beta-2.0-0.conda")
    names = [ALPHA, "beta-2.0-0.conda", "gamma-3.0-0.conda", "delta-1-0.conda"]
    found = check_subdir(channel.repodata, [Candidate(n, "noarch") for n in names], session)
    problems = {p.filename: p for p in found}
    assert problems[ALPHA].check == "signature" and "bad signature" in problems[ALPHA].reason
    assert problems["beta-2.0-0.conda"].check == "unsigned"
    assert "gamma-3.0-0.conda" not in problems  # control: untouched record verifies
    assert problems["delta-1-0.conda"].check == "repodata"


def test_record_conda_would_use_must_match_the_signed_one(channel: Channel) -> None:
    session = _session(channel)
    fields = _record(channel, ALPHA)
    assert check_subdir(channel.repodata, [Candidate(ALPHA, "noarch", fields)], session) == []
    for name, value in (("sha256", "0" * 64), ("depends", ("beta", "evil")), ("size", 1)):
        forged = {**fields, name: value}
        (problem,) = check_subdir(channel.repodata, [Candidate(ALPHA, "noarch", forged)], session)
        assert problem.check == "record" and name in problem.reason


def test_signed_record_in_the_wrong_subdir_refused(channel: Channel) -> None:
    session = _session(channel)
    channel.tamper(ALPHA, "subdir", "linux-64")
    keys = ("--key", channel.repo.keyref("pkg_mgr"))
    assert run("repodata", "sign", channel.repodata, *keys) == 0  # validly signed, wrong place
    (problem,) = check_subdir(channel.repodata, [Candidate(ALPHA, "noarch")], session)
    assert problem.check == "subdir"


def test_unreadable_repodata_refuses_every_record(channel: Channel) -> None:
    session = _session(channel)
    channel.repodata.write_bytes(channel.repodata.read_bytes()[:200])
    problems = check_subdir(channel.repodata, [Candidate(ALPHA, "noarch")], session)
    assert [p.check for p in problems] == ["repodata"] and "truncated" in problems[0].reason


# ----------------------------------------------------------------------------- commands


@pytest.fixture
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path / "prefix"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONDARC", raising=False)
    (tmp_path / "prefix").mkdir()
    (tmp_path / "home").mkdir()
    return tmp_path / "prefix"


def test_trust_then_status(channel: Channel, prefix: Path, cli: Callable[..., Any]) -> None:
    res = cli("conda", "status")
    assert res.code == 0 and "no channel is configured" in res.out
    res = cli("conda", "trust", "conda-forge", "--trust", channel.repo.trust_dir,
              "--root", channel.repo.root_file, "--policy", "observe")  # fmt: skip
    assert res.code == 0, res.err
    assert "written to" in res.out and str(prefix / ".condarc") in res.out
    (entry,) = read_condarc_channels(prefix / ".condarc")
    assert entry.policy == "observe" and entry.root == channel.repo.root_file
    res = cli("conda", "status", "--json")
    (status,) = json.loads(res.out)
    assert res.code == 0 and status["ok"] and status["key_mgr_version"] == 1
    assert status["channel"] == "conda-forge" and status["source"] == str(prefix / ".condarc")
    res = cli("conda", "trust", "bioconda", "--trust", channel.repo.trust_dir,
              "--root", channel.repo.root_file, "--user")  # fmt: skip
    assert res.code == 0 and read_condarc_channels(prefix.parent / "home" / ".condarc")


def test_trust_refuses_bad_input_and_writes_nothing(
    channel: Channel, prefix: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    res = cli("conda", "trust", "c", "--trust", channel.repo.trust_dir, "--root", tmp_path / "no")
    assert res.code == 2 and "no such file" in res.err and "Traceback" not in res.err
    res = cli("conda", "trust", "c", "--trust", tmp_path / "nodir", "--root",
              channel.repo.root_file)  # fmt: skip
    assert res.code == 2 and "not a directory" in res.err
    other = make_channel(tmp_path / "other")
    res = cli("conda", "trust", "c", "--trust", channel.repo.trust_dir,
              "--root", other.repo.root_file)  # fmt: skip
    assert res.code == 1 and "key_mgr.json" in res.err
    assert not (prefix / ".condarc").exists()


def test_status_fails_on_expired_key_mgr(
    channel: Channel, prefix: Path, cli: Callable[..., Any]
) -> None:
    from datetime import timedelta

    assert cli("conda", "trust", "c", "--trust", channel.repo.trust_dir,
               "--root", channel.repo.root_file).code == 0  # fmt: skip
    channel.key_mgr(2, expires_in=-timedelta(hours=1))
    res = cli("conda", "status")
    assert res.code == 1 and "FAIL" in res.out and "expired" in res.out


# ----------------------------------------------------------------------------- verify-cache


def _cache_entry(pkgs: Path, artifact: Path, channel_url: str) -> Path:
    """An archive in a package cache as conda leaves it (with its repodata_record.json)."""
    target = pkgs / artifact.name
    shutil.copy(artifact, target)
    stem = artifact.name.removesuffix(".conda")
    info = pkgs / stem / "info"
    info.mkdir(parents=True)
    url = f"{channel_url}/linux-64/{artifact.name}"
    (info / "repodata_record.json").write_text(json.dumps({"url": url}))
    return target


def test_verify_cache(tmp_path: Path, prefix: Path, cli: Callable[..., Any]) -> None:
    world = make_world(tmp_path / "w")
    out = world.trust / "attestations" / "linux-64"
    good = world.build("numpy", "2.1.0", "py312h0_0", out=tmp_path / "bld")
    assert world.sign(good, "numpy", "--out-dir", out) == 0
    forged_src = world.build("numpy", "2.1.0", "py312h0_1", out=tmp_path / "bld")
    assert world.sign(forged_src, "numpy", "--out-dir", out) == 0
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    _cache_entry(pkgs, good, "https://trusted.example/cf")
    # Another build's bytes under an attested name: refused.
    forged = _cache_entry(pkgs, forged_src, "https://trusted.example/cf")
    forged.write_bytes(good.read_bytes())
    other = world.build("scipy", "1.0", "h0_0", out=tmp_path / "bld2")
    _cache_entry(pkgs, other, "https://elsewhere.example/x")

    assert cli("conda", "trust", "https://trusted.example/cf", "--trust", world.trust,
               "--root", world.root).code == 0  # fmt: skip
    res = cli("conda", "verify-cache", pkgs)
    assert res.code == 1, res.out + res.err
    assert f"OK   {good.name}" in res.out
    assert f"FAIL {forged.name}" in res.out
    assert f"SKIP {other.name}: channel https://elsewhere.example/x is not configured" in res.out
    res = cli("conda", "verify-cache", pkgs, "--json")
    report = json.loads(res.out)
    assert [v["ok"] for v in report["verdicts"]] == [True, False]
    forged.unlink()
    res = cli("conda", "verify-cache", pkgs)
    assert res.code == 0 and "1 of 1 checked archive(s) verified, 1 skipped" in res.out
    # --trust/--root check every archive, configured or not: scipy has no attestation.
    res = cli("conda", "verify-cache", pkgs, "--trust", world.trust, "--root", world.root)
    assert res.code == 1 and f"FAIL {other.name}" in res.out and "unsigned" in res.out
    res = cli("conda", "verify-cache", pkgs, "--trust", world.trust)
    assert res.code == 2 and "both" in res.err


def test_only_the_records_to_link_are_taken_from_the_repodata(channel: Channel) -> None:
    from signer.conda_plugin.enforce import _wanted_records

    subset = _wanted_records(channel.repodata, {ALPHA, "nothere-1-0.conda"})
    assert [r.filename for r in subset.records] == [ALPHA]
    assert set(subset.signatures) == {ALPHA} and subset.subdir == "noarch"
