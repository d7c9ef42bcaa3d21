"""Helpers for the conda plugin tests: cf-sign-made channels, a loopback server, real conda.

No tests here. The channels are made the way a channel operator makes them: real packages
(signer/artifacts/build.py), `cf-sign repodata index` and `cf-sign repodata sign`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_feedstock_support import run

from signer.artifacts.build import build_package
from signer.devrepo import DevTrustRepo, make_dev_trust_repo
from signer.keys import KeyHandle, generate_key, resolve_keyref
from signer.trust.metadata import Delegation, KeyMgr, Root, Signable
from signer.trust.signing import envelope_signer, sign_envelope
from signer.trust.state import write_atomic
from signer.trust.timefmt import format_time, system_clock

PLAIN_VAR = "CF_SIGN_CONDA_PLUGIN_VENV"
CCT_VAR = "CF_SIGN_CONDA_PLUGIN_CCT_VENV"

# The packages of a test channel: alpha depends on beta; gamma stands alone (noarch,
# .conda); delta is a linux-64 .tar.bz2 (another subdir, the other section).
PACKAGES = (("alpha", "1.0", "0", ("beta",), "noarch", "conda"),
            ("beta", "2.0", "0", (), "noarch", "conda"),
            ("gamma", "3.0", "0", (), "noarch", "conda"),
            ("delta", "4.0", "0", (), "linux-64", "tar.bz2"))  # fmt: skip


def conda_venv(var: str) -> Path:
    """The venv named by `var`, or skip (FAIL under CF_SIGN_REQUIRE_REAL_CLIENTS=1)."""
    value = os.environ.get(var)
    why = None
    if not value:
        why = f"{var} is unset (a venv with conda and cf-sign: see .ci/run)"
    elif not (Path(value) / "bin" / "python").exists():
        why = f"{var}={value} has no bin/python"
    if why is None:
        return Path(value)  # type: ignore[arg-type]
    if os.environ.get("CF_SIGN_REQUIRE_REAL_CLIENTS") == "1":
        pytest.fail(f"real conda required (CF_SIGN_REQUIRE_REAL_CLIENTS=1): {why}")
    pytest.skip(why)


@dataclass
class Channel:
    """A cf-sign-signed channel (dir `path`) and its trust repository (`repo.trust_dir`)."""

    path: Path
    repo: DevTrustRepo

    @property
    def url(self) -> str:
        return self.path.as_uri()

    @property
    def repodata(self) -> Path:
        return self.path / "noarch" / "repodata.json"

    def edit(self, change: Callable[[dict[str, Any]], None], subdir: str = "noarch") -> None:
        """Change the served repodata (signatures stay as they were)."""
        path = self.path / subdir / "repodata.json"
        data = json.loads(path.read_bytes())
        change(data)
        path.write_text(json.dumps(data, indent=1))

    def tamper(self, filename: str, name: str, value: object, subdir: str = "noarch") -> None:
        section = "packages.conda" if filename.endswith(".conda") else "packages"
        self.edit(lambda d: d[section][filename].__setitem__(name, value), subdir)

    def explicit_file(self, path: Path, *filenames: str) -> Path:
        """An @EXPLICIT environment file (what conda-lock writes) naming `filenames`."""
        records = json.loads(self.repodata.read_bytes())["packages.conda"]
        lines = [f"{self.url}/noarch/{fn}#{records[fn]['md5']}" for fn in filenames]
        path.write_text("@EXPLICIT\n" + "\n".join(lines) + "\n")
        return path

    def unsign(self, filename: str) -> None:
        self.edit(lambda d: d["signatures"].pop(filename))

    def key_mgr(self, version: int, *, expires_in: timedelta = timedelta(days=30)) -> bytes:
        """Publish a key_mgr.json of `version`, properly signed; returns its bytes."""
        now = system_clock().replace(microsecond=0)
        old = json.loads((self.repo.trust_dir / "key_mgr.json").read_bytes())["signed"]
        delegation = old["delegations"]["pkg_mgr"]
        meta = KeyMgr(version, format_time(now - timedelta(days=1)),
                      format_time(now + expires_in),
                      {"pkg_mgr": Delegation(tuple(delegation["pubkeys"]),
                                             delegation["threshold"])})  # fmt: skip
        envelope = Signable(meta.to_signed(), {}, "key_mgr")
        assert self.repo.key_mgr_key is not None
        sign_envelope(envelope, envelope_signer(self.repo.key_mgr_key, openpgp=False))
        data = envelope.to_bytes()
        write_atomic(self.repo.trust_dir / "key_mgr.json", data)
        return data

    def rogue_root_update(self) -> None:
        """Publish 2.root.json signed only by a new key: it does not chain from 1.root.json."""
        rogue = _key(self.repo.keys_dir, "rogue_root")
        now = system_clock().replace(microsecond=0)
        assert self.repo.key_mgr_key is not None
        meta = Root(2, format_time(now), format_time(now + timedelta(days=30)), {
            "root": Delegation((rogue.public_key_hex,), 1),
            "key_mgr": Delegation((self.repo.key_mgr_key.public_key_hex,), 1),
        })  # fmt: skip
        envelope = Signable(meta.to_signed(), {}, "root")
        sign_envelope(envelope, envelope_signer(rogue, openpgp=True))
        write_atomic(self.repo.trust_dir / "2.root.json", envelope.to_bytes())


def _key(keys_dir: Path, name: str) -> KeyHandle:
    if not (keys_dir / f"{name}.key").exists():
        generate_key(name, keys_dir)
    key = resolve_keyref(f"file:{keys_dir / (name + '.key')}")
    assert isinstance(key, KeyHandle)
    return key


def make_channel(
    base: Path, *, repo: DevTrustRepo | None = None, extra: tuple[Any, ...] = ()
) -> Channel:
    """Packages built, indexed and signed by cf-sign (conda and mamba profiles)."""
    repo = repo or make_dev_trust_repo(base / "dev")
    chan = base / "chan"
    for name, version, build, depends, subdir, fmt in PACKAGES + extra:
        build_package(chan / subdir, name, version, build, depends=depends, subdir=subdir,
                      fmt=fmt)  # fmt: skip
    keys = ("--key", repo.keyref("pkg_mgr"), "--mamba-key", repo.keyref("pkg_mgr_mamba"))
    for subdir in ("noarch", "linux-64"):
        out = chan / subdir / "repodata.json"
        assert run("repodata", "index", chan / subdir, "-o", out) == 0
        assert run("repodata", "sign", out, *keys) == 0
    return Channel(chan, repo)


class _CountingHandler(SimpleHTTPRequestHandler):
    counts: Counter[str]
    cache_control: str | None = None

    def do_GET(self) -> None:
        self.counts[self.path.split("?")[0]] += 1
        super().do_GET()

    def end_headers(self) -> None:
        if self.cache_control:
            self.send_header("Cache-Control", self.cache_control)
        super().end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Served:
    base_url: str
    counts: Counter[str] = field(default_factory=Counter)


@contextmanager
def serve(directory: Path, cache_control: str | None = None) -> Iterator[Served]:
    """`directory` on a loopback HTTP server; counts the GETs of each path."""
    counts: Counter[str] = Counter()
    attrs = {"counts": counts, "cache_control": cache_control}
    handler = type("Handler", (_CountingHandler,), attrs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}", counts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class CondaResult:
    code: int
    out: str
    prefix: Path
    pkgs: Path

    def linked(self, name: str) -> bool:
        return any((self.prefix / "conda-meta").glob(f"{name}-*.json"))

    def downloaded(self, name: str) -> bool:
        return any(self.pkgs.glob(f"{name}-*.conda"))


class Conda:
    """A real conda (`VENV/bin/python -m conda`) with its own home, caches and config."""

    def __init__(self, venv: Path, base: Path) -> None:
        self.venv = venv
        self.base = base
        self.home = base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.runs = 0

    @property
    def user_condarc(self) -> Path:
        return self.home / ".condarc"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("CONDA", "_CONDA", "MAMBA")) and k != "CONDARC"}  # fmt: skip
        return {
            **keep,
            "HOME": str(self.home),
            "XDG_CACHE_HOME": str(self.base / "xdg"),  # the verifier's state lives here
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "CONDA_NUMBER_CHANNEL_NOTICES": "0",
            "CONDA_REPORT_ERRORS": "false",
        }

    def cf_sign(
        self, *args: object, env_extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "cf-sign"), *map(str, args)],
                              capture_output=True, text=True, timeout=300,
                              env={**self.env(), **(env_extra or {})})  # fmt: skip

    def trust(self, channel: str, trust: Path | str, root: Path, *extra: object) -> None:
        """`cf-sign conda trust` (the venv's own cf-sign); `--user` among `extra` for ~."""
        proc = self.cf_sign("conda", "trust", channel, "--trust", trust, "--root", root, *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def create(self, channel: str, *specs: str, dry_run: bool = False,
               prefix: Path | None = None, command: str = "create",
               explicit: Path | None = None,
               repodata_fn: str | None = "repodata.json") -> CondaResult:  # fmt: skip
        """`conda create|install -p PREFIX` (a solve), or of an @EXPLICIT file (no solve)."""
        self.runs += 1
        prefix = prefix or self.base / f"env{self.runs}"
        pkgs = self.base / f"pkgs{self.runs}"  # fresh: nothing cached between runs
        args = [str(self.venv / "bin" / "python"), "-m", "conda", command, "-y", "-p",
                str(prefix)]  # fmt: skip
        if explicit is not None:
            args += ["--file", str(explicit)]
        else:
            args += ["--solver", "classic", "--override-channels", "-c", channel, *specs]
            if repodata_fn is not None:
                args += ["--repodata-fn", repodata_fn]
        if dry_run:
            args.append("--dry-run")
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600,
                              env={**self.env(), "CONDA_PKGS_DIRS": str(pkgs)})  # fmt: skip
        return CondaResult(proc.returncode, proc.stdout + proc.stderr, prefix, pkgs)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
