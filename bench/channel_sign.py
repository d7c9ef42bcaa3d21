"""Attestation-gated channel signing on a conda-forge-like channel (default 300,000 records).

Timed as whole processes, as an operator runs them, in one run (ratios compare like with
like on a noisy machine):
  - `cf-sign repodata sign` of the file (conda + mamba keys): the plain signer,
  - `cf-sign channel sign` of the same file, first run (no cache): every record costs one
    attestation check (its sidecar read, parsed, its feedstock's ed25519 signature
    verified, scope and digest checked) and two signatures; target >= 10,000 records/s,
  - the same after 1% of the records changed, with the cache: target <= 5% of the first run,
  - peak RSS of the channel-sign process, per 100,000 records.
Each record has its own sidecar file (attestations/<subdir>/<file>.sig.json) signed by one
of `--feedstocks` feedstock keys, published as real delegations (`cf-sign delegations
publish`). Setup (making sidecars) is not timed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repodata_verify import make_repodata


def run(cmd: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB of the process, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{stdout}\n{stderr}")
    return elapsed, usage.ru_maxrss, stdout


def _quiet(fn: Callable[[list[str]], int], argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--feedstocks", type=int, default=200)
    parser.add_argument("--changed", type=float, default=0.01, help="share changed for re-run")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work here and keep the files (profiling)")
    args = parser.parse_args()
    py = sys.executable
    cf = [py, "-m", "signer.cli.main"]

    from signer.cli.main import main as cli_main
    from signer.devrepo import make_dev_trust_repo
    from signer.keys import KeyHandle, generate_key, resolve_keyref
    from signer.trust.attestation import (
        PAYLOAD_TYPE,
        pae,
        publish_statement,
        sidecar_file_bytes,
        statement_bytes,
    )

    with tempfile.TemporaryDirectory(prefix="cf-sign-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        repo = make_dev_trust_repo(work / "dev")
        doc = make_repodata(args.records)
        records = {**doc["packages"], **doc["packages.conda"]}  # type: ignore[dict-item]
        names = sorted({r["name"] for r in records.values()})
        rng = random.Random(7)
        owner = {n: f"fs{rng.randrange(args.feedstocks)}" for n in names}
        keys_dir = work / "fkeys"
        handles: dict[str, KeyHandle] = {}
        source: dict[str, object] = {}
        for i in range(args.feedstocks):
            fs = f"fs{i}"
            generate_key(fs, keys_dir)
            handle = resolve_keyref(f"file:{keys_dir / (fs + '.key')}")
            assert isinstance(handle, KeyHandle)
            handles[fs] = handle
            outputs = sorted(n for n in names if owner[n] == fs)
            source[fs] = {"keys": [f"fkeys/{fs}.pub"], "threshold": 1, "outputs": outputs,
                          "output_globs": []}  # fmt: skip
        (work / "delegations.json").write_text(json.dumps(source))
        publish = ["delegations", "publish", str(work / "delegations.json"), "--trust",
                   str(repo.trust_dir), "--key", repo.keyref("key_mgr")]  # fmt: skip
        code = _quiet(cli_main, publish)
        assert code == 0
        att = repo.trust_dir / "attestations" / "linux-64"
        att.mkdir(parents=True)
        channel = "https://conda.anaconda.org/conda-forge"
        for filename, record in records.items():
            key = handles[owner[record["name"]]]
            payload = statement_bytes(
                publish_statement(filename, record["sha256"], channel, "linux-64")
            )
            sig = key.sign_message(pae(PAYLOAD_TYPE, payload))
            envelope = {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                        "signatures": [{"keyid": key.keyid,
                                        "sig": base64.b64encode(sig).decode()}]}  # fmt: skip
            sidecar = {"envelopes": [envelope], "feedstock": owner[record["name"]]}
            (att / f"{filename}.sig.json").write_bytes(sidecar_file_bytes(sidecar))
        path = work / "repodata.json"
        path.write_text(json.dumps(doc))
        mib = path.stat().st_size / 2**20
        print(f"setup {time.perf_counter() - t0:.0f} s: {args.records} records ({mib:.0f} MiB), "
              f"{args.feedstocks} feedstocks, {len(names)} names, {os.cpu_count()} cores, "
              f"--jobs {args.jobs}")  # fmt: skip
        subprocess.run([py, "-m", "compileall", "-q", "signer"], check=False)

        keys = ["--key", repo.keyref("pkg_mgr"), "--mamba-key", repo.keyref("pkg_mgr_mamba")]
        plain = [*cf, "repodata", "sign", str(path), *keys, "--jobs", str(args.jobs),
                 "-o", str(work / "plain.json")]  # fmt: skip
        gated = [*cf, "channel", "sign", str(path), "--trust", str(repo.trust_dir), "--root",
                 str(repo.root_file), "--state-dir", str(work / "state"), *keys,
                 "--jobs", str(args.jobs), "-o", str(work / "gated.json"), "--json"]  # fmt: skip
        plain_s, plain_rss, _ = run(plain)
        first_s, first_rss, out = run(gated)
        report = json.loads(out)
        assert report["signed"] == args.records, (report["signed"], report["refused"][:3])

        # 1% of the records change (a repodata patch: new build_number), attestations stay.
        changed = rng.sample(sorted(doc["packages.conda"]), int(args.records * args.changed))
        for filename in changed:
            doc["packages.conda"][filename]["build_number"] += 100  # type: ignore[index]
        path.write_text(json.dumps(doc))
        rerun_s, rerun_rss, out = run(gated)
        assert json.loads(out)["signed"] == args.records

    n = args.records
    rate = n / first_s
    print(f"  cf-sign repodata sign        {plain_s:7.2f} s   {n / plain_s:,.0f} records/s")
    print(f"  cf-sign channel sign (first) {first_s:7.2f} s   {rate:,.0f} records/s "
          f"(target >= 10,000)  {'OK' if rate >= 10_000 else 'BELOW TARGET'}")  # fmt: skip
    print(f"  gated / plain time           {first_s / plain_s:7.2f}x")
    ratio = rerun_s / first_s
    print(f"  re-run after {args.changed:.0%} changed      {rerun_s:7.2f} s   "
          f"{ratio:.1%} of the first run (target <= 5%)  "
          f"{'OK' if ratio <= 0.05 else 'ABOVE TARGET'}")  # fmt: skip
    per100k = first_rss / 1024 / (n / 100_000)
    print(f"  peak RSS (channel sign)      {first_rss / 1024:7.0f} MiB  = {per100k:.0f} MiB per "
          f"100k records (plain sign {plain_rss / 1024:.0f} MiB, re-run "
          f"{rerun_rss / 1024:.0f} MiB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
