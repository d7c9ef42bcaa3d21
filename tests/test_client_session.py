"""The verifier session (signer.client): what every client verifies through."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from test_feedstock_support import World, index_of, make_world, resign, run

from signer.client import ArtifactVerdict, SessionConfig, TrustSession
from signer.fetch import LocalSource
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import INDEX_PATH, bin_id, bin_path
from signer.trust.metadata import KeyMgr, PkgMgr, Root
from signer.trust.timefmt import parse_time
from tests.conftest import CliResult


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _session(world: World, **config: object) -> TrustSession:
    return TrustSession.open(
        world.trust,
        root=world.root,
        state_dir=world.state,
        config=SessionConfig(**config),  # type: ignore[arg-type]
    )


class CountingSource:
    """A trust source in memory that counts what it is asked for (an injected source)."""

    def __init__(self, directory: Path) -> None:
        self.files = {
            str(p.relative_to(directory)): p.read_bytes()
            for p in directory.rglob("*")
            if p.is_file()
        }
        self.asked: list[str] = []
        self.location = "memory:"

    def fetch(self, path: str, max_bytes: int) -> bytes | None:
        self.asked.append(path)
        data = self.files.get(path)
        if data is not None and len(data) > max_bytes:
            raise VerificationError(path, "size", "over the cap")
        return data

    def describe(self, path: str) -> str:
        return f"memory:{path}"


def test_refresh_types_and_artifact_verdicts(world: World) -> None:
    good = world.build("numpy", "2.0", "h0_0")
    evil = world.build("numpy", "2.1", "h0_0")
    assert world.sign(good, "numpy") == 0
    assert world.sign(evil, "evil") == 0  # a key of another feedstock
    session = _session(world)
    assert isinstance(session.root.meta, Root) and session.root.meta.version == 1
    assert isinstance(session.key_mgr.meta, KeyMgr)
    assert session.pkg_mgr is not None and isinstance(session.pkg_mgr.meta, PkgMgr)
    verdict = session.verify_artifact(good)
    assert isinstance(verdict, ArtifactVerdict)
    assert verdict.ok and verdict.feedstock == "numpy" and verdict.package == "numpy"
    assert verdict.keyids == (world.key("numpy").keyid,)
    bad = session.verify_artifact(evil)
    assert not bad.ok and bad.check == "scope" and "evil" in (bad.reason or "")
    # The state now holds what was seen.
    versions = json.loads((world.state / "versions.json").read_text())
    assert versions["key_mgr.json"] == 1 and versions["pkg_mgr.json"] == 1
    assert versions[INDEX_PATH] >= 1


def test_documents_are_fetched_once_and_delegations_cached(world: World) -> None:
    paths = [world.build("numpy", f"2.{i}", "h0_0") for i in range(3)]
    for path in paths:
        assert world.sign(path, "numpy") == 0
    source = CountingSource(world.trust)
    session = TrustSession(source, world.root.read_bytes(), anchor_name=str(world.root))
    assert all(session.verify_artifact(p).ok for p in paths)
    assert source.asked.count("key_mgr.json") == 1
    assert source.asked.count(INDEX_PATH) == 1
    # A failure is cached too: the feedstock is looked up once, and fails the same way.
    for _ in range(2):
        with pytest.raises(VerificationError) as caught:
            session.delegation("nosuch")
        assert caught.value.check == "delegation"
    assert source.asked.count(INDEX_PATH) == 1  # the index is verified once per session
    # ... and forgetting makes the session look again.
    session.forget_delegations()
    session.delegation("numpy")
    assert source.asked.count(INDEX_PATH) == 2


def test_a_failed_refresh_is_reported_for_every_artifact(world: World) -> None:
    pkg = world.build("numpy", "2.0", "h0_0")
    assert world.sign(pkg, "numpy") == 0
    good = (world.trust / "key_mgr.json").read_bytes()
    (world.trust / "key_mgr.json").write_bytes(b"{}")  # a broken trust repository
    source = CountingSource(world.trust)
    session = TrustSession(source, world.root.read_bytes())
    first = session.verify_artifact(pkg)
    second = session.verify_artifact(pkg)
    assert not first.ok and first == second and first.check == "format"
    assert source.asked.count("key_mgr.json") == 1  # not fetched again
    with pytest.raises(VerificationError):
        session.refresh()
    # Once the repository is repaired, reset() makes the same session look again.
    source.files["key_mgr.json"] = good
    assert not session.verify_artifact(pkg).ok  # still the failure it remembers
    session.reset()
    assert session.verify_artifact(pkg).ok and source.asked.count("key_mgr.json") == 2


def test_verify_attestation_checks_digest_name_and_scope(world: World) -> None:
    pkg = world.build("numpy", "2.0", "h0_0")
    assert world.sign(pkg, "numpy") == 0
    sidecar = pkg.with_name(pkg.name + ".sig.json").read_bytes()
    sha = hashlib.sha256(pkg.read_bytes()).hexdigest()
    session = _session(world)
    result = session.verify_attestation(
        sidecar, filename=pkg.name, sha256=sha, subdir="linux-64", package="numpy"
    )
    assert result.feedstock == "numpy" and result.keyids == (world.key("numpy").keyid,)
    checks = {
        "digest": {"filename": pkg.name, "sha256": "0" * 64},
        "subject": {"filename": "numpy-9-h0_0.conda", "sha256": sha},
        "scope": {"filename": pkg.name, "sha256": sha, "package": "scipy"},
    }
    for check, kwargs in checks.items():
        with pytest.raises(VerificationError) as caught:
            session.verify_attestation(sidecar, subdir="linux-64", **kwargs)  # type: ignore[arg-type]
        assert caught.value.check == check
    with pytest.raises(FormatError):
        session.verify_attestation(b"{", filename=pkg.name, sha256=sha, subdir="linux-64")


def test_pkg_mgr_is_verified_when_published(world: World) -> None:
    path = world.trust / "pkg_mgr.json"
    resign(path, [world.repo.key_mgr_key])  # type: ignore[list-item]  # not a pkg_mgr key
    with pytest.raises(VerificationError) as caught:
        _session(world).refresh()
    assert caught.value.subject == "pkg_mgr.json" and caught.value.check == "signature"
    # Control: signed by a pkg_mgr key it verifies; and a repository without one is fine.
    resign(path, [world.repo.pkg_mgr_key])  # type: ignore[list-item]
    assert _session(world).pkg_mgr is not None
    path.unlink()
    assert _session(world).pkg_mgr is None


def test_clock_and_skew_come_from_the_config(world: World) -> None:
    expires = json.loads((world.trust / "key_mgr.json").read_text())["signed"]["expiration"]
    from signer.trust.timefmt import parse_time

    after = parse_time(expires, "t", "t") + timedelta(seconds=30)
    with pytest.raises(VerificationError) as caught:
        _session(world, at=after, clock_skew=timedelta(0)).refresh()
    assert caught.value.check == "expired"
    _session(world, at=after, clock_skew=timedelta(seconds=60)).refresh()  # within the skew


def test_open_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not a directory"):
        TrustSession.open(tmp_path / "nope")


def test_verify_repodata_from_path_and_bytes(
    world: World, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    from signer.artifacts.build import build_package

    sub = tmp_path / "channel" / "linux-64"
    build_package(sub, "a", "1.0", "h0_0", subdir="linux-64")
    repodata = tmp_path / "repodata.json"
    assert cli("repodata", "index", sub, "-o", repodata).code == 0
    assert cli("repodata", "sign", repodata, "--key", world.repo.keyref("pkg_mgr")).code == 0
    session = _session(world)
    for given in (repodata, repodata.read_bytes()):
        report = session.verify_repodata(given, jobs=1)
        assert report.ok() and report.valid == report.records == 1
    doc = json.loads(repodata.read_text())
    (sig,) = doc["signatures"]["a-1.0-h0_0.conda"].values()
    sig["signature"] = "00" * 64
    report = session.verify_repodata(json.dumps(doc).encode(), jobs=1)
    assert not report.ok() and report.invalid == 1


def test_injected_source_without_state(world: World) -> None:
    # The service's way: its own source, the root it keeps, no state directory.
    pkg = world.build("numpy", "2.0", "h0_0")
    assert world.sign(pkg, "numpy") == 0
    session = TrustSession(LocalSource(world.trust), world.root.read_bytes())
    assert session.verify_artifact(pkg).ok
    assert session.fetch(bin_path(bin_id("numpy", 256)), 1 << 24) is not None
    assert not world.state.exists()


def test_cli_verify_uses_the_session_state(world: World, cli: Callable[..., CliResult]) -> None:
    pkg = world.build("numpy", "2.0", "h0_0")
    assert world.sign(pkg, "numpy") == 0
    res = cli(*world.verify_args(pkg))
    assert res.code == 0 and res.out.startswith("OK")
    # The state remembers the root: --root is no longer needed.
    res = cli("verify", pkg, "--trust", world.trust, "--state-dir", world.state)
    assert res.code == 0, res.out
    assert run("verify", pkg, "--trust", world.trust, "--state-dir", world.base / "x") == 1


@pytest.mark.parametrize("skew", ["nan", "inf", "-1", "soon"])
def test_clock_skew_must_be_finite_non_negative_seconds(
    world: World, cli: Callable[..., CliResult], skew: str
) -> None:
    pkg = world.build("numpy", "2.0", "h0_0")
    res = cli(*world.verify_args(pkg), "--clock-skew", skew)
    assert res.code == 2 and "--clock-skew" in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert cli("repodata", "verify", pkg, "--trust", world.trust, "--clock-skew", skew).code == 2
    # Control: a finite value is taken.
    assert world.sign(pkg, "numpy") == 0
    assert cli(*world.verify_args(pkg), "--clock-skew", "0.5").code == 0


def test_a_corrupt_archive_is_a_failed_verdict_and_the_others_go_on(
    world: World, cli: Callable[..., CliResult]
) -> None:
    good = world.build("numpy", "2.0", "h0_0")
    bad = world.build("numpy", "2.1", "h0_0")
    for path in (good, bad):
        assert world.sign(path, "numpy") == 0
    bad.write_bytes(b"not an archive at all")
    res = cli(*world.verify_args(bad, good), "--json")
    verdicts = {v["artifact"]: v for v in json.loads(res.out)}
    assert res.code == 1 and verdicts[good.name]["ok"]
    assert verdicts[bad.name]["check"] == "archive"
    res = cli(*world.verify_args(world.base / "bld"))
    assert res.code == 2 and "is a directory" in res.err


def test_the_session_api_other_packages_code_against() -> None:
    # The contract of docs/architecture.md: names may be added, these never change.
    import inspect

    def params(fn: object) -> list[str]:
        return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]

    assert params(TrustSession.open)[:4] == ["location", "root", "state_dir", "config"]
    assert params(TrustSession)[:4] == ["source", "anchor", "anchor_name", "state"]
    assert "config" in params(TrustSession)
    for name in ("filename", "sha256", "subdir", "package", "where"):
        kind = inspect.signature(TrustSession.verify_attestation).parameters[name].kind
        assert kind is inspect.Parameter.KEYWORD_ONLY, name
    assert params(TrustSession.verify_artifact) == ["self", "path", "sidecar"]
    assert params(TrustSession.verify_repodata)[:2] == ["self", "repodata"]
    assert "jobs" in params(TrustSession.verify_repodata)
    assert params(TrustSession.fetch) == ["self", "path", "max_bytes"]
    for attribute in ("refresh", "root", "key_mgr", "pkg_mgr", "delegation", "reset"):
        assert hasattr(TrustSession, attribute), attribute
    assert SessionConfig()._fields == ("clock_skew", "timeout", "at")


def test_verified_bins_are_cached_per_entry_and_a_revoked_key_still_fails(world: World) -> None:
    """Bins are verified once per (bin, index entry, key_mgr keys): a warm cache neither
    hides a changed bin nor a revoked key once the session looks at the index again."""
    pkg = world.build("numpy", "2.0", "h0_0")
    assert world.sign(pkg, "numpy") == 0
    bins = index_of(world)["bins"]
    numpy_bin, evil_bin = bin_path(bin_id("numpy", bins)), bin_path(bin_id("evil", bins))
    source = CountingSource(world.trust)
    session = TrustSession(source, world.root.read_bytes(), anchor_name=str(world.root))
    assert session.verify_artifact(pkg).ok
    session.delegation("evil")
    session.delegation("llvmdev")
    for bin_file in {numpy_bin, evil_bin}:
        assert source.asked.count(bin_file) == 1
    # Looking again with nothing changed: the index is fetched again, no bin is verified again.
    session.forget_delegations()
    assert session.verify_artifact(pkg).ok and session.delegation("evil").feedstock == "evil"
    assert source.asked.count(INDEX_PATH) == 2 and source.asked.count(numpy_bin) == 1
    # numpy's key is revoked (replaced by a new one): its bin changes, the cache stays warm.
    secret = world.base / "numpy-new.ci-secret"
    assert (
        run("feedstock", "provision", "numpy-new", "--dir", world.fkeys, "--secret-file", secret)
        == 0
    )
    entries = world.default_entries()
    entries["numpy"]["keys"] = ["keys/numpy-new.pub"]
    world.write_source(entries)
    assert world.publish() == 0
    source.files.update(CountingSource(world.trust).files)
    session.forget_delegations()
    verdict = session.verify_artifact(pkg)
    assert not verdict.ok and verdict.check == "signature", verdict
    assert source.asked.count(numpy_bin) == 2  # the changed entry: verified again
    if evil_bin != numpy_bin:
        session.delegation("evil")
        assert source.asked.count(evil_bin) == 1  # unchanged: from the cache
    # Control: the same artifact verifies in a fresh session only under the old delegation.
    assert not TrustSession(source, world.root.read_bytes()).verify_artifact(pkg).ok


def test_a_cached_bin_is_not_trusted_past_its_expiry_or_a_swapped_entry(world: World) -> None:
    """A bin from the cache is checked for expiry on every use, and a bin whose bytes
    differ from what the (new) index pins is verified, and refused, not served cached."""
    pkg = world.build("numpy", "2.0", "h0_0")
    assert world.sign(pkg, "numpy") == 0
    source = CountingSource(world.trust)
    session = TrustSession(source, world.root.read_bytes(), anchor_name=str(world.root))
    assert session.verify_artifact(pkg).ok
    bins = index_of(world)["bins"]
    numpy_bin = bin_path(bin_id("numpy", bins))
    # Another bin's bytes under numpy's name, with the index unchanged: mix-and-match.
    other = next(
        p for p in source.files if p.startswith("feedstocks/") and p not in (numpy_bin, INDEX_PATH)
    )
    source.files[numpy_bin] = source.files[other]
    session.forget_delegations()
    assert session.verify_artifact(pkg).ok  # entry unchanged: the verified bin is reused
    session.reset()
    verdict = session.verify_artifact(pkg)
    assert not verdict.ok and verdict.check == "mix-and-match", verdict
    # Expiry: a warm session asked, past the documents' expiry, about a feedstock of a
    # bin it holds verified (not delegated there) says expired, not "not delegated".
    fresh = CountingSource(world.trust)
    later = TrustSession(fresh, world.root.read_bytes())
    assert later.verify_artifact(pkg).ok
    neighbour = next(
        f"x{i}" for i in range(100_000) if bin_id(f"x{i}", bins) == bin_id("numpy", bins)
    )
    with pytest.raises(VerificationError) as caught:
        later.delegation(neighbour)
    assert caught.value.check == "delegation"  # control: today it is just not delegated
    expiry = max(
        json.loads(fresh.files[name])["signed"]["expiration"] for name in (numpy_bin, INDEX_PATH)
    )
    later.config = SessionConfig(at=parse_time(expiry, "test", "expiration") + timedelta(days=2))
    with pytest.raises(VerificationError) as caught:
        later.delegation(neighbour)  # the same name: its earlier failure is what is cached
    assert caught.value.check == "delegation"
    twin = next(f"y{i}" for i in range(100_000) if bin_id(f"y{i}", bins) == bin_id("numpy", bins))
    with pytest.raises(VerificationError) as caught:
        later.delegation(twin)
    assert caught.value.check == "expired", caught.value
    assert fresh.asked.count(numpy_bin) == 1  # from the cache, and still refused


def test_state_batch_writes_versions_once_and_checks_them_at_once(tmp_path: Path) -> None:
    from signer.trust.errors import RollbackError
    from signer.trust.state import TrustState

    state = TrustState(tmp_path / "state")
    with state.batch():
        state.record_versions({"feedstocks/ab.json": 3})
        with state.batch():  # nested: still deferred
            state.record_versions({"feedstocks/cd.json": 2})
        assert not (tmp_path / "state" / "versions.json").exists()
        with pytest.raises(RollbackError):  # seen in memory already
            state.check_version("feedstocks/ab.json", 2, "feedstocks/ab.json")
        state.check_version("feedstocks/ab.json", 3, "feedstocks/ab.json")  # control
    written = json.loads((tmp_path / "state" / "versions.json").read_text())
    assert written == {"feedstocks/ab.json": 3, "feedstocks/cd.json": 2}
    with pytest.raises(RollbackError):  # and by a later process
        TrustState(tmp_path / "state").check_version("feedstocks/cd.json", 1, "cd")
