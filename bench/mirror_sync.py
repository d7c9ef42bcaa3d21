"""`cf-sign mirror sync` of 2,000 small real artifacts from a loopback HTTP server, against
a plain concurrent download of the same files with no checks and the same concurrency.

Both sides use the same server (HTTP/1.1 keep-alive, one connection per worker thread) and
`--jobs` workers, side by side in one run, each `--rounds` times interleaved; the figure is
the median. The mirror also fetches and verifies the repodata's signatures and every
attestation, checks size and sha256, reads each archive's info/index.json, and publishes
(atomic renames, repodata last). Target: mirror throughput >= 0.8x the plain download.
Peak RSS of the mirror process is printed per 100,000 records.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        target = self.root / self.path.lstrip("/")
        if not target.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def plain_download(base: str, paths: list[str], out: Path, jobs: int) -> float:
    local = threading.local()
    host = base.split("//", 1)[1]

    def get(path: str) -> int:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, timeout=60)
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        data = response.read()
        (out / path.replace("/", "_")).write_bytes(data)
        return len(data)

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        total = sum(pool.map(get, paths))
    elapsed = time.perf_counter() - start
    assert total > 0
    return elapsed


def run(cmd: list[str]) -> tuple[float, int, str]:
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
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{stdout[-2000:]}\n{stderr}")
    return elapsed, usage.ru_maxrss, stdout


def serve(root: Path) -> int:
    handler = type("H", (Handler,), {"root": root})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        return serve(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work here and keep the files (profiling)")
    args = parser.parse_args()
    py = sys.executable

    from signer.artifacts.build import build_package
    from signer.cli.main import main as cli_main
    from signer.devrepo import make_dev_trust_repo
    from signer.keys import KeyHandle, generate_key, resolve_keyref
    from signer.repodata.index import index_directory
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
        generate_key("fs", work / "fkeys")
        key = resolve_keyref(f"file:{work / 'fkeys' / 'fs.key'}")
        assert isinstance(key, KeyHandle)
        source = {"fs": {"keys": ["fkeys/fs.pub"], "threshold": 1, "outputs": [],
                         "output_globs": ["pkg*"]}}  # fmt: skip
        (work / "delegations.json").write_text(json.dumps(source))
        publish = ["delegations", "publish", str(work / "delegations.json"), "--trust",
                   str(repo.trust_dir), "--key", repo.keyref("key_mgr")]  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(publish) == 0
        upstream = work / "upstream"
        subdir = upstream / "linux-64"
        att = repo.trust_dir / "attestations" / "linux-64"
        att.mkdir(parents=True)
        for i in range(args.artifacts):
            files = {f"share/pkg{i}/data": os.urandom(2048)}
            pkg = build_package(subdir, f"pkg{i}", "1.0", "h0_0", subdir="linux-64",
                                fmt="conda", files=files)  # fmt: skip
            import hashlib

            sha = hashlib.sha256(pkg.read_bytes()).hexdigest()
            payload = statement_bytes(
                publish_statement(pkg.name, sha, "https://x.invalid/c", "linux-64")
            )
            sig = key.sign_message(pae(PAYLOAD_TYPE, payload))
            envelope = {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                        "signatures": [{"keyid": key.keyid,
                                        "sig": base64.b64encode(sig).decode()}]}  # fmt: skip
            (att / f"{pkg.name}.sig.json").write_bytes(
                sidecar_file_bytes({"envelopes": [envelope], "feedstock": "fs"})
            )
        repodata = subdir / "repodata.json"
        repodata.write_text(json.dumps(index_directory(subdir, "linux-64")))
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(["repodata", "sign", str(repodata), "--key",
                             repo.keyref("pkg_mgr")]) == 0  # fmt: skip
        paths = [f"linux-64/{p.name}" for p in sorted(subdir.glob("*.conda"))]
        size = sum((upstream / p).stat().st_size for p in paths)
        print(f"setup {time.perf_counter() - t0:.0f} s: {len(paths)} artifacts, "
              f"{size / 2**20:.1f} MiB, --jobs {args.jobs}, {os.cpu_count()} cores")  # fmt: skip

        # The server runs in its own process, as a real upstream would: it shares no GIL
        # with the clients measured.
        server = subprocess.Popen([py, __file__, "--serve", str(upstream)], stdout=subprocess.PIPE,
                                  text=True)  # fmt: skip
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        subprocess.run([py, "-m", "compileall", "-q", "signer"], check=False)
        plain_runs: list[float] = []
        mirror_runs: list[float] = []
        rss = 0
        for r in range(max(1, args.rounds)):
            plain_runs.append(plain_download(base, paths, work / f"plain{r}", args.jobs))
            dest = work / f"mirror{r}"
            cmd = [py, "-m", "signer.cli.main", "mirror", "sync", base, str(dest), "--trust",
                   str(repo.trust_dir), "--root", str(repo.root_file), "--state-dir",
                   str(work / "state"), "--subdir", "linux-64", "--jobs", str(args.jobs),
                   "--json"]  # fmt: skip
            secs, peak, out = run(cmd)
            report = json.loads(out)["subdirs"][0]
            assert report["published"] == len(paths), report
            mirror_runs.append(secs)
            rss = max(rss, peak)
            shutil.rmtree(work / f"plain{r}")
        # An incremental re-run: nothing changed upstream.
        again, _, out = run(cmd)
        assert json.loads(out)["subdirs"][0]["reused"] == len(paths)
        server.kill()
        server.wait()

    plain_s, mirror_s = statistics.median(plain_runs), statistics.median(mirror_runs)
    ratio = plain_s / mirror_s
    n = len(paths)
    print(f"medians of {max(1, args.rounds)} interleaved rounds")
    print(f"  plain concurrent download    {plain_s:6.2f} s   {n / plain_s:7,.0f} files/s")
    print(f"  cf-sign mirror sync          {mirror_s:6.2f} s   {n / mirror_s:7,.0f} files/s "
          "(process start-up, repodata and attestation checks included)")  # fmt: skip
    print(f"  mirror / plain throughput    {ratio:6.2f}x  (target >= 0.8x)  "
          f"{'OK' if ratio >= 0.8 else 'BELOW TARGET'}")  # fmt: skip
    print(f"  incremental re-run           {again:6.2f} s   (nothing changed upstream)")
    print(f"  peak RSS (mirror sync)       {rss / 1024:6.0f} MiB for {n} records "
          f"(= {rss / 1024 / (n / 100_000):,.0f} MiB per 100k records at this size; "
          "fixed start-up memory dominates)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
