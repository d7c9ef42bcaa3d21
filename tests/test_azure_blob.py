"""Publishing to Azure Blob Storage with the real azure-storage-blob SDK against Azurite."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azurite import ACCOUNT, connection_string, running_azurite
from test_feedstock_support import environ, make_world

from signer.feedstock.publish import write_order
from signer.storage import BlobTarget, parse_blob_url
from signer.trust.errors import FormatError


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_azurite(tmp_path_factory.mktemp("azurite")) as port:
        yield port


@pytest.fixture
def blob_env(azurite: int) -> Iterator[int]:
    with environ({"AZURE_STORAGE_CONNECTION_STRING": connection_string(azurite)}):
        yield azurite


_COUNTER = iter(range(10**6))


def _container() -> str:
    return f"trust-{next(_COUNTER)}"


def _doc(version: int, extra: str = "") -> bytes:
    return json.dumps({"signatures": {}, "signed": {"version": version, "x": extra}}).encode()


def test_blob_url_parsing() -> None:
    loc = parse_blob_url("azblob://condaforge/trust/prod/v1")
    assert (loc.account, loc.container, loc.prefix) == ("condaforge", "trust", "prod/v1/")
    for bad in ("azblob://Bad/trust", "azblob://acct/x", "https://acct/trust", "azblob://a/b?c"):
        with pytest.raises(FormatError):
            parse_blob_url(bad)


def test_trust_repository_published_and_verified_over_http(
    blob_env: int, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """A client verifies an artifact straight from the Blob container, over plain HTTP."""
    world = make_world(tmp_path / "w")
    pkg = world.build("numpy")
    assert world.sign(pkg, "numpy") == 0
    files = {
        p.relative_to(world.trust).as_posix(): p.read_bytes() for p in world.trust.rglob("*.json")
    }
    sidecar = pkg.with_name(pkg.name + ".sig.json")
    files[f"attestations/linux-64/{sidecar.name}"] = sidecar.read_bytes()
    container = _container()
    target = BlobTarget(f"azblob://{ACCOUNT}/{container}")
    order = write_order(files)
    outcomes = target.publish(files, order=order.index)
    assert [o.path for o in outcomes] == order
    assert order[-1] == "feedstocks/index.json"  # the index only after the bins it names
    assert all(o.action == "written" for o in outcomes)
    target.client.set_container_access_policy(signed_identifiers={}, public_access="blob")

    props = target.client.get_blob_client("1.root.json").get_blob_properties()
    assert props.content_settings.content_type == "application/json"
    assert "immutable" in props.content_settings.cache_control
    props = target.client.get_blob_client("feedstocks/index.json").get_blob_properties()
    assert "max-age=60" in props.content_settings.cache_control

    alone = tmp_path / "download" / pkg.name  # no sidecar beside it: fetched from the blob
    alone.parent.mkdir()
    shutil.copy(pkg, alone)
    url = f"http://127.0.0.1:{blob_env}/{ACCOUNT}/{container}"
    args = ["--trust", url, "--root", world.root, "--state-dir", tmp_path / "state"]
    res = cli("verify", alone, *args, "--json")
    assert res.code == 0, res.out + res.err
    assert json.loads(res.out)[0]["sidecar"].startswith(url)
    # Control: a tampered copy fails against the same container.
    tampered = tmp_path / "download" / "t" / pkg.name
    tampered.parent.mkdir()
    tampered.write_bytes(pkg.read_bytes()[:-1] + bytes([pkg.read_bytes()[-1] ^ 1]))
    assert cli("verify", tampered, *args).code == 1

    # Publishing the same set again writes nothing.
    assert {o.action for o in target.publish(files, order=order.index)} == {"unchanged"}


def test_never_overwrites_a_newer_version(blob_env: int) -> None:
    replica_a = BlobTarget(f"azblob://{ACCOUNT}/{(c := _container())}")
    replica_b = BlobTarget(f"azblob://{ACCOUNT}/{c}")
    assert replica_a.put("key_mgr.json", _doc(5)).action == "written"
    # A lagging replica publishing an older version keeps the newer one.
    outcome = replica_b.put("key_mgr.json", _doc(4))
    assert outcome.action == "kept-newer" and "v5" in outcome.detail
    assert replica_a.read("key_mgr.json") == _doc(5)
    assert replica_b.put("key_mgr.json", _doc(6)).action == "written"  # control: newer wins
    # Immutable files: the same bytes are fine, other bytes are refused.
    assert replica_a.put("1.root.json", b"root one").action == "written"
    assert replica_b.put("1.root.json", b"root one").action == "unchanged"
    with pytest.raises(FormatError, match="immutable"):
        replica_b.put("1.root.json", b"another root one")


def test_concurrent_replicas_converge_to_the_newest(blob_env: int) -> None:
    """Two replicas racing on one document: conditional writes keep the highest version."""
    container = _container()
    errors: list[BaseException] = []

    def replica(versions: range) -> None:
        target = BlobTarget(f"azblob://{ACCOUNT}/{container}")
        try:
            for v in versions:
                target.put("feedstocks/index.json", _doc(v))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=replica, args=(range(1, 40, 2),)),
        threading.Thread(target=replica, args=(range(2, 40, 2),)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = BlobTarget(f"azblob://{ACCOUNT}/{container}").read("feedstocks/index.json")
    assert final == _doc(39)


def test_blob_errors_are_one_line(tmp_path: Path) -> None:
    # Nothing listens on this port: a clear failure, not a traceback or a hang.
    with environ({"AZURE_STORAGE_CONNECTION_STRING": connection_string(1)}):
        target = BlobTarget(f"azblob://{ACCOUNT}/unreachable", retries=0)
        with pytest.raises(FormatError) as info:
            target.put("key_mgr.json", _doc(1))
    assert "\n" not in str(info.value)
    with pytest.raises(FormatError):
        BlobTarget(f"azblob://{ACCOUNT}/ok")._name("../escape")


def test_attestations_are_listed_replaced_and_withdrawn(blob_env: int) -> None:
    target = BlobTarget(f"azblob://{ACCOUNT}/{_container()}/prefix")
    target.check_writable()
    path = "attestations/win-64/zlib-1.2.11-h62dcd97_3.conda.sig.json"
    target.write_attestation(path, b"first")
    target.write_attestation(path, b"replaced by a re-run")  # attestations are not immutable
    target.write_attestation("attestations/win-32/zlib-1.2.11-h62dcd97_3.conda.sig.json", b"w32")
    assert target.read_attestation(path) == b"replaced by a re-run"
    assert sorted(target.attestation_files()) == [
        "attestations/win-32/zlib-1.2.11-h62dcd97_3.conda.sig.json",
        path,
    ]
    assert target.remove_attestation(path) is True
    assert target.remove_attestation(path) is False  # already gone
    assert target.read_attestation(path) is None
    # The prefix keeps the repository apart from the rest of the container.
    assert BlobTarget(f"azblob://{ACCOUNT}/{target.location.container}").read(path) is None
