"""`cf-sign mirror sync --publish-to azblob://...`: a mirror served from Blob Storage (Azurite).

Artifacts go up before the repodata that names them; a tampered artifact is quarantined and
never reaches the container; artifacts removed upstream leave the container after the grace
period, once no repodata names them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from azurite import ACCOUNT, connection_string, running_azurite
from test_feedstock_support import environ
from test_mirror import SUBDIR, Upstream, _sub, up  # noqa: F401  (the `up` fixture)
from test_mirror_support import Faults, serve

from signer.storage import BlobTarget


@pytest.fixture
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with (
        running_azurite(tmp_path_factory.mktemp("azurite")) as port,
        environ({"AZURE_STORAGE_CONNECTION_STRING": connection_string(port)}),
    ):
        yield port


def test_mirror_published_to_blob_storage(
    up: Upstream,  # noqa: F811  (the fixture imported above)
    azurite: int,
    cli: Callable[..., Any],
) -> None:
    blob = f"azblob://{ACCOUNT}/mirror"
    name = "numpy-1.0-h0_0.conda"
    real = (up.dir / name).read_bytes()
    forged = bytearray(real)
    forged[len(forged) // 2] ^= 0xFF
    with serve(up.root, Faults(tamper={f"{SUBDIR}/{name}": bytes(forged)})) as (url, _):
        res = cli(*up.sync_args(url, "--publish-to", blob))
    assert res.code == 1 and [q["file"] for q in _sub(res.out)["quarantined"]] == [name]
    target = BlobTarget(blob)
    target.client.set_container_access_policy(signed_identifiers={}, public_access="blob")
    base = f"http://127.0.0.1:{azurite}/{ACCOUNT}/mirror"
    served = httpx.get(f"{base}/{SUBDIR}/repodata.json")
    assert served.content == (up.dest / SUBDIR / "repodata.json").read_bytes()
    listed = set(json.loads(served.content)["packages.conda"]) | set(
        json.loads(served.content)["packages"]
    )
    assert name not in listed and len(listed) == 2  # the control: the others are there
    assert httpx.get(f"{base}/{SUBDIR}/{name}").status_code == 404  # never uploaded
    for other in listed:
        got = httpx.get(f"{base}/{SUBDIR}/{other}")
        assert got.content == (up.dir / other).read_bytes(), other
    assert httpx.get(f"{base}/noarch/repodata.json").status_code == 200

    # Fixed upstream: published. Then a package goes away upstream: after the grace period it
    # leaves the repodata and then the container.
    res = cli(*up.sync_args(None, "--publish-to", blob))
    assert res.code == 0, res.out + res.err
    assert httpx.get(f"{base}/{SUBDIR}/{name}").content == real
    gone = "libnumpy-core-1.0-h0_0.conda"
    (up.dir / gone).unlink()
    up.publish()
    res = cli(*up.sync_args(None, "--publish-to", blob))
    assert res.code == 0 and httpx.get(f"{base}/{SUBDIR}/{gone}").status_code == 200  # grace
    time.sleep(0.05)
    res = cli(*up.sync_args(None, "--publish-to", blob, "--grace", "0.01"))
    assert res.code == 0 and gone in _sub(res.out)["removed"]
    assert httpx.get(f"{base}/{SUBDIR}/{gone}").status_code == 404
    assert gone not in httpx.get(f"{base}/{SUBDIR}/repodata.json").text


def test_unreachable_blob_fails_before_any_download(
    up: Upstream,  # noqa: F811  (the fixture imported above)
    cli: Callable[..., Any],
) -> None:
    with environ({"AZURE_STORAGE_CONNECTION_STRING": connection_string(1)}):
        res = cli(*up.sync_args(None, "--publish-to", f"azblob://{ACCOUNT}/mirror"))
    assert res.code == 2 and "azblob://" in res.err and "\n" not in res.err.strip()
    assert not (up.dest / SUBDIR).exists()  # nothing downloaded or published
