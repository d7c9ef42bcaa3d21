"""GnuPG root signing with the real gpg binary and the conda-content-trust test keys."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from signer.trust import parse_metadata, verify_root_self
from tests.conftest import VECTORS, CliResult

CCT = VECTORS / "conda-content-trust"
KEY1_FPR = "917ADB684E2E9FB5ED4E59909DDD19A1268B62D0"
KEY1_Q = "c8bd83b3bfc991face417d97b9c0db011b5d256476b602b92fec92849fc2b36c"


@pytest.fixture
def gnupg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    for name in ("test_key_1_268B62D0.pri.asc", "test_key_2_7DB43643.pri.asc"):
        subprocess.run(["gpg", "--batch", "--import", str(CCT / name)], check=True,
                       capture_output=True)  # fmt: skip
    return home


def test_gpg_key_signs_root_that_verifies(
    cli: Callable[..., CliResult], tmp_path: Path, gnupg_home: Path
) -> None:
    root = tmp_path / "1.root.json"
    made = cli("root", "create", "--root-key", KEY1_Q, "--key-mgr-key", "ab" * 32, "-o", root)
    assert made.code == 0, made.err
    signed = cli("metadata", "sign", root, "--key", f"gpg:{KEY1_FPR}")
    assert signed.code == 0, signed.err
    sig = json.loads(root.read_text())["signatures"][KEY1_Q]
    assert sig["see_also"] == KEY1_FPR.lower() and sig["other_headers"].startswith("04001608")
    assert verify_root_self(parse_metadata(root.read_bytes(), "root")).signed == (KEY1_Q,)
    assert cli("metadata", "verify", root).code == 0


def test_gpg_key_refuses_raw_signatures(
    cli: Callable[..., CliResult], tmp_path: Path, gnupg_home: Path
) -> None:
    pkg = tmp_path / "pkg_mgr.json"
    cli("pkg-mgr", "create", "-o", pkg)
    before = pkg.read_bytes()
    result = cli("metadata", "sign", pkg, "--key", f"gpg:{KEY1_FPR}")
    assert result.code == 2 and "roots" in result.err
    assert pkg.read_bytes() == before


def test_unknown_gpg_key(cli: Callable[..., CliResult], tmp_path: Path, gnupg_home: Path) -> None:
    root = tmp_path / "r.json"
    cli("root", "create", "--root-key", KEY1_Q, "--key-mgr-key", "ab" * 32, "-o", root)
    result = cli("metadata", "sign", root, "--key", "gpg:" + "0" * 40)
    assert result.code == 2 and "GnuPG" in result.err
