"""The conda plugin's added time: `conda create --dry-run` of 50 packages, 100,000 records.

A channel of `--records` records (conda-forge-like: depends, license, hashes) of
which 50 form the environment asked for (`env-meta` and its 49 dependencies). Timed as
whole `python -m conda create --dry-run` processes (classic solver), in one run:
  - without: cf-sign installed but no channel configured (the plugin returns at once);
  - cold: the channel configured, an empty verifier state (root chain walked, key_mgr
    and pkg_mgr fetched and checked, then the 50 records);
  - warm: the same with the state of a previous run.
conda's own repodata cache is warmed first and shared by every run, so the runs differ
only by the plugin. Target: warm / without <= 1.15.

  python bench/conda_plugin.py --venv .cache/conda-plugin [--records 100000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_SIZE = 50


def _record(name: str, version: str, depends: list[str], rng: random.Random) -> dict[str, object]:
    digest = hashlib.sha256(f"{name}-{version}".encode()).hexdigest()
    return {
        "build": "h0_0",
        "build_number": 0,
        "depends": depends,
        "license": rng.choice(["BSD-3-Clause", "MIT", "Apache-2.0", "LGPL-2.1-or-later"]),
        "md5": digest[:32],
        "name": name,
        "sha256": digest,
        "size": rng.randrange(10_000, 50_000_000),
        "subdir": "noarch",
        "timestamp": 1_700_000_000_000 + rng.randrange(10**9),
        "version": version,
    }


def make_channel(base: Path, records: int) -> tuple[Path, Path, Path]:
    """(channel dir, trust dir, root file): noarch repodata signed by cf-sign's pkg_mgr key."""
    from signer.devrepo import make_dev_trust_repo
    from signer.keys import resolve_keyref
    from signer.repodata.document import read_repodata
    from signer.repodata.sign import ProfileKey, sign_repodata

    rng = random.Random(7)
    repo = make_dev_trust_repo(base / "dev", with_mamba_key=False)
    env = [f"env-dep{i:02d}" for i in range(ENV_SIZE - 1)]
    packages: dict[str, object] = {}
    packages["env-meta-1.0-h0_0.conda"] = _record("env-meta", "1.0", env, rng)
    for name in env:
        packages[f"{name}-1.0-h0_0.conda"] = _record(name, "1.0", [], rng)
    filler = records - len(packages)
    names = max(1, filler // 20)  # about 20 versions per name, like conda-forge
    for i in range(filler):
        name, version = f"filler{i % names:05d}", f"{i // names}.0"
        deps = [f"filler{rng.randrange(names):05d}" for _ in range(rng.randrange(0, 6))]
        packages[f"{name}-{version}-h0_0.conda"] = _record(name, version, deps, rng)
    doc = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": packages,
           "removed": [], "repodata_version": 1}  # fmt: skip
    noarch = base / "chan" / "noarch"
    noarch.mkdir(parents=True)
    (base / "chan" / "linux-64").mkdir()
    (base / "chan" / "linux-64" / "repodata.json").write_text(json.dumps(
        {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {}}))  # fmt: skip
    path = noarch / "repodata.json"
    env_only = {**doc, "packages.conda": {k: v for k, v in packages.items()
                                          if k.startswith("env-")}}  # fmt: skip
    path.write_text(json.dumps(env_only))
    key = resolve_keyref(repo.keyref("pkg_mgr"))
    signatures = sign_repodata(read_repodata(path), [ProfileKey(key, "conda")]).signatures
    # The other records carry signature entries of the same size: the plugin never checks
    # them (they are not to be linked), and signing 100,000 would only slow the set-up.
    pub = next(iter(next(iter(signatures.values()))))
    for filename in packages:
        signatures.setdefault(filename, {pub: {"signature": rng.randbytes(64).hex()}})
    path.write_text(json.dumps({**doc, "signatures": signatures}, indent=1, sort_keys=True))
    return base / "chan", repo.trust_dir, repo.root_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=os.environ.get("CF_SIGN_CONDA_PLUGIN_VENV"),
                        help="conda + cf-sign (default $CF_SIGN_CONDA_PLUGIN_VENV)")  # fmt: skip
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.venv is None or not (args.venv / "bin" / "python").exists():
        parser.error("--venv: a venv with conda and cf-sign (see .ci/run)")
    work = Path(tempfile.mkdtemp(prefix="cf-sign-bench-conda-"))
    try:
        started = time.perf_counter()
        chan, trust, root = make_channel(work, args.records)
        made = time.perf_counter() - started
        size = (chan / "noarch" / "repodata.json").stat().st_size
        print(f"channel: {args.records} records, {size / 1e6:.0f} MB, made and signed in "
              f"{made:.1f} s")  # fmt: skip
        home, pkgs = work / "home", work / "pkgs"
        home.mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CONDA", "_CONDA")) and k != "CONDARC"}  # fmt: skip
        env.update(HOME=str(home), CONDA_PKGS_DIRS=str(pkgs), XDG_CACHE_HOME=str(work / "xdg"),
                   CONDA_NUMBER_CHANNEL_NOTICES="0")  # fmt: skip
        condarc = work / "condarc"

        def conda(configured: bool) -> tuple[float, float]:
            """(wall time of the process, the plugin's own time as it reports it)."""
            text = ""
            if configured:
                text = (f"plugins:\n  cf_sign_channels:\n    {chan.as_uri()}:\n"
                        f"      trust: {trust}\n      root: {root}\n")  # fmt: skip
            condarc.write_text(text)
            cmd = [str(args.venv / "bin" / "python"), "-m", "conda", "create", "--dry-run",
                   "-p", str(work / "env"), "--solver", "classic", "--override-channels",
                   "-c", chan.as_uri(), "--repodata-fn", "repodata.json", "env-meta"]  # fmt: skip
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**env, "CONDARC": str(condarc)})  # fmt: skip
            elapsed = time.perf_counter() - t0
            if "DryRunExit" not in proc.stdout + proc.stderr:
                sys.exit(f"conda failed:\n{proc.stdout}{proc.stderr}")
            if not configured:
                return elapsed, 0.0
            pattern = rf"verified {ENV_SIZE} record\(s\) from \S+ in ([0-9.]+) s"
            found = re.search(pattern, proc.stderr)
            if found is None:
                sys.exit(f"the plugin did not verify the {ENV_SIZE} records:\n{proc.stderr}")
            return elapsed, float(found.group(1))

        conda(False)  # conda's own caches (repodata, pickles) warmed for every run below
        runs: dict[str, list[tuple[float, float]]] = {"without": [], "cold": [], "warm": []}
        for _ in range(args.rounds):
            runs["without"].append(conda(False))
            shutil.rmtree(work / "xdg", ignore_errors=True)
            runs["cold"].append(conda(True))
            runs["warm"].append(conda(True))
        w = statistics.median(t for t, _ in runs["without"])
        print(f"conda create --dry-run, {ENV_SIZE} packages (median of {args.rounds}):")
        print(f"  without the plugin  {w:6.2f} s")
        ratios = {}
        for name in ("cold", "warm"):
            wall = statistics.median(t for t, _ in runs[name])
            own = statistics.median(p for _, p in runs[name])
            # The plugin's own time over conda's is the steadier figure on a shared machine.
            ratios[name] = (w + own) / w
            print(f"  plugin, {name} state  {wall:6.2f} s wall ({wall / w:.3f}x); the hook itself "
                  f"{own:.3f} s -> {ratios[name]:.3f}x")  # fmt: skip
        verdict = "met" if ratios["warm"] <= 1.15 else "NOT met"
        print(f"target <= 1.15x (warm, hook time): {verdict}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
