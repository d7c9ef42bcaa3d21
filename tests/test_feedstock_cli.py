"""The feedstock flows from the command line: provision, import, publish, sign in CI, verify."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_feedstock_support import World, environ, make_world

from signer.feedstock.source import read_delegations_source
from signer.trust.feedstocks import INDEX_PATH, bin_id

CI_ENV = {
    "CI": "azure",
    "FEEDSTOCK_NAME": "numpy-feedstock",
    "sha": "0123456789abcdef0123456789abcdef01234567",
    "remote_url": "https://github.com/conda-forge/numpy-feedstock",
    "flow_run_id": "azure_20300101.1.1",
    "UPLOAD_PACKAGES": "True",
    "IS_PR_BUILD": "False",
}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _json(out: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(out)
    return data


def test_ci_sign_then_verify_end_to_end(world: World, cli_process: Callable[..., Any]) -> None:
    bld = world.base / "build_artifacts"
    conda = world.build("numpy", "2.1.0", "py312h0_0", out=bld / "linux-64")
    bz2 = world.build("numpy-base", "2.1.0", "py312h0_0", fmt="tar.bz2", out=bld / "linux-64")
    noarch = world.build("libnumpy-doc", "2.1.0", "pyh0_0", subdir="noarch", out=bld / "noarch")
    # Downloaded packages in the build dir's caches are not ours to sign.
    cached = world.build("scipy", "1.0", "h0_0", out=bld / "pkg_cache")
    secret = world.secrets["numpy"]
    env = {**CI_ENV, "CF_SIGN_KEY": secret}
    res = cli_process("sign", "--build-dir", bld, "--key", "env:CF_SIGN_KEY", env=env)
    assert res.code == 2 and "--output" in res.err  # the variant's outputs must be named
    outputs = ["--output", "numpy", "--output", "numpy-base", "--output", "libnumpy-doc"]
    res = cli_process("sign", "--build-dir", bld, *outputs, "--key", "env:CF_SIGN_KEY", env=env)
    assert res.code == 0, res.err
    assert secret not in res.out + res.err
    assert res.out.count("signed ") == 3 and "+provenance" in res.out
    assert not cached.with_name(cached.name + ".sig.json").exists()

    sidecar = json.loads(conda.with_name(conda.name + ".sig.json").read_text())
    assert sidecar["feedstock"] == "numpy" and len(sidecar["envelopes"]) == 2
    for path in (conda, bz2, noarch):
        side = path.with_name(path.name + ".sig.json").read_text()
        assert secret not in side

    res = cli_process(*world.verify_args(conda, bz2, noarch))
    assert res.code == 0, res.out + res.err
    lines = res.out.splitlines()
    assert len(lines) == 3
    keyid = world.key("numpy").keyid
    for line in lines:
        assert line.startswith("OK ") and "feedstock numpy" in line and keyid in line

    res = cli_process(*world.verify_args(conda), "--json")
    (entry,) = _json(res.out)
    assert entry["ok"] and entry["keyids"] == [keyid] and entry["package"] == "numpy"
    assert entry["attestations"][1] == "https://slsa.dev/provenance/v1"
    provenance = json.loads(__import__("base64").b64decode(sidecar["envelopes"][1]["payload"]))[
        "predicate"
    ]
    assert provenance["runDetails"]["metadata"]["invocationId"] == CI_ENV["flow_run_id"]
    # CI exports FEEDSTOCK_NAME=numpy-feedstock; both envelopes name the sidecar's feedstock.
    assert provenance["buildDefinition"]["externalParameters"]["feedstock"] == "numpy"
    deps = provenance["buildDefinition"]["resolvedDependencies"][0]
    assert deps["digest"]["gitCommit"] == CI_ENV["sha"]


def test_sign_outside_ci_has_no_provenance(world: World, cli: Callable[..., Any]) -> None:
    pkg = world.build("numpy")
    out = world.base / "sidecars"
    with environ({k: None for k in CI_ENV} | {"CF_SIGN_KEY": world.secrets["numpy"]}):
        res = cli(
            "sign",
            pkg,
            "--feedstock",
            "numpy-feedstock",
            "--key",
            "env:CF_SIGN_KEY",
            "--out-dir",
            out,
            "--channel",
            "https://example.org/chan",
        )
    assert res.code == 0, res.err
    sidecar = json.loads((out / (pkg.name + ".sig.json")).read_text())
    assert len(sidecar["envelopes"]) == 1 and sidecar["feedstock"] == "numpy"
    res = cli(*world.verify_args(pkg), "--sig", out / (pkg.name + ".sig.json"), "--json")
    assert res.code == 0 and _json(res.out)[0]["channel"] == "https://example.org/chan"


def test_sign_with_trust_refuses_undelegated_key_and_names(
    world: World, cli: Callable[..., Any]
) -> None:
    trust = ["--trust", world.trust, "--root", world.root, "--state-dir", world.state]
    pkg = world.build("numpy")
    with environ({"CF_SIGN_KEY": world.secrets["evil"]}):
        res = cli("sign", pkg, "--feedstock", "numpy", "--key", "env:CF_SIGN_KEY", *trust)
    assert res.code == 2 and "not delegated for feedstock numpy" in res.err
    with environ({"CF_SIGN_KEY": world.secrets["evil"]}):
        res = cli("sign", pkg, "--feedstock", "evil", "--key", "env:CF_SIGN_KEY", *trust)
    assert res.code == 2 and "not in feedstock evil's scope" in res.err
    with environ({"CF_SIGN_KEY": world.secrets["numpy"]}):
        res = cli("sign", pkg, "--feedstock", "nobody", "--key", "env:CF_SIGN_KEY", *trust)
    assert res.code == 2 and "not delegated" in res.err
    assert not pkg.with_name(pkg.name + ".sig.json").exists()
    with environ({"CF_SIGN_KEY": world.secrets["numpy"]}):
        res = cli("sign", pkg, "--feedstock", "numpy", "--key", "env:CF_SIGN_KEY", *trust)
    assert res.code == 0, res.err


@pytest.mark.parametrize("fmt", ["tar.bz2", "conda"])
def test_sign_refuses_renamed_artifact(world: World, cli: Callable[..., Any], fmt: str) -> None:
    pkg = world.build("numpy", "1.0", fmt=fmt)
    renamed = pkg.rename(pkg.with_name(pkg.name.replace("1.0", "9.9")))
    with environ({"CF_SIGN_KEY": world.secrets["numpy"]}):
        res = cli("sign", renamed, "--feedstock", "numpy", "--key", "env:CF_SIGN_KEY")
    assert res.code == 2 and renamed.name in res.err and "info/index.json" in res.err
    assert not renamed.with_name(renamed.name + ".sig.json").exists()


def test_secret_never_printed_on_errors(world: World, cli_process: Callable[..., Any]) -> None:
    pkg = world.build("numpy")
    bogus = "deadbeef" * 4 + "-this-is-not-a-key-but-still-secret"
    res = cli_process(
        "sign", pkg, "--feedstock", "numpy", "--key", "env:CF_SIGN_KEY", env={"CF_SIGN_KEY": bogus}
    )
    assert res.code == 2 and "env:CF_SIGN_KEY" in res.err
    assert bogus not in res.out + res.err and "deadbeef" not in res.out + res.err


def test_verify_exit_codes(world: World, cli: Callable[..., Any]) -> None:
    pkg = world.build("numpy")
    assert world.sign(pkg, "numpy") == 0
    res = cli(*world.verify_args(world.base / "missing-1.0-h0_0.conda"))
    assert res.code == 2 and "no such file" in res.err
    res = cli(*world.verify_args(pkg), "--sig", world.base / "nope.sig.json")
    assert res.code == 2
    bad = world.base / "bad.sig.json"
    bad.write_text("{not json")
    res = cli(*world.verify_args(pkg), "--sig", bad)
    assert res.code == 2 and "malformed JSON" in res.err
    # The same bytes found next to the artifact: a verification failure (exit 1).
    pkg.with_name(pkg.name + ".sig.json").write_text("{not json")
    res = cli(*world.verify_args(pkg))
    assert res.code == 1 and "FAIL" in res.out and ": format:" in res.out
    res = cli("verify", pkg, "--trust", world.trust, "--state-dir", world.state / "fresh")
    assert res.code == 1 and "trust anchor" in res.out


# ----------------------------------------------------------------------------- HTTP


class _Handler(SimpleHTTPRequestHandler):
    redirects: ClassVar[dict[str, str]] = {}
    failures: ClassVar[set[str]] = set()
    stalls: ClassVar[set[str]] = set()  # answered only when `released` is set
    released: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        path = self.path.lstrip("/")
        if path in self.stalls:
            self.released.wait(30)
        if path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[path])
            self.end_headers()
            return
        if path in self.failures:
            self.send_error(500)
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def served(world: World) -> Iterator[tuple[str, type[_Handler]]]:
    handler = type(
        "H", (_Handler,), {"redirects": {}, "failures": set(), "stalls": set(),
                           "released": threading.Event()}
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(world.trust)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.released.set()
        server.shutdown()
        server.server_close()


def test_verify_over_http_with_served_attestation(
    world: World, served: tuple[str, type[_Handler]], cli: Callable[..., Any]
) -> None:
    url, handler = served
    pkg = world.build("numpy")
    assert world.sign(pkg, "numpy", "--out-dir", world.trust / "attestations" / "linux-64") == 0
    args = ["verify", pkg, "--trust", url, "--root", world.root, "--state-dir", world.state]
    res = cli(*args)
    assert res.code == 0, res.out + res.err
    assert "feedstock numpy" in res.out

    # Redirects to another host, server errors: nothing is trusted.
    handler.redirects[INDEX_PATH] = "http://example.invalid/feedstocks/index.json"
    res = cli(*args)
    assert res.code == 1 and "redirect to another host" in res.out
    handler.redirects.clear()
    handler.failures.add(f"feedstocks/{bin_id('numpy', 256)}.json")
    res = cli(*args)
    assert res.code == 1 and "HTTP 500" in res.out

    # A server that stops answering: the request times out and nothing is trusted.
    handler.failures.clear()
    handler.stalls.add(f"feedstocks/{bin_id('numpy', 256)}.json")
    res = cli(*args, "--timeout", "0.5")
    assert res.code == 1 and "within the 0.5 s deadline" in res.out, res.out + res.err
    assert "OK" not in res.out
    res = cli(*args, "--timeout", "0")
    assert res.code == 2 and "--timeout" in res.err


# ----------------------------------------------------------------------------- provision


def test_provision_secret_goes_to_one_place(tmp_path: Path, cli: Callable[..., Any]) -> None:
    res = cli("feedstock", "provision", "scipy", "--dir", tmp_path)
    assert res.code == 0, res.err
    secret_file = tmp_path / "scipy.ci-secret"
    secret = secret_file.read_text().strip()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret not in res.out + res.err
    entry = json.loads(res.out[res.out.index("{") : res.out.rindex("}") + 1])
    assert entry["scipy"]["outputs"] == ["scipy"] and len(entry["scipy"]["keys"]) == 1

    res = cli(
        "feedstock",
        "provision",
        "pandas",
        "--dir",
        tmp_path,
        "--secret-stdout",
        "--output",
        "pandas",
        "--output",
        "pandas-base",
    )
    assert res.code == 0
    assert len(res.out.strip().splitlines()) == 1  # the secret alone on stdout
    assert not (tmp_path / "pandas.ci-secret").exists()
    assert res.out.strip() not in res.err and '"pandas-base"' in res.err

    # Either place, the value is a working env: key matching the .pub.
    with environ({"K": res.out.strip()}):
        from signer.keys import load_public_key, resolve_keyref

        handle = resolve_keyref("env:K")
    assert handle.public == load_public_key(str(tmp_path / "pandas.pub"))
    # Never both, never over an existing key.
    res = cli("feedstock", "provision", "x", "--secret-stdout", "--secret-file", tmp_path / "f")
    assert res.code == 2
    res = cli("feedstock", "provision", "scipy", "--dir", tmp_path)
    assert res.code == 2 and "already exists" in res.err

    res = cli("feedstock", "provision", "azure", "--dir", tmp_path, "--type", "ecdsa-p256")
    assert res.code == 0
    value = (tmp_path / "azure.ci-secret").read_text().strip()
    assert "\n" not in value and value.startswith("-----BEGIN PRIVATE KEY-----\\n")
    with environ({"K": value}):
        from signer.keys import resolve_keyref

        assert resolve_keyref("env:K").public.keytype == "ecdsa"


# ----------------------------------------------------------------------------- delegations


def _registry(root: Path) -> Path:
    files = {
        "outputs/n/u/m/numpy.json": ["numpy"],
        "outputs/n/u/m/numpy-base.json": ["numpy"],
        "outputs/l/i/b/libllvm18.json": ["llvmdev"],
        "outputs/l/i/b/libcxx.json": ["libcxx", "llvmdev"],  # many-to-many
        "outputs/7za.json": ["p7zip"],  # an old flat record
        "outputs/7/z/a/7za.json": ["p7zip"],
    }
    for rel, feedstocks in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps({"feedstocks": feedstocks}))
    (root / "feedstock_outputs_autoreg_allowlist.yml").write_text(
        "# globs, as conda-forge writes them\nllvmdev:\n- libllvm*\n- llvm-tools-*\n"
        "dav1d:\n- libdav1d[0123456789]\n"
    )
    return root


def test_import_outputs_then_publish(world: World, cli: Callable[..., Any]) -> None:
    registry = _registry(world.base / "feedstock-outputs")
    out = world.base / "imported.json"
    res = cli("delegations", "import-outputs", registry, "--keys-dir", world.fkeys, "-o", out)
    assert res.code == 0, res.err
    assert "5 feedstocks, 5 package names" in res.out
    source = json.loads(out.read_text())
    assert source["llvmdev"]["outputs"] == ["libcxx", "libllvm18"]
    assert source["llvmdev"]["output_globs"] == ["libllvm*", "llvm-tools-*"]
    assert source["numpy"]["outputs"] == ["numpy", "numpy-base"]
    assert source["numpy"]["keys"][0]["keytype"] == "ed25519"
    assert source["p7zip"] == {"keys": [], "outputs": ["7za"]}
    assert source["dav1d"]["output_globs"] == ["libdav1d[0123456789]"]
    parsed = read_delegations_source(out)
    assert set(parsed.delegations) == {"llvmdev", "numpy"}
    assert set(parsed.unprovisioned) == {"p7zip", "libcxx", "dav1d"}
    assert parsed.delegations["llvmdev"].in_scope("libllvm19")

    res = cli(
        "delegations", "publish", out, "--trust", world.trust, "--key", world.repo.keyref("key_mgr")
    )
    assert res.code == 0, res.err
    assert "left out 3 feedstock(s) without keys" in res.out


def test_publish_reports_only_changed_bins(world: World, cli: Callable[..., Any]) -> None:
    args = [
        "delegations",
        "publish",
        world.source,
        "--trust",
        world.trust,
        "--key",
        world.repo.keyref("key_mgr"),
    ]
    res = cli(*args)
    assert res.code == 0 and "0 bin(s) changed" in res.out
    entries = world.default_entries()
    entries["numpy"]["outputs"].append("numpy-devel")
    world.write_source(entries)
    res = cli(*args)
    assert res.code == 0
    assert f"feedstocks/{bin_id('numpy', 256)}.json" in res.out and "1 bin(s) changed" in res.out
    # Wrong key: not one of root's key_mgr keys.
    res = cli(
        "delegations",
        "publish",
        world.source,
        "--trust",
        world.trust,
        "--key",
        world.repo.keyref("pkg_mgr"),
    )
    assert res.code == 2 and "key_mgr keys" in res.err
    res = cli(
        "delegations",
        "publish",
        world.base / "none.yaml",
        "--trust",
        world.trust,
        "--key",
        world.repo.keyref("key_mgr"),
    )
    assert res.code == 2


def test_verify_startup_imports_are_lean(world: World) -> None:
    import subprocess
    import sys

    pkg = world.build("numpy")
    assert world.sign(pkg, "numpy") == 0
    code = (
        "import sys, runpy\n"
        "sys.argv = ['cf-sign', *sys.argv[1:]]\n"
        "from signer.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('securesystemslib', 'fastapi', 'sqlalchemy', 'rich', 'uvicorn', 'starlette')]\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, world.verify_args(pkg))],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HEAVY []" in proc.stdout
