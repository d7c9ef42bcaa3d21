"""Safety of root authoring: no overwrite of signed roots, majority default, review on sign."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliResult

Cli = Callable[..., CliResult]


def keys(cli: Cli, d: Path, *names: str) -> list[str]:
    for name in names:
        assert cli("keys", "generate", name, "--dir", d).code == 0
    return [str(d / f"{n}.pub") for n in names]


def create(cli: Cli, out: Path, roots: list[str], km: str, *extra: str) -> CliResult:
    args: list[str] = []
    for r in roots:
        args += ["--root-key", r]
    return cli("root", "create", *args, "--key-mgr-key", km, *extra, "-o", out)


def test_signed_root_is_never_overwritten(cli: Cli, tmp_path: Path) -> None:
    r1, r2, km = keys(cli, tmp_path, "r1", "r2", "km")
    root = tmp_path / "1.root.json"
    assert create(cli, root, [r1], km).code == 0
    # Control: an unsigned draft may be rewritten.
    assert create(cli, root, [r1, r2], km, "--threshold", "1").code == 0
    assert cli("metadata", "sign", root, "--key", f"file:{tmp_path / 'r1.key'}").code == 0
    signed = root.read_bytes()
    again = create(cli, root, [r2], km)
    assert again.code == 2 and "never overwritten" in again.err
    rotated = cli("root", "rotate", root, "-o", root)
    assert rotated.code == 2 and "never overwritten" in rotated.err
    assert root.read_bytes() == signed
    other = tmp_path / "notes.txt"
    other.write_text("not metadata")
    assert create(cli, other, [r1], km).code == 2 and other.read_text() == "not metadata"


def test_default_root_threshold_is_a_majority(cli: Cli, tmp_path: Path) -> None:
    pubs = keys(cli, tmp_path, "a", "b", "c", "d", "km")
    out = tmp_path / "1.root.json"
    made = create(cli, out, pubs[:3], pubs[4])
    assert made.code == 0 and "2 of 3 (a majority" in made.out
    assert json.loads(out.read_text())["signed"]["delegations"]["root"]["threshold"] == 2
    four = tmp_path / "four.json"
    assert create(cli, four, pubs[:4], pubs[4]).code == 0
    assert json.loads(four.read_text())["signed"]["delegations"]["root"]["threshold"] == 3
    explicit = tmp_path / "explicit.json"
    assert create(cli, explicit, pubs[:3], pubs[4], "--threshold", "1").code == 0
    assert json.loads(explicit.read_text())["signed"]["delegations"]["root"]["threshold"] == 1
    # Rotation to a different number of keys without --threshold: a majority again.
    cli("metadata", "sign", out, "--key", f"file:{tmp_path / 'a.key'}")
    cli("metadata", "sign", out, "--key", f"file:{tmp_path / 'b.key'}")
    two = tmp_path / "2.root.json"
    rotated = cli(
        "root", "rotate", out, *[x for p in pubs[:4] for x in ("--root-key", p)], "-o", two
    )
    assert rotated.code == 0, rotated.err
    assert json.loads(two.read_text())["signed"]["delegations"]["root"]["threshold"] == 3


def test_metadata_sign_shows_changes_and_refuses_undelegated_key(cli: Cli, tmp_path: Path) -> None:
    a, b, c, km, _ = keys(cli, tmp_path, "a", "b", "c", "km", "stranger")
    one = tmp_path / "1.root.json"
    assert create(cli, one, [a, b], km, "--threshold", "1").code == 0
    assert cli("metadata", "sign", one, "--key", f"file:{tmp_path / 'a.key'}").code == 0
    two = tmp_path / "2.root.json"
    assert cli("root", "rotate", one, "--root-key", b, "--root-key", c, "-o", two).code == 0
    before = two.read_bytes()
    refused = cli(
        "metadata", "sign", two, "--key", f"file:{tmp_path / 'stranger.key'}", "--trusted", one
    )
    assert refused.code == 2 and "not delegated" in refused.err
    assert two.read_bytes() == before
    by_old = cli("metadata", "sign", two, "--key", f"file:{tmp_path / 'a.key'}", "--trusted", one)
    assert by_old.code == 0, by_old.err
    pub_c = json.loads(Path(c).read_text())["keyval"]["public"]
    pub_a = json.loads(Path(a).read_text())["keyval"]["public"]
    assert "version: 1 -> 2" in by_old.out
    assert f"root key added:   {pub_c[:16]}" in by_old.out
    assert f"root key removed: {pub_a[:16]}" in by_old.out
    assert "root key of v1 (the current root)" in by_old.out
    # Without --trusted, a key outside the document is signed with a warning.
    warned = cli("metadata", "sign", two, "--key", f"file:{tmp_path / 'stranger.key'}")
    assert warned.code == 0 and "WARNING" in warned.out and "not a root key" in warned.out
