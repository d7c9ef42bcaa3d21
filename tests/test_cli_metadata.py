"""`cf-sign keys`, `root`, `key-mgr`, `pkg-mgr` and `metadata` commands, for real."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult

Cli = Callable[..., CliResult]


def gen(cli: Cli, d: Path, name: str, *extra: str) -> Path:
    result = cli("keys", "generate", name, "--dir", d, *extra)
    assert result.code == 0, result.err
    return d / name


def test_keys_generate_writes_0600_pem_and_pub(cli: Cli, tmp_path: Path) -> None:
    base = gen(cli, tmp_path, "k1")
    key = Path(f"{base}.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    pub = json.loads(Path(f"{base}.pub").read_text())
    assert pub["keytype"] == "ed25519" and len(pub["keyval"]["public"]) == 64
    again = cli("keys", "generate", "k1", "--dir", tmp_path)
    assert again.code == 2 and "already exists" in again.err
    ec = gen(cli, tmp_path, "k2", "--type", "ecdsa-p256")
    assert json.loads(Path(f"{ec}.pub").read_text())["scheme"] == "ecdsa-sha2-nistp256"


def test_encrypted_key_needs_passphrase(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW", "correct horse")
    base = gen(cli, tmp_path, "enc", "--passphrase-env", "PW")
    assert "ENCRYPTED" in Path(f"{base}.key").read_text()
    pub = f"{base}.pub"
    out = tmp_path / "pm.json"
    assert cli("pkg-mgr", "create", "-o", out).code == 0
    signed = cli("metadata", "sign", out, "--key", f"file:{base}.key", "--passphrase-env", "PW")
    assert signed.code == 0, signed.err
    monkeypatch.setenv("PW", "wrong")
    bad = cli("metadata", "sign", out, "--key", f"file:{base}.key", "--passphrase-env", "PW")
    assert bad.code == 2 and "wrong passphrase" in bad.err and "wrong" not in bad.err.split(":")[0]
    assert json.loads(Path(pub).read_text())["keyval"]["public"] in out.read_text()


def test_root_lifecycle_2_of_3_and_rotation(cli: Cli, tmp_path: Path) -> None:
    keys = [gen(cli, tmp_path, f"r{i}") for i in range(5)]
    km = gen(cli, tmp_path, "km")
    root1 = tmp_path / "1.root.json"
    result = cli(
        "root",
        "create",
        *[a for k in keys[:3] for a in ("--root-key", f"{k}.pub")],
        "--threshold",
        "2",
        "--key-mgr-key",
        f"{km}.pub",
        "-o",
        root1,
    )
    assert result.code == 0, result.err
    # Unsigned: fails its own threshold.
    assert cli("metadata", "verify", root1).code == 1
    assert cli("metadata", "sign", root1, "--key", f"file:{keys[0]}.key").code == 0
    one = cli("metadata", "verify", root1)
    assert one.code == 1 and "1 valid, 2 required" in one.err
    assert cli("metadata", "sign", root1, "--key", f"file:{keys[1]}.key").code == 0
    ok = cli("metadata", "verify", root1, "--json")
    assert ok.code == 0
    report = json.loads(ok.out)
    assert len(report["thresholds"]["self"]["signed"]) == 2
    sigs = json.loads(root1.read_text())["signatures"]
    assert all("other_headers" in s for s in sigs.values())  # roots are OpenPGP-style

    root2 = tmp_path / "2.root.json"
    new_key = f"{keys[3]}.pub"
    assert (
        cli(
            "root",
            "rotate",
            root1,
            "--root-key",
            new_key,
            "--root-key",
            f"{keys[4]}.pub",
            "--threshold",
            "2",
            "-o",
            root2,
        ).code
        == 0
    )
    doc = json.loads(root2.read_text())["signed"]
    assert doc["version"] == 2
    assert (
        doc["delegations"]["key_mgr"]
        == json.loads(root1.read_text())["signed"]["delegations"]["key_mgr"]
    )
    # New keys only: refused by the old threshold.
    for k in keys[3:5]:
        cli("metadata", "sign", root2, "--key", f"file:{k}.key")
    refused = cli("metadata", "verify", root2, "--trusted", root1)
    assert refused.code == 1 and "v1 root" in refused.err
    for k in keys[:2]:
        cli("metadata", "sign", root2, "--key", f"file:{k}.key")
    assert cli("metadata", "verify", root2, "--trusted", root1).code == 0


def test_key_mgr_and_pkg_mgr_delegation_checks(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, km, pm = (gen(cli, tmp_path, n) for n in ("r", "km", "pm"))
    root = tmp_path / "1.root.json"
    cli("root", "create", "--root-key", f"{r}.pub", "--key-mgr-key", f"{km}.pub", "-o", root)
    cli("metadata", "sign", root, "--key", f"file:{r}.key")
    key_mgr = tmp_path / "key_mgr.json"
    pm_hex = json.loads(Path(f"{pm}.pub").read_text())["keyval"]["public"]
    assert (
        cli("key-mgr", "create", "--pkg-mgr-key", pm_hex, "--expires", "0.5", "-o", key_mgr).code
        == 0
    )
    # env: KEYREF holding the PEM, as a CI secret would.
    monkeypatch.setenv("KM_SECRET", Path(f"{km}.key").read_text())
    assert cli("metadata", "sign", key_mgr, "--key", "env:KM_SECRET").code == 0
    assert 'signature"' in key_mgr.read_text() and "other_headers" not in key_mgr.read_text()
    assert cli("metadata", "verify", key_mgr, "--trusted", root).code == 0
    # Signed by the wrong key.
    cli("metadata", "sign", key_mgr, "--key", f"file:{r}.key")
    data = json.loads(key_mgr.read_text())
    data["signatures"].pop(json.loads(Path(f"{km}.pub").read_text())["keyval"]["public"])
    key_mgr.write_text(json.dumps(data))
    wrong = cli("metadata", "verify", key_mgr, "--trusted", root)
    assert wrong.code == 1 and "0 valid, 1 required" in wrong.err
    pkg = tmp_path / "pkg_mgr.json"
    cli("pkg-mgr", "create", "-o", pkg)
    cli("metadata", "sign", pkg, "--key", f"file:{pm}.key")
    cli("key-mgr", "create", "--pkg-mgr-key", pm_hex, "-o", key_mgr)
    assert cli("metadata", "verify", pkg, "--trusted", key_mgr).code == 0
    expired = cli("metadata", "verify", pkg, "--trusted", key_mgr, "--at", "2099-01-01T00:00:00Z")
    assert expired.code == 1 and "expired" in expired.err
    assert cli("metadata", "verify", pkg, "--trusted", root).code == 2


def test_seed_keyref(cli: Cli, tmp_path: Path) -> None:
    seed = tmp_path / "seed.hex"
    seed.write_text("11" * 32 + "\n")
    out = tmp_path / "pm.json"
    cli("pkg-mgr", "create", "-o", out)
    assert cli("metadata", "sign", out, "--key", f"file:{seed}").code == 0
    from signer.trust.ed25519 import keypair_from_seed

    assert keypair_from_seed(bytes.fromhex("11" * 32))[0].hex() in out.read_text()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"signatures": {}, "signed": ', "malformed JSON"),
        (b'{"signatures": {}, "signed": {}, "x": 1}', "x: unexpected key"),
        (b"[1]", "expected an object"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(
    cli: Cli, tmp_path: Path, content: bytes, needle: str
) -> None:
    target = tmp_path / "doc.json"
    target.write_bytes(content)
    gen(cli, tmp_path, "k")
    result = cli("metadata", "sign", target, "--key", f"file:{tmp_path}/k.key")
    assert result.code == 2
    assert needle in result.err and str(target) in result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert target.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["doc.json", "k.key", "k.pub"]


def test_bad_arguments(cli: Cli, tmp_path: Path) -> None:
    k = gen(cli, tmp_path, "k")
    out = tmp_path / "r.json"
    over = cli(
        "root",
        "create",
        "--root-key",
        f"{k}.pub",
        "--threshold",
        "2",
        "--key-mgr-key",
        f"{k}.pub",
        "-o",
        out,
    )
    assert over.code == 2 and "threshold" in over.err and not out.exists()
    missing = cli(
        "root",
        "create",
        "--root-key",
        tmp_path / "nope.pub",
        "--key-mgr-key",
        f"{k}.pub",
        "-o",
        out,
    )
    assert missing.code == 2 and "nope.pub" in missing.err
    upper = cli("key-mgr", "create", "--pkg-mgr-key", "AB" * 32, "-o", out)
    assert upper.code == 2
    neg = cli("pkg-mgr", "create", "--expires", "-1", "-o", out)
    assert neg.code == 2 and "non-negative" in neg.err
    assert cli("metadata", "verify", tmp_path / "absent.json").code == 2
    assert not out.exists()
    pm = tmp_path / "pm.json"
    cli("pkg-mgr", "create", "-o", pm)
    before = pm.read_bytes()
    nokey = cli("metadata", "sign", pm, "--key", "file:/nonexistent/key")
    assert nokey.code == 2 and "/nonexistent/key" in nokey.err
    bogus = cli("metadata", "sign", pm, "--key", "bogus")
    assert bogus.code == 2 and "KEYREF" in bogus.err
    unset = cli("metadata", "sign", pm, "--key", "env:CF_SIGN_TEST_UNSET_VAR")
    assert unset.code == 2 and "not set" in unset.err
    assert pm.read_bytes() == before
