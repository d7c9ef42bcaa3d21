"""`cf-sign channel sign`: records are signed only when their artifact is attested."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_feedstock_support import World, index_of, make_world, resign

from signer.channel import cache as cache_file
from signer.channel.document import split_strict
from signer.repodata.document import read_repodata
from signer.repodata.index import index_directory
from signer.repodata.profiles import conda_message, mamba_message
from signer.repodata.verify import verify_repodata
from signer.trust.ed25519 import verify_raw
from signer.trust.errors import FormatError
from signer.trust.metadata import parse_metadata

SUBDIR = "linux-64"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


class Channel:
    """A subdir of real packages, their attestations in the trust repository, a repodata."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pkgs = world.base / "channel" / SUBDIR
        self.att = world.trust / "attestations" / SUBDIR
        self.repodata = world.base / "repodata.json"
        self.out = world.base / "signed.json"

    def add(self, name: str, feedstock: str | None, version: str = "1.0",
            **kw: Any) -> Path:  # fmt: skip
        from signer.artifacts.build import build_package

        kw.setdefault("subdir", SUBDIR)
        pkg = build_package(self.pkgs, name, version, "h0_0", **kw)
        if feedstock is not None:
            assert self.world.sign(pkg, feedstock, "--out-dir", self.att) == 0
        return pkg

    def index(self, mutate: Callable[[dict[str, Any]], None] | None = None) -> None:
        doc = index_directory(self.pkgs, SUBDIR)
        if mutate is not None:
            mutate(doc)
        self.repodata.write_text(json.dumps(doc, indent=2, sort_keys=True))

    def args(self, *extra: object) -> list[object]:
        w = self.world
        return [
            "channel", "sign", self.repodata, "--trust", w.trust, "--root", w.root,
            "--state-dir", w.state, "--key", w.repo.keyref("pkg_mgr"),
            "--mamba-key", w.repo.keyref("pkg_mgr_mamba"), "-o", self.out, "--jobs", "1", *extra,
        ]  # fmt: skip


@pytest.fixture
def channel(world: World) -> Channel:
    ch = Channel(world)
    ch.add("numpy", "numpy")
    ch.add("numpy-base", "numpy")
    ch.add("libllvm17", "llvmdev", fmt="tar.bz2")
    ch.add("unsigned-pkg", None)
    ch.index()
    return ch


def _report(out: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(out)
    return data


def _pkg_mgr(world: World) -> Any:
    doc = parse_metadata((world.trust / "key_mgr.json").read_bytes(), "key_mgr.json", "key_mgr")
    return doc.meta.pkg_mgr_keys  # type: ignore[attr-defined]


def _signed_names(path: Path) -> set[str]:
    return set(json.loads(path.read_bytes()).get("signatures", {}))


def test_signs_only_attested_records_both_profiles(
    channel: Channel, world: World, cli: Callable[..., Any]
) -> None:
    res = cli(*channel.args("--json"))
    assert res.code == 0, res.err
    report = _report(res.out)
    assert set(report) == {"records", "signed", "unattested", "refused"}
    assert report["records"] == 4 and report["signed"] == 3
    assert report["unattested"] == ["unsigned-pkg-1.0-h0_0.conda"] and report["refused"] == []

    signed = json.loads(channel.out.read_bytes())
    assert set(signed["signatures"]) == {
        "numpy-1.0-h0_0.conda", "numpy-base-1.0-h0_0.conda", "libllvm17-1.0-h0_0.tar.bz2",
    }  # fmt: skip
    conda_hex = world.repo.pkg_mgr_key.public_key_hex  # type: ignore[union-attr]
    mamba_hex = world.repo.mamba_key.public_key_hex  # type: ignore[union-attr]
    for section in ("packages", "packages.conda"):
        for name, record in signed[section].items():
            if name not in signed["signatures"]:
                continue
            sigs = signed["signatures"][name]
            assert verify_raw(bytes.fromhex(conda_hex), bytes.fromhex(sigs[conda_hex]["signature"]),
                              conda_message(record))  # fmt: skip
            assert verify_raw(bytes.fromhex(mamba_hex), bytes.fromhex(sigs[mamba_hex]["signature"]),
                              mamba_message(record))  # fmt: skip
    # The real verifier: three valid, one unsigned, nothing invalid.
    report2 = verify_repodata(read_repodata(channel.out), _pkg_mgr(world))
    assert (report2.valid, report2.unsigned, report2.invalid) == (3, 1, 0)
    # Records keep their bytes exactly as served.
    original = json.loads(channel.repodata.read_bytes())
    assert signed["packages.conda"] == original["packages.conda"]


def test_drop_and_require_all(channel: Channel, cli: Callable[..., Any]) -> None:
    res = cli(*channel.args("--unattested", "drop", "--json"))
    assert res.code == 0, res.err
    signed = json.loads(channel.out.read_bytes())
    assert "unsigned-pkg-1.0-h0_0.conda" not in signed["packages.conda"]
    assert len(signed["packages.conda"]) + len(signed["packages"]) == 3
    assert split_strict(channel.out.read_bytes(), "out").records  # still strict JSON

    channel.out.unlink()
    res = cli(*channel.args("--require-all"))
    assert res.code == 1 and "nothing written" in res.out
    assert not channel.out.exists()


def _refusals(cli: Callable[..., Any], channel: Channel) -> dict[str, tuple[str, str]]:
    res = cli(*channel.args("--json", "--no-cache"))
    assert res.code == 0, res.err
    report = _report(res.out)
    out = {r["file"]: (r["check"], r["reason"]) for r in report["refused"]}
    assert not set(out) & _signed_names(channel.out)  # a refused record is never signed
    return out


def test_bad_attestations_are_refused_with_the_check(world: World, cli: Callable[..., Any]) -> None:
    ch = Channel(world)
    good = ch.add("numpy", "numpy")
    # Malformed sidecar.
    ch.add("numpy-base", None)
    (ch.att / "numpy-base-1.0-h0_0.conda.sig.json").write_text('{"feedstock": "numpy"')
    # Another digest: the artifact was rebuilt after it was attested.
    ch.add("libnumpy-core", "numpy")
    ch.add("libnumpy-core", None, files={"other": b"changed"})
    # Another feedstock's key on numpy's name, under either hint.
    evil = ch.add("numpy", None, version="6.6.6")
    assert world.sign(evil, "evil", "--out-dir", ch.att) == 0
    spoof = ch.add("numpy", None, version="6.6.7")
    assert world.sign(spoof, "numpy", "--out-dir", ch.att, secret=world.secrets["evil"]) == 0
    # A record claiming another subdir than the channel's.
    ch.add("numpy", "numpy", version="2.0")

    def other_subdir(doc: dict[str, Any]) -> None:
        doc["packages.conda"]["numpy-2.0-h0_0.conda"]["subdir"] = "osx-64"

    ch.index(other_subdir)
    refused = _refusals(cli, ch)
    assert refused["numpy-base-1.0-h0_0.conda"][0] == "format"
    assert refused["libnumpy-core-1.0-h0_0.conda"][0] == "digest"
    assert refused["numpy-6.6.6-h0_0.conda"][0] == "scope"
    assert "evil" in refused["numpy-6.6.6-h0_0.conda"][1]
    assert refused["numpy-6.6.7-h0_0.conda"][0] == "signature"
    assert refused["numpy-2.0-h0_0.conda"][0] == "subdir"
    assert _signed_names(ch.out) == {good.name}  # control: the valid one is signed


def _revoke_numpy_key(world: World) -> None:
    """numpy's key replaced by a new one, the delegations published again."""
    from signer.keys import generate_key

    generate_key("numpy2", world.fkeys)
    entries = world.default_entries()
    entries["numpy"]["keys"] = ["keys/numpy2.pub"]
    world.write_source(entries)
    assert world.publish() == 0


def test_revoked_key_is_refused_even_when_cached(world: World, cli: Callable[..., Any]) -> None:
    ch = Channel(world)
    pkg = ch.add("numpy", "numpy")
    ch.index()
    res = cli(*ch.args("--json"))
    assert res.code == 0 and _report(res.out)["signed"] == 1
    # numpy's key is replaced (revoked): the delegation changes, the old sidecar no longer
    # meets it, and the cached verdict is not reused.
    _revoke_numpy_key(world)
    res = cli(*ch.args("--json"))
    assert res.code == 0
    report = _report(res.out)
    assert report["signed"] == 0
    assert report["refused"][0]["file"] == pkg.name and report["refused"][0]["check"] == "signature"


def test_cache_makes_reruns_skip_work_and_follows_changes(
    channel: Channel, world: World, cli: Callable[..., Any]
) -> None:
    assert cli(*channel.args()).code == 0
    first = channel.out.read_bytes()
    res = cli(*channel.args())
    assert res.code == 0 and "(3 unchanged since the last run)" in res.out, res.out
    assert channel.out.read_bytes() == first

    # A changed record is verified and signed again; the others come from the cache.
    def patch(doc: dict[str, Any]) -> None:
        doc["packages.conda"]["numpy-1.0-h0_0.conda"]["depends"] = ["python >=3.10"]

    channel.index(patch)
    res = cli(*channel.args())
    assert res.code == 0 and "(2 unchanged since the last run)" in res.out, res.out
    assert verify_repodata(read_repodata(channel.out), _pkg_mgr(world)).valid == 3

    # A withdrawn attestation: the cached signature is not reused.
    (channel.att / "numpy-base-1.0-h0_0.conda.sig.json").unlink()
    res = cli(*channel.args("--json"))
    assert res.code == 0
    assert _report(res.out)["unattested"] == [
        "numpy-base-1.0-h0_0.conda", "unsigned-pkg-1.0-h0_0.conda"
    ]  # fmt: skip
    assert "numpy-base-1.0-h0_0.conda" not in _signed_names(channel.out)


def _only_cache(world: World, suffix: str = ".cache") -> Path:
    """The one cache file (or, with suffix ".bins", the verified bins beside it)."""
    files = list((world.state / "channel-sign").glob(f"*{suffix}"))
    assert len(files) == 1
    return files[0]


def test_poisoned_cache_never_signs_an_unattested_record(
    channel: Channel, world: World, cli: Callable[..., Any]
) -> None:
    """Attack: a cache entry claiming the unattested record was verified, with valid
    signatures (taken from anywhere the key signed it), and a token matching a sidecar file
    planted for it. Without the pkg_mgr key its MAC cannot be made: the cache is ignored.
    Control: the same entry under the right MAC key is used, so the test can fail."""
    assert cli(*channel.args()).code == 0
    path = _only_cache(world)
    key = world.repo.pkg_mgr_key
    mamba = world.repo.mamba_key
    assert key is not None and mamba is not None
    subdir_scope = cache_file.scope_of(SUBDIR, str(world.trust), [key.public_key_hex],
                                       mamba.public_key_hex)  # fmt: skip
    entries, why = cache_file.load(path, cache_file.mac_key(key), subdir_scope)
    assert why is None and len(entries) == 3

    name = "unsigned-pkg-1.0-h0_0.conda"
    split = read_repodata(channel.repodata)
    item = next(r for r in split.records if r.filename == name)
    record = json.loads(bytes(item.raw))
    planted = channel.att / f"{name}.sig.json"
    shutil.copy(channel.att / "numpy-1.0-h0_0.conda.sig.json", planted)
    import hashlib
    import os

    st = os.stat(planted)
    token = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    donor = entries["numpy-1.0-h0_0.conda"]
    entries[name] = cache_file.Entry(
        hashlib.sha256(bytes(item.raw)).digest(), token, hashlib.sha256(planted.read_bytes())
        .digest(), "numpy", donor.fingerprint, (key.sign_message(conda_message(record)),),
        mamba.sign_message(mamba_message(record)),
    )  # fmt: skip

    cache_file.save(path, b"\x00" * 32, subdir_scope, entries)  # attacker's MAC key
    res = cli(*channel.args("--json"))
    assert res.code == 0
    assert name not in _signed_names(channel.out)
    assert {r["file"] for r in _report(res.out)["refused"]} == {name}  # planted sidecar: subject

    cache_file.save(path, cache_file.mac_key(key), subdir_scope, entries)  # control
    res = cli(*channel.args("--json"))
    assert name in _signed_names(channel.out)


def test_damaged_cache_costs_only_time(channel: Channel, world: World,
                                       cli: Callable[..., Any]) -> None:  # fmt: skip
    assert cli(*channel.args()).code == 0
    first = channel.out.read_bytes()
    path = _only_cache(world)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    res = cli(*channel.args())
    assert res.code == 0 and "(0 unchanged" in res.out and "MAC does not verify" in res.out
    assert channel.out.read_bytes() == first
    path.write_bytes(b"garbage")
    assert cli(*channel.args()).code == 0 and channel.out.read_bytes() == first


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"info": {"subdir": "linux-64"}, "packages": {}, "packages": {}}', "duplicate key"),
        (
            b'{"info": {"subdir": "linux-64"}, "packages.conda": {"a-1-0.conda": {"name": "a",'
            b' "name": "b"}}}',
            "duplicate key",
        ),
        (
            b'{"info": {"subdir": "linux-64"}, "packages.conda": {"a-1-0.conda": '
            b'{"name": "\xff"}}}',
            "not UTF-8",
        ),
        (b'{"info": {"subdir": "linux-64"}, "packages.conda": {"a-1-0.conda": {"na', "truncated"),
        (b'{"info": {"subdir": "linux-64"}, "packages": {"a-1-0.conda": {}}}', "end in .tar.bz2"),
    ],
)
def test_hostile_repodata_fails_cleanly_nothing_written(
    channel: Channel, cli: Callable[..., Any], content: bytes, why: str
) -> None:
    channel.repodata.write_bytes(content)
    res = cli(*channel.args())
    assert res.code == 2 and why in res.err and str(channel.repodata) in res.err, res.err
    assert "Traceback" not in res.err and not channel.out.exists()
    res = cli(*channel.args()[:-3], "--jobs", "1")  # in place: the input is left as it was
    assert res.code == 2 and channel.repodata.read_bytes() == content


def test_duplicate_in_a_big_section_is_found() -> None:
    records = {f"p{i}-1-0.conda": {"name": f"p{i}", "pad": "x" * 100} for i in range(20000)}
    body = json.dumps({"info": {"subdir": "noarch"}, "packages.conda": records}).encode()
    assert len(split_strict(body, "big").records) == 20000  # control
    dup = body.replace(b'"p5-1-0.conda"', b'"p4-1-0.conda"', 1)
    with pytest.raises(FormatError, match="duplicate key"):
        split_strict(dup, "big")


_REC = b'{"name": "a", "version": "1", "build": "0"}'


@pytest.mark.parametrize(
    ("level", "body"),
    [
        ("(top level)", b'"info": {"subdir": "noarch"}, "x\\b\xc3\xa9": 1, "x\\b\xc3\xa9": 2'),
        ("packages", b'"info": {"subdir": "noarch"}, "packages": {"a-1-0.tar.bz2": R, '
                     b'"a-1-0.tar.bz2": R}, "packages.conda": {"t\\tab\\n-1-0.conda": R}'),
        ("packages.conda", b'"info": {"subdir": "noarch"}, "packages.conda": {"a-1-0.conda": '
                           b'R, "\\"q\\"-1-0.conda": R, "a-1-0.conda": R}'),
        ("signatures", b'"info": {"subdir": "noarch"}, "packages.conda": {"a-1-0.conda": R}, '
                       b'"signatures": {"a-1-0.conda": {}, "a-1-0.conda": {"k": 1}}'),
    ],
)  # fmt: skip
def test_a_duplicate_at_any_level_is_named_whatever_the_other_levels_hold(
    level: str, body: bytes
) -> None:
    """The split counts the whole document and the leaves once and sums the per-object
    excesses, which are never negative: keys at other levels spelt with short escapes or
    raw UTF-8 (orjson's own, shortest spelling: no excess) cannot hide a duplicate.
    Control: the same document with the duplicate's first copy removed splits."""
    doc = b"{" + body.replace(b"R", _REC) + b"}"
    with pytest.raises(FormatError, match="duplicate key") as caught:
        split_strict(doc, "hostile")
    assert caught.value.field == level
    dup = {
        "(top level)": b'"x\\b\xc3\xa9": 1, ',
        "packages": b'"a-1-0.tar.bz2": R, ',
        "packages.conda": b'"a-1-0.conda": R, ',
        "signatures": b'"a-1-0.conda": {}, ',
    }[level]
    once = b"{" + body.replace(dup, b"", 1).replace(b"R", _REC) + b"}"
    assert split_strict(once, "control").top.keys() == json.loads(once).keys()


def test_needless_escapes_are_refused_and_shortest_spellings_pass() -> None:
    """A key spelt longer than its shortest form (`\\u0008` for `\\b`, `\\/`) is
    refused like a duplicate; the shortest forms, at every level, pass."""
    ok = (b'{"info": {"subdir": "noarch"}, "\\b\\f\\r\\u0001\xc3\xa9": 1, '
          b'"packages.conda": {"\\"x\\\\-1-0.conda": ' + _REC + b"}}")  # fmt: skip
    assert len(split_strict(ok, "ok").records) == 1
    for longer in (b'"\\u0008"', b'"\\/"', b'"\\u0061"'):
        bad = ok.replace(b'"info"', longer + b': 0, "info"')
        with pytest.raises(FormatError, match="duplicate key"):
            split_strict(bad, "escaped")


def test_key_not_delegated_is_refused(channel: Channel, world: World,
                                      cli: Callable[..., Any]) -> None:  # fmt: skip
    args = channel.args()
    args[args.index(world.repo.keyref("pkg_mgr"))] = world.repo.keyref("root1")
    res = cli(*args)
    assert res.code == 2 and "not delegated" in res.err and not channel.out.exists()


@pytest.fixture
def served_trust(world: World) -> Iterator[str]:
    handler = partial(_Quiet, directory=str(world.trust))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_attestations_over_http(channel: Channel, served_trust: str,
                                cli: Callable[..., Any]) -> None:  # fmt: skip
    res = cli(*channel.args("--attestations", served_trust, "--json"))
    assert res.code == 0, res.err
    assert _report(res.out)["signed"] == 3
    res = cli(*channel.args("--attestations", served_trust, "--json"))
    assert _report(res.out)["signed"] == 3  # from the cache, sidecars re-fetched and compared


def _fast_sidecars(world: World, records: dict[str, dict[str, Any]], feedstock: str) -> None:
    """Sidecars made with the core's pieces (as `cf-sign sign` makes them, minus the archive
    reading): thousands in a second."""
    import base64

    from signer.trust.attestation import (
        PAYLOAD_TYPE,
        pae,
        publish_statement,
        sidecar_file_bytes,
        statement_bytes,
    )

    key = world.key(feedstock)
    att = world.trust / "attestations" / SUBDIR
    att.mkdir(parents=True, exist_ok=True)
    for filename, record in records.items():
        payload = statement_bytes(
            publish_statement(filename, record["sha256"], "https://x.io/c", SUBDIR)
        )
        sig = key.sign_message(pae(PAYLOAD_TYPE, payload))
        signature = {"keyid": key.keyid, "sig": base64.b64encode(sig).decode()}
        envelope = {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                    "signatures": [signature]}  # fmt: skip
        sidecar = {"envelopes": [envelope], "feedstock": feedstock}
        (att / f"{filename}.sig.json").write_bytes(sidecar_file_bytes(sidecar))


def test_forked_workers_give_the_same_document(world: World, cli: Callable[..., Any]) -> None:
    import hashlib

    records = {
        f"libnumpy{i}-1.0-h0_0.conda": {
            "build": "h0_0", "build_number": 0, "depends": [], "license": "MIT",
            "md5": "0" * 32, "name": f"libnumpy{i}", "size": 100 + i, "subdir": SUBDIR,
            "sha256": hashlib.sha256(str(i).encode()).hexdigest(), "timestamp": 1, "version": "1.0",
        }
        for i in range(4200)
    }  # fmt: skip
    _fast_sidecars(world, dict(list(records.items())[:4000]), "numpy")
    ch = Channel(world)
    doc = {"info": {"subdir": SUBDIR}, "packages": {}, "packages.conda": records}
    ch.repodata.write_text(json.dumps(doc))
    args = ch.args("--json", "--no-cache")
    res = cli(*args)
    assert res.code == 0, res.err
    one = ch.out.read_bytes()
    assert _report(res.out)["signed"] == 4000 and len(_report(res.out)["unattested"]) == 200
    args[args.index("--jobs") + 1] = "2"
    res = cli(*args)
    assert res.code == 0 and ch.out.read_bytes() == one
    # A hostile record found by a worker: exit 2, nothing written.
    ch.out.unlink()
    ch.repodata.write_text(json.dumps(doc)[:-3] + ', "x": 1, "x": 2}}}')
    res = cli(*args)
    assert res.code == 2 and "duplicate key" in res.err and not ch.out.exists(), res.err


def test_cache_file_keeps_entries_exactly(tmp_path: Path) -> None:
    """The packed format (version 2) gives back what was saved: tokens or none, a mamba
    signature or none, entries of several feedstocks sharing rows; rows no entry uses are
    not written."""
    import os

    def entry(feedstock: str, token: tuple[int, ...] | None, mamba: bool) -> cache_file.Entry:
        return cache_file.Entry(
            os.urandom(32), token, os.urandom(32), feedstock, bytes([len(feedstock)]) * 32,
            (os.urandom(64), os.urandom(64)), os.urandom(64) if mamba else None,
        )  # fmt: skip

    entries = {"a-1-0.conda": entry("fa", (1, 2, 3, -4, 5), True),
               "b-1-0.conda": entry("fa", None, False),
               "c-1-0.conda": entry("fbb", (7, 8, 9, 10, 11), True)}  # fmt: skip
    path, key, scope = tmp_path / "x.cache", b"k" * 32, b"s" * 32
    cache_file.save(path, key, scope, entries)
    assert cache_file.load(path, key, scope) == (entries, None)
    cache, _ = cache_file.read(path, key, scope)
    assert len(cache.rows) == 2
    del cache.entries["c-1-0.conda"]
    cache_file.write(path, key, scope, cache)
    again, _ = cache_file.read(path, key, scope)
    assert again.rows == [cache_file.Row("fa", b"\x02" * 32)]
    assert {n: again.unpack(b) for n, b in again.entries.items()} == {
        n: e for n, e in entries.items() if n != "c-1-0.conda"
    }
    assert (
        cache_file.load(path, b"j" * 32, scope)[1]
        == "MAC does not verify (other keys, or modified)"
    )


def _bin_files(world: World) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (world.trust / "feedstocks").glob("*.json")
            if p.name != "index.json"}  # fmt: skip


def test_verified_bins_are_kept_between_runs_under_the_mac(
    channel: Channel, world: World, cli: Callable[..., Any]
) -> None:
    """The bins a run verified are kept beside the cache. Control: with every bin file gone
    from the trust repository (the index, fetched and verified again, unchanged) a re-run
    still signs, so the kept bins are what it used. Attack: the same file with one byte
    flipped (bad MAC) is ignored, and the missing bins then refuse every record."""
    assert cli(*channel.args()).code == 0
    first = channel.out.read_bytes()
    kept = _only_cache(world, ".bins")
    bins = _bin_files(world)
    for path in bins:
        path.unlink()

    res = cli(*channel.args("--json"))  # control: the kept bins are used
    assert res.code == 0 and _report(res.out)["signed"] == 3, res.out
    assert channel.out.read_bytes() == first

    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 1
    kept.write_bytes(bytes(data))
    res = cli(*channel.args("--json"))
    assert res.code == 0
    report = _report(res.out)
    assert report["signed"] == 0 and {r["check"] for r in report["refused"]} == {"missing"}
    assert not _signed_names(channel.out)


def test_a_kept_bin_the_index_no_longer_pins_is_not_used(
    channel: Channel, world: World, cli: Callable[..., Any]
) -> None:
    """Attack: numpy's key is revoked after a run kept numpy's bin (under the right MAC,
    with the old key, which would accept the old sidecar). The new index pins the bin's new
    sha256, so the kept one no longer counts: numpy's records are refused. Control: another
    feedstock's records are still signed from the same kept file."""
    from signer.trust.feedstocks import bin_id

    assert cli(*channel.args()).code == 0
    _revoke_numpy_key(world)
    res = cli(*channel.args("--json"))
    assert res.code == 0
    report = _report(res.out)
    refused = {r["file"]: r["check"] for r in report["refused"]}
    assert refused == {"numpy-1.0-h0_0.conda": "signature",
                       "numpy-base-1.0-h0_0.conda": "signature"}  # fmt: skip
    bins = index_of(world)["bins"]
    if bin_id("llvmdev", bins) != bin_id("numpy", bins):
        assert _signed_names(channel.out) == {"libllvm17-1.0-h0_0.tar.bz2"}  # control


def test_a_kept_bin_is_refused_once_expired(
    channel: Channel, world: World, cli: Callable[..., Any]
) -> None:
    """Attack: a kept bin past its expiry, the index re-signed to outlive it and the bin
    files gone from the trust repository (only the kept copies remain): refused, check
    `expired`. Control: the same run a day before the bin's expiry signs everything."""
    from datetime import timedelta

    from signer.trust.timefmt import format_time, parse_time

    assert cli(*channel.args()).code == 0
    expiry = max(json.loads(b)["signed"]["expiration"] for b in _bin_files(world).values())
    expires = parse_time(expiry, "test", "expiration")
    index = world.trust / "feedstocks" / "index.json"
    key_mgr = world.repo.key_mgr_key
    assert key_mgr is not None

    def outlive(signed: dict[str, Any]) -> None:
        signed["expiration"] = format_time(expires + timedelta(days=100))
        signed["version"] += 1

    resign(index, [key_mgr], outlive)
    for path in _bin_files(world):
        path.unlink()
    before = format_time(expires - timedelta(days=1))
    res = cli(*channel.args("--json", "--at", before))
    assert res.code == 0 and _report(res.out)["signed"] == 3, res.out  # control
    after = format_time(expires + timedelta(days=1))
    res = cli(*channel.args("--json", "--at", after))
    assert res.code == 0
    report = _report(res.out)
    assert report["signed"] == 0, report
    assert {r["check"] for r in report["refused"]} == {"expired"}, report


def test_a_cached_rerun_of_its_own_output_keeps_other_keys_signatures(
    channel: Channel, world: World, cli: Callable[..., Any]
) -> None:
    """Signing the signed document again, every record from the cache: the same bytes,
    except that another key's signature entry on one record (co-signing) is kept beside
    ours, and the document still verifies."""
    assert cli(*channel.args()).code == 0
    signed = channel.out.read_bytes()
    channel.repodata.write_bytes(signed)
    res = cli(*channel.args())
    assert res.code == 0 and "(3 unchanged since the last run)" in res.out, res.out
    assert channel.out.read_bytes() == signed
    other = {"signature": "ab" * 64}
    at = b'"numpy-1.0-h0_0.conda":{'  # in the compact signatures member only
    assert signed.count(at) == 1
    cosigned = f'"{"cd" * 32}":{json.dumps(other)},'.encode()
    channel.repodata.write_bytes(signed.replace(at, at + cosigned))  # records' bytes as they were
    res = cli(*channel.args())
    assert res.code == 0 and "(3 unchanged since the last run)" in res.out, res.out
    again = json.loads(channel.out.read_bytes())
    assert again["signatures"]["numpy-1.0-h0_0.conda"]["cd" * 32] == other
    del again["signatures"]["numpy-1.0-h0_0.conda"]["cd" * 32]
    assert again == json.loads(signed)
    assert verify_repodata(read_repodata(channel.out), _pkg_mgr(world)).valid == 3
