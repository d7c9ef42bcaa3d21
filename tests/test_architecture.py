"""Layering rules: the trust core stands alone; the verifier path stays lean."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from signer.artifacts.build import build_package
from signer.devrepo import DevTrustRepo
from tests.conftest import REPO_ROOT, CliResult

FORBIDDEN_ON_VERIFY_PATH = {
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg", "securesystemslib",
    "azure", "signer.service",
}  # fmt: skip


def test_trust_core_imports_nothing_else_of_the_package() -> None:
    for path in sorted((REPO_ROOT / "signer" / "trust").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("signer"):
                    assert name.startswith("signer.trust"), f"{path.name} imports {name}"


def test_verify_path_imports_no_framework(
    cli: Callable[..., CliResult], dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    artifact = build_package(tmp_path / "art", "foo", "1.0", "0")
    assert cli("feedstock", "provision", "foo", "--dir", tmp_path / "k").code == 0
    source = tmp_path / "src.json"
    source.write_text(json.dumps({"foo": {"keys": ["k/foo.pub"], "outputs": ["foo"]}}))
    trust = dev_repo.trust_dir
    assert cli("delegations", "publish", source, "--trust", trust, "--key",
               dev_repo.keyref("key_mgr")).code == 0  # fmt: skip
    assert (
        cli(
            "sign", artifact, "--feedstock", "foo", "--key", f"file:{tmp_path}/k/foo.ci-secret"
        ).code
        == 0
    )
    probe = (
        "import sys\n"
        "from signer.cli.main import main\n"
        f"code = main(['verify', {str(artifact)!r}, '--trust', {str(trust)!r}, '--root', "
        f"{str(dev_repo.root_file)!r}, '--state-dir', {str(tmp_path / 'st')!r}])\n"
        "loaded = sorted(m for m in sys.modules)\n"
        "print(code)\n"
        "print('\\n'.join(loaded))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert "OK" in lines[0] and lines[1] == "0", proc.stdout[:500] + proc.stderr
    loaded = set(lines[2:])
    bad = {m for m in loaded for f in FORBIDDEN_ON_VERIFY_PATH if m == f or m.startswith(f + ".")}
    assert not bad, f"verifier imported {sorted(bad)[:5]}"
