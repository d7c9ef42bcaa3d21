"""`cf-sign demo`: the main job end to end on embedded defaults, narrated.

Every step runs the real command (through `main`) on local files: dev keys, a 2-of-3 root,
key_mgr and pkg_mgr, real packages, repodata indexed, signed and verified.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MARKER = ".cf-sign-demo"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = sub.add_parser("demo", help="run the main job end to end on local dev defaults")
    demo.add_argument(
        "--dir",
        type=Path,
        default=Path("cf-sign-demo"),
        help="working directory (recreated on each run; default ./cf-sign-demo)",
    )
    demo.set_defaults(handler=run_demo)


def _step(title: str) -> None:
    print(f"\n== {title}")


def _run(*args: object, expect: int = 0) -> None:
    """Run and echo one real command; the demo stops if it does not exit as expected."""
    from signer.cli.main import main

    argv = [str(a) for a in args]
    print(f"$ cf-sign {' '.join(argv)}")
    code = main(argv)
    if code != expect:
        raise SystemExit(f"demo step exited {code}, expected {expect}: cf-sign {' '.join(argv)}")


def _fresh_dir(path: Path) -> None:
    from signer.trust.errors import FormatError

    if path.exists():
        if not (path / MARKER).exists():
            raise FormatError(str(path), "--dir", "exists and is not a cf-sign demo directory")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by cf-sign demo; removed on the next run\n")


def run_demo(args: argparse.Namespace) -> int:
    from signer.artifacts.build import build_package
    from signer.devrepo import make_dev_trust_repo

    base: Path = args.dir
    _fresh_dir(base)

    _step("1. Dev keys and the channel layer (2-of-3 root, key_mgr, pkg_mgr)")
    repo = make_dev_trust_repo(base)
    for name in ("1.root.json", "key_mgr.json", "pkg_mgr.json"):
        print(f"wrote {repo.trust_dir / name}")
    root_file = repo.trust_dir / "1.root.json"
    _run("metadata", "verify", root_file)
    _run("metadata", "verify", repo.trust_dir / "key_mgr.json", "--trusted", root_file)

    _step("2. Real packages, both formats")
    subdir = base / "channel" / "linux-64"
    built = [
        build_package(subdir, "demo-lib", "1.0.0", "h1234567_0", subdir="linux-64", fmt="conda",
                      files={"lib/libdemo.so": b"\x7fELF demo library\n"}),
        build_package(subdir, "demo-lib", "1.0.0", "h1234567_0", subdir="linux-64",
                      fmt="tar.bz2", files={"lib/libdemo.so": b"\x7fELF demo library\n"}),
        build_package(subdir, "demo-app", "2.1", "py311_0", subdir="linux-64", fmt="conda",
                      depends=["demo-lib >=1.0", "python >=3.11"],
                      files={"bin/demo-app": b"#!/bin/sh\necho demo\n"}),
        build_package(subdir, "demo-app", "2.0", "py311_0", subdir="linux-64", fmt="tar.bz2",
                      depends=["demo-lib >=1.0", "python >=3.11"],
                      files={"bin/demo-app": b"#!/bin/sh\necho demo\n"}),
    ]  # fmt: skip
    for path in built:
        print(f"built {path}  ({path.stat().st_size} bytes)")

    _step("3. Index, sign (conda and mamba profiles) and verify the repodata")
    repodata = subdir / "repodata.json"
    _run("repodata", "index", subdir, "-o", repodata)
    _run("repodata", "sign", repodata, "--key", repo.keyref("pkg_mgr"),
         "--mamba-key", repo.keyref("pkg_mgr_mamba"))  # fmt: skip
    _run("repodata", "verify", repodata, "--trust", repo.trust_dir, "--root", root_file,
         "--state-dir", base / "state")  # fmt: skip

    _step("4. Feedstock layer: provision, delegate, sign in a simulated CI run, verify")
    keys = base / "feedstock-keys"
    _run("feedstock", "provision", "demo-lib", "--dir", keys, "--output", "demo-lib")
    _run("feedstock", "provision", "demo-app", "--dir", keys, "--output", "demo-app")
    source = base / "delegations.json"
    source.write_text(json.dumps({
        "demo-lib": {"keys": ["feedstock-keys/demo-lib.pub"], "outputs": ["demo-lib"]},
        "demo-app": {"keys": ["feedstock-keys/demo-app.pub"], "outputs": ["demo-app"]},
    }, indent=2))  # fmt: skip
    print(f"wrote {source}")
    _run("delegations", "publish", source, "--trust", repo.trust_dir,
         "--key", repo.keyref("key_mgr"))  # fmt: skip
    ci_env = {"CF_SIGN_KEY": (keys / "demo-lib.ci-secret").read_text().strip(),
              "FEEDSTOCK_NAME": "demo-lib-feedstock", "CI": "github_actions"}  # fmt: skip
    libs = [p for p in built if p.name.startswith("demo-lib-")]
    state = ("--state-dir", base / "state")
    with _environment(ci_env):
        print("(CI secret CF_SIGN_KEY set for demo-lib's build)")
        _run("sign", *libs, "--feedstock", "demo-lib", "--key", "env:CF_SIGN_KEY",
             "--trust", repo.trust_dir, "--root", root_file, *state)  # fmt: skip
    _run("verify", *libs, "--trust", repo.trust_dir, "--root", root_file, *state)

    _step("5. An attack: demo-lib's key signs demo-app's package (it must fail)")
    app = next(p for p in built if p.name.startswith("demo-app-") and p.name.endswith(".conda"))
    with _environment(ci_env):
        _run("sign", app, "--feedstock", "demo-lib", "--key", "env:CF_SIGN_KEY")
    _run("verify", app, "--trust", repo.trust_dir, "--root", root_file, *state, expect=1)
    print("(refused, as it must be)")

    _step("6. The trust service on embedded defaults (SQLite file, local publish directory)")
    from signer.cli.service_cmd import missing_service_modules

    if missing_service_modules():
        print("(skipped: the service extra is not installed: pip install 'cf-sign[service]')")
    else:
        _service_demo(base, repo, keys, libs, root_file)

    print(f"\nDone. Everything is under {base}/ (dev keys are unencrypted: demo only).")
    return 0


def _service_demo(base: Path, repo: Any, keys: Path, libs: list[Path], root_file: Path) -> None:
    """init -> token -> serve -> register a feedstock -> submit -> verify over HTTP, then a
    signed overlay of the demo channel."""
    import urllib.request

    service = base / "service"
    db = ("--db", f"sqlite:///{(service / 'cf-sign.db').resolve()}")
    publish = ("--publish-dir", service / "trust")
    _run("service", "init", *db, *publish, "--root", root_file,
         "--key-mgr-key", repo.keyref("key_mgr"), "--pkg-mgr-key", repo.keyref("pkg_mgr"),
         "--pkg-mgr-key", repo.keyref("pkg_mgr_mamba"))  # fmt: skip
    token = _capture("service", "token", "create", "--scope", "registrar", "--name", "demo", *db)
    print("(registrar token made; stored in the database only as its hash)")
    with _served(service, *db, *publish) as url:
        pub = json.loads((keys / "demo-lib.pub").read_text())
        body = {"name": "demo-lib", "outputs": ["demo-lib"], "keys": [pub]}
        print(f"POST {url}/v1/admin/feedstocks  (register demo-lib and its key)")
        answer = _post_json(f"{url}/v1/admin/feedstocks", body, token)
        for path, version in sorted(answer["published"].items()):
            print(f"  published {path} v{version}")
        _run("submit", *libs, "--service", url)
        # A user's copy has no sidecar beside it: verify fetches it from the service.
        downloads = base / "downloads"
        downloads.mkdir()
        copies = [Path(shutil.copy(p, downloads / p.name)) for p in libs]
        _run("verify", *copies, "--trust", f"{url}/trust", "--root", root_file,
             "--state-dir", base / "state-service")  # fmt: skip

        _step("7. A signed overlay of the demo channel: attested records signed for every "
              "conda and mamba user, packages still from upstream")  # fmt: skip
        with _upstream(base / "channel") as upstream:
            _run("service", "channel", "add", "demo", "--subdir", "linux-64",
                 "--upstream", upstream, *db)  # fmt: skip
            _run("service", "channel", "refresh", "demo", *db, *publish)
            overlay = f"{url}/trust/channels/demo/linux-64/repodata.json"
            local = base / "overlay-linux-64.json"
            with urllib.request.urlopen(overlay, timeout=60) as response:
                local.write_bytes(response.read())
            print(f"downloaded {overlay}")
            # demo-app has no attestation (and no feedstock at the service): left unsigned.
            _run("repodata", "verify", local, "--trust", f"{url}/trust", "--root", root_file,
                 "--state-dir", base / "state-service", "--allow-unsigned")  # fmt: skip
    print(f"(server stopped; run it again with: cf-sign serve {' '.join(map(str, db + publish))})")


@contextlib.contextmanager
def _upstream(directory: Path) -> Iterator[str]:
    """The demo channel on a loopback HTTP server, as conda.anaconda.org serves one."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"(upstream channel: {directory} served at {url}/)")
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def _capture(*args: object) -> str:
    """Run a command whose standard output is a secret: keep it, print nothing of it."""
    import io

    from signer.cli.main import main

    argv = [str(a) for a in args]
    print(f"$ cf-sign {' '.join(argv)}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"demo step exited {code}: cf-sign {' '.join(argv)}")
    return out.getvalue().strip()


@contextlib.contextmanager
def _served(workdir: Path, *options: object) -> Iterator[str]:
    """`cf-sign serve` as a real process on a free loopback port, stopped on leaving."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["serve", *map(str, options), "--port", str(port), "--log-level", "warning"]
    print(f"$ cf-sign {' '.join(argv)} &")
    log_path = workdir / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signer.cli.main", *argv], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"cf-sign serve exited {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"cf-sign serve did not answer in 60 s; see {log_path}")
            time.sleep(0.1)
        print(f"(serving {url}/trust/ ; health: {url}/healthz)")
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _post_json(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read(1 << 20))
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"demo step failed: POST {url}: {exc.code} {exc.read(4096)!r}") from None
    return answer


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
