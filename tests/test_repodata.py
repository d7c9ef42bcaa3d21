"""Repodata signing and verification: the vectors, both profiles, and the failure paths."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from signer.devrepo import DevTrustRepo
from signer.repodata.document import read_repodata
from signer.repodata.profiles import libsolv_matchspec, mamba_message, mamba_signable
from signer.repodata.verify import verify_repodata
from signer.trust import KeyMgr, parse_metadata
from signer.trust.errors import FormatError
from tests.conftest import VECTORS, CliResult

CCT = VECTORS / "conda-content-trust"
Cli = Callable[..., CliResult]


def vector_pkg_mgr() -> Any:
    meta = parse_metadata((CCT / "key_mgr_verify.json").read_bytes(), "key_mgr_verify.json").meta
    assert isinstance(meta, KeyMgr)
    return meta.pkg_mgr_keys


@pytest.mark.parametrize("jobs", [1, 2])
def test_vector_repodata_judged_as_stated(jobs: int) -> None:
    report = verify_repodata(read_repodata(CCT / "repodata.json"), vector_pkg_mgr(), jobs=jobs)
    by_file: dict[str, set[str]] = {}
    for failure in report.failures:
        by_file.setdefault(failure.filename, set()).add(failure.check)
    assert report.records == 5 and report.valid == 3
    assert report.invalid == 1 and report.unsigned == 1
    assert by_file["broken-0.0.1-broken.tar.bz2"] >= {"signature"}
    assert by_file["broken-0.0.1-broken.conda"] >= {"unsigned"}
    # first/second/third verify but their names do not follow name-version-build.
    for name in ("first.tar.bz2", "second.conda", "third.conda"):
        assert by_file[name] == {"file-name"}
    assert report.mismatches == 5  # the broken records' builds differ from their names too


def test_mamba_signable_exact() -> None:
    """libmamba's json_signable(): no noarch, seconds, constrains only when non-empty."""
    record = {
        "build": "h1_0", "build_number": 0, "depends": ["a"], "license": "MIT",
        "license_family": "MIT", "md5": "m", "name": "x", "sha256": "s", "size": 10,
        "subdir": "linux-64", "timestamp": 1700000000123, "version": "1", "constrains": [],
        "track_features": "", "noarch": "python",
    }  # fmt: skip
    expected = (
        '{\n  "build": "h1_0",\n  "build_number": 0,\n  "depends": [\n    "a"\n  ],\n'
        '  "license": "MIT",\n  "md5": "m",\n  "name": "x",\n'
        '  "sha256": "s",\n  "size": 10,\n  "subdir": "linux-64",\n'
        '  "timestamp": 1700000000,\n  "version": "1"\n}'
    )
    assert mamba_message(record).decode() == expected
    assert mamba_signable({**record, "constrains": ["b <2"]})["constrains"] == ["b <2"]
    assert mamba_signable({"timestamp": 1234})["timestamp"] == 1234  # already seconds
    assert mamba_signable({"timestamp": 253402300799})["timestamp"] == 253402300799
    assert mamba_signable({"timestamp": 253402300800})["timestamp"] == 253402300


def test_mamba_signable_normalises_as_libmamba_reads() -> None:
    odd = {"license": None, "name": "n", "depends": ["b", "a >=1", "b", "a >=1", 3, ""],
           "size": "12", "build_number": True, "md5": None}  # fmt: skip
    got = mamba_signable(odd, "noarch")
    assert got["license"] == "" and got["md5"] == "" and got["sha256"] == ""
    assert got["subdir"] == "noarch"  # no subdir in the record: info.subdir
    assert mamba_signable({**odd, "subdir": "linux-64"}, "noarch")["subdir"] == "linux-64"
    assert got["depends"] == ["b", "a >=1"]  # repeated and nameless entries dropped
    assert got["size"] == 0 and got["build_number"] == 0  # wrong JSON types read as 0
    assert "constrains" not in got
    twice = mamba_signable({"constrains": ["c <2", "c <2"]})  # libsolv keeps both
    assert twice["constrains"] == ["c <2", "c <2"]
    text = mamba_message({"name": "Ünïcode", "license": "© 2024"}).decode("utf-8")
    assert '"Ünïcode"' in text and "\\u" not in text  # raw UTF-8, no escapes


@pytest.mark.parametrize(
    ("spec", "stored"),
    [
        ("python", "python"),
        ("python >=3.8", "python >=3.8"),
        ("python>=3.8", "python >=3.8"),
        ("python >= 3.8", "python >=3.8"),
        ("python   >=3.8 , <4", "python >=3.8,<4"),
        ("Numpy", "numpy"),
        ("conda-forge::numpy 1.2", "numpy 1.2"),
        ("numpy =1.2", "numpy 1.2*"),
        ("numpy ==1.2", "numpy 1.2"),
        ("numpy 1.2 py_0", "numpy 1.2 py_0"),
        ("numpy ==1.2 py_0", "numpy ==1.2 py_0"),
        ("numpy =1.2 py_0", "numpy 1.2 py_0"),
        ("numpy 1.2.*", "numpy 1.2.*"),
        ("numpy >=1.2 *_cpu", "numpy >=1.2 *_cpu"),
        ("lib*", "lib* *"),
        ("numpy =1.2,<2", "numpy =1.2,<2"),
        ("x  ", "x"),
        ("", None),
        (">=1", None),
        ("ns:", None),
    ],
)
def test_libsolv_matchspec(spec: str, stored: str | None) -> None:
    assert libsolv_matchspec(spec) == stored


def _sample(tmp_path: Path) -> Path:
    target = tmp_path / "repodata.json"
    target.write_bytes((CCT / "repodata_sample.json").read_bytes())
    return target


def _verify(cli: Cli, repo: DevTrustRepo, path: Path, *extra: object) -> CliResult:
    return cli("repodata", "verify", path, "--trust", repo.trust_dir, "--root", repo.root_file,
               *extra)  # fmt: skip


def test_sign_and_verify_with_dev_repo(cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    path = _sample(tmp_path)
    signed = cli("repodata", "sign", path, "--key", dev_repo.keyref("pkg_mgr"),
                 "--mamba-key", dev_repo.keyref("pkg_mgr_mamba"))  # fmt: skip
    assert signed.code == 0, signed.err
    doc = json.loads(path.read_text())
    assert all(len(sigs) == 2 for sigs in doc["signatures"].values())
    result = _verify(cli, dev_repo, path, "--json", "--profile", "both")
    report = json.loads(result.out)
    # The sample's file names do not follow name-version-build: signatures are all valid,
    # and the mismatches are what fails the run.
    assert report["profiles"] == ["conda", "mamba"]
    for profile in ("conda", "mamba"):
        assert report[profile]["valid"] == report["records"] > 0, profile
        assert report[profile]["invalid"] == report[profile]["unsigned"] == 0
        assert report[profile]["ok"] is True
    assert report["mamba"]["pkg_mgr_version"] == 1
    assert result.code == (0 if report["file_name_mismatches"] == 0 else 1)


def _channel(tmp_path: Path, cli: Cli) -> Path:
    from signer.artifacts.build import build_package

    sub = tmp_path / "linux-64"
    build_package(sub, "a", "1.0", "h0_0", subdir="linux-64", fmt="conda")
    build_package(sub, "b", "2.0", "h0_0", subdir="linux-64", fmt="tar.bz2", depends=["a"])
    out = tmp_path / "repodata.json"
    assert cli("repodata", "index", sub, "-o", out).code == 0
    return out


def test_channel_round_trip_and_tamper(cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    path = _channel(tmp_path, cli)
    assert cli("repodata", "sign", path, "--key", dev_repo.keyref("pkg_mgr")).code == 0
    ok = _verify(cli, dev_repo, path)
    assert ok.code == 0, ok.out + ok.err
    assert "OK: every record is validly signed" in ok.out
    doc = json.loads(path.read_text())
    doc["packages.conda"]["a-1.0-h0_0.conda"]["depends"] = ["evil"]
    path.write_text(json.dumps(doc))
    bad = _verify(cli, dev_repo, path)
    assert bad.code == 1
    assert "FAIL linux-64/a-1.0-h0_0.conda: signature: bad signature" in bad.out


def test_mamba_only_signature_does_not_count(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    path = _channel(tmp_path, cli)
    cli("repodata", "sign", path, "--key", dev_repo.keyref("pkg_mgr"),
        "--mamba-key", dev_repo.keyref("pkg_mgr_mamba"))  # fmt: skip
    doc = json.loads(path.read_text())
    conda_key = dev_repo.pkg_mgr_key.public_key_hex  # type: ignore[union-attr]
    doc["signatures"]["b-2.0-h0_0.tar.bz2"].pop(conda_key)
    path.write_text(json.dumps(doc))
    result = _verify(cli, dev_repo, path, "--json")
    report = json.loads(result.out)
    assert result.code == 1 and report["conda"]["invalid"] == 1 and report["conda"]["valid"] == 1
    (failure,) = report["failures"]
    assert failure["reason"].startswith("only mamba-profile signatures")
    assert failure["profile"] == "conda"
    # mamba accepts the channel: every record has a valid mamba-profile signature.
    mamba = _verify(cli, dev_repo, path, "--json", "--profile", "mamba")
    assert mamba.code == 0, mamba.out
    assert json.loads(mamba.out)["mamba"] == {"valid": 2, "invalid": 0, "unsigned": 0,
                                              "ok": True, "pkg_mgr_version": 1}  # fmt: skip


def test_unsigned_fails_unless_allowed(cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    path = _channel(tmp_path, cli)
    result = _verify(cli, dev_repo, path)
    assert result.code == 1 and "unsigned" in result.out
    assert _verify(cli, dev_repo, path, "--allow-unsigned").code == 0


def test_expired_key_mgr_and_wrong_trust(cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    path = _channel(tmp_path, cli)
    cli("repodata", "sign", path, "--key", dev_repo.keyref("pkg_mgr"))
    late = _verify(cli, dev_repo, path, "--at", "2099-01-01T00:00:00Z")
    assert late.code == 1 and "expired" in late.err
    empty = tmp_path / "empty-trust"
    empty.mkdir()
    wrong = cli("repodata", "verify", path, "--trust", empty, "--root", dev_repo.root_file)
    assert wrong.code == 1 and "key_mgr.json" in wrong.err


def test_signed_by_key_outside_delegation(cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    path = _channel(tmp_path, cli)
    cli("repodata", "sign", path, "--key", dev_repo.keyref("key_mgr"))  # not a pkg_mgr key
    result = _verify(cli, dev_repo, path)
    assert result.code == 1 and "unsigned" in result.out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"packages": {"a.conda": {"name": "a"', "truncated"),
        (b"[]", "expected a JSON object"),
        (b'{"packages": []}', "packages"),
        (b'{"packages": {"a-1-0.tar.bz2": 3}}', "record is not an object"),
        (b'{"packages": {}} trailing', "malformed"),
        (b'{"signatures": 3}', "signatures"),
    ],
)
def test_bad_repodata_exit_2_nothing_written(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path, content: bytes, needle: str
) -> None:
    path = tmp_path / "repodata.json"
    path.write_bytes(content)
    sign = cli("repodata", "sign", path, "--key", dev_repo.keyref("pkg_mgr"))
    assert sign.code == 2 and needle in sign.err and str(path) in sign.err
    assert sign.err.count("\n") == 1
    assert path.read_bytes() == content
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no temp file left
    verify = _verify(cli, dev_repo, path)
    assert verify.code == 2 and needle in verify.err


def test_missing_file_and_output_option(cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    assert (
        cli("repodata", "sign", tmp_path / "nope.json", "--key", dev_repo.keyref("pkg_mgr")).code
        == 2
    )
    assert _verify(cli, dev_repo, tmp_path / "nope.json").code == 2
    path = _channel(tmp_path, cli)
    before = path.read_bytes()
    out = tmp_path / "signed.json"
    assert cli("repodata", "sign", path, "--key", dev_repo.keyref("pkg_mgr"), "-o", out).code == 0
    assert path.read_bytes() == before and "signatures" in json.loads(out.read_text())


def test_verifying_read_matches_the_full_read(
    cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    """`members=False` (one pass, for verify) sees the same records and signatures."""
    path = _sample(tmp_path)
    assert cli("repodata", "sign", path, "--key", dev_repo.keyref("pkg_mgr")).code == 0
    doc = json.loads(path.read_text())
    doc["x-unknown-member"] = {"kept": True}  # the fast read skips it; the full read keeps it
    path.write_text(json.dumps(doc, indent=1))
    full, fast = read_repodata(path), read_repodata(path, members=False)
    assert fast.complete is False and full.complete is True
    as_tuples = [(r.section, r.filename, bytes(r.raw)) for r in full.records]
    assert [(r.section, r.filename, bytes(r.raw)) for r in fast.records] == as_tuples
    assert {k: bytes(v) for k, v in fast.signatures.items()} == {
        k: bytes(v) for k, v in full.signatures.items()
    }
    assert fast.subdir == full.subdir != "unknown"
    assert "x-unknown-member" in full.top and "x-unknown-member" not in fast.top
    with pytest.raises(ValueError, match="cannot be written back"):
        fast.to_bytes({})
    assert _verify(cli, dev_repo, path).code == 0
    # What the one pass cannot read gets the full read's message, naming the member.
    doc["packages"] = []
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="packages: expected a JSON object"):
        read_repodata(path, members=False)


def test_signature_entries_are_read_strictly() -> None:
    """Only 128 lowercase hex digits count; any other shape is a bad or missing signature."""
    import msgspec

    from signer.repodata.verify import _decode, _entries

    good = "0123456789abcdef" * 8
    assert _decode({"signature": good}) == bytes.fromhex(good)
    for bad in (good.upper(), good[:-2] + "  ", good[:-1], good + "00", "g" * 128,
                "\u0661" * 128, 5, None):  # fmt: skip
        assert _decode({"signature": bad}) is None, bad
    key = "ab" * 32
    typed = _entries(msgspec.Raw(f'{{"{key}": {{"signature": "{good}", "x": 1}}}}'.encode()))
    assert typed is not None and _decode(typed[key]) == bytes.fromhex(good)
    odd = _entries(msgspec.Raw(f'{{"{key}": {{"signature": 7}}, "k2": []}}'.encode()))
    assert odd is not None and _decode(odd[key]) is None and _decode(odd["k2"]) is None
    assert _entries(msgspec.Raw(b"[]")) is None and _entries(msgspec.Raw(b'"x"')) is None


def test_record_messages_match_the_reference_on_random_records() -> None:
    """Parsing (msgspec, floats refused) + canonical bytes == json.loads + json.dumps."""
    import random

    import msgspec

    from signer.repodata.document import RawRecord, parse_record_checked
    from signer.repodata.profiles import conda_message
    from signer.trust.canonical import canonical_bytes
    from tests.test_trust_core import _random_value

    rng = random.Random(11)
    kinds = set()
    for _ in range(2000):
        record = {"name": "x", "r": _random_value(rng)}
        raw = msgspec.Raw(json.dumps(record).encode())
        parsed, float_free = parse_record_checked(RawRecord("packages", "x-1-0.conda", raw), "t")
        kinds.add(float_free)
        expected = canonical_bytes(json.loads(bytes(raw)))
        assert conda_message(parsed, float_free=float_free) == expected
    assert kinds == {True, False}  # both paths were taken



def test_a_lone_surrogate_is_refused(cli: Cli, dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    """UTF-8 (libmamba's bytes) cannot carry a lone UTF-16 surrogate: never signed."""
    from signer.repodata.profiles import UnsignableRecord

    with pytest.raises(UnsignableRecord, match="surrogate"):
        mamba_message({"name": "a", "license": "\ud800"})
    with pytest.raises(UnsignableRecord, match="surrogate"):
        mamba_message({"name": "a", "depends": ["b\udfff"]})
    path = tmp_path / "repodata.json"
    content = b'{"packages.conda": {"a-1-0.conda": {"name": "a", "license": "\\ud800"}}}'
    path.write_bytes(content)
    signed = cli("repodata", "sign", path, "--key", dev_repo.keyref("pkg_mgr"),
                 "--mamba-key", dev_repo.keyref("pkg_mgr_mamba"))  # fmt: skip
    assert signed.code == 2 and str(path) in signed.err and path.read_bytes() == content


def test_mamba_message_matches_the_reference_on_random_records() -> None:
    """orjson's raw-UTF-8 bytes == json.dumps(ensure_ascii=False), nlohmann's dump(2)."""
    import random

    from signer.repodata.profiles import mamba_message_reference

    rng = random.Random(5)
    alphabet = "aZ09 =<>!~,|*-_.:\t\n\"\\/\x00\x1f\x7f\x80é©☃\u2028😀"
    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))

    for _ in range(3000):
        record = {"name": text(), "version": text(), "build": text(), "license": text(),
                  "depends": [text() for _ in range(rng.randint(0, 6))],
                  "constrains": [text() for _ in range(rng.randint(0, 2))],
                  "timestamp": rng.choice([0, 1, 253402300800, 2**63, -1]),
                  "size": rng.choice([0, 2**64 - 1, 2**64, True, "1"])}  # fmt: skip
        assert mamba_message(record) == mamba_message_reference(record)
