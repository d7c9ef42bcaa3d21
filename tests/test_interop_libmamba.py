"""cf-sign's channel layer as libmamba's own verifier judges it (../shared/tools/libmamba-judge).

Every record of a generated channel (arch and noarch subdirs, the normalisations
libmamba applies) must verify along mamba's install-time path in each reading mode, and
what mamba must refuse (a changed record, a key key_mgr does not delegate to, an expired
key_mgr, a root rotation short of its threshold) must be refused.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from signer.devrepo import DevTrustRepo
from signer.keys import KeyHandle, generate_key, resolve_keyref
from signer.repodata.profiles import conda_message, mamba_message
from signer.trust.metadata import Delegation, KeyMgr, Signable
from signer.trust.signing import envelope_signer, sign_envelope
from signer.trust.state import write_atomic
from signer.trust.timefmt import format_time, system_clock
from tests.conftest import CliResult
from tests.real_clients import libmamba_judge, run_judge

Cli = Callable[..., CliResult]
MODES = ("mamba", "mamba-nopip", "libsolv")  # every record must verify in these
ALL_MODES = (*MODES, "solv-cache")


@pytest.fixture(autouse=True)
def _needs_judge() -> None:
    libmamba_judge()  # skip (or fail, when required) before building anything


def _record(
    name: str, version: str, build: str, subdir: str | None, **extra: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "build": build, "build_number": 0, "depends": [], "license": "MIT",
        "md5": hashlib.md5(f"{name}{version}{build}".encode()).hexdigest(), "name": name,
        "sha256": hashlib.sha256(f"{name}{version}{build}".encode()).hexdigest(), "size": 1234,
        "timestamp": 1_700_000_000_123, "version": version,
    }  # fmt: skip
    if subdir is not None:
        record["subdir"] = subdir
    record.update(extra)
    return record


def _cases() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """subdir -> [(file name, record)]: one record per behaviour libmamba normalises."""
    linux = [
        _record("plain", "1.0", "h0_0", "linux-64", depends=["libzlib >=1.2.13,<2.0a0"],
                constrains=[]),
        _record("dupdeps", "1.0", "h0_0", "linux-64",
                depends=["libgcc-ng >=12", "zlib", "libgcc-ng >=12", "zlib"]),
        _record("nulllicense", "1.0", "h0_0", "linux-64", license=None),
        _record("nosubdir", "1.0", "h0_0", None),
        _record("nolicense", "1.0", "h0_0", "linux-64", license_family="MIT"),
        _record("unicode", "1.0", "h0_0", "linux-64", license="GPL-2.0 © Jörg Müller ☃",
                summary="Ünïcødé 😀 \u2028", depends=["libgcc-ng >=12"]),
        _record("control", "1.0", "h0_0", "linux-64", license="MIT\tand\u0001more"),
        _record("constrains", "1.0", "h0_0", "linux-64",
                constrains=["numpy >=1.2", "numpy >=1.2", "scipy <2"]),
        _record("seconds", "1.0", "h0_0", "linux-64", timestamp=1_700_000_000),
        {k: v for k, v in _record("notimestamp", "1.0", "h0_0", "linux-64").items()
         if k != "timestamp"},
        _record("specs", "1.0", "h0_0", "linux-64", depends=[
            "Python>=3.8", "numpy =1.2", "conda-forge::six", "scipy ==1.1 py_0",
            "pkg   >= 1.0 ,  <2", "lib*", "blas * openblas", "x 1.0 *_cpu", "y =1.0 b_1",
            "z >=1.0 , <2", "w 1.*", "v !=1.0"]),
        _record("python", "3.12.0", "h0_0_cpython", "linux-64", depends=["libffi >=3.4"]),
        _record("features", "1.0", "h0_0", "linux-64", track_features="blas_openblas",
                features="x", arch="x86_64", platform="linux"),
        _record("bignums", "1.0", "h0_0", "linux-64", size=2**40, build_number=123),
    ]  # fmt: skip
    noarch = [
        _record("purepy", "1.0", "pyhd8ed1ab_0", "noarch", noarch="python",
                depends=["python >=3.8", "python >=3.8"]),
        _record("generic", "1.0", "h0_0", "noarch", noarch="generic"),
        _record("oldnoarch", "1.0", "0", "noarch", noarch=True),
        _record("noarchnosubdir", "1.0", "pyh0_0", None, noarch="python",
                license=None, constrains=[]),
        _record("pip", "24.0", "pyh8b19718_0", "noarch", noarch="python",
                depends=["python >=3.8", "setuptools", "wheel"]),
    ]  # fmt: skip
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for subdir, records in (("linux-64", linux), ("noarch", noarch)):
        out[subdir] = []
        for i, record in enumerate(records):
            ext = ".tar.bz2" if i % 3 == 1 else ".conda"
            out[subdir].append((f"{record['name']}-{record['version']}-{record['build']}{ext}",
                                record))  # fmt: skip
    return out


def write_channel(base: Path, cases: dict[str, list[tuple[str, dict[str, Any]]]]) -> list[Path]:
    paths = []
    for subdir, records in cases.items():
        doc: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {},
                               "removed": [], "repodata_version": 1}  # fmt: skip
        for filename, record in records:
            section = "packages" if filename.endswith(".tar.bz2") else "packages.conda"
            doc[section][filename] = record
        path = base / subdir / "repodata.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
        paths.append(path)
    return paths


def _sign(cli: Cli, repo: DevTrustRepo, path: Path, mamba: str | None = None) -> None:
    mamba = mamba or repo.keyref("pkg_mgr_mamba")
    result = cli("repodata", "sign", path, "--key", repo.keyref("pkg_mgr"), "--mamba-key", mamba)
    assert result.code == 0, result.err


def judge_channel(trust: Path, root: Path, paths: list[Path], modes: tuple[str, ...] = ALL_MODES
                  ) -> dict[str, Any]:  # fmt: skip
    args: list[object] = ["channel", trust, root, "--examples", "50"]
    for path in paths:
        args += ["--repodata", path]
    for mode in modes:
        args += ["--mode", mode]
    return run_judge(libmamba_judge(), *args)


def _modes(verdict: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    modes: dict[str, dict[str, Any]] = verdict["repodata"][str(path)]
    for mode, result in modes.items():
        assert "load_error" not in result, (mode, result)
    return modes


def test_every_generated_record_verifies_in_libmamba(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    cases = _cases()
    paths = write_channel(tmp_path / "channel", cases)
    for path in paths:
        _sign(cli, dev_repo, path)
    verdict = judge_channel(dev_repo.trust_dir, dev_repo.root_file, paths)
    assert verdict["ok"] and verdict["index_checker"]["ok"], verdict
    for path, (subdir, records) in zip(paths, cases.items(), strict=True):
        modes = _modes(verdict, path)
        for mode in MODES:
            result = modes[mode]
            examples = {e["filename"]: e["signable"] for e in result["examples"]}
            assert result["failed"] == {}, (subdir, mode, examples)
            assert result["verified"] == result["loaded"] == len(records), (subdir, mode)
        # The .solv cache mamba reads on its next run: every record loads; libsolv may
        # reorder a record's depends there (see docs/repodata.md), which only a record
        # with several depends can suffer.
        cache = modes["solv-cache"]
        assert cache["loaded"] == len(records)
        with_several = {f for f, r in records if len(set(r.get("depends") or [])) > 1}
        assert set(cache["failed"]) <= with_several, cache["failed"]
    # The same channel also passes cf-sign's own checks of both profiles.
    for path in paths:
        ok = cli("repodata", "verify", path, "--trust", dev_repo.trust_dir,
                 "--root", dev_repo.root_file, "--profile", "both", "--json")  # fmt: skip
        assert ok.code == 0, ok.out


def test_libmamba_refuses_a_changed_record_and_an_unsigned_one(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    (path,) = write_channel(tmp_path / "channel", {"linux-64": _cases()["linux-64"]})
    _sign(cli, dev_repo, path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    changed = "plain-1.0-h0_0.conda"
    doc["packages.conda"][changed]["size"] += 1
    unsigned = "unicode-1.0-h0_0.conda"
    del doc["signatures"][unsigned]
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    verdict = judge_channel(dev_repo.trust_dir, dev_repo.root_file, [path], MODES)
    assert verdict["index_checker"]["ok"]
    for mode, result in _modes(verdict, path).items():
        assert set(result["failed"]) == {changed, unsigned}, mode
        assert "Signatures threshold not met" in result["failed"][changed]
        assert result["verified"] == result["loaded"] - 2


def test_libmamba_refuses_a_key_key_mgr_does_not_delegate_to(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    cases = {"noarch": _cases()["noarch"]}
    (path,) = write_channel(tmp_path / "channel", cases)
    generate_key("stranger", tmp_path / "keys")
    _sign(cli, dev_repo, path, mamba=f"file:{tmp_path / 'keys' / 'stranger.key'}")
    verdict = judge_channel(dev_repo.trust_dir, dev_repo.root_file, [path], MODES)
    for mode, result in _modes(verdict, path).items():
        assert result["verified"] == 0 and len(result["failed"]) == len(cases["noarch"]), mode
    # Control: the delegated mamba key on the same records.
    _sign(cli, dev_repo, path)
    verdict = judge_channel(dev_repo.trust_dir, dev_repo.root_file, [path], MODES)
    for mode, result in _modes(verdict, path).items():
        assert result["failed"] == {} and result["verified"] == len(cases["noarch"]), mode


def _key(repo: DevTrustRepo, name: str) -> KeyHandle:
    key = resolve_keyref(repo.keyref(name))
    assert isinstance(key, KeyHandle)
    return key


def test_libmamba_refuses_an_expired_key_mgr(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    (path,) = write_channel(tmp_path / "channel", {"noarch": _cases()["noarch"]})
    _sign(cli, dev_repo, path)
    now = system_clock().replace(microsecond=0)
    pkg_mgr = Delegation((_key(dev_repo, "pkg_mgr").public_key_hex,
                          _key(dev_repo, "pkg_mgr_mamba").public_key_hex), 1)  # fmt: skip
    for label, expires in (("expired", now - timedelta(days=1)),
                           ("control", now + timedelta(days=1))):  # fmt: skip
        meta = KeyMgr(1, format_time(now - timedelta(days=2)), format_time(expires),
                      {"pkg_mgr": pkg_mgr})  # fmt: skip
        envelope = Signable(meta.to_signed(), {}, meta.ROLE)
        sign_envelope(envelope, envelope_signer(_key(dev_repo, "key_mgr"), openpgp=False))
        write_atomic(dev_repo.trust_dir / "key_mgr.json", envelope.to_bytes())
        verdict = judge_channel(dev_repo.trust_dir, dev_repo.root_file, [path], ("mamba",))
        if label == "expired":
            assert not verdict["ok"] and "freeze" in verdict["index_checker"]["error"].lower()
        else:
            assert verdict["ok"], verdict
            assert _modes(verdict, path)["mamba"]["failed"] == {}


def _rotate(cli: Cli, repo: DevTrustRepo, out: Path, signers: list[str], *extra: object) -> None:
    made = cli("root", "rotate", repo.root_file, "-o", out, *extra)
    assert made.code == 0, made.err
    for name in signers:
        signed = cli("metadata", "sign", "--key", f"file:{repo.keys_dir / name}.key", out)
        assert signed.code == 0, signed.err


def test_libmamba_follows_a_cf_sign_root_rotation(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    (path,) = write_channel(tmp_path / "channel", {"noarch": _cases()["noarch"]})
    _sign(cli, dev_repo, path)
    short = tmp_path / "short" / "2.root.json"
    short.parent.mkdir()
    _rotate(cli, dev_repo, short, ["root1"])  # 1 of the 2 signatures the root needs
    judge = libmamba_judge()
    refused = run_judge(judge, "root-update", dev_repo.root_file, short)
    assert not refused["ok"] and "threshold" in refused["error"].lower()
    rotated = dev_repo.trust_dir / "2.root.json"
    _rotate(cli, dev_repo, rotated, ["root1", "root3"])
    accepted = run_judge(judge, "root-update", dev_repo.root_file, rotated)
    assert accepted["ok"] and accepted["version"] == 2, accepted
    verdict = judge_channel(dev_repo.trust_dir, dev_repo.root_file, [path], ("mamba",))
    assert verdict["index_checker"]["root_version"] == 2
    assert _modes(verdict, path)["mamba"]["failed"] == {}


def test_libmamba_root_update_checks_only_the_new_roots_keys(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    """What docs/repodata.md warns mirror operators about: mamba takes a root N+1 signed
    by its own new keys alone; cf-sign (like conda) also wants the old root's threshold."""
    judge = libmamba_judge()
    keys = tmp_path / "new-keys"
    for name in ("new1", "new2"):
        generate_key(name, keys)
    takeover = tmp_path / "takeover" / "2.root.json"
    takeover.parent.mkdir()
    made = cli("root", "rotate", dev_repo.root_file, "-o", takeover,
               "--root-key", keys / "new1.pub", "--root-key", keys / "new2.pub",
               "--threshold", "1")  # fmt: skip
    assert made.code == 0, made.err
    assert cli("metadata", "sign", "--key", f"file:{keys / 'new1.key'}", takeover).code == 0
    mamba = run_judge(judge, "root-update", dev_repo.root_file, takeover)
    ours = cli("metadata", "verify", takeover, "--trusted", dev_repo.root_file)
    assert ours.code == 1, ours.out + ours.err  # cf-sign refuses: no old root key signed it
    assert mamba["ok"], mamba  # libmamba 2.8.1 accepts it


def test_pip_in_pythons_subdir_changes_pythons_signable_in_mamba(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    """mamba's default add_pip_as_python_dependency appends "pip" to python's depends when
    a pip record sits in the same subdir (conda-forge's pip is noarch, so it does not)."""
    python = "python-3.12.0-h0_0_cpython.conda"
    records = [(python, _record("python", "3.12.0", "h0_0_cpython", "linux-64",
                                depends=["libffi >=3.4"])),
               ("pip-24.0-py312_0.conda", _record("pip", "24.0", "py312_0", "linux-64",
                                                  depends=["python >=3.12,<3.13"]))]  # fmt: skip
    (path,) = write_channel(tmp_path / "channel", {"linux-64": records})
    _sign(cli, dev_repo, path)
    verdict = judge_channel(dev_repo.trust_dir, dev_repo.root_file, [path], MODES)
    modes = _modes(verdict, path)
    assert list(modes["mamba"]["failed"]) == [python]
    (example,) = modes["mamba"]["examples"]
    assert json.loads(example["signable"])["depends"] == ["libffi >=3.4", "pip"]
    assert modes["mamba-nopip"]["failed"] == {} and modes["mamba-nopip"]["verified"] == 2


def test_libmamba_counts_co_signatures_toward_a_threshold_of_two(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    from tests.test_repodata_cosign import _threshold_two

    keys = _threshold_two(cli, dev_repo, tmp_path / "keys")
    cases = _cases()
    paths = write_channel(tmp_path / "channel", cases)
    for path in paths:
        result = cli("repodata", "sign", path, "--key", keys["conda1"],
                     "--mamba-key", keys["mamba1"])  # fmt: skip
        assert result.code == 0, result.err
    one = judge_channel(dev_repo.trust_dir, dev_repo.root_file, paths, ("mamba",))
    assert one["index_checker"]["ok"], one  # pkg_mgr.json meets its threshold of 2
    for path, (subdir, records) in zip(paths, cases.items(), strict=True):
        result = _modes(one, path)["mamba"]
        # A record holding exactly the fields libmamba signs has the same bytes in both
        # profiles: there the conda key's signature counts for mamba too.
        same = {f for f, r in records if conda_message(r) == mamba_message(r, subdir)}
        assert result["verified"] == len(same) and set(result["failed"]) == {
            f for f, _ in records} - same, result  # fmt: skip
        assert all("(1/2)" in why for why in result["failed"].values())
    for path in paths:  # the second holder signs later: the first one's signatures stay
        result = cli("repodata", "sign", path, "--key", keys["conda2"],
                     "--mamba-key", keys["mamba2"])  # fmt: skip
        assert result.code == 0, result.err
    two = judge_channel(dev_repo.trust_dir, dev_repo.root_file, paths, MODES)
    for path, records in zip(paths, cases.values(), strict=True):
        for mode, result in _modes(two, path).items():
            assert result["failed"] == {} and result["verified"] == len(records), mode


def _random_spec(rng: random.Random) -> str:
    name = rng.choice(["numpy", "Py-Lib", "lib*", "r-base", "conda-forge::six", "ns:x", "_x"])
    if rng.random() < 0.2:
        return name + " " * rng.randint(0, 2)
    space = lambda: " " * rng.choice([0, 0, 1, 2])  # noqa: E731
    version = rng.choice(["1.2", "1.2.*", "1.2a0", "2", "1.*", "*"])
    op = rng.choice(["", ">=", "==", "=", "<", "!=", "~=", ">"])
    spec = f"{name}{rng.choice([' ', '', '  '])}{op}{space()}{version}"
    if rng.random() < 0.3:
        spec += f"{space()}{rng.choice([',', '|'])}{space()}{rng.choice(['<', '>=', ''])}3"
    if rng.random() < 0.4:
        spec += rng.choice([" ", "=", "  "]) + rng.choice(["py_0", "*_cpu", "h1234_5", "0"])
    return spec


def test_random_match_specs_are_read_as_libsolv_reads_them(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    rng = random.Random(7)
    records = []
    for i in range(300):
        depends = [_random_spec(rng) for _ in range(rng.randint(1, 6))]
        constrains = [_random_spec(rng) for _ in range(rng.randint(0, 2))]
        record = _record(f"r{i}", "1.0", "h0_0", "linux-64", depends=depends,
                         constrains=constrains)  # fmt: skip
        records.append((f"r{i}-1.0-h0_0.conda", record))
    (path,) = write_channel(tmp_path / "channel", {"linux-64": records})
    _sign(cli, dev_repo, path)
    verdict = judge_channel(dev_repo.trust_dir, dev_repo.root_file, [path], MODES)
    for mode, result in _modes(verdict, path).items():
        examples = [(e["filename"], json.loads(e["signable"])["depends"])
                    for e in result["examples"][:3]]  # fmt: skip
        assert result["failed"] == {} and result["verified"] == 300, (mode, examples)
