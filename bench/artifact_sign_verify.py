"""Benchmark: CI signing of a 1 GiB artifact, and `cf-sign verify` start-up.

Prints two ratios, each measured in this one run, as whole processes:

1. `cf-sign sign BIG.conda` / `sha256sum BIG.conda` (target <= 1.15): hashing is the work
   both must do; everything else cf-sign does (start-up, imports, key, DSSE) must hide.
2. `cf-sign verify small.conda --trust DIR` / `python -c pass` (target <= 6): the whole
   verification (root chain, key_mgr, feedstock index and bin, sidecar) against a local
   trust directory, against the bare start-up of the same interpreter.

Then, in this process, the same artifact verified many times through one `TrustSession`
(what mirrors and the conda plugin do): the trust documents once, then per artifact only
its hash, its sidecar and the signature check.

Usage: python bench/artifact_sign_verify.py [--size-mib 1024] [--runs 7] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent
CF_SIGN = str(BIN / "cf-sign") if (BIN / "cf-sign").exists() else None


def cf_sign(*args: object) -> list[str]:
    base = [CF_SIGN] if CF_SIGN else [sys.executable, "-m", "signer.cli.main"]
    return [*base, *map(str, args)]


def timed(cmd: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode()}")
    return elapsed


def compare(
    label: str, cmd: Sequence[str], base: Sequence[str], runs: int, env: dict[str, str]
) -> tuple[float, float]:
    """Median times of `cmd` and `base`, interleaved so that drift hits both alike."""
    timed(cmd, env), timed(base, env)  # warm caches (page cache, .pyc)
    ours, theirs = [], []
    for _ in range(runs):
        theirs.append(timed(base, env))
        ours.append(timed(cmd, env))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"  {label}: {a * 1000:9.1f} ms  vs  {b * 1000:9.1f} ms  (medians of {runs})")
    return a, b


def setup(work: Path) -> tuple[Path, Path, str]:
    """Dev trust repo with a published delegation; returns (trust, root, secret)."""
    from contextlib import redirect_stdout
    from io import StringIO

    from signer.cli.main import main
    from signer.devrepo import make_dev_trust_repo

    def run(*args: object) -> None:
        with redirect_stdout(StringIO()):
            if main([str(a) for a in args]) != 0:
                raise SystemExit(f"setup failed: cf-sign {' '.join(map(str, args))}")

    repo = make_dev_trust_repo(work / "dev")
    secret_file = work / "bench.ci-secret"
    run("feedstock", "provision", "bench", "--dir", work / "keys", "--secret-file", secret_file)
    source = work / "delegations.json"
    entry = {"keys": ["keys/bench.pub"], "outputs": ["bench-big", "bench-small"]}
    source.write_text(json.dumps({"bench": entry}))
    run(
        "delegations", "publish", source, "--trust", repo.trust_dir, "--key", repo.keyref("key_mgr")
    )
    return repo.trust_dir, repo.root_file, secret_file.read_text().strip()


def per_artifact_in_session(trust: Path, root: Path, state: Path, artifact: Path) -> float:
    """Milliseconds per verification once the session has refreshed."""
    from signer.client import TrustSession

    session = TrustSession.open(trust, root=root, state_dir=state)
    if not session.verify_artifact(artifact).ok:
        raise SystemExit(f"{artifact.name} does not verify")
    count = 200
    start = time.perf_counter()
    for _ in range(count):
        session.verify_artifact(artifact)
    return (time.perf_counter() - start) * 1000 / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    if shutil.which("sha256sum") is None:
        raise SystemExit("sha256sum (coreutils) is needed as the baseline")

    # Installed packages are byte-compiled; make sure this checkout is too (a process that
    # recompiles cf-sign's modules on every start measures the compiler, not cf-sign).
    import compileall

    import signer
    from signer.artifacts.build import build_large_conda, build_package

    compileall.compile_dir(str(Path(signer.__file__).parent), quiet=2)
    work = args.dir or Path(tempfile.mkdtemp(prefix="cf-sign-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        trust, root, secret = setup(work)
        env = {**os.environ, "CF_SIGN_KEY": secret}
        for name in (
            "CI",
            "FEEDSTOCK_NAME",
            "sha",
            "remote_url",
            "flow_run_id",
            "PYTHONDONTWRITEBYTECODE",
        ):
            env.pop(name, None)

        big = build_large_conda(
            work / "bld" / "linux-64" / "bench-big-1.0-h0_0.conda", args.size_mib * 1024 * 1024
        )
        print(f"1. sign a {big.stat().st_size / 2**30:.2f} GiB artifact ({big.name})")
        sign_cmd = cf_sign("sign", big, "--feedstock", "bench", "--key", "env:CF_SIGN_KEY")
        sign_t, sum_t = compare(
            "cf-sign sign / sha256sum", sign_cmd, ["sha256sum", str(big)], args.runs, env
        )

        small = build_package(
            work / "bld" / "linux-64", "bench-small", "1.0", "h0_0", subdir="linux-64"
        )
        subprocess.run(
            cf_sign("sign", small, "--feedstock", "bench", "--key", "env:CF_SIGN_KEY"),
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"2. verify one small artifact ({small.name}) against a local trust directory")
        verify_cmd = cf_sign(
            "verify", small, "--trust", trust, "--root", root, "--state-dir", work / "state"
        )
        verify_t, pass_t = compare(
            f"cf-sign verify / {sys.executable} -c pass",
            verify_cmd,
            [sys.executable, "-c", "pass"],
            max(args.runs, 15),
            env,
        )

        session_ms = per_artifact_in_session(trust, root, work / "state-session", small)
        print(f"3. one TrustSession, one feedstock: {session_ms:.2f} ms per artifact")

        sign_ratio, verify_ratio = sign_t / sum_t, verify_t / pass_t
        print(
            f"sign ratio   {sign_ratio:5.2f}x sha256sum        (target <= 1.15) "
            f"{'OK' if sign_ratio <= 1.15 else 'OVER'}"
        )
        print(
            f"verify ratio {verify_ratio:5.2f}x python -c pass   (target <= 6)    "
            f"{'OK' if verify_ratio <= 6 else 'OVER'}"
        )
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
