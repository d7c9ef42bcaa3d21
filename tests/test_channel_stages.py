"""Staged enforcement in `cf-sign channel sign --stages` against a real `cf-sign serve`.

The service (SQLite) holds the trust repository, two feedstocks and their stages; real
packages, two of them attested through `cf-sign submit`. `alpha` covers `alpha` and the
glob `alpha-*`, `beta` covers `beta` and `beta-tools`; `orphan` belongs to nobody.
Observe signs an unattested record and reports it, enforce refuses it (unless the record
predates `since`), the attested records are signed whatever the stage (the control), a
stage change between runs changes the result with the cache warm, and a hostile or
unreachable stages source fails cleanly without writing anything.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_service_support import (
    Server,
    World,
    database_for,
    free_port,
    make_world,
    run_cli,
    run_process,
)

from signer.artifacts.build import build_package
from signer.repodata.document import read_repodata
from signer.repodata.index import index_directory
from signer.repodata.verify import verify_repodata
from signer.trust.metadata import parse_metadata

pytest_plugins = ("test_service_support",)

SUBDIR = "linux-64"
FUTURE_MS = int((time.time() + 7 * 86400) * 1000)  # uploaded after any `since` set today
PAST_MS = 1_600_000_000_000  # 2020: before any `since` set today


class Setup:
    def __init__(self, world: World, server: Server, base: Path) -> None:
        self.world, self.server, self.base = world, server, base
        self.pkgs = base / "channel" / SUBDIR
        self.repodata = base / "repodata.json"
        self.out = base / "signed.json"
        self.cache = base / "cache"

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.world.admin_token}"}

    def stage(self, name: str, stage: str) -> None:
        r = httpx.put(f"{self.server.url}/v1/admin/feedstocks/{name}/stage",
                      json={"stage": stage}, headers=self.admin(), timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text

    def sign(self, *extra: object, stages: str | None = "service") -> tuple[int, str, str]:
        w = self.world
        if stages == "service":
            stages = f"{self.server.url}/v1/stages"
        args: list[object] = [
            "channel", "sign", self.repodata, "--trust", f"{self.server.url}/trust",
            "--root", w.repo.root_file, "--state-dir", self.base / "state",
            "--key", w.repo.keyref("pkg_mgr"), "--mamba-key", w.repo.keyref("pkg_mgr_mamba"),
            "-o", self.out, "--jobs", "1", "--cache-dir", self.cache, *extra,
        ]  # fmt: skip
        if stages is not None:
            args += ["--stages", stages]
        return run_cli(*args)

    def report(self, *extra: object, stages: str | None = "service") -> dict[str, Any]:
        code, out, err = self.sign("--json", *extra, stages=stages)
        assert code == 0, out + err
        data: dict[str, Any] = json.loads(out)
        return data

    def signed_names(self) -> set[str]:
        return set(json.loads(self.out.read_bytes()).get("signatures", {}))

    def verified(self) -> tuple[int, int, int]:
        """(valid, unsigned, invalid) by the real repodata verifier."""
        key_mgr = (self.world.publish_dir / "key_mgr.json").read_bytes()
        pkg_mgr = parse_metadata(key_mgr, "key_mgr.json", "key_mgr").meta.pkg_mgr_keys
        report = verify_repodata(read_repodata(self.out), pkg_mgr)
        return report.valid, report.unsigned, report.invalid


ALPHA = "alpha-1.0-h0_0.conda"
ALPHA_NEW = "alpha-tools-1.0-h0_0.conda"
BETA = "beta-1.0-h0_0.conda"
BETA_NEW = "beta-tools-1.0-h0_0.conda"
BETA_OLD = "beta-tools-0.9-h0_0.conda"
ORPHAN = "orphan-1.0-h0_0.conda"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("stages")
    world = make_world(base, database_for("sqlite", base))
    server = world.server()
    s = Setup(world, server, base)
    secrets = {}
    for name, outputs, globs in (("alpha", ["alpha"], ["alpha-*"]),
                                 ("beta", ["beta", "beta-tools"], [])):  # fmt: skip
        keyref, pub = world.feedstock_key(name)
        secrets[name] = Path(keyref[len("file:") :]).read_text()
        body = {"name": name, "outputs": outputs, "output_globs": globs, "keys": [pub]}
        r = httpx.post(f"{server.url}/v1/admin/feedstocks", headers=s.admin(), json=body,
                       timeout=60)  # fmt: skip
        assert r.status_code == 201, r.text
    for name in ("alpha", "beta"):
        pkg = build_package(s.pkgs, name, "1.0", "h0_0", subdir=SUBDIR)
        code, out, err = run_process("sign", pkg, "--feedstock", name, "--key", "env:K",
                                     env={"K": secrets[name]})  # fmt: skip
        assert code == 0, out + err
        code, out, err = run_process("submit", pkg, "--service", server.url)
        assert code == 0, out + err
        for sidecar in s.pkgs.glob("*.sig.json"):
            sidecar.unlink()  # only the service's copy counts
    build_package(s.pkgs, "alpha-tools", "1.0", "h0_0", subdir=SUBDIR, timestamp_ms=FUTURE_MS)
    build_package(s.pkgs, "beta-tools", "1.0", "h0_0", subdir=SUBDIR, timestamp_ms=FUTURE_MS)
    build_package(s.pkgs, "beta-tools", "0.9", "h0_0", subdir=SUBDIR, timestamp_ms=PAST_MS)
    build_package(s.pkgs, "orphan", "1.0", "h0_0", subdir=SUBDIR, timestamp_ms=FUTURE_MS)
    s.repodata.write_text(json.dumps(index_directory(s.pkgs, SUBDIR), indent=1))
    yield s
    for srv in world.servers:
        srv.stop()


def test_without_stages_every_unattested_record_is_refused(setup: Setup) -> None:
    setup.stage("alpha", "observe")
    report = setup.report(stages=None)
    assert "observed" not in report  # today's report, unchanged
    assert report["signed"] == 2 and setup.signed_names() == {ALPHA, BETA}
    assert sorted(report["unattested"]) == sorted([ALPHA_NEW, BETA_NEW, BETA_OLD, ORPHAN])


def test_observe_signs_and_reports_enforce_refuses(setup: Setup) -> None:
    setup.stage("alpha", "observe")
    setup.stage("beta", "enforce")
    report = setup.report()
    # Control: the attested records are signed in both stages.
    assert {ALPHA, BETA} <= setup.signed_names()
    # alpha-tools (glob alpha-*, feedstock in observe): signed, reported.
    observed = {o["file"]: o for o in report["observed"]}
    assert observed[ALPHA_NEW]["feedstock"] == "alpha"
    assert (
        "no attestation" in observed[ALPHA_NEW]["why"] and "observe" in observed[ALPHA_NEW]["why"]
    )
    # beta-tools 0.9 predates beta's enforcement (timestamp before `since`): signed, reported.
    assert observed[BETA_OLD]["feedstock"] == "beta" and "older" in observed[BETA_OLD]["why"]
    # beta-tools 1.0, uploaded after `since`: refused; orphan belongs to nobody: refused.
    assert sorted(report["unattested"]) == sorted([BETA_NEW, ORPHAN])
    assert setup.signed_names() == {ALPHA, BETA, ALPHA_NEW, BETA_OLD}
    assert report["signed"] == 4
    assert setup.verified() == (4, 2, 0)  # the observed signatures are real ones

    code, out, err = setup.sign()
    assert code == 0, err
    assert f"OBSERVED {SUBDIR}/{ALPHA_NEW} (feedstock alpha)" in out
    assert "2 signed unattested" in out


def test_stage_change_between_runs_with_a_warm_cache(setup: Setup) -> None:
    setup.stage("alpha", "observe")
    setup.stage("beta", "observe")
    first = setup.report()
    assert {o["file"] for o in first["observed"]} == {ALPHA_NEW, BETA_NEW, BETA_OLD}
    assert setup.signed_names() == {ALPHA, BETA, ALPHA_NEW, BETA_NEW, BETA_OLD}

    setup.stage("alpha", "enforce")
    setup.stage("beta", "enforce")
    code, out, err = setup.sign()
    assert code == 0, err
    assert "(2 unchanged since the last run)" in out  # the cache was used...
    # ...and the newly enforced unattested records are refused all the same.
    assert setup.signed_names() == {ALPHA, BETA, BETA_OLD}
    report = setup.report("--unattested", "drop")
    assert sorted(report["unattested"]) == sorted([ALPHA_NEW, BETA_NEW, ORPHAN])
    doc = json.loads(setup.out.read_bytes())
    assert ALPHA_NEW not in doc["packages.conda"] and ALPHA in doc["packages.conda"]

    setup.stage("alpha", "off")  # roll back: signed again on the very next run
    report = setup.report()
    assert ALPHA_NEW in {o["file"] for o in report["observed"]}
    assert ALPHA_NEW in setup.signed_names()


def test_stages_file_and_bad_files(setup: Setup) -> None:
    setup.stage("alpha", "observe")
    setup.stage("beta", "enforce")
    answer = httpx.get(f"{setup.server.url}/v1/stages", timeout=30).json()
    good = setup.base / "stages.json"
    good.write_text(json.dumps(answer))
    report = setup.report(stages=str(good))
    assert {o["file"] for o in report["observed"]} == {ALPHA_NEW, BETA_OLD}

    # A feedstock missing from the stages is enforced (nothing speaks for it).
    partial = setup.base / "partial.json"
    partial.write_text(json.dumps({
        "stages": [s for s in answer["stages"] if s["name"] != "alpha"], "next_after": None,
    }))  # fmt: skip
    report = setup.report(stages=str(partial))
    assert {o["file"] for o in report["observed"]} == {BETA_OLD}

    setup.out.unlink(missing_ok=True)
    bad = setup.base / "bad.json"
    for text, needle in (
        ('{"stages": [{"name": "alpha", "stage": "strict", "since": null}], "next_after": null}',
         "stages[0].stage"),
        ('{"stages": [], "stages": [], "next_after": null}', "duplicate key"),
        ('{"stages": [], "next_after": "zzz"}', "next_after"),
        ("[]", "stages"),
    ):  # fmt: skip
        bad.write_text(text)
        code, out, err = setup.sign(stages=str(bad))
        assert code == 2, (text, out, err)
        assert "Traceback" not in err and needle in err and str(bad) in err, err
        assert not setup.out.exists()  # nothing written
    code, out, err = setup.sign(stages=str(setup.base / "absent.json"))
    assert code == 2 and "absent.json" in err and not setup.out.exists()


class _Hostile(BaseHTTPRequestHandler):
    mode = "huge"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        mode = type(self).mode
        if mode == "huge-length":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
            return
        if mode == "huge":
            self.send_response(200)
            self.end_headers()
            chunk = b" " * 65536
            try:
                for _ in range(200):  # 12.5 MiB of whitespace, no length given
                    self.wfile.write(chunk)
            except OSError:
                pass
            return
        if mode == "loop":  # always the same page, pointing at itself
            body = json.dumps({"stages": [], "next_after": "a"}).encode()
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/v1/stages")
            self.end_headers()
            return
        elif mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        else:
            body = b"\xff\xfe not utf-8"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile() -> Iterator[Callable[[str], str]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def url(mode: str) -> str:
        _Hostile.mode = mode
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1/stages"

    yield url
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("mode", "needle"),
    [("huge-length", "cap"), ("huge", "cap"), ("loop", "does not move forward"),
     ("redirect", "another host"), ("error", "HTTP 500"), ("garbage", "not UTF-8")],
)  # fmt: skip
def test_hostile_stages_url_fails_cleanly(
    setup: Setup, hostile: Callable[[str], str], mode: str, needle: str
) -> None:
    setup.out.unlink(missing_ok=True)
    code, out, err = setup.sign(stages=hostile(mode))
    assert code == 2, (out, err)
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not setup.out.exists()


def test_unreachable_stages_url_fails_cleanly(setup: Setup) -> None:
    setup.out.unlink(missing_ok=True)
    code, _out, err = setup.sign(stages=f"http://127.0.0.1:{free_port()}/v1/stages")
    assert code == 2 and "cannot fetch the stages" in err and "Traceback" not in err, err
    assert not setup.out.exists()
    code, _, err = setup.sign(stages=f"{setup.server.url}/v1/stages?after=x")
    assert code == 2 and "without a query" in err


def test_pages_are_walked(setup: Setup) -> None:
    """More feedstocks than one page: every page is read (pages of one feedstock)."""
    from signer.channel.stages import load_stages

    found = load_stages(f"{setup.server.url}/v1/stages", page_limit=1)
    assert {"alpha", "beta"} <= set(found)
    answer = httpx.get(f"{setup.server.url}/v1/stages", timeout=30).json()
    assert len(found) == len(answer["stages"])


def test_overlay_honours_the_stages(setup: Setup, tmp_path: Path) -> None:
    """The overlay library takes the same policy: a stage change re-signs on the next refresh
    even when upstream answers 304 (nothing new upstream)."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    from signer.channel.attestations import AttestationStore
    from signer.channel.gate import Gate
    from signer.channel.overlay import refresh_overlay
    from signer.channel.stages import StagePolicy, load_stages
    from signer.keys import channel_signer
    from signer.trust.signing import MessageSigner

    upstream_dir = tmp_path / "upstream" / SUBDIR
    upstream_dir.mkdir(parents=True)
    shutil.copy(setup.repodata, upstream_dir / "repodata.json")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "upstream"))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{httpd.server_address[1]}/{SUBDIR}/repodata.json"
    w = setup.world
    keys: list[MessageSigner] = [channel_signer(w.repo.keyref("pkg_mgr"))]
    mamba = channel_signer(w.repo.keyref("pkg_mgr_mamba"))

    def refresh() -> Any:
        gate = Gate.open(f"{setup.server.url}/trust", root=Path(w.repo.root_file),
                         state_dir=tmp_path / "trust-state")  # fmt: skip
        policy = StagePolicy.open(load_stages(f"{setup.server.url}/v1/stages"), gate.session)
        store = AttestationStore(f"{setup.server.url}/trust")
        return refresh_overlay(
            "stages", SUBDIR, upstream, gate=gate, store=store,
            keys=keys, mamba_key=mamba, publish_root=tmp_path / "pub",
            state_dir=tmp_path / "overlay-state", policy=policy,
        )  # fmt: skip

    try:
        setup.stage("alpha", "observe")
        setup.stage("beta", "observe")
        first = refresh()
        assert first.upstream_changed and (first.signed, first.observed) == (5, 3)
        assert first.coverage == pytest.approx(2 / 6)
        published = tmp_path / "pub" / "channels" / "stages" / SUBDIR / "repodata.json"
        assert ALPHA_NEW in json.loads(published.read_bytes())["signatures"]

        setup.stage("alpha", "enforce")
        second = refresh()
        assert not second.upstream_changed and second.published
        assert (second.signed, second.observed) == (4, 2)
        assert ALPHA_NEW not in json.loads(published.read_bytes())["signatures"]
    finally:
        httpd.shutdown()
        httpd.server_close()
