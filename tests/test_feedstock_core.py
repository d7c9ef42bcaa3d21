"""Trust-core parts of the feedstock layer: models, bins, publication, delegation checks,
DSSE envelopes and sidecars (no artifacts needed)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.dsse import Envelope

from signer.devrepo import DevTrustRepo
from signer.feedstock.publish import plan_publication, plan_publication_detailed, write_order
from signer.feedstock.source import parse_delegations_source, read_delegations_source
from signer.fetch import LocalSource
from signer.keys import KeyHandle, generate_key, resolve_keyref
from signer.trust.attestation import (
    PAYLOAD_TYPE,
    pae,
    parse_sidecar,
    publish_statement,
    statement_bytes,
    verify_sidecar,
)
from signer.trust.errors import FormatError, VerificationError
from signer.trust.feedstocks import (
    INDEX_PATH,
    FeedstockBin,
    FeedstockDelegation,
    FeedstocksIndex,
    bin_id,
    bin_path,
    parse_bin,
    verify_feedstock_delegation,
)
from signer.trust.keys import PublicKey
from signer.trust.metadata import Root, parse_metadata
from signer.trust.state import TrustState

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _key(tmp_path: Path, name: str, keytype: str = "ed25519") -> KeyHandle:
    generate_key(name, tmp_path, keytype)
    handle = resolve_keyref(f"file:{tmp_path / (name + '.key')}")
    assert isinstance(handle, KeyHandle)
    return handle


def _root(repo: DevTrustRepo) -> Root:
    meta = parse_metadata(repo.root_file.read_bytes(), "1.root.json", "root").meta
    assert isinstance(meta, Root)
    return meta


def _publish(
    repo: DevTrustRepo, delegations: dict[str, FeedstockDelegation], **kw: Any
) -> dict[str, bytes]:
    assert repo.key_mgr_key is not None
    files = plan_publication(
        delegations,
        LocalSource(repo.trust_dir).fetch,
        [repo.key_mgr_key],
        expires_days=kw.pop("expires_days", 30),
        now=kw.pop("now", NOW),
        **kw,
    )
    for path in write_order(files):
        (repo.trust_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (repo.trust_dir / path).write_bytes(files[path])
    return files


# ----------------------------------------------------------------------------- models


def test_bin_id_is_a_sha256_prefix() -> None:
    digest = hashlib.sha256(b"numpy").hexdigest()
    assert bin_id("numpy", 16) == digest[:1]
    assert bin_id("numpy", 256) == digest[:2]
    assert bin_id("numpy", 4096) == digest[:3]
    with pytest.raises(ValueError):
        bin_id("numpy", 100)


def test_scope_is_outputs_or_case_sensitive_globs(tmp_path: Path) -> None:
    key = _key(tmp_path, "k")
    d = FeedstockDelegation.of([key.public], 1, ("numpy", "numpy-base"), ("libnumpy*",))
    assert d.in_scope("numpy") and d.in_scope("numpy-base") and d.in_scope("libnumpy2")
    assert not d.in_scope("numpyx") and not d.in_scope("LIBNUMPY2") and not d.in_scope("scipy")
    assert d.keys == {key.keyid: key.public}


def test_delegation_rejects_inconsistent_construction(tmp_path: Path) -> None:
    key = _key(tmp_path, "k")
    with pytest.raises(ValueError):
        FeedstockDelegation({}, 1)
    with pytest.raises(ValueError):
        FeedstockDelegation({key.keyid: key.public}, 2)
    with pytest.raises(ValueError):
        FeedstockDelegation({"0" * 64: key.public}, 1)


def test_models_round_trip_and_are_strict(tmp_path: Path) -> None:
    key = _key(tmp_path, "k")
    ecdsa = _key(tmp_path, "e", "ecdsa-p256")
    d = FeedstockDelegation.of([key.public, ecdsa.public], 2, ("numpy",), ("libnumpy*",))
    name = "numpy"
    bid = bin_id(name, 256)
    shard = FeedstockBin(bid, 3, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z", {name: d})
    signed = shard.to_signed()
    again = FeedstockBin.from_signed(json.loads(json.dumps(signed)), "bin")
    assert again == shard
    for mutate, field in [
        (lambda s: s.update(extra=1), "extra"),
        (lambda s: s.update(type="feedstocks_index"), "signed.type"),
        (lambda s: s.update(version=0), "signed.version"),
        (lambda s: s["delegations"][name].update(threshold=3), "threshold"),
        (lambda s: s["delegations"][name]["outputs"].append("numpy"), "outputs"),
        (lambda s: s["delegations"][name]["outputs"].append("num*"), "outputs[1]"),
        (lambda s: s.update(bin="zz"), "signed.bin"),
    ]:
        bad = json.loads(json.dumps(signed))
        mutate(bad)
        with pytest.raises(FormatError) as err:
            FeedstockBin.from_signed(bad, "bin")
        assert field in str(err.value)
    # A feedstock filed under another bin is refused: it would never be looked up there.
    other = json.loads(json.dumps(signed))
    other["bin"] = "00" if bid != "00" else "01"
    with pytest.raises(FormatError, match="does not belong"):
        FeedstockBin.from_signed(other, "bin")
    # A keyid that is not the key's own.
    wrong = json.loads(json.dumps(signed))
    keys = wrong["delegations"][name]["keys"]
    keys["f" * 64] = keys.pop(key.keyid)
    with pytest.raises(FormatError, match="keyid does not match"):
        FeedstockBin.from_signed(wrong, "bin")

    index = FeedstocksIndex(1, "2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z", 256, {})
    assert FeedstocksIndex.from_signed(index.to_signed(), "i") == index
    bad_index = index.to_signed() | {"bins": 100}
    with pytest.raises(FormatError, match="bins"):
        FeedstocksIndex.from_signed(bad_index, "i")


# ----------------------------------------------------------------------------- sources


def test_source_formats_keys_and_unprovisioned(tmp_path: Path) -> None:
    a = _key(tmp_path, "a")
    b = _key(tmp_path, "b")
    c = _key(tmp_path, "c")  # rule 9: a key belongs to one feedstock
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "yaml.yml").write_text(
        "numpy:\n"
        "  keys: [../a.pub, " + json.dumps(b.public.to_dict()) + "]\n"
        "  threshold: 2\n"
        "  outputs: [numpy, numpy-base]\n"
        "  output_globs: ['libnumpy*']\n"
        "scipy:\n"
        f"  keys: ['{c.public.public}']\n"
        "  outputs: [scipy]\n"
        "newcomer:\n"
        "  keys: []\n"
        "  outputs: [newcomer]\n"
    )
    source = read_delegations_source(tmp_path / "src" / "yaml.yml")
    assert set(source.delegations) == {"numpy", "scipy"}
    assert source.unprovisioned == {"newcomer": (("newcomer",), ())}
    numpy = source.delegations["numpy"]
    assert numpy.threshold == 2 and set(numpy.keys) == {a.keyid, b.keyid}
    assert source.delegations["scipy"].keys == {c.keyid: c.public}
    as_json = tmp_path / "src" / "same.json"
    as_json.write_text(json.dumps({"numpy": {"keys": ["../a.pub"], "outputs": ["numpy"]}}))
    assert parse_delegations_source(as_json)["numpy"].threshold == 1


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("numpy:\n  keys: []\n  keys: []\n", "duplicate key"),
        ("numpy:\n  keys: [nope.pub]\n", "not found"),
        ("numpy:\n  keys: []\n  outputz: [x]\n", "unexpected key"),
        ("numpy-feedstock:\n  keys: []\n", "without -feedstock"),
        ("numpy:\n  keys: []\n  threshold: 0\n", "threshold"),
        ("numpy: [1, 2\n", "malformed YAML"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_source_errors_name_the_problem(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(FormatError, match=field):
        parse_delegations_source(path)


# ----------------------------------------------------------------------------- publication


def test_publication_bumps_only_changed_bins(dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    keys = {n: _key(tmp_path, n) for n in ("numpy", "scipy", "pandas")}
    dels = {n: FeedstockDelegation.of([k.public], 1, (n,)) for n, k in keys.items()}
    first = _publish(dev_repo, dels, bins=16)
    bins = {bin_id(n, 16) for n in dels}
    assert set(first) == {bin_path(b) for b in bins} | {INDEX_PATH}
    assert list(write_order(first))[-1] == INDEX_PATH

    # Same content: nothing to publish.
    assert _publish(dev_repo, dels, bins=16, now=NOW + timedelta(hours=1)) == {}

    # One feedstock's outputs change: its bin and the index, versions bumped by one.
    changed = dict(dels)
    changed["scipy"] = FeedstockDelegation.of([keys["scipy"].public], 1, ("scipy", "scipy-x"))
    second = _publish(dev_repo, changed, bins=16, now=NOW + timedelta(hours=2))
    assert set(second) == {bin_path(bin_id("scipy", 16)), INDEX_PATH}
    index = json.loads(second[INDEX_PATH])["signed"]
    assert index["version"] == 2
    assert index["shards"][bin_id("scipy", 16)]["version"] == 2
    for other in bins - {bin_id("scipy", 16)}:
        assert index["shards"][other]["version"] == 1

    # Removing a feedstock empties its bin (kept in the index, version bumped).
    del changed["pandas"]
    third = _publish(dev_repo, changed, bins=16, now=NOW + timedelta(hours=3))
    pandas_bin = bin_id("pandas", 16)
    if pandas_bin not in {bin_id("numpy", 16), bin_id("scipy", 16)}:
        shard, _ = parse_bin(third[bin_path(pandas_bin)], "bin")
        assert shard.delegations == {}


def test_publication_refreshes_bins_near_expiry(dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    key = _key(tmp_path, "numpy")
    dels = {"numpy": FeedstockDelegation.of([key.public], 1, ("numpy",))}
    _publish(dev_repo, dels, expires_days=10)
    plan = plan_publication_detailed(
        dels,
        LocalSource(dev_repo.trust_dir).fetch,
        [dev_repo.key_mgr_key],  # type: ignore[list-item]
        expires_days=10,
        now=NOW + timedelta(days=6),
    )
    assert "expiry" in plan.changed_bins[bin_id("numpy", 256)]
    assert plan.index_version == 2


def test_verify_feedstock_delegation(dev_repo: DevTrustRepo, tmp_path: Path) -> None:
    key = _key(tmp_path, "numpy")
    _publish(dev_repo, {"numpy": FeedstockDelegation.of([key.public], 1, ("numpy",))})
    fetch = LocalSource(dev_repo.trust_dir).fetch
    state = TrustState(tmp_path / "state")
    got = verify_feedstock_delegation(fetch, _root(dev_repo), "numpy", NOW, timedelta(0), state)
    assert got.keys == {key.keyid: key.public}
    assert state.seen_version(INDEX_PATH) == 1
    with pytest.raises(VerificationError) as err:
        verify_feedstock_delegation(fetch, _root(dev_repo), "scipy", NOW, timedelta(0), state)
    assert err.value.check == "delegation"
    with pytest.raises(VerificationError) as err:
        verify_feedstock_delegation(
            fetch, _root(dev_repo), "numpy", NOW + timedelta(days=31), timedelta(0), state
        )
    assert err.value.check == "expired"


def test_publication_signed_by_a_non_key_mgr_key_fails(
    dev_repo: DevTrustRepo, tmp_path: Path
) -> None:
    key = _key(tmp_path, "numpy")
    rogue = _key(tmp_path, "rogue")
    files = plan_publication(
        {"numpy": FeedstockDelegation.of([key.public], 1, ("numpy",))},
        None,
        [rogue],
        expires_days=30,
        now=NOW,
    )
    for path, data in files.items():
        (dev_repo.trust_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (dev_repo.trust_dir / path).write_bytes(data)
    with pytest.raises(VerificationError) as err:
        verify_feedstock_delegation(
            LocalSource(dev_repo.trust_dir).fetch, _root(dev_repo), "numpy", NOW, timedelta(0)
        )
    assert err.value.check == "signature" and err.value.subject == INDEX_PATH


# ----------------------------------------------------------------------------- DSSE


def _sidecar(filename: str, sha: str, signers: list[KeyHandle], feedstock: str = "numpy") -> bytes:
    payload = statement_bytes(
        publish_statement(filename, sha, "https://example.org/ch", "linux-64")
    )
    env = Envelope(payload, PAYLOAD_TYPE, {})
    for s in signers:
        env.sign(s.signer)
    return json.dumps({"feedstock": feedstock, "envelopes": [env.to_dict()]}).encode()


def test_pae_matches_securesystemslib() -> None:
    env = Envelope(b"hello \xff world", "application/x-test", {})
    assert pae("application/x-test", b"hello \xff world") == env.pae()


@pytest.mark.parametrize("keytype", ["ed25519", "ecdsa-p256"])
def test_verify_sidecar(tmp_path: Path, keytype: str) -> None:
    key = _key(tmp_path, "k", keytype)
    other = _key(tmp_path, "o")
    name, sha = "numpy-1.0-h0_0.conda", "ab" * 32
    d = FeedstockDelegation.of([key.public], 1, ("numpy",))
    result = verify_sidecar(_sidecar(name, sha, [key]), name, sha, d, "s", subdir="linux-64")
    assert result.keyids == (key.keyid,) and result.package == "numpy"
    assert result.channel == "https://example.org/ch"

    def check(data: bytes, filename: str = name, digest: str = sha, **kw: Any) -> str:
        with pytest.raises(VerificationError) as err:
            verify_sidecar(data, filename, digest, kw.get("delegation", d), "s", subdir="linux-64")
        return err.value.check

    assert check(_sidecar(name, sha, [other])) == "signature"
    assert check(_sidecar(name, sha, [key]), digest="cd" * 32) == "digest"
    assert check(_sidecar(name, sha, [key]), filename="numpy-2.0-h0_0.conda") == "subject"
    scoped = FeedstockDelegation.of([key.public], 1, ("scipy",))
    assert check(_sidecar(name, sha, [key]), delegation=scoped) == "scope"


def test_same_key_counts_once(tmp_path: Path) -> None:
    a, b = _key(tmp_path, "a"), _key(tmp_path, "b")
    name, sha = "numpy-1.0-h0_0.conda", "ab" * 32
    d = FeedstockDelegation.of([a.public, b.public], 2, ("numpy",))
    doc = json.loads(_sidecar(name, sha, [a]))
    sigs = doc["envelopes"][0]["signatures"]
    sigs.append(dict(sigs[0]))  # the same signature twice
    with pytest.raises(VerificationError, match="1 valid, 2 required"):
        verify_sidecar(json.dumps(doc).encode(), name, sha, d, "s", subdir="linux-64")
    assert verify_sidecar(
        _sidecar(name, sha, [a, b]), name, sha, d, "s", subdir="linux-64"
    ).signatures.ok


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(envelopes=[]), "envelopes"),
        (lambda d: d["envelopes"][0].update(payload="***"), "base64"),
        (lambda d: d["envelopes"][0].update(payloadType="text/plain"), "payloadType"),
        (lambda d: d["envelopes"][0]["signatures"][0].update(keyid="x"), "keyid"),
        (lambda d: d.update(feedstock="a b"), "feedstock"),
    ],
)
def test_malformed_sidecars(tmp_path: Path, mutate: Any, field: str) -> None:
    key = _key(tmp_path, "k")
    name, sha = "numpy-1.0-h0_0.conda", "ab" * 32
    doc = json.loads(_sidecar(name, sha, [key]))
    mutate(doc)
    d = FeedstockDelegation.of([key.public], 1, ("numpy",))
    with pytest.raises(FormatError, match=field):
        verify_sidecar(json.dumps(doc).encode(), name, sha, d, "s", subdir="linux-64")


def test_statement_shape_is_exact(tmp_path: Path) -> None:
    key = _key(tmp_path, "k")
    name, sha = "numpy-1.0-h0_0.conda", "ab" * 32
    d = FeedstockDelegation.of([key.public], 1, ("numpy",))
    stmt = publish_statement(name, sha, "https://example.org/ch", "linux-64")
    for bad in (
        stmt | {"extra": 1},
        stmt | {"predicate": {"targetChannel": "https://example.org/ch/"}},
        stmt | {"predicateType": "https://slsa.dev/provenance/v1"},
        stmt | {"subject": stmt["subject"] * 2},
    ):
        env = Envelope(statement_bytes(bad), PAYLOAD_TYPE, {})
        env.sign(key.signer)
        data = json.dumps({"feedstock": "numpy", "envelopes": [env.to_dict()]}).encode()
        with pytest.raises(FormatError):
            verify_sidecar(data, name, sha, d, "s", subdir="linux-64")
    parsed = parse_sidecar(_sidecar(name, sha, [key]), "s")
    assert base64.b64encode(parsed.envelopes[0].payload)


def test_core_verifier_imports_no_securesystemslib() -> None:
    code = (
        "import sys, signer.trust.attestation, signer.trust.feedstocks, signer.client;"
        "bad=[m for m in sys.modules if m.split('.')[0] in "
        "('securesystemslib','fastapi','sqlalchemy','starlette','rich','uvicorn','requests')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_public_key_of_ecdsa_verifies_der(tmp_path: Path) -> None:
    key = _key(tmp_path, "e", "ecdsa-p256")
    sig = bytes.fromhex(key.signer.sign(b"msg").signature)
    assert PublicKey.from_dict(key.public.to_dict(), "k", "").verify(sig, b"msg")
