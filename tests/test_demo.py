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
    # Step 6: the service on SQLite took the attestations and served them to the verifier.
    service_part, overlay_part = result.out.split("== 6.", 1)[1].split("== 7.", 1)
    assert "2 accepted, 0 refused" in service_part
    assert service_part.count("OK   demo-lib-1.0.0-h1234567_0.") == 2
    downloads = tmp_path / "demo" / "downloads"
    assert sorted(p.name for p in downloads.iterdir()) == [
        "demo-lib-1.0.0-h1234567_0.conda",
        "demo-lib-1.0.0-h1234567_0.tar.bz2",
    ]
    published = tmp_path / "demo" / "service" / "trust"
    assert (published / "1.root.json").read_bytes() == (
        tmp_path / "demo" / "trust" / "1.root.json"
    ).read_bytes()
    assert (published / "attestations" / "linux-64").is_dir()
    # Step 7: the overlay signs demo-lib's two attested records, not demo-app's two.
    row = next(line.split() for line in overlay_part.splitlines() if line.startswith("demo "))
    assert row == ["demo", "linux-64", "repodata.json", "4", "2", "0", "2", "published"], row
    assert "2 valid, 0 invalid, 2 unsigned" in overlay_part
    assert (published / "channels" / "demo" / "linux-64" / "repodata.json").is_file()
    # A second run replaces its own directory; a foreign directory is refused.
    assert cli_process("demo", "--dir", tmp_path / "demo").code == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    refused = cli_process("demo", "--dir", foreign)
    assert refused.code == 2 and "not a cf-sign demo directory" in refused.err
