"""Shared fixtures: the CLI run in-process or as a real process, and a dev trust repo."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from signer.cli.main import main
from signer.devrepo import DevTrustRepo, make_dev_trust_repo

REPO_ROOT = Path(__file__).resolve().parent.parent
VECTORS = REPO_ROOT / "tests" / "vectors"  # copied from ../shared/vectors (README there)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def _run_inprocess(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `cf-sign ARGS` in this process (fast); returns exit code and output."""
    return lambda *args: _run_inprocess(capsys, *args)


@pytest.fixture
def cli_process() -> Callable[..., CliResult]:
    """Run `cf-sign ARGS` as a separate process, as a user would."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "signer.cli.main", *map(str, args)],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            timeout=600,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def dev_repo(tmp_path: Path) -> DevTrustRepo:
    """A fresh trust repository: 2-of-3 root, key_mgr, pkg_mgr (conda + mamba keys)."""
    return make_dev_trust_repo(tmp_path / "dev")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default state directory lives under XDG_CACHE_HOME; keep tests apart.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
