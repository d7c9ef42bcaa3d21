"""Shared builders for the feedstock-layer tests (no tests here).

A `World` is a dev trust repository with feedstock keys provisioned through the CLI, a
delegations source, delegations published through the CLI, and helpers to build real
packages, sign them (as CI does) and verify them.
"""

from __future__ import annotations

import copy
import io
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from signer.cli.main import main
from signer.devrepo import DevTrustRepo, make_dev_trust_repo
from signer.keys import KeyHandle, resolve_keyref
from signer.trust.feedstocks import INDEX_PATH
from signer.trust.metadata import Signable
from signer.trust.signing import envelope_signer, sign_envelope
from signer.trust.state import write_atomic

# numpy: names and a glob; llvmdev: only globs (like conda-forge's allowlist); evil: a
# feedstock whose key an attacker holds.
FEEDSTOCKS: dict[str, dict[str, Any]] = {
    "numpy": {"outputs": ["numpy", "numpy-base"], "output_globs": ["libnumpy*"]},
    "llvmdev": {"outputs": ["llvmdev"], "output_globs": ["libllvm*", "llvm-tools-*"]},
    "evil": {"outputs": ["evil"]},
}


@contextmanager
def environ(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(*args: object) -> int:
    """`cf-sign ARGS` in this process, output discarded (keeps `cli`'s capture clean)."""
    with redirect_stdout(io.StringIO()):
        try:
            return main([str(a) for a in args])
        except SystemExit as exc:
            return int(exc.code or 0)


@dataclass
class World:
    base: Path
    repo: DevTrustRepo
    fkeys: Path
    secrets: dict[str, str] = field(default_factory=dict)  # feedstock -> CI secret value
    source: Path = Path()

    @property
    def trust(self) -> Path:
        return self.repo.trust_dir

    @property
    def root(self) -> Path:
        return self.repo.root_file

    @property
    def state(self) -> Path:
        return self.base / "state"

    def key(self, feedstock: str) -> KeyHandle:
        with environ({"CF_SIGN_TEST_KEY": self.secrets[feedstock]}):
            handle = resolve_keyref("env:CF_SIGN_TEST_KEY")
        assert isinstance(handle, KeyHandle)
        return handle

    def pub(self, feedstock: str) -> Path:
        return self.fkeys / f"{feedstock}.pub"

    def write_source(self, entries: Mapping[str, Mapping[str, Any]]) -> Path:
        self.source.write_text(json.dumps(entries, indent=2))
        return self.source

    def default_entries(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"keys": [f"keys/{name}.pub"], "threshold": 1, **copy.deepcopy(scope)}
            for name, scope in FEEDSTOCKS.items()
        }

    def publish(self, *extra: object) -> int:
        return run(
            "delegations",
            "publish",
            self.source,
            "--trust",
            self.trust,
            "--key",
            self.repo.keyref("key_mgr"),
            *extra,
        )

    def build(
        self,
        name: str,
        version: str = "1.0",
        build: str = "h0_0",
        *,
        subdir: str = "linux-64",
        fmt: str = "conda",
        out: Path | None = None,
    ) -> Path:
        from signer.artifacts.build import build_package

        return build_package(
            out or self.base / "bld" / subdir, name, version, build, subdir=subdir, fmt=fmt
        )

    def sign(
        self, artifact: Path, feedstock: str, *extra: object, secret: str | None = None
    ) -> int:
        value = secret if secret is not None else self.secrets[feedstock]
        with environ({"CF_SIGN_KEY": value}):
            return run(
                "sign", artifact, "--feedstock", feedstock, "--key", "env:CF_SIGN_KEY", *extra
            )

    def verify_args(self, *artifacts: object) -> list[object]:
        return [
            "verify",
            *artifacts,
            "--trust",
            self.trust,
            "--root",
            self.root,
            "--state-dir",
            self.state,
        ]


def make_world(base: Path) -> World:
    """Dev trust repo, provisioned feedstock keys, published delegations."""
    repo = make_dev_trust_repo(base / "dev")
    world = World(base, repo, base / "keys")
    world.source = base / "delegations.json"
    for name in FEEDSTOCKS:
        secret_file = base / f"{name}.ci-secret"
        code = run(
            "feedstock", "provision", name, "--dir", world.fkeys, "--secret-file", secret_file
        )
        assert code == 0
        world.secrets[name] = secret_file.read_text().strip()
    world.write_source(world.default_entries())
    assert world.publish() == 0
    return world


# ----------------------------------------------------------------------------- forging


def resign(path: Path, signers: list[KeyHandle], mutate: Any = None) -> bytes:
    """Re-sign a trust document (optionally changing `signed` first); returns its bytes."""
    envelope = Signable.from_bytes(path.read_bytes(), str(path), 16 * 1024 * 1024)
    if mutate is not None:
        mutate(envelope.signed)
    fresh = Signable(envelope.signed, {}, str(path))
    for signer in signers:
        sign_envelope(fresh, envelope_signer(signer, openpgp=False))
    data = fresh.to_bytes()
    write_atomic(path, data)
    return data


def index_of(world: World) -> dict[str, Any]:
    signed: dict[str, Any] = json.loads((world.trust / INDEX_PATH).read_bytes())["signed"]
    return signed


def fixed(when: str) -> datetime:
    return datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ")
