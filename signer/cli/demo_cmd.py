"""`cf-sign demo`: the main job end to end on embedded defaults, narrated.

Every step runs the real command (through `main`) on local files: dev keys, a 2-of-3 root,
key_mgr and pkg_mgr, real packages, repodata indexed, signed and verified.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

MARKER = ".cf-sign-demo"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = sub.add_parser("demo", help="run the main job end to end on local dev defaults")
    demo.add_argument("--dir", type=Path, default=Path("cf-sign-demo"),
                      help="working directory (recreated on each run; default ./cf-sign-demo)")
    demo.set_defaults(handler=run_demo)


def _step(title: str) -> None:
    print(f"\n== {title}")


def _run(*args: object) -> None:
    from signer.cli.main import main

    argv = [str(a) for a in args]
    print(f"$ cf-sign {' '.join(argv)}")
    code = main(argv)
    if code != 0:
        raise SystemExit(f"demo step failed (exit {code}): cf-sign {' '.join(argv)}")


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

    print(f"\nDone. Everything is under {base}/ (dev keys are unencrypted: demo only).")
    return 0
