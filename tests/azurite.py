"""Azurite (Microsoft's Blob Storage emulator, from npm) for the tests: a real Blob endpoint.

`CF_SIGN_AZURITE` names the `azurite-blob` executable (`.ci/run` installs it with npm).
Unset: the tests that need it skip, unless `CF_SIGN_REQUIRE_REAL_CLIENTS=1` (CI), where a
missing Azurite fails them instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Azurite's documented development account (public; it only exists inside the emulator).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_binary() -> str:
    path = os.environ.get("CF_SIGN_AZURITE", "")
    if path and Path(path).is_file():
        return path
    reason = (
        "CF_SIGN_AZURITE is not set to an azurite-blob executable "
        "(npm install --prefix .cache/azurite azurite; see .ci/run)"
    )
    if os.environ.get("CF_SIGN_REQUIRE_REAL_CLIENTS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


@contextmanager
def running_azurite(directory: Path) -> Iterator[int]:
    """Start Azurite's blob service on a free loopback port; yields the port."""
    binary = azurite_binary()
    port = _free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "azurite.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(directory),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"azurite did not start: {(directory / 'azurite.log').read_text()[-500:]}"
                    ) from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
