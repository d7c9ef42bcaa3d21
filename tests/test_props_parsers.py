"""Property tests over every parser of outside input (issue 9.14).

Each parser, fed random or mutated input, either gives the right answer or refuses cleanly
(FormatError / VerificationError, one line naming the input); any other exception is a
bug. Inputs are mutations of real documents (a dev trust repository, real sidecars, real
packages), so the parsers are driven past their first checks. Bounded: fast in CI.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_feedstock_support import World, make_world

from signer.trust.errors import FormatError, TrustError, VerificationError

PROPS = settings(
    # CF_SIGN_PROPS_EXAMPLES raises the count for a longer local run; CI keeps it bounded.
    max_examples=int(os.environ.get("CF_SIGN_PROPS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "ed25519", "2030-01-01T00:00:00Z", "0.6.0", "a" * 64, "numpy"])
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _is_clean(exc: BaseException) -> bool:
    """A refusal: one of ours, with a one-line message."""
    return isinstance(exc, (FormatError, VerificationError)) and "\n" not in str(exc)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, (*prefix, i))
    return out


def _mutate(obj: Any, data: st.DataObject) -> Any:
    """`obj` with one node replaced, removed, or given an extra member."""
    doc = copy.deepcopy(obj)
    path = data.draw(st.sampled_from(_paths(doc)))
    replacement = data.draw(json_value)
    if not path:
        return replacement
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    action = data.draw(st.sampled_from(["replace", "remove", "extra"]))
    if action == "replace" or isinstance(parent, list):
        parent[path[-1]] = replacement
    elif action == "remove":
        del parent[path[-1]]
    else:
        parent[data.draw(st.text(max_size=8))] = replacement
    return doc


def _encode(obj: Any, data: st.DataObject) -> bytes:
    text = json.dumps(obj, indent=data.draw(st.sampled_from([None, 1, 2])), sort_keys=True)
    raw = text.encode("utf-8")
    if data.draw(st.booleans()) and raw:  # sometimes also damage the bytes themselves
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + data.draw(st.binary(max_size=4)) + raw[at + 1 :]
    return raw


@functools.cache
def _world() -> World:
    base = Path(tempfile.mkdtemp(prefix="cf-sign-props-"))
    atexit.register(shutil.rmtree, base, True)
    world = make_world(base)
    pkg = world.build("numpy", "1.0")
    assert world.sign(pkg, "numpy") == 0
    return world


def _read(world: World, rel: str) -> Any:
    return json.loads((world.trust / rel).read_bytes())


# ----------------------------------------------------------------------------- trust files


@PROPS
@given(data=st.data(), which=st.sampled_from(["1.root.json", "key_mgr.json", "pkg_mgr.json"]))
def test_signable_envelopes(data: st.DataObject, which: str) -> None:
    from signer.trust.metadata import parse_metadata

    world = _world()
    original = _read(world, which)
    raw = _encode(_mutate(original, data), data)
    try:
        parsed = parse_metadata(raw, which)
    except TrustError as exc:
        assert _is_clean(exc), exc
    else:
        assert parsed.meta.version >= 1  # parsed: a well-formed document


@PROPS
@given(data=st.data(), which=st.sampled_from(["index", "bin"]))
def test_feedstock_delegations(data: st.DataObject, which: str) -> None:
    from signer.trust.feedstocks import INDEX_PATH, bin_id, bin_path, parse_bin, parse_index

    world = _world()
    rel = INDEX_PATH if which == "index" else bin_path(bin_id("numpy", 256))
    raw = _encode(_mutate(_read(world, rel), data), data)
    try:
        if which == "index":
            parse_index(raw)
        else:
            parse_bin(raw, rel)
    except TrustError as exc:
        assert _is_clean(exc), exc


@PROPS
@given(obj=json_value)
def test_delegation_dicts(obj: Any) -> None:
    from signer.trust.feedstocks import FeedstockDelegation

    try:
        FeedstockDelegation.from_dict(obj, "bin", "delegations.x")
    except TrustError as exc:
        assert _is_clean(exc), exc


@PROPS
@given(data=st.data())
def test_public_keys(data: st.DataObject) -> None:
    from signer.trust.keys import PublicKey

    world = _world()
    key = json.loads(world.pub("numpy").read_text())
    ecdsa = {"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": (
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE" + "A" * 52 + "==\n"
        "-----END PUBLIC KEY-----\n")}}  # fmt: skip
    base = data.draw(st.sampled_from([key, ecdsa]))
    try:
        parsed = PublicKey.from_dict(_mutate(base, data), "k", "key")
    except TrustError as exc:
        assert _is_clean(exc), exc
    else:
        assert len(parsed.keyid) == 64


# ----------------------------------------------------------------------------- sidecars


@PROPS
@given(data=st.data())
def test_sidecars(data: st.DataObject) -> None:
    from signer.artifacts import read_artifact
    from signer.trust.attestation import verify_sidecar
    from signer.trust.feedstocks import FeedstockDelegation

    world = _world()
    pkg = world.base / "bld" / "linux-64" / "numpy-1.0-h0_0.conda"
    original = json.loads(pkg.with_name(pkg.name + ".sig.json").read_text())
    info = read_artifact(pkg)
    delegation = FeedstockDelegation.of([world.key("numpy").public], 1, ("numpy",))
    mutated = _mutate(original, data)
    raw = _encode(mutated, data)
    try:
        result = verify_sidecar(raw, pkg.name, info.sha256, delegation, "s", subdir="linux-64")
    except TrustError as exc:
        assert _is_clean(exc), exc
    else:
        # Only an unchanged publish envelope verifies (an extra or edited member never does).
        assert result.ok
        assert json.loads(raw)["envelopes"][0] == original["envelopes"][0]


# ----------------------------------------------------------------------------- repodata


@functools.cache
def _repodata() -> tuple[dict[str, Any], Any]:
    from signer.trust.metadata import parse_metadata

    world = _world()
    out = world.base / "rd.json"
    from test_feedstock_support import run

    assert run("repodata", "index", world.base / "bld" / "linux-64", "-o", out) == 0
    assert run("repodata", "sign", out, "--key", world.repo.keyref("pkg_mgr")) == 0
    key_mgr = parse_metadata((world.trust / "key_mgr.json").read_bytes(), "key_mgr.json").meta
    return json.loads(out.read_text()), key_mgr.delegations["pkg_mgr"]


@PROPS
@given(data=st.data(), members=st.booleans())
def test_repodata(data: st.DataObject, members: bool) -> None:
    from signer.repodata.document import read_repodata
    from signer.repodata.verify import verify_repodata

    original, pkg_mgr = _repodata()
    raw = _encode(_mutate(original, data), data)
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        handle.write(raw)
        handle.flush()
        try:
            split = read_repodata(Path(handle.name), members=members)
            report = verify_repodata(split, pkg_mgr)
        except TrustError as exc:
            assert _is_clean(exc), exc
        else:
            assert report.records == len(split.records)
            if report.ok() and report.records:
                parsed = json.loads(raw)  # everything that verified is exactly as signed
                for section in ("packages", "packages.conda"):
                    for name, record in parsed.get(section, {}).items():
                        assert record == original[section].get(name)


# ----------------------------------------------------------------------------- artifacts


@functools.cache
def _packages() -> dict[str, bytes]:
    from signer.artifacts.build import build_package

    out = Path(tempfile.mkdtemp(prefix="cf-sign-props-pkgs-"))
    atexit.register(shutil.rmtree, out, True)
    return {
        fmt: build_package(out, "numpy", "1.0", "h0_0", subdir="linux-64", fmt=fmt).read_bytes()
        for fmt in ("conda", "tar.bz2")
    }


@PROPS
@given(data=st.data(), fmt=st.sampled_from(["conda", "tar.bz2"]))
def test_archive_bytes(data: st.DataObject, fmt: str) -> None:
    from signer.artifacts import check_filename_matches_index, read_artifact

    original = _packages()[fmt]
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"numpy-1.0-h0_0.{fmt}"
        path.write_bytes(bytes(raw))
        try:
            info = read_artifact(path)
            check_filename_matches_index(info)
        except TrustError as exc:
            assert _is_clean(exc), exc
        else:
            assert info.name == "numpy" and (bytes(raw) == original) == (
                info.sha256 == __import__("hashlib").sha256(original).hexdigest()
            )


INDEX_KEYS = ["name", "version", "build", "subdir", "depends", "build_number", "x"]


@PROPS
@given(index=st.dictionaries(st.sampled_from(INDEX_KEYS), json_value, max_size=7))
def test_archive_metadata(index: dict[str, Any]) -> None:
    from signer.artifacts import check_filename_matches_index, read_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = _with_index(Path(tmp), json.dumps(index).encode())
        try:
            info = read_artifact(path)
            check_filename_matches_index(info)
        except TrustError as exc:
            assert _is_clean(exc), exc
        else:
            assert (info.name, info.version, info.build) == ("numpy", "1.0", "h0_0")


def _with_index(out: Path, meta: bytes) -> Path:
    import io
    import tarfile
    import zipfile

    import zstandard

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entry = tarfile.TarInfo("info/index.json")
        entry.size = len(meta)
        tar.addfile(entry, io.BytesIO(meta))
    stem = "numpy-1.0-h0_0"
    path = out / f"{stem}.conda"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", b'{"conda_pkg_format_version": 2}')
        archive.writestr(f"pkg-{stem}.tar.zst", zstandard.ZstdCompressor().compress(b"\0" * 1024))
        archive.writestr(
            f"info-{stem}.tar.zst", zstandard.ZstdCompressor().compress(buffer.getvalue())
        )
    return path


# ----------------------------------------------------------------------------- small parsers


@PROPS
@given(raw=st.binary(max_size=200) | json_value.map(lambda v: json.dumps(v).encode()))
def test_strict_json(raw: bytes) -> None:
    from signer.trust.jsonload import load_json

    try:
        load_json(raw, "doc", 1024)
    except TrustError as exc:
        assert _is_clean(exc), exc


@PROPS
@given(text=st.text(max_size=30) | st.from_regex(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z"))
def test_times(text: str) -> None:
    from signer.trust.timefmt import format_time, parse_time

    try:
        moment = parse_time(text, "doc", "expiration")
    except TrustError as exc:
        assert _is_clean(exc), exc
    else:
        assert format_time(moment) == text  # only the one ASCII form parses


@PROPS
@given(data=st.data())
def test_delegation_sources(data: st.DataObject) -> None:
    from signer.feedstock.source import parse_source_obj

    world = _world()
    source = json.loads(world.source.read_text())
    mutated = _mutate(source, data)
    try:
        parsed = parse_source_obj(mutated, str(world.source), world.source.parent)
    except TrustError as exc:
        assert _is_clean(exc), exc
    else:
        for name, delegation in parsed.delegations.items():
            assert 1 <= delegation.threshold <= len(delegation.keys), name
