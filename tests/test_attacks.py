"""The attack catalogue: each attack is built for real and must fail with its reason.

Artifact attacks end with `cf-sign verify` (in-process) exiting 1 and naming the failed
check; each hardening test (issue 9) also runs a control, the same setup without the one
hostile detail, which succeeds: the attack fails for the reason under test.

Attack (test)                                         refused because (check)
--------------------------------------------------    -----------------------------------------
unsigned artifact                                     no sidecar anywhere (attestation)
another feedstock's key (signature_by_another...)     key not delegated to the hint (signature)
own key, another's package name (name_outside...)     name not in the feedstock's scope (scope)
another feedstock's prefix glob                       globs are per feedstock (scope)
key removed from the delegation                       old signatures stop counting (signature)
artifact bytes tampered                               sha256 differs from the statement (digest)
sidecar moved to another artifact                     subject name differs (subject)
artifact renamed against its index.json               name-version-build differ (file-name)
old index/bin served again                            version below the one seen (rollback)
signed bin the index does not list                    sha256 not the index's (mix-and-match)
expired root/key_mgr/index/bin (freeze)               past expiration + skew (expired)
root update signed by the new keys only               needs the old root's threshold (signature)
one key's signature repeated for threshold 2          each key counts once (signature)
oversized / malformed sidecar or index                caps and strict parsing (size, format)
missing bin                                           nothing trusted when absent (missing)
wrong feedstock hint                                  only the hinted delegation (delegation)
9.1  two info/index.json: numpy 99.0 then evilpkg     duplicate member name (archive; sign and
     (.conda), and the .tar.bz2 mirror image          `repodata index` exit 2)
9.1  ./info/index.json, info/INDEX.json, pkg copy     same extraction path (archive)
9.1  the evil .conda, attested and channel-signed,     the mirror's reader refuses it
     offered to `mirror sync`                          (quarantined, the others published)
9.1  two zip entries of one name                      duplicate zip entry (archive)
9.1  a zip entry hidden from the central directory;    entries must tile the file up to the
     a local header naming another file               central directory (archive)
9.8  info component inflating past 64 MiB; pkg bomb   inflated-size caps while streaming (archive)
9.7  win-32 sidecar for win-64's same-named file      statement's subdir annotation (subdir)
9.13 one corrupt artifact among several               each judged; corrupt = exit 1 (archive)
9.2  one ECDSA key spelled with/without newline, CRLF keyid of the normal SPKI PEM: publisher
                                                      refuses twice/two feedstocks; a bin listing
                                                      a spelling's keyid fails (format)
9.5  two top-level `packages` members                 duplicate key (repodata verify exit 2)
9.5  a file name twice; a record key twice            duplicate key (exit 2)
9.5  .conda in `packages`; linux-64 served as win-64  rule 13 (section, subdir: exit 1)
9.5  `{}`; non-UTF-8 bytes                            info.subdir required; clean error (exit 2)
9.9  server dripping a byte every 0.5 s               one deadline per document (fetch)
9.9  redirect to another origin                       same-origin redirects only (fetch)
9.9  FIFO planted in the trust directory              regular files only, no blocking (fetch)
9.10 `--key <hex seed>`, `--key "<PEM>"`, PIN in URI  refused, never printed (exit 2)
9.13 read-only output directory                       one line naming the file (exit 2)
9.13 `-o` a symlink (/dev/stdout)                     written through, link kept
9.13 `repodata index` of mislabelled packages         file name / subdir must agree (exit 2)
9.13 `vouch-feedstock` in feedstock-outputs           normalised to `vouch`, and said so
9.13 fullwidth / Arabic-Indic digits in times         ASCII digits only (format)

Elsewhere: tests/test_attacks_service_keys.py (9.2 at the service's registry),
tests/test_state_recovery.py (9.3 recovery after a key_mgr/pkg_mgr compromise,
9.4 a planted state root), the service's tests (9.6, 9.11, 9.12, 9.13's --db),
tests/test_props_parsers.py (9.14: every parser, hypothesis).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_feedstock_support import World, environ, make_world, resign, run

from signer.keys import KeyHandle, generate_key, resolve_keyref
from signer.trust.feedstocks import INDEX_PATH, bin_id, bin_path
from signer.trust.metadata import Delegation, Root, Signable
from signer.trust.signing import envelope_signer, sign_envelope
from signer.trust.state import write_atomic
from signer.trust.timefmt import format_time


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def verdict(world: World, cli: Callable[..., Any], pkg: Path, *extra: object) -> dict[str, Any]:
    res = cli(*world.verify_args(pkg), "--json", *extra)
    (entry,) = json.loads(res.out)
    assert res.code == (0 if entry["ok"] else 1), res.out + res.err
    out: dict[str, Any] = entry
    return out


def failure(world: World, cli: Callable[..., Any], pkg: Path, *extra: object) -> tuple[str, str]:
    entry = verdict(world, cli, pkg, *extra)
    assert not entry["ok"], entry
    # The plain output says the same in one line.
    res = cli(*world.verify_args(pkg), *extra)
    assert res.code == 1 and res.out.startswith(f"FAIL {pkg.name}: {entry['check']}: ")
    assert len(res.out.splitlines()) == 1
    return entry["check"], entry["reason"]


def signed_numpy(world: World, version: str = "1.0") -> Path:
    pkg = world.build("numpy", version)
    assert world.sign(pkg, "numpy") == 0
    return pkg


def sidecar_of(pkg: Path) -> Path:
    return pkg.with_name(pkg.name + ".sig.json")


def new_key(world: World, name: str) -> KeyHandle:
    generate_key(name, world.base / "extra-keys")
    handle = resolve_keyref(f"file:{world.base / 'extra-keys' / (name + '.key')}")
    assert isinstance(handle, KeyHandle)
    return handle


# ----------------------------------------------------------------------------- artifacts


def test_baseline_verifies(world: World, cli: Callable[..., Any]) -> None:
    assert verdict(world, cli, signed_numpy(world))["ok"]


def test_unsigned_artifact(world: World, cli: Callable[..., Any]) -> None:
    check, reason = failure(world, cli, world.build("numpy"))
    assert check == "attestation" and "unsigned" in reason


def test_signature_by_another_feedstocks_key(world: World, cli: Callable[..., Any]) -> None:
    pkg = world.build("numpy")
    # The thief holds evil's key and claims to be numpy.
    assert world.sign(pkg, "numpy", secret=world.secrets["evil"]) == 0
    check, reason = failure(world, cli, pkg)
    assert check == "signature" and "0 valid, 1 required" in reason and "not delegated" in reason


def test_name_outside_the_feedstocks_scope(world: World, cli: Callable[..., Any]) -> None:
    pkg = world.build("numpy")
    assert world.sign(pkg, "evil") == 0  # evil's own key, evil's delegation, numpy's name
    check, reason = failure(world, cli, pkg)
    assert check == "scope" and "'numpy'" in reason and "evil" in reason


def test_name_only_another_feedstocks_prefix_glob_matches(
    world: World, cli: Callable[..., Any]
) -> None:
    # libllvm99 is llvmdev's through its `libllvm*` glob; numpy's `libnumpy*` does not match.
    pkg = world.build("libllvm99", "99.0")
    assert world.sign(pkg, "numpy") == 0
    check, _ = failure(world, cli, pkg)
    assert check == "scope"
    honest = world.build("libllvm99", "99.1")
    assert world.sign(honest, "llvmdev") == 0
    assert verdict(world, cli, honest)["ok"]


def test_key_removed_from_the_delegation(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    control = verdict(world, cli, pkg)
    assert control["ok"], control
    # numpy's key leaked: admins rotate it; old signatures stop verifying.
    replacement = new_key(world, "numpy-2")
    entries = world.default_entries()
    entries["numpy"]["keys"] = [replacement.public.to_dict()]
    world.write_source(entries)
    assert world.publish() == 0
    check, reason = failure(world, cli, pkg)
    assert check == "signature" and "not delegated" in reason


def test_tampered_artifact_bytes(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    with zipfile.ZipFile(pkg) as zf:
        meta = next(i for i in zf.infolist() if i.filename == "metadata.json")
        pkg_part = next(i for i in zf.infolist() if i.filename.startswith("pkg-"))
    original = pkg.read_bytes()

    def flip(member: zipfile.ZipInfo, at: int) -> None:
        data = bytearray(original)
        data[member.header_offset + 30 + len(member.filename) + len(member.extra) + at] ^= 0x01
        pkg.write_bytes(bytes(data))

    flip(meta, 2)  # a byte nothing parses: only the digest can tell
    check, reason = failure(world, cli, pkg)
    assert check == "digest" and "modified" in reason
    flip(pkg_part, 20)  # inside the compressed payload: the walk or the digest refuses it
    check, _ = failure(world, cli, pkg)
    assert check in ("archive", "digest")


def test_sidecar_moved_to_another_artifact(world: World, cli: Callable[..., Any]) -> None:
    signed = signed_numpy(world, "1.0")
    other = world.build("numpy", "1.1")
    shutil.copy(sidecar_of(signed), sidecar_of(other))
    check, reason = failure(world, cli, other)
    assert check == "subject" and signed.name in reason


@pytest.mark.parametrize("fmt", ["conda", "tar.bz2"])
def test_artifact_renamed_so_its_name_disagrees_with_index_json(
    world: World, cli: Callable[..., Any], fmt: str
) -> None:
    pkg = world.build("numpy", "1.0", fmt=fmt)
    assert world.sign(pkg, "numpy") == 0
    renamed = pkg.with_name(pkg.name.replace("-1.0-", "-2.0-"))
    pkg.rename(renamed)
    sidecar_of(pkg).rename(sidecar_of(renamed))
    check, reason = failure(world, cli, renamed)
    assert check == "file-name" and "info/index.json" in reason and "'1.0'" in reason


# ----------------------------------------------------------------------------- delegations


def _snapshot(world: World, *paths: str) -> dict[str, bytes]:
    return {p: (world.trust / p).read_bytes() for p in paths}


def test_rollback_of_index_and_bin(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    numpy_bin = bin_path(bin_id("numpy", 256))
    old = _snapshot(world, INDEX_PATH, numpy_bin)
    entries = world.default_entries()
    entries["numpy"]["outputs"].append("numpy-devel")
    world.write_source(entries)
    assert world.publish() == 0
    assert verdict(world, cli, pkg)["ok"]  # the verifier has now seen v2
    new = _snapshot(world, INDEX_PATH, numpy_bin)

    for path, data in old.items():  # the attacker serves the old pair
        write_atomic(world.trust / path, data)
    check, reason = failure(world, cli, pkg)
    assert check == "rollback" and INDEX_PATH in reason

    # Only the old bin, with the current index.
    write_atomic(world.trust / INDEX_PATH, new[INDEX_PATH])
    check, reason = failure(world, cli, pkg)
    assert check == "rollback" and numpy_bin in reason


def test_bin_not_matching_the_index(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    numpy_bin = world.trust / bin_path(bin_id("numpy", 256))
    assert world.repo.key_mgr_key is not None

    # A genuinely signed bin whose bytes the index does not list (mix-and-match).
    def widen(signed: dict[str, Any]) -> None:
        signed["delegations"]["numpy"]["output_globs"].append("*")

    resign(numpy_bin, [world.repo.key_mgr_key], widen)
    check, reason = failure(world, cli, pkg)
    assert check == "mix-and-match" and "sha256" in reason


@pytest.mark.parametrize("which", ["root", "key_mgr", "index", "bin"])
def test_freeze_expired_documents(world: World, cli: Callable[..., Any], which: str) -> None:
    pkg = signed_numpy(world)
    now = datetime.now(UTC).replace(microsecond=0)
    at = now + timedelta(days=2)
    soon = format_time(now + timedelta(days=1))
    km = world.repo.key_mgr_key
    assert km is not None
    numpy_bin = bin_path(bin_id("numpy", 256))
    if which == "root":
        at = now + timedelta(days=400)  # past the dev root's 365 days, first to be checked
    elif which == "key_mgr":
        resign(world.trust / "key_mgr.json", [km], lambda s: s.update(expiration=soon))
    elif which == "index":
        resign(world.trust / INDEX_PATH, [km], lambda s: s.update(expiration=soon))
    else:
        data = resign(world.trust / numpy_bin, [km], lambda s: s.update(expiration=soon))
        import hashlib

        def relist(signed: dict[str, Any]) -> None:
            signed["shards"][bin_id("numpy", 256)]["sha256"] = hashlib.sha256(data).hexdigest()

        resign(world.trust / INDEX_PATH, [km], relist)
    check, reason = failure(world, cli, pkg, "--at", format_time(at))
    assert check == "expired"
    expected = {
        "root": "1.root.json",
        "key_mgr": "key_mgr.json",
        "index": INDEX_PATH,
        "bin": numpy_bin,
    }[which]
    assert reason.startswith(expected)


def test_root_update_signed_by_the_new_keys_only(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    new_keys = [new_key(world, f"newroot{i}") for i in range(2)]
    assert world.repo.key_mgr_key is not None
    now = datetime.now(UTC).replace(microsecond=0)
    root2 = Root(
        2,
        format_time(now),
        format_time(now + timedelta(days=365)),
        {
            "root": Delegation(tuple(k.public_key_hex for k in new_keys), 2),
            "key_mgr": Delegation((world.repo.key_mgr_key.public_key_hex,), 1),
        },
    )
    envelope = Signable(root2.to_signed(), {}, "2.root.json")
    for key in new_keys:
        sign_envelope(envelope, envelope_signer(key, openpgp=True))
    write_atomic(world.trust / "2.root.json", envelope.to_bytes())
    check, reason = failure(world, cli, pkg)
    assert check == "signature" and reason.startswith("2.root.json") and "v1 root" in reason


def test_same_key_repeated_to_reach_threshold_two(world: World, cli: Callable[..., Any]) -> None:
    second = new_key(world, "numpy-second")
    entries = world.default_entries()
    entries["numpy"]["keys"].append(second.public.to_dict())
    entries["numpy"]["threshold"] = 2
    world.write_source(entries)
    assert world.publish() == 0
    pkg = signed_numpy(world)
    doc = json.loads(sidecar_of(pkg).read_text())
    for envelope in doc["envelopes"]:
        envelope["signatures"].append(dict(envelope["signatures"][0]))
    sidecar_of(pkg).write_text(json.dumps(doc))
    check, reason = failure(world, cli, pkg)
    assert check == "signature" and "1 valid, 2 required" in reason


# ----------------------------------------------------------------------------- documents


def test_oversized_sidecar(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    doc = json.loads(sidecar_of(pkg).read_text())
    doc["padding"] = "x" * (1024 * 1024)
    sidecar_of(pkg).write_text(json.dumps(doc))
    check, reason = failure(world, cli, pkg)
    assert check == "size" and "cap" in reason


@pytest.mark.parametrize(
    "garbage", [b"{not json", b'{"feedstock": "numpy", "envelopes": [], "x": 1}', b"\xff\xfe"]
)
def test_malformed_sidecar(world: World, cli: Callable[..., Any], garbage: bytes) -> None:
    pkg = signed_numpy(world)
    sidecar_of(pkg).write_bytes(garbage)
    check, _ = failure(world, cli, pkg)
    assert check == "format"


def test_oversized_index(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    index = world.trust / INDEX_PATH
    with open(index, "ab") as handle:
        handle.write(b" " * (16 * 1024 * 1024))
    check, reason = failure(world, cli, pkg)
    assert check == "size" and INDEX_PATH in reason


@pytest.mark.parametrize("target", ["key_mgr.json", "bin", INDEX_PATH])
def test_malformed_trust_documents(world: World, cli: Callable[..., Any], target: str) -> None:
    pkg = signed_numpy(world)
    path = bin_path(bin_id("numpy", 256)) if target == "bin" else target
    data = json.loads((world.trust / path).read_bytes())
    data["signed"]["surprise"] = True
    (world.trust / path).write_text(json.dumps(data))
    check, reason = failure(world, cli, pkg)
    assert check == "format" and path in reason and "surprise" in reason


def test_missing_trust_documents(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    (world.trust / bin_path(bin_id("numpy", 256))).unlink()
    check, _ = failure(world, cli, pkg)
    assert check == "missing"


def test_wrong_feedstock_hint(world: World, cli: Callable[..., Any]) -> None:
    pkg = signed_numpy(world)
    doc = json.loads(sidecar_of(pkg).read_text())
    doc["feedstock"] = "scipy"  # not delegated at all
    sidecar_of(pkg).write_text(json.dumps(doc))
    check, _ = failure(world, cli, pkg)
    assert check == "delegation"
    doc["feedstock"] = "llvmdev"  # delegated, but not with this key
    sidecar_of(pkg).write_text(json.dumps(doc))
    check, _ = failure(world, cli, pkg)
    assert check == "signature"


def test_environment_is_restored() -> None:
    # The helpers set CF_SIGN_KEY only while signing.
    import os

    with environ({"CF_SIGN_KEY": "x"}):
        assert os.environ["CF_SIGN_KEY"] == "x"
    assert "CF_SIGN_KEY" not in os.environ or os.environ["CF_SIGN_KEY"] != "x"
    assert run("--version") == 0


# ----------------------------------------------------------------------------- issue 9
# Each attack below is built for real; its control is the same setup without the one
# hostile detail, which verifies (so the attack fails for the reason under test).


def _forge_sidecar(world: World, pkg: Path, index: dict[str, Any], feedstock: str) -> None:
    """Sign `pkg` as if the reader had believed `index` (what the old reader did)."""
    from signer.artifacts import ArtifactInfo, hash_file
    from signer.feedstock.sign import build_sidecar

    sha, _, size = hash_file(pkg)
    info = ArtifactInfo(pkg, pkg.name, "conda", index, sha, size)
    data = build_sidecar(info, feedstock, world.key(feedstock), "https://example.org/cf", None)
    sidecar_of(pkg).write_bytes(data)


def _index(name: str, version: str) -> bytes:
    from signer.artifacts.build import make_index

    return json.dumps(make_index(name, version, "h0_0", subdir="linux-64")).encode()


def _build(world: World, name: str, version: str, out: Path | None = None, **kw: Any) -> Path:
    from signer.artifacts.build import build_package

    return build_package(out or world.base / "evil", name, version, "h0_0", subdir="linux-64", **kw)


def _evilpkg_world(world: World) -> None:
    entries = world.default_entries()
    entries["evil"]["outputs"].append("evilpkg")
    world.write_source(entries)
    assert world.publish() == 0


@pytest.mark.parametrize("fmt", ["conda", "tar.bz2"])
def test_two_index_json_first_numpy_last_evilpkg(
    world: World, cli: Callable[..., Any], fmt: str
) -> None:
    """Issue 9.1: conda-index reads the first info/index.json, extraction keeps the last."""
    from signer.artifacts.build import make_index

    _evilpkg_world(world)
    numpy = [("info/index.json", _index("numpy", "99.0"))]
    # .conda: numpy's copy first (what conda-index reads); .tar.bz2, the mirror image:
    # numpy's copy last, after the payload (what tar extraction keeps).
    where = {"info_before": numpy} if fmt == "conda" else {"info_after": numpy}
    pkg = _build(world, "evilpkg", "1.0", fmt=fmt, **where)
    with environ({"CF_SIGN_KEY": world.secrets["evil"]}):
        res = cli("sign", pkg, "--feedstock", "evil", "--key", "env:CF_SIGN_KEY")
    assert res.code == 2 and "duplicate member name" in res.err and "index.json" in res.err
    _forge_sidecar(world, pkg, make_index("evilpkg", "1.0", "h0_0", subdir="linux-64"), "evil")
    check, reason = failure(world, cli, pkg)
    assert check == "archive" and "info/index.json" in reason and "duplicate" in reason
    res = cli("repodata", "index", pkg.parent, "-o", world.base / "repodata.json")
    assert res.code == 2 and "duplicate member name" in res.err
    # Control: the same package with only evilpkg's index.json signs and verifies.
    honest = _build(world, "evilpkg", "1.0", fmt=fmt, out=world.base / "honest")
    assert world.sign(honest, "evil") == 0
    assert verdict(world, cli, honest)["ok"]


def test_index_json_spelled_twice_or_in_the_pkg_component(
    world: World, cli: Callable[..., Any]
) -> None:
    """Issue 9.1: `./info/index.json`, `info/INDEX.json` or a pkg-side copy are the same file."""
    from signer.artifacts.build import make_index

    _evilpkg_world(world)
    evil = make_index("evilpkg", "1.0", "h0_0", subdir="linux-64")
    cases = {
        "dot": {"info_before": [("./info/index.json", _index("numpy", "99.0"))]},
        "case": {"info_after": [("info/INDEX.json", _index("numpy", "99.0"))]},
        "pkg": {"files": {"info/index.json": _index("numpy", "99.0")}},
    }
    for label, extra in cases.items():
        pkg = _build(world, "evilpkg", "1.0", out=world.base / label, **extra)
        _forge_sidecar(world, pkg, evil, "evil")
        check, reason = failure(world, cli, pkg)
        assert check == "archive" and "index.json" in reason, (label, reason)


def test_duplicate_zip_entry(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.1: two zip entries of one name (zipfile reads the last, others the first)."""
    import warnings

    _evilpkg_world(world)
    pkg = _build(world, "evilpkg", "1.0")
    shadow = _build(world, "numpy", "99.0", out=world.base / "shadow")
    with zipfile.ZipFile(pkg) as good, zipfile.ZipFile(shadow) as bad:
        entries = [(i, good.read(i)) for i in good.infolist()]
        info_name = next(i.filename for i, _ in entries if i.filename.startswith("info-"))
        numpy_info = next(bad.read(i) for i in bad.infolist() if i.filename.startswith("info-"))
    evil = world.base / "zip" / pkg.name
    evil.parent.mkdir()
    with warnings.catch_warnings(), zipfile.ZipFile(evil, "w") as out:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        out.writestr(info_name, numpy_info)
        for info, data in entries:
            out.writestr(info, data)
    from signer.artifacts.build import make_index

    _forge_sidecar(world, evil, make_index("evilpkg", "1.0", "h0_0", subdir="linux-64"), "evil")
    check, reason = failure(world, cli, evil)
    assert check == "archive" and "duplicate zip entry" in reason
    assert world.sign(pkg, "evil") == 0 and verdict(world, cli, pkg)["ok"]  # control


def test_zip_entry_hidden_from_the_central_directory(world: World, cli: Callable[..., Any]) -> None:
    """Rule 7: a local entry the central directory does not list (a streaming extractor
    reads it, zipfile does not); also a local header naming another file."""
    from signer.artifacts.build import make_index

    _evilpkg_world(world)
    pkg = _build(world, "evilpkg", "1.0")
    shadow = _build(world, "numpy", "99.0", out=world.base / "shadow")
    with zipfile.ZipFile(pkg) as zf:
        info_entry = next(i for i in zf.infolist() if i.filename.startswith("info-"))
    with zipfile.ZipFile(shadow) as zf:
        numpy_info = next(zf.read(i) for i in zf.infolist() if i.filename.startswith("info-"))
    lone = world.base / "lone.zip"
    with zipfile.ZipFile(lone, "w") as out:
        out.writestr(info_entry.filename, numpy_info)
    with zipfile.ZipFile(lone) as zf:
        hidden = lone.read_bytes()[: zf.start_dir]  # local header + data, no directory
    original = pkg.read_bytes()
    evil = world.base / "hidden" / pkg.name
    evil.parent.mkdir()
    evil.write_bytes(hidden + original)  # zipfile still opens it (offsets shift)
    with zipfile.ZipFile(evil) as zf:
        assert zf.read(info_entry.filename) != numpy_info
    evil_index = make_index("evilpkg", "1.0", "h0_0", subdir="linux-64")
    _forge_sidecar(world, evil, evil_index, "evil")
    check, reason = failure(world, cli, evil)
    assert check == "archive" and "do not follow each other" in reason
    # A local header whose name differs from the central directory's.
    data = bytearray(original)
    at = info_entry.header_offset + 30
    data[at : at + 4] = b"pkg-"  # the local name now claims the pkg component
    evil.write_bytes(bytes(data))
    _forge_sidecar(world, evil, evil_index, "evil")
    check, reason = failure(world, cli, evil)
    assert check == "archive" and "local header" in reason
    assert world.sign(pkg, "evil") == 0 and verdict(world, cli, pkg)["ok"]  # control


def test_decompression_bomb_refused_before_any_signature_check(
    world: World, cli: Callable[..., Any]
) -> None:
    """Issue 9.8: an info component inflating past 64 MiB is refused while streaming."""
    import time

    from signer.artifacts.build import build_bomb_conda
    from signer.artifacts.reader import read_artifact
    from signer.trust.errors import FormatError

    bomb = build_bomb_conda(world.base / "bomb", "evil", 96 * 1024 * 1024)
    assert bomb.stat().st_size < 64 * 1024  # tiny on disk
    start = time.perf_counter()
    check, reason = failure(world, cli, bomb)  # unsigned too: the cap comes first
    assert check == "archive" and "cap" in reason
    assert time.perf_counter() - start < 10
    # The pkg component is capped too, relative to its compressed size (cap lowered here).
    pkg_bomb = build_bomb_conda(world.base / "pkgbomb", "evil", 32 * 1024 * 1024, component="pkg")
    with pytest.raises(FormatError, match="inflates past"):
        read_artifact(pkg_bomb, payload_floor=1024 * 1024)
    # Controls: under the default payload cap the same file reads (it is otherwise valid),
    # and a small info component of the same shape is accepted.
    assert read_artifact(pkg_bomb).name == "evil"
    small = build_bomb_conda(world.base / "small", "evil", 1024 * 1024)
    assert read_artifact(small).name == "evil"


def test_sidecar_for_another_subdirs_file_of_the_same_name(
    world: World, cli: Callable[..., Any]
) -> None:
    """Issue 9.7: zlib-1.2.11-h62dcd97_3.conda exists in win-32 and win-64 (other bytes)."""
    from signer.artifacts import read_artifact
    from signer.trust.attestation import verify_sidecar
    from signer.trust.errors import VerificationError
    from signer.trust.feedstocks import FeedstockDelegation

    win32 = world.build("zlib", "1.2.11", "h62dcd97_3", subdir="win-32")
    assert world.sign(win32, "numpy") == 0
    data = sidecar_of(win32).read_bytes()
    sha = read_artifact(win32).sha256
    delegation = FeedstockDelegation.of([world.key("numpy").public], 1, ("zlib",))
    # Posted (or served) as win-64's file with win-32's digest: refused for its subdir.
    with pytest.raises(VerificationError) as err:
        verify_sidecar(data, win32.name, sha, delegation, "s", subdir="win-64")
    assert err.value.check == "subdir" and "win-32" in err.value.reason
    # Control: the same sidecar for the subdir it was made for.
    assert verify_sidecar(data, win32.name, sha, delegation, "s", subdir="win-32").ok
    # The subdir is inside what is signed: editing it breaks the signature.
    doc = json.loads(data)
    import base64

    stmt = json.loads(base64.b64decode(doc["envelopes"][0]["payload"]))
    assert stmt["subject"][0]["annotations"] == {"subdir": "win-32"}
    stmt["subject"][0]["annotations"]["subdir"] = "win-64"
    doc["envelopes"][0]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    with pytest.raises(VerificationError) as err:
        verify_sidecar(json.dumps(doc).encode(), win32.name, sha, delegation, "s", subdir="win-64")
    assert err.value.check == "signature"


def test_one_corrupt_artifact_among_several(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.13: each artifact judged; a modified archive is a failure (1), not usage (2)."""
    good = signed_numpy(world, "1.0")
    bad = signed_numpy(world, "1.1")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64  # breaks the zip/zstd
    bad.write_bytes(bytes(data))
    res = cli(*world.verify_args(bad, good), "--json")
    verdicts = {v["artifact"]: v for v in json.loads(res.out)}
    assert res.code == 1
    assert verdicts[good.name]["ok"]
    assert not verdicts[bad.name]["ok"] and verdicts[bad.name]["check"] in ("archive", "digest")
    res = cli(*world.verify_args(world.base / "bld"))
    assert res.code == 2 and "is a directory" in res.err


def _ecdsa(world: World, name: str) -> tuple[KeyHandle, str]:
    """An ECDSA P-256 feedstock key (as Azure Key Vault holds) and its PEM secret."""
    key_path, _, _ = generate_key(name, world.base / "extra-keys", "ecdsa-p256")
    handle = resolve_keyref(f"file:{key_path}")
    assert isinstance(handle, KeyHandle)
    return handle, key_path.read_text()


def _spellings(key: KeyHandle) -> list[dict[str, Any]]:
    pem = key.public.to_dict()["keyval"]["public"]
    assert pem.endswith("-----\n")
    forms = [pem, pem.rstrip("\n"), pem.replace("\n", "\r\n")]
    return [{"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": p}}
            for p in forms]  # fmt: skip


def _raw_keyid(key: dict[str, Any]) -> str:
    import hashlib

    from signer.trust.keys import olpc_canonical

    return hashlib.sha256(olpc_canonical(key).encode()).hexdigest()


def test_ecdsa_key_spellings_are_one_key(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.2: with and without the final newline, or with CRLF, it is the same key."""
    from signer.trust.keys import PublicKey

    key, _ = _ecdsa(world, "numpy-ecdsa")
    forms = _spellings(key)
    parsed = [PublicKey.from_dict(f, "k", "k") for f in forms]
    assert len({_raw_keyid(f) for f in forms}) == 3  # what the spellings used to give
    assert len({p.keyid for p in parsed}) == 1 and parsed[0].keyid == key.keyid
    # Threshold 2 with one key spelled twice: the publisher refuses ...
    entries = world.default_entries()
    entries["numpy"]["keys"] = forms[:2]
    entries["numpy"]["threshold"] = 2
    world.write_source(entries)
    assert world.publish() == 2
    # ... and registering it to two feedstocks too (CRLF for the second).
    entries = world.default_entries()
    entries["numpy"]["keys"] = [forms[0]]
    entries["evil"]["keys"] = [forms[2]]
    world.write_source(entries)
    res = cli("delegations", "publish", world.source, "--trust", world.trust,
              "--key", world.repo.keyref("key_mgr"))  # fmt: skip
    assert res.code == 2 and "belongs to one feedstock" in res.err
    # Control: two distinct ECDSA keys at threshold 2 publish.
    other, _ = _ecdsa(world, "numpy-ecdsa-2")
    entries = world.default_entries()
    entries["numpy"]["keys"] = [forms[1], other.public.to_dict()]
    entries["numpy"]["threshold"] = 2
    world.write_source(entries)
    assert world.publish() == 0


def test_ecdsa_key_listed_under_two_keyids_in_a_bin(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.2: a bin (as the old publisher wrote it) listing one key under two keyids."""
    import hashlib

    key, secret = _ecdsa(world, "numpy-ecdsa")
    other, other_secret = _ecdsa(world, "numpy-ecdsa-2")
    forms = _spellings(key)
    entries = world.default_entries()
    entries["numpy"]["keys"] = [forms[0], other.public.to_dict()]
    entries["numpy"]["threshold"] = 2
    world.write_source(entries)
    assert world.publish() == 0
    pkg = world.build("numpy")
    assert world.sign(pkg, "numpy", secret=secret) == 0
    doc = json.loads(sidecar_of(pkg).read_text())
    # The publish statement only: under CI (CI=true) `sign` adds a provenance envelope,
    # which the second key would have to sign too.
    doc["envelopes"] = doc["envelopes"][:1]
    sig = doc["envelopes"][0]["signatures"][0]
    km = world.repo.key_mgr_key
    assert km is not None
    numpy_bin = world.trust / bin_path(bin_id("numpy", 256))
    saved = numpy_bin.read_bytes(), (world.trust / INDEX_PATH).read_bytes()

    def forge(keys: dict[str, Any]) -> None:
        def edit(signed: dict[str, Any]) -> None:
            signed["delegations"]["numpy"]["keys"] = keys

        data = resign(numpy_bin, [km], edit)

        def relist(signed: dict[str, Any]) -> None:
            signed["shards"][bin_id("numpy", 256)]["sha256"] = hashlib.sha256(data).hexdigest()

        resign(world.trust / INDEX_PATH, [km], relist)

    # Attack: the same key under its normal keyid and its no-newline keyid, one signature
    # entry under each: once keys were spellings, this met threshold 2.
    forge({key.keyid: forms[0], _raw_keyid(forms[1]): forms[1]})
    doc["envelopes"][0]["signatures"] = [sig, {**sig, "keyid": _raw_keyid(forms[1])}]
    sidecar_of(pkg).write_text(json.dumps(doc))
    check, reason = failure(world, cli, pkg)
    assert check == "format" and "keyid does not match" in reason
    # Control: the genuine bin, with a second signature by the other key, verifies.
    numpy_bin.write_bytes(saved[0])
    (world.trust / INDEX_PATH).write_bytes(saved[1])
    second = world.base / "second"
    second.mkdir()
    shutil.copy(pkg, second / pkg.name)
    assert world.sign(second / pkg.name, "numpy", secret=other_secret) == 0
    theirs = json.loads(sidecar_of(second / pkg.name).read_text())
    doc["envelopes"][0]["signatures"] = [sig, theirs["envelopes"][0]["signatures"][0]]
    sidecar_of(pkg).write_text(json.dumps(doc))
    control = verdict(world, cli, pkg)
    assert control["ok"], control


# ----------------------------------------------------------------------------- repodata


def _signed_repodata(world: World, cli: Callable[..., Any]) -> tuple[Path, dict[str, Any]]:
    """A linux-64 repodata indexed from real packages and signed with the pkg_mgr key."""
    subdir = world.base / "channel" / "linux-64"
    world.build("numpy", "1.0", out=subdir)
    world.build("numpy", "1.1", fmt="tar.bz2", out=subdir)
    path = world.base / "repodata.json"
    assert cli("repodata", "index", subdir, "-o", path).code == 0
    assert cli("repodata", "sign", path, "--key", world.repo.keyref("pkg_mgr")).code == 0
    return path, json.loads(path.read_text())


def _repodata_verify(world: World, cli: Callable[..., Any], path: Path) -> Any:
    return cli("repodata", "verify", path, "--trust", world.trust, "--root", world.root,
               "--state-dir", world.state)  # fmt: skip


def test_repodata_with_two_packages_members(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.5: libmamba reads the first `packages`, most JSON parsers the last."""
    path, doc = _signed_repodata(world, cli)
    assert _repodata_verify(world, cli, path).code == 0  # control: as signed
    forged = dict(doc["packages"]["numpy-1.1-h0_0.tar.bz2"], depends=["evil"])
    text = path.read_text()
    body = json.dumps({"numpy-1.1-h0_0.tar.bz2": forged})
    path.write_text('{"packages": ' + body + "," + text.lstrip()[1:])  # unsigned one first
    res = _repodata_verify(world, cli, path)
    assert res.code == 2 and "duplicate key" in res.err and "packages" in res.err


def test_repodata_with_one_file_name_twice(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.5: the same file name twice inside `packages`, or within one record a key."""
    path, doc = _signed_repodata(world, cli)
    record = json.dumps(doc["packages"]["numpy-1.1-h0_0.tar.bz2"])
    evil = json.dumps(dict(doc["packages"]["numpy-1.1-h0_0.tar.bz2"], depends=["evil"]))
    text = path.read_text()
    key = '"numpy-1.1-h0_0.tar.bz2"'
    assert text.count(key) == 2  # once in packages, once in signatures
    doubled = text.replace(key + ":", f"{key}: {evil}, {key}:", 1)
    path.write_text(doubled)
    res = _repodata_verify(world, cli, path)
    assert res.code == 2 and "duplicate key" in res.err and "numpy-1.1" in res.err
    # A record holding `depends` twice (first the attacker's, last the signed one).
    path.write_text(text.replace('"depends":', '"depends": ["evil"], "depends":', 1))
    res = _repodata_verify(world, cli, path)
    assert res.code == 2 and "duplicate key" in res.err and "depends" in res.err
    path.write_text(text)  # control
    assert _repodata_verify(world, cli, path).code == 0 and record


def test_repodata_records_in_the_wrong_section_or_subdir(
    world: World, cli: Callable[..., Any]
) -> None:
    """Issue 9.5 / rule 13: suffix per section, one section per file, subdir = info.subdir."""
    path, doc = _signed_repodata(world, cli)
    cases: dict[str, Callable[[dict[str, Any]], None]] = {
        "section": lambda d: d["packages"].update(d["packages.conda"]),  # .conda in packages
        "subdir": lambda d: d["info"].update(subdir="win-64"),  # linux-64's, served as win-64
    }
    for check, mutate in cases.items():
        forged = json.loads(json.dumps(doc))
        mutate(forged)
        path.write_text(json.dumps(forged))
        res = cli("repodata", "verify", path, "--trust", world.trust, "--root", world.root,
                  "--state-dir", world.state, "--json")  # fmt: skip
        report = json.loads(res.out)
        assert res.code == 1, (check, res.out)
        assert check in {f["check"] for f in report["failures"]}, report
    path.write_text(json.dumps(doc))
    assert _repodata_verify(world, cli, path).code == 0  # control


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"{}", "info"), (b'{"info": {"subdir": "linux-64"}, "packages": {"\xff": {}}}', "UTF-8")],
)
def test_repodata_empty_or_not_utf8(
    world: World, cli: Callable[..., Any], content: bytes, needle: str
) -> None:
    """Issue 9.5/9.13: `{}` is not a verified repodata; non-UTF-8 bytes are a clean error."""
    path = world.base / "repodata.json"
    path.write_bytes(content)
    res = _repodata_verify(world, cli, path)
    assert res.code == 2 and len(res.err.splitlines()) == 1 and "Traceback" not in res.err
    assert str(path) in res.err and needle in res.err


# ----------------------------------------------------------------------------- fetching


class _Server:
    """A real local HTTP server whose handler is a function of the request path."""

    def __init__(self, handle: Callable[[Any], None]) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _drip(delay: float) -> Callable[[Any], None]:
    def handle(req: Any) -> None:
        import time

        body = b"x" * 40
        req.send_response(200)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        for byte in body:
            try:
                req.wfile.write(bytes([byte]))
                req.wfile.flush()
            except OSError:
                return  # the client hung up: what the deadline should make it do
            time.sleep(delay)

    return handle


def test_slow_retrieval_is_cut_off_at_one_deadline() -> None:
    """Issue 9.9 / rule 12: a byte every 0.5 s never trips a per-read timeout."""
    import time

    from signer.fetch import HttpSource
    from signer.trust.errors import VerificationError

    with _Server(_drip(0.5)) as server:
        source = HttpSource(server.url, timeout=1.5)
        start = time.monotonic()
        with pytest.raises(VerificationError) as err:
            source.fetch("key_mgr.json", 1024)
        assert time.monotonic() - start < 4
        assert err.value.check == "fetch" and "deadline" in err.value.reason
    # Control: the same 40 bytes, sent at once (or slowly but within the deadline), fetch.
    with _Server(_drip(0.0)) as server:
        assert HttpSource(server.url, timeout=1.5).fetch("key_mgr.json", 1024) == b"x" * 40
    with _Server(_drip(0.01)) as server:
        assert HttpSource(server.url, timeout=5).fetch("key_mgr.json", 1024) == b"x" * 40


def test_redirects_stay_on_the_same_origin() -> None:
    """Rule 12: a redirect to another host (or port) is refused; within the origin, followed."""
    from signer.fetch import HttpSource
    from signer.trust.errors import VerificationError

    with _Server(_drip(0.0)) as other:

        def redirect(req: Any) -> None:
            if req.path.endswith("/moved.json"):
                return _drip(0.0)(req)
            target = req.path.replace("key_mgr", "moved") if "same" in req.path else other.url
            req.send_response(302)
            req.send_header("Location", target)
            req.send_header("Content-Length", "0")
            req.end_headers()

        with _Server(redirect) as server:
            with pytest.raises(VerificationError, match="redirect to another host"):
                HttpSource(server.url).fetch("key_mgr.json", 1024)
            assert HttpSource(server.url + "/same").fetch("key_mgr.json", 1024) == b"x" * 40


def test_fifo_in_the_trust_directory(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.9 / rule 12: opening a FIFO would wait for a writer forever."""
    import os
    import threading

    from signer.fetch import LocalSource
    from signer.trust.errors import VerificationError

    pkg = signed_numpy(world)
    target = world.trust / "key_mgr.json"
    saved = target.read_bytes()
    target.unlink()
    os.mkfifo(target)
    outcome: list[BaseException | bytes | None] = []

    def fetch() -> None:
        try:
            outcome.append(LocalSource(world.trust).fetch("key_mgr.json", 1024))
        except VerificationError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the hung open before failing the test
        with open(target, "wb"):
            pass
        pytest.fail("fetching a FIFO hung")
    (exc,) = outcome
    assert isinstance(exc, VerificationError) and "not a regular file" in exc.reason
    check, reason = failure(world, cli, pkg)
    assert check == "fetch" and "key_mgr.json" in reason
    target.unlink()
    target.write_bytes(saved)  # control
    control = verdict(world, cli, pkg)
    assert control["ok"], control


# ----------------------------------------------------------------------------- secrets


def test_secret_material_as_keyref_is_refused_unprinted(
    world: World, cli: Callable[..., Any]
) -> None:
    """Issue 9.10: `--key <64-hex seed>` or `--key "<PEM>"` must not print the secret."""
    pkg = world.build("numpy")
    _, pem = _ecdsa(world, "leaky")
    seed = world.secrets["numpy"]
    assert len(seed) == 64 or "PRIVATE KEY" in seed
    secrets = {
        "seed": seed,
        "file:seed": f"file:{seed}",
        "pem": pem,
        "pkcs11 pin": "pkcs11:token=t;object=k?pin-value=123456",
    }
    commands = [
        ["sign", pkg, "--feedstock", "numpy", "--key"],
        ["repodata", "sign", world.base / "missing.json", "--key"],
        ["repodata", "sign", world.base / "missing.json", "--key", "env:X", "--mamba-key"],
        ["keys", "import"],
        ["delegations", "publish", world.source, "--trust", world.trust, "--key"],
    ]
    for label, value in secrets.items():
        shown = value.strip().splitlines()[1] if "BEGIN" in value else value.split("=")[-1]
        for command in commands:
            res = cli(*command, value)
            assert res.code == 2, (label, command, res)
            assert shown not in res.out + res.err, (label, command)
            if command[0] == "sign":
                assert "not printed" in res.err or "not shown" in res.err, (label, res.err)
    # Control: the same seed through env:VAR signs.
    assert world.sign(pkg, "numpy") == 0


# ----------------------------------------------------------------------------- usage


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Any:
    """A directory nothing can be written to, even by root: a read-only tmpfs mount."""
    import os
    import subprocess

    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(target)],
                             capture_output=True).returncode == 0  # fmt: skip
    if not mounted:
        target.chmod(0o500)
        if os.access(target, os.W_OK):
            pytest.skip("cannot make a read-only directory here (no mount, running as root)")
    try:
        yield target
    finally:
        if mounted:
            subprocess.run(["umount", str(target)], check=False)


def test_read_only_output_directory_is_one_line(
    world: World, cli: Callable[..., Any], readonly_dir: Path
) -> None:
    """Issue 9.13: every writing command says which file it could not write, in one line."""
    pkg = signed_numpy(world)
    rd = world.base / "repodata.json"
    assert cli("repodata", "index", pkg.parent, "-o", rd).code == 0
    registry = world.base / "outputs" / "outputs" / "n" / "u" / "m"
    registry.mkdir(parents=True)
    (registry / "numpy.json").write_text('{"feedstocks": ["numpy"]}')
    ro = readonly_dir
    with environ({"CF_SIGN_KEY": world.secrets["numpy"]}):
        commands = [
            ["sign", pkg, "--feedstock", "numpy", "--key", "env:CF_SIGN_KEY", "--out-dir", ro],
            ["repodata", "index", pkg.parent, "-o", ro / "repodata.json"],
            ["repodata", "sign", rd, "--key", world.repo.keyref("pkg_mgr"), "-o", ro / "r.json"],
            ["keys", "generate", "k", "--dir", ro],
            ["delegations", "import-outputs", world.base / "outputs", "-o", ro / "d.json"],
            [*world.verify_args(pkg)[:-1], ro / "state"],
        ]
        for command in commands:
            res = cli(*command)
            assert res.code == 2, (command, res)
            assert len(res.err.strip().splitlines()) == 1 and str(ro) in res.err, (command, res)
            assert "Traceback" not in res.err
    # Control: the same commands with a writable directory succeed.
    assert cli("repodata", "index", pkg.parent, "-o", world.base / "ok.json").code == 0


def test_atomic_write_follows_a_symlink(
    world: World, cli: Callable[..., Any], cli_process: Callable[..., Any]
) -> None:
    """Issue 9.13: `-o LINK` writes the link's target and keeps the link."""
    pkg = signed_numpy(world)
    target = world.base / "real.json"
    target.write_text("old")
    link = world.base / "link.json"
    link.symlink_to(target)
    assert cli("repodata", "index", pkg.parent, "-o", link).code == 0
    assert link.is_symlink() and json.loads(target.read_text())["packages.conda"]
    # /dev/stdout (a symlink to the process's fd 1, here a pipe) is written through.
    res = cli_process("repodata", "index", str(pkg.parent), "-o", "/dev/stdout")
    assert res.code == 0, res.err
    assert json.loads(res.out.split("\nindexed ")[0])["info"]["subdir"] == "linux-64"
    assert Path("/dev/stdout").is_symlink()


def test_repodata_index_refuses_mislabelled_packages(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.13: a file name that disagrees with index.json; a --subdir the packages deny."""
    subdir = world.base / "channel" / "linux-64"
    pkg = world.build("numpy", "1.0", out=subdir)
    out = world.base / "repodata.json"
    res = cli("repodata", "index", subdir, "--subdir", "win-64", "-o", out)
    assert res.code == 2 and "'linux-64', not 'win-64'" in res.err and not out.exists()
    renamed = pkg.with_name("numpy-2.0-h0_0.conda")
    pkg.rename(renamed)
    res = cli("repodata", "index", subdir, "-o", out)
    assert res.code == 2 and "'2.0'" in res.err and not out.exists()
    renamed.rename(pkg)  # control
    assert cli("repodata", "index", subdir, "--subdir", "linux-64", "-o", out).code == 0


def test_feedstock_outputs_with_repository_names(world: World, cli: Callable[..., Any]) -> None:
    """Issue 9.13: the real registry says `"feedstocks": ["vouch-feedstock"]` in places."""
    registry = world.base / "feedstock-outputs"
    for name, feedstocks in {"vouch": ["vouch-feedstock"], "numpy": ["numpy"]}.items():
        path = registry / "outputs" / name[0] / name[1] / name[2] / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"feedstocks": feedstocks}))
    out = world.base / "imported.json"
    res = cli("delegations", "import-outputs", registry, "--keys-dir", world.fkeys, "-o", out)
    assert res.code == 0, res.err
    assert "normalised feedstock 'vouch-feedstock' to 'vouch'" in res.out
    source = json.loads(out.read_text())
    assert source["vouch"]["outputs"] == ["vouch"] and "vouch-feedstock" not in source
    res = cli("delegations", "publish", out, "--trust", world.trust,
              "--key", world.repo.keyref("key_mgr"))  # fmt: skip
    assert res.code == 0, res.err  # not all-or-nothing any more


@pytest.mark.parametrize("digits", ["２０３０", "٢٠٣٠"])
def test_expiration_with_non_ascii_digits(digits: str) -> None:
    """Issue 9.13 / rule 8: `\\d` matches fullwidth and Arabic-Indic digits; times must not."""
    from signer.trust.errors import FormatError
    from signer.trust.timefmt import parse_time

    with pytest.raises(FormatError, match="expected UTC time"):
        parse_time(f"{digits}-01-01T00:00:00Z", "doc", "expiration")
    assert parse_time("2030-01-01T00:00:00Z", "doc", "expiration").year == 2030  # control


def test_mirror_quarantines_two_index_json(tmp_path: Path, cli: Callable[..., Any]) -> None:
    """Issue 9.1 at the mirror: the archive reader is the same, so the evil .conda (attested
    by evil's key, channel-signed as evilpkg) is quarantined; the honest ones publish."""
    from test_mirror import SUBDIR, Upstream, _sub

    from signer.artifacts import ArtifactInfo, hash_file
    from signer.artifacts.build import build_package, make_index
    from signer.repodata.index import record_from_artifact

    up = Upstream(make_world(tmp_path), cli)
    _evilpkg_world(up.world)
    up.add("numpy")
    numpy = [("info/index.json", _index("numpy", "99.0"))]
    aside = build_package(tmp_path / "aside", "evilpkg", "1.0", "h0_0", subdir=SUBDIR,
                          info_before=numpy)  # fmt: skip
    up.publish(sign_all=True)  # the repodata without it (index refuses it), then add it:
    evil = up.dir / aside.name
    aside.rename(evil)
    sha, md5, size = hash_file(evil, md5=True)
    evil_index = make_index("evilpkg", "1.0", "h0_0", subdir=SUBDIR)
    info = ArtifactInfo(evil, evil.name, "conda", evil_index, sha, size, md5)
    repodata = up.dir / "repodata.json"
    doc = json.loads(repodata.read_text())
    doc["packages.conda"][evil.name] = record_from_artifact(info)
    doc.pop("signatures", None)
    repodata.write_text(json.dumps(doc, indent=2))
    res = cli("repodata", "sign", repodata, "--key", up.world.repo.keyref("pkg_mgr"))
    assert res.code == 0, res.err
    _forge_sidecar(up.world, evil, evil_index, "evil")
    (up.att / f"{evil.name}.sig.json").write_bytes(sidecar_of(evil).read_bytes())
    res = cli(*up.sync_args())
    assert res.code == 1, res.out + res.err
    sub = _sub(res.out)
    assert [q["file"] for q in sub["quarantined"]] == [evil.name]
    assert "duplicate" in sub["quarantined"][0]["reason"]
    assert evil.name not in up.published() and "numpy-1.0-h0_0.conda" in up.published()
