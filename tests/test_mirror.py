"""`cf-sign mirror sync|verify`: only what verifies is ever published."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_feedstock_support import World, make_world
from test_mirror_support import Faults, serve

from signer.artifacts.build import build_package
from signer.devrepo import make_dev_trust_repo
from signer.repodata.document import read_repodata
from signer.repodata.index import index_directory
from signer.repodata.verify import verify_repodata
from signer.trust.metadata import parse_metadata

SUBDIR = "linux-64"


class Upstream:
    def __init__(self, world: World, cli: Callable[..., Any]) -> None:
        self.world, self.cli = world, cli
        self.root = world.base / "upstream"
        self.dir = self.root / SUBDIR
        self.att = world.trust / "attestations" / SUBDIR
        self.dest = world.base / "mirror"

    def add(self, name: str, feedstock: str | None = "numpy", version: str = "1.0",
            **kw: Any) -> Path:  # fmt: skip
        pkg = build_package(self.dir, name, version, "h0_0", subdir=SUBDIR, **kw)
        if feedstock is not None:
            assert self.world.sign(pkg, feedstock, "--out-dir", self.att) == 0
        return pkg

    def publish(self, *, sign_all: bool = False) -> None:
        """repodata.json for the subdir, channel-signed (unattested records stay unsigned)."""
        repodata = self.dir / "repodata.json"
        repodata.write_text(json.dumps(index_directory(self.dir, SUBDIR), indent=2))
        w = self.world
        if sign_all:
            cmd = ["repodata", "sign", repodata, "--key", w.repo.keyref("pkg_mgr")]
        else:
            cmd = ["channel", "sign", repodata, "--trust", w.trust, "--root", w.root,
                   "--state-dir", w.state, "--key", w.repo.keyref("pkg_mgr"),
                   "--no-cache"]  # fmt: skip
        res = self.cli(*cmd)
        assert res.code == 0, res.err

    def sync_args(self, upstream: str | Path | None = None, *extra: object) -> list[object]:
        w = self.world
        return ["mirror", "sync", upstream or self.root, self.dest, "--trust", w.trust,
                "--root", w.root, "--state-dir", w.state, "--subdir", SUBDIR, "--json",
                *extra]  # fmt: skip

    def verify_args(self) -> list[object]:
        w = self.world
        return ["mirror", "verify", self.dest, "--trust", w.trust, "--root", w.root,
                "--state-dir", w.state, "--json"]  # fmt: skip

    def published(self) -> set[str]:
        return {p.name for p in (self.dest / SUBDIR).iterdir()
                if p.name.endswith((".conda", ".tar.bz2"))}  # fmt: skip

    def listed(self) -> set[str]:
        doc = json.loads((self.dest / SUBDIR / "repodata.json").read_bytes())
        return set(doc["packages"]) | set(doc["packages.conda"])


@pytest.fixture
def up(tmp_path: Path, cli: Callable[..., Any]) -> Upstream:
    u = Upstream(make_world(tmp_path), cli)
    u.add("numpy")
    u.add("numpy-base", fmt="tar.bz2")
    u.add("libnumpy-core")
    u.publish()
    return u


def _sub(out: str) -> dict[str, Any]:
    report = json.loads(out)
    sub: dict[str, Any] = report["subdirs"][0]
    assert sub["subdir"] == SUBDIR
    return sub


def test_sync_from_directory_then_incremental(up: Upstream, cli: Callable[..., Any]) -> None:
    res = cli(*up.sync_args())
    assert res.code == 0, res.out + res.err
    sub = _sub(res.out)
    assert (sub["published"], sub["downloaded"], sub["refused"]) == (3, 3, [])
    assert up.published() == up.listed() == {
        "numpy-1.0-h0_0.conda", "numpy-base-1.0-h0_0.tar.bz2", "libnumpy-core-1.0-h0_0.conda"
    }  # fmt: skip
    assert (up.dest / "noarch" / "repodata.json").is_file()
    assert (up.dest / SUBDIR / "repodata.json.zst").is_file()
    key_mgr = parse_metadata((up.world.trust / "key_mgr.json").read_bytes(), "k", "key_mgr")
    checked = verify_repodata(read_repodata(up.dest / SUBDIR / "repodata.json"),
                              key_mgr.meta.pkg_mgr_keys)  # type: ignore[attr-defined]  # fmt: skip
    assert checked.valid == 3 and checked.invalid == 0
    res = cli(*up.verify_args())
    assert res.code == 0, res.out

    res = cli(*up.sync_args())
    sub = _sub(res.out)
    assert res.code == 0 and (sub["downloaded"], sub["reused"]) == (0, 3)

    # A new package upstream is fetched; one gone upstream stays for the grace period.
    up.add("numpy", version="2.0")
    (up.dir / "libnumpy-core-1.0-h0_0.conda").unlink()
    up.publish()
    res = cli(*up.sync_args())
    sub = _sub(res.out)
    assert res.code == 0 and (sub["downloaded"], sub["reused"], sub["removed"]) == (1, 2, [])
    assert "libnumpy-core-1.0-h0_0.conda" in up.published()
    assert "libnumpy-core-1.0-h0_0.conda" not in up.listed()
    time.sleep(0.05)
    res = cli(*up.sync_args(None, "--grace", "0.01"))
    assert _sub(res.out)["removed"] == ["libnumpy-core-1.0-h0_0.conda"]
    assert "libnumpy-core-1.0-h0_0.conda" not in up.published()


def test_unattested_and_unsigned_records_are_refused(up: Upstream,
                                                     cli: Callable[..., Any]) -> None:  # fmt: skip
    up.add("numpy", feedstock=None, version="9.9")  # no attestation: channel sign skips it
    up.publish()
    res = cli(*up.sync_args())
    assert res.code == 1
    sub = _sub(res.out)
    assert [(r["file"], r["check"]) for r in sub["refused"]] == [("numpy-9.9-h0_0.conda",
                                                                  "unsigned")]  # fmt: skip
    assert "numpy-9.9-h0_0.conda" not in up.published() | up.listed()
    # Signed for the channel but with no attestation: refused at the attestation.
    up.publish(sign_all=True)
    res = cli(*up.sync_args())
    sub = _sub(res.out)
    assert [(r["file"], r["check"]) for r in sub["refused"]] == [("numpy-9.9-h0_0.conda",
                                                                  "attestation")]  # fmt: skip
    assert len(up.listed()) == 3


def test_tampered_artifact_is_quarantined_never_published(
    up: Upstream, cli: Callable[..., Any]
) -> None:
    """Attack: the server sends other bytes for one artifact (same size). Control: the
    others, served by the same server, are published."""
    name = "numpy-1.0-h0_0.conda"
    real = (up.dir / name).read_bytes()
    forged = bytearray(real)
    forged[len(forged) // 2] ^= 0xFF
    with serve(up.root, Faults(tamper={f"{SUBDIR}/{name}": bytes(forged)})) as (url, faults):
        res = cli(*up.sync_args(url))
    assert res.code == 1
    sub = _sub(res.out)
    assert [q["file"] for q in sub["quarantined"]] == [name]
    assert "sha256" in sub["quarantined"][0]["reason"]
    assert name not in up.published() and name not in up.listed()
    assert len(up.published()) == 2  # control
    quarantined = up.dest / ".quarantine" / SUBDIR
    assert (quarantined / name).read_bytes() == bytes(forged)
    assert "sha256" in (quarantined / f"{name}.reason").read_text()
    assert sum(1 for p, _ in faults.requests if p.endswith(name)) == 3  # retried
    # Fixed upstream: the next run publishes it.
    with serve(up.root) as (url, _):
        res = cli(*up.sync_args(url))
    assert res.code == 0 and name in up.published()


def test_dropped_connection_is_resumed_and_a_lying_length_quarantined(
    up: Upstream, cli: Callable[..., Any]
) -> None:
    cut = f"{SUBDIR}/numpy-1.0-h0_0.conda"
    liar = f"{SUBDIR}/libnumpy-core-1.0-h0_0.conda"
    faults = Faults(drop_after={cut: 300}, drop_times={cut: 1}, lie_length={liar})
    with serve(up.root, faults) as (url, faults):
        res = cli(*up.sync_args(url, "--jobs", "2"))
    sub = _sub(res.out)
    assert res.code == 1
    ranges = [r for p, r in faults.requests if p == cut]
    assert ranges == [None, "bytes=300-"], res.out  # the second request resumed
    assert sub["resumed"] == 1 and "numpy-1.0-h0_0.conda" in up.published()
    assert [q["file"] for q in sub["quarantined"]] == ["libnumpy-core-1.0-h0_0.conda"]
    assert "libnumpy-core-1.0-h0_0.conda" not in up.published() | up.listed()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"info": {"subdir": "linux-64"}, "packages": {}, "packages": {}}', "duplicate key"),
        (b'{"info": {"subdir": "linux-64"}, "packages.conda": {"a-1-0.conda": {"na', "truncated"),
        (
            b'{"info": {"subdir": "linux-64"}, "packages.conda": {"a-1-0.conda": {"n": "\xff"}}}',
            "not UTF-8",
        ),
        (b'{"info": {"subdir": "osx-64"}}', "info.subdir"),
    ],
)
def test_hostile_upstream_repodata_publishes_nothing(
    up: Upstream, cli: Callable[..., Any], content: bytes, why: str
) -> None:
    (up.dir / "repodata.json").write_bytes(content)
    with serve(up.root) as (url, _):
        res = cli(*up.sync_args(url))
    assert res.code == 1 and why in _sub(res.out)["error"], res.out
    assert not (up.dest / SUBDIR).exists()
    assert (up.dest / "noarch" / "repodata.json").is_file()


def test_oversized_upstream_repodata(up: Upstream) -> None:
    from signer.channel.gate import Gate
    from signer.mirror.sync import SyncOptions, sync
    from signer.mirror.upstream import Upstream as Source

    w = up.world
    gate = Gate.open(str(w.trust), root=w.root, state_dir=w.state)
    report = sync(Source(str(up.root)), up.dest, gate, [SUBDIR], SyncOptions(max_repodata=100))
    assert not report.ok and "cap" in str(report.subdirs[0].error)
    assert not (up.dest / SUBDIR).exists()


def test_resign_with_the_mirrors_own_keys(up: Upstream, cli: Callable[..., Any]) -> None:
    mine = make_dev_trust_repo(up.world.base / "mine")
    res = cli(*up.sync_args(None, "--key", mine.keyref("pkg_mgr"),
                            "--mamba-key", mine.keyref("pkg_mgr_mamba")))  # fmt: skip
    assert res.code == 0, res.out + res.err
    res = cli("repodata", "verify", up.dest / SUBDIR / "repodata.json", "--trust", mine.trust_dir,
              "--root", mine.root_file, "--state-dir", up.world.base / "mine-state")  # fmt: skip
    assert res.code == 0, res.out


def test_mirror_verify_finds_tampering_at_rest(up: Upstream, cli: Callable[..., Any]) -> None:
    assert cli(*up.sync_args()).code == 0
    target = up.dest / SUBDIR / "numpy-1.0-h0_0.conda"
    data = bytearray(target.read_bytes())
    data[-10] ^= 1
    target.write_bytes(bytes(data))
    res = cli(*up.verify_args())
    assert res.code == 1
    assert [r["file"] for r in _sub(res.out)["refused"]] == ["numpy-1.0-h0_0.conda"]


def test_resumes_after_kill_9(up: Upstream) -> None:
    """A real process is killed mid-download; the next run resumes with a Range request."""
    big = build_package(up.dir, "libnumpy-big", "1.0", "h0_0", subdir=SUBDIR,
                        files={"share/blob": os.urandom(400_000)})  # fmt: skip
    assert up.world.sign(big, "numpy", "--out-dir", up.att) == 0
    up.publish()
    path = f"{SUBDIR}/{big.name}"
    partial = up.dest / ".mirror" / "partial" / SUBDIR / big.name
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with serve(up.root, Faults(slow={path: 0.05})) as (url, faults):
        args = [sys.executable, "-m", "signer.cli.main", *map(str, up.sync_args(url))]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size > 64 * 1024:
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("the download never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        have = partial.stat().st_size
        assert 0 < have < big.stat().st_size
        assert (
            big.name not in up.listed() if (up.dest / SUBDIR / "repodata.json").exists() else True
        )
        faults.slow.clear()
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ranges = [r for p, r in faults.requests if p == path]
    assert ranges[0] is None and ranges[-1] is not None and int(ranges[-1][6:-1]) >= have
    assert (up.dest / SUBDIR / big.name).read_bytes() == big.read_bytes()
    assert big.name in up.listed() and not partial.exists()
