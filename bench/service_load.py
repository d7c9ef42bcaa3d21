"""Benchmark: the trust service under load, on PostgreSQL, in one run.

1. Attestation intake: the same batches of signed sidecars (publish + provenance envelopes,
   as a CI run makes them; 20 artifacts per request) are verified and inserted
   a) in-process, by the service's own `Intake` (no HTTP), and
   b) over HTTP on loopback by a real `cf-sign serve` (one process), from 4 clients.
   Target: b >= 50% of a.
2. Serving a trust file (`GET /trust/feedstocks/index.json`) with keep-alive connections,
   with the default per-process cache and without it. Target: >= 1,000 requests/s.

The load client is a minimal asyncio HTTP/1.1 client (it must cost far less than the
server it measures, on the same machine).

Usage: python bench/service_load.py [--artifacts 2000] [--batch 20] [--seconds 5]
       [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from signer.artifacts.reader import ArtifactInfo
from signer.cli.main import main as cli_main
from signer.devrepo import make_dev_trust_repo
from signer.feedstock.sign import build_sidecar
from signer.keys import KeyHandle, artifact_signer, generate_key
from signer.service import registry
from signer.service.db.session import Database
from signer.service.intake import Intake
from signer.service.online_keys import OnlineKeys
from signer.service.publisher import Publisher
from signer.service.ratelimit import TokenBuckets

FEEDSTOCKS = 4
CHANNEL = "https://conda.anaconda.org/conda-forge"
FACTS = {
    "feedstock": "bench",
    "ci": "github_actions",
    "sha": "0123456789abcdef0123456789abcdef01234567",
    "remote_url": "https://github.com/conda-forge/bench-feedstock",
    "run_id": "1",
}
Batch = tuple[str, dict[str, tuple[str, dict[str, Any]]]]  # feedstock, artifacts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_batches(keys: dict[str, KeyHandle], tag: str, count: int, size: int) -> list[Batch]:
    """`count` artifacts (distinct names) with signed sidecars, in batches per feedstock."""
    batches: list[Batch] = []
    names = sorted(keys)
    for start in range(0, count, size):
        feedstock = names[(start // size) % len(names)]
        artifacts: dict[str, tuple[str, dict[str, Any]]] = {}
        for i in range(start, min(start + size, count)):
            filename = f"{feedstock}-1.{tag}.{i}-h{i:x}_0.conda"
            sha = secrets.token_hex(32)  # the service trusts the statement's digest check
            index = {"name": feedstock, "version": f"1.{tag}.{i}", "build": f"h{i:x}_0"}
            info = ArtifactInfo(Path(filename), filename, "conda", index, sha, 1000)
            sidecar = json.loads(build_sidecar(info, feedstock, keys[feedstock], CHANNEL, FACTS))
            artifacts[f"linux-64/{filename}"] = (sha, sidecar)
        batches.append((feedstock, artifacts))
    return batches


def in_process(db_url: str, publish_dir: Path, batches: list[Batch]) -> float:
    db = Database(db_url)
    publisher = Publisher(db, publish_dir, OnlineKeys())
    intake = Intake(db, publisher, TokenBuckets(1e9, 10**9), max_artifacts=10_000)
    intake.submit(*batches[0])  # warm: the delegation cache, the connection pool
    start = time.perf_counter()
    accepted = 0
    for feedstock, artifacts in batches[1:]:
        result = intake.submit(feedstock, artifacts)
        accepted += result.accepted
    elapsed = time.perf_counter() - start
    db.dispose()
    expected = sum(len(a) for _, a in batches[1:])
    assert accepted == expected, f"in-process accepted {accepted} of {expected}"
    return expected / elapsed


# --------------------------------------------------------------------------- HTTP client


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), body


def _post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _post_all(port: int, bodies: list[bytes], clients: int) -> int:
    queue = list(bodies)
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            status, body = await _request(reader, writer, _post("/v1/attestations", queue.pop()))
            if status != 200:
                raise SystemExit(f"intake answered {status}: {body[:300]!r}")
            accepted += json.loads(body)["accepted"]
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted


def over_http(port: int, batches: list[Batch], clients: int) -> float:
    def encode(batch: Batch) -> bytes:
        feedstock, artifacts = batch
        payload = {
            "feedstock": feedstock,
            "artifacts": {k: {"sha256": s, "attestation": a} for k, (s, a) in artifacts.items()},
        }
        return json.dumps(payload).encode()

    bodies = [encode(b) for b in batches]
    asyncio.run(_post_all(port, bodies[:1], 1))  # warm
    start = time.perf_counter()
    accepted = asyncio.run(_post_all(port, bodies[1:], clients))
    elapsed = time.perf_counter() - start
    expected = sum(len(a) for _, a in batches[1:])
    assert accepted == expected, f"HTTP accepted {accepted} of {expected}"
    return expected / elapsed


async def _get_for(port: int, path: str, seconds: float, clients: int) -> int:
    raw = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    deadline = time.perf_counter() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            status, _ = await _request(reader, writer, raw)
            if status != 200:
                raise SystemExit(f"GET {path} answered {status}")
            done += 1
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def serving_rate(port: int, path: str, seconds: float, clients: int = 8) -> float:
    asyncio.run(_get_for(port, path, 0.5, clients))  # warm
    start = time.perf_counter()
    done = asyncio.run(_get_for(port, path, seconds, clients))
    return done / (time.perf_counter() - start)


# --------------------------------------------------------------------------- set-up


class ServerProcess:
    def __init__(self, db_url: str, publish_dir: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "signer.cli.main", "serve", "--db", db_url,
            "--publish-dir", str(publish_dir), "--port", str(self.port),
            "--log-level", "warning", "--rate-limit", "1000000/1000000", *extra,
        ]  # fmt: skip
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def setup(work: Path, db_url: str) -> dict[str, KeyHandle]:
    repo = make_dev_trust_repo(work / "dev")
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["service", "init", "--db", db_url, "--publish-dir", str(work / "pub"),
                     "--root", str(repo.root_file), "--key-mgr-key", repo.keyref("key_mgr"),
                     "--pkg-mgr-key", repo.keyref("pkg_mgr")])  # fmt: skip
    if code != 0:
        raise SystemExit("service init failed")
    db = Database(db_url)
    publisher = Publisher(db, work / "pub", OnlineKeys())
    keys: dict[str, KeyHandle] = {}
    for i in range(FEEDSTOCKS):
        name = f"bench{i}"
        key_path, pub_path, _ = generate_key(name, work / "keys")
        keys[name] = artifact_signer(f"file:{key_path}")
        with publisher.change("bench") as change:
            registry.create_feedstock(
                change, name, outputs=[name], keys=[json.loads(pub_path.read_text())]
            )
    db.dispose()
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=int, default=2000, help="per mode (default 2000)")
    parser.add_argument("--batch", type=int, default=20, help="artifacts per request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent intake clients")
    parser.add_argument("--seconds", type=float, default=5.0, help="per serving measurement")
    parser.add_argument(
        "--pg",
        default=os.environ.get("CF_SIGN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL database where a scratch database may be created",
    )
    args = parser.parse_args()

    name = f"cfsign_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect(args.pg, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    db_url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    db_url += f"/{name}"
    work = Path(tempfile.mkdtemp(prefix="cf-sign-service-bench-"))
    servers: list[ServerProcess] = []
    try:
        print(f"set-up: PostgreSQL database {name}, {FEEDSTOCKS} feedstocks, signing sidecars")
        keys = setup(work, db_url)
        size = args.batch
        local = make_batches(keys, "a", args.artifacts + size, size)
        remote = make_batches(keys, "b", args.artifacts + size, size)

        print(f"1. attestation intake: {args.artifacts} artifacts, {size} per request")
        local_rate = in_process(db_url, work / "pub", local)
        print(f"  in-process (verify + insert, no HTTP): {local_rate:8.0f} artifacts/s")
        server = ServerProcess(db_url, work / "pub", work / "server.log")
        servers.append(server)
        http_rate = over_http(server.port, remote, args.clients)
        print(
            f"  over HTTP ({args.clients} clients, 1 server process): {http_rate:8.0f} artifacts/s"
        )

        print("2. serving a trust file: GET /trust/feedstocks/index.json, 8 connections")
        cached = serving_rate(server.port, "/trust/feedstocks/index.json", args.seconds)
        print(f"  default (1 s per-process cache): {cached:8.0f} requests/s")
        server.stop()
        uncached_server = ServerProcess(
            db_url, work / "pub", work / "server2.log", "--trust-cache", "0"
        )
        servers.append(uncached_server)
        uncached = serving_rate(uncached_server.port, "/trust/feedstocks/index.json", args.seconds)
        print(f"  --trust-cache 0 (database every time): {uncached:8.0f} requests/s")

        ratio = http_rate / local_rate
        print(
            f"intake ratio  {ratio:5.2f} HTTP / in-process   (target >= 0.50) "
            f"{'OK' if ratio >= 0.5 else 'UNDER'}"
        )
        print(
            f"trust file    {cached:5.0f} requests/s          (target >= 1000) "
            f"{'OK' if cached >= 1000 else 'UNDER'}"
        )
    finally:
        for s in servers:
            s.stop()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
