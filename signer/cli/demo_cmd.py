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
    from signer.ceremony.devrepo import make_dev_trust_repo

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

    print(f"\nDone. Everything is under {base}/ (dev keys are unencrypted: demo only).")
    return 0


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
