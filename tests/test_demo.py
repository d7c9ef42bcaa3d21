"""The README's quick start runs `cf-sign demo`: it must work end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliResult


def test_demo_runs_end_to_end(cli_process: Callable[..., CliResult], tmp_path: Path) -> None:
    result = cli_process("demo", "--dir", tmp_path / "demo")
    assert result.code == 0, result.out[-2000:] + result.err
    assert "OK: every record is validly signed" in result.out
    assert "feedstock demo-lib" in result.out
    assert "scope: package 'demo-app' is not among feedstock demo-lib's names" in result.out
    # A second run replaces its own directory; a foreign directory is refused.
    assert cli_process("demo", "--dir", tmp_path / "demo").code == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    refused = cli_process("demo", "--dir", foreign)
    assert refused.code == 2 and "not a cf-sign demo directory" in refused.err
