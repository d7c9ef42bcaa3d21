"""The stage policy on a local trust repository: overlapping delegations, `since`, record
timestamps, and a repository that hides a delegation (attack and control)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_feedstock_support import World, make_world
from test_service_support import run_cli

from signer.artifacts.build import build_package
from signer.channel.stages import FeedstockStage, Owners, StagePolicy, record_time
from signer.repodata.index import index_directory
from signer.trust.feedstocks import INDEX_PATH

SUBDIR = "linux-64"
NEW_MS = 1_900_000_000_000  # 2030
OLD_MS = 1_500_000_000_000  # 2017
SINCE = "2025-01-01T00:00:00Z"


class Channel:
    def __init__(self, world: World) -> None:
        self.world = world
        self.pkgs = world.base / "channel" / SUBDIR
        self.repodata = world.base / "repodata.json"
        self.out = world.base / "signed.json"
        self.stages = world.base / "stages.json"

    def set_stages(self, **stages: str) -> None:
        rows = [{"name": n, "stage": s, "since": SINCE} for n, s in sorted(stages.items())]
        self.stages.write_text(json.dumps({"stages": rows, "next_after": None}))

    def sign(self, *extra: object) -> tuple[int, dict[str, Any] | None, str]:
        w = self.world
        code, out, err = run_cli(
            "channel", "sign", self.repodata, "--trust", w.trust, "--root", w.root,
            "--state-dir", w.state, "--key", w.repo.keyref("pkg_mgr"), "-o", self.out,
            "--jobs", "1", "--no-cache", "--stages", self.stages, "--json", *extra,
        )  # fmt: skip
        return code, json.loads(out) if code == 0 else None, err


@pytest.fixture
def channel(tmp_path: Path) -> Channel:
    world = make_world(tmp_path)
    entries = world.default_entries()
    entries["evil"]["outputs"] = ["evil", "libnumpy-extra"]  # overlaps numpy's libnumpy*
    world.write_source(entries)
    assert world.publish() == 0
    ch = Channel(world)
    numpy = build_package(ch.pkgs, "numpy", "1.0", "h0_0", subdir=SUBDIR)
    assert world.sign(numpy, "numpy", "--out-dir", world.trust / "attestations" / SUBDIR) == 0
    build_package(ch.pkgs, "libnumpy-extra", "1.0", "h0_0", subdir=SUBDIR, timestamp_ms=NEW_MS)
    build_package(ch.pkgs, "libnumpy-extra", "0.9", "h0_0", subdir=SUBDIR, timestamp_ms=OLD_MS)
    build_package(ch.pkgs, "libllvm17", "1.0", "h0_0", subdir=SUBDIR, timestamp_ms=NEW_MS)
    ch.repodata.write_text(json.dumps(index_directory(ch.pkgs, SUBDIR)))
    return ch


NEW = "libnumpy-extra-1.0-h0_0.conda"
OLD = "libnumpy-extra-0.9-h0_0.conda"
LLVM = "libllvm17-1.0-h0_0.conda"


def test_strictest_covering_feedstock_wins(channel: Channel) -> None:
    channel.set_stages(numpy="observe", evil="enforce", llvmdev="off")
    code, report, err = channel.sign()
    assert code == 0 and report is not None, err
    observed = {o["file"]: o for o in report["observed"]}
    # evil enforces libnumpy-extra (since 2025): the 2030 build is refused although numpy,
    # which also covers it, only observes; the 2017 build predates enforcement.
    assert report["unattested"] == [NEW]
    assert set(observed) == {OLD, LLVM}
    assert observed[LLVM]["feedstock"] == "llvmdev" and "(off)" in observed[LLVM]["why"]
    assert "record older" in observed[OLD]["why"]
    assert report["signed"] == 3  # numpy (attested), OLD, LLVM

    channel.set_stages(numpy="observe", evil="observe", llvmdev="off")
    code, report, err = channel.sign()
    assert code == 0 and report is not None and report["unattested"] == [], err

    # A covering feedstock the stages do not list is enforced: nobody speaks for it.
    channel.set_stages(numpy="observe", llvmdev="observe")
    code, report, err = channel.sign()
    assert code == 0 and report is not None
    assert sorted(report["unattested"]) == sorted([NEW, OLD])


def test_hiding_an_enforcing_delegation_fails_the_run(channel: Channel) -> None:
    """Attack: the repository serves the bin without `evil` (so libnumpy-extra would look
    numpy's alone, in observe). The bin's signatures no longer cover it (nor does the
    index's pin): the run fails (exit 1) and writes nothing. Control: the same run on the
    untouched bin succeeds."""
    channel.set_stages(numpy="observe", evil="enforce", llvmdev="observe")
    code, report, err = channel.sign()
    assert code == 0 and report is not None and report["unattested"] == [NEW], err
    channel.out.unlink()

    index = json.loads((channel.world.trust / INDEX_PATH).read_bytes())["signed"]
    from signer.trust.feedstocks import bin_id, bin_path

    path = channel.world.trust / bin_path(bin_id("evil", index["bins"]))
    doc = json.loads(path.read_bytes())
    del doc["signed"]["delegations"]["evil"]
    path.write_text(json.dumps(doc))
    code, report, err = channel.sign()
    assert code == 1, (report, err)
    assert (
        "Traceback" not in err
        and "signature" in err
        and bin_path(bin_id("evil", index["bins"])) in err
    )
    assert not channel.out.exists()


def test_record_time_seconds_and_milliseconds() -> None:
    when = datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)
    assert record_time({"timestamp": 1_600_000_000}) == when
    assert record_time({"timestamp": 1_600_000_000_000}) == when
    for bad in (None, True, "1600000000", -1, 10**30):
        assert record_time({"timestamp": bad}) is None, bad
    assert record_time({}) is None


def test_decide_without_a_timestamp_enforces() -> None:
    owners = Owners(exact={"zlib": ["zlib"]})
    owners.add_glob("libz*", "zlib")
    owners.add_glob("*-static", "static")
    since = datetime(2025, 1, 1, tzinfo=UTC)
    policy = StagePolicy({"zlib": FeedstockStage("enforce", since),
                          "static": FeedstockStage("observe", None)}, owners)  # fmt: skip
    assert owners.of("libzstd") == ["zlib"] and owners.of("zlib-static") == ["static"]
    assert owners.of("libz-static") == ["static", "zlib"] and owners.of("other") == []
    assert not policy.decide("zlib", {}).sign  # age unknown: enforced
    assert policy.decide("zlib", {"timestamp": OLD_MS}).sign  # before since
    assert not policy.decide("zlib", {"timestamp": NEW_MS}).sign
    assert policy.decide("zlib-static", {}).sign  # observe
    assert not policy.decide("libz-static", {}).sign  # zlib enforces it too
    assert not policy.decide("other", {"timestamp": OLD_MS}).sign  # nobody's name
    assert not policy.decide(None, {}).sign
