"""Offline signing events: `cf-sign ceremony propose|sign|status|assemble|verify`, for real.

File keys here (tokens and GnuPG in tests/test_ceremony_runbooks.py); the assembled roots
are checked by cf-sign's verifier and by conda-content-trust's own functions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.softhsm import cct_check

Cli = Callable[..., CliResult]


def gen(cli: Cli, d: Path, *names: str) -> dict[str, str]:
    out = {}
    for name in names:
        assert cli("keys", "generate", name, "--dir", d).code == 0
        out[name] = json.loads((d / f"{name}.pub").read_text())["keyval"]["public"]
    return out


def ref(d: Path, name: str) -> str:
    return f"file:{d / (name + '.key')}"


def initial_event(cli: Cli, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    pubs = gen(cli, tmp_path, "a", "b", "c", "km")
    event = tmp_path / "ev1"
    made = cli(
        "ceremony", "propose", "root",
        "--root-key", tmp_path / "a.pub", "--root-key", tmp_path / "b.pub",
        "--root-key", tmp_path / "c.pub", "--threshold", "2",
        "--key-mgr-key", tmp_path / "km.pub",
        "--holder", f"alice={tmp_path / 'a.pub'}", "--holder", f"bob={pubs['b']}",
        "--holder", f"carol={tmp_path / 'c.pub'}", "-o", event,
    )  # fmt: skip
    assert made.code == 0, made.err
    return event, pubs


def test_initial_root_2_of_3(cli: Cli, tmp_path: Path) -> None:
    event, pubs = initial_event(cli, tmp_path)
    # No terminal and no --yes: shown, nothing written.
    refused = cli("ceremony", "sign", event, "--key", ref(tmp_path, "a"))
    assert refused.code == 2 and "nothing written" in refused.err
    assert "root: 2 of 3" in refused.out and "(alice)" in refused.out
    assert list((event / "signatures").iterdir()) == []
    assert cli("ceremony", "sign", event, "--key", ref(tmp_path, "a"), "--yes").code == 0
    again = cli("ceremony", "sign", event, "--key", ref(tmp_path, "a"), "--yes")
    assert again.code == 2 and "already signed" in again.err
    status = cli("ceremony", "status", event, "--json")
    assert json.loads(status.out) == {
        "old": None, "new": {"valid": 1, "threshold": 2},
        "missing": [{"key": pubs["b"], "holder": "bob"}, {"key": pubs["c"], "holder": "carol"}],
    }  # fmt: skip
    text = cli("ceremony", "status", event)
    assert "new root: 1/2" in text.out and f"missing: {pubs['c']}  carol" in text.out
    out = tmp_path / "1.root.json"
    short = cli("ceremony", "assemble", event, "-o", out)
    assert short.code == 1 and "not met" in short.err and not out.exists()
    assert cli("ceremony", "sign", event, "--key", ref(tmp_path, "c"), "--yes").code == 0
    done = cli("ceremony", "assemble", event, "-o", out)
    assert done.code == 0, done.err
    doc = json.loads(out.read_text())
    assert set(doc["signatures"]) == {pubs["a"], pubs["c"]}
    assert all("other_headers" in s for s in doc["signatures"].values())
    assert cli("metadata", "verify", out).code == 0
    verdict = cct_check("root-self", out)
    assert verdict.returncode == 0, verdict.stderr
    data = out.read_bytes()
    twice = cli("ceremony", "assemble", event, "-o", out)
    assert twice.code == 2 and "never overwritten" in twice.err and out.read_bytes() == data
    verified = cli("ceremony", "verify", event, "--json")
    assert verified.code == 0 and json.loads(verified.out)["entries"] == 4


def test_rotation_needs_old_and_new_thresholds(cli: Cli, tmp_path: Path) -> None:
    event, pubs = initial_event(cli, tmp_path)
    for name in ("a", "b"):
        assert cli("ceremony", "sign", event, "--key", ref(tmp_path, name), "--yes").code == 0
    one = tmp_path / "1.root.json"
    assert cli("ceremony", "assemble", event, "-o", one).code == 0
    new = gen(cli, tmp_path, "a2", "b2", "dave")  # alice and bob get new keys, carol leaves
    rot = tmp_path / "ev2"
    made = cli(
        "ceremony", "propose", "root", "--from", one,
        "--root-key", tmp_path / "a2.pub", "--root-key", tmp_path / "b2.pub",
        "--root-key", tmp_path / "dave.pub",
        "--holder", f"alice={tmp_path / 'a.pub'}", "--holder", f"alice={tmp_path / 'a2.pub'}",
        "--holder", f"bob={tmp_path / 'b.pub'}", "--holder", f"bob={tmp_path / 'b2.pub'}",
        "--holder", f"dave={tmp_path / 'dave.pub'}", "-o", rot,
    )  # fmt: skip
    assert made.code == 0, made.err
    assert f"root key removed: {pubs['c'][:16]}" in made.out
    assert f"root key added:   {new['dave'][:16]}… (dave)" in made.out
    # A key in neither root is refused, nothing written.
    gen(cli, tmp_path, "mallory")
    stranger = cli("ceremony", "sign", rot, "--key", ref(tmp_path, "mallory"), "--yes")
    assert stranger.code == 2 and "neither root" in stranger.err
    assert list((rot / "signatures").iterdir()) == []
    # The new keys alone: the new threshold is met, the old is not.
    for name in ("a2", "b2"):
        assert cli("ceremony", "sign", rot, "--key", ref(tmp_path, name), "--yes").code == 0
    state = json.loads(cli("ceremony", "status", rot, "--json").out)
    assert state["old"] == {"valid": 0, "threshold": 2}
    assert state["new"] == {"valid": 2, "threshold": 2}
    two = tmp_path / "2.root.json"
    assert cli("ceremony", "assemble", rot, "-o", two).code == 1 and not two.exists()
    signed_old = cli("ceremony", "sign", rot, "--key", ref(tmp_path, "a"), "--yes")
    assert signed_old.code == 0 and "old root" in signed_old.out
    assert cli("ceremony", "assemble", rot, "-o", two).code == 1
    assert cli("ceremony", "sign", rot, "--key", ref(tmp_path, "b"), "--yes").code == 0
    text = cli("ceremony", "status", rot).out
    assert "old root: 2/2" in text and "new root: 2/2" in text
    # alice holds two keys, both signed; dave's one key has not.
    assert f"holder alice: {pubs['a'][:16]}… signed, {new['a2'][:16]}… signed" in text
    assert f"holder dave: {new['dave'][:16]}… MISSING" in text
    assert cli("ceremony", "assemble", rot, "-o", two).code == 0
    assert cli("metadata", "verify", two, "--trusted", one).code == 0
    verdict = cct_check("root-chain", one, two)
    assert verdict.returncode == 0, verdict.stderr


def test_transcript_tampering_is_detected(cli: Cli, tmp_path: Path) -> None:
    event, _ = initial_event(cli, tmp_path)
    assert cli("ceremony", "sign", event, "--key", ref(tmp_path, "a"), "--yes").code == 0
    assert cli("ceremony", "verify", event).code == 0  # control
    path = event / "transcript.jsonl"
    original = path.read_bytes()
    lines = original.split(b"\n")
    lines[0] = lines[0].replace(b'"root"', b'"rooT"', 1)
    path.write_bytes(b"\n".join(lines))
    broken = cli("ceremony", "verify", event)
    assert broken.code == 1 and "hash chain broken" in broken.err
    assert cli("ceremony", "sign", event, "--key", ref(tmp_path, "b"), "--yes").code == 1
    path.write_bytes(original)
    # A recorded signature file replaced afterwards.
    sig = next((event / "signatures").iterdir())
    obj = json.loads(sig.read_text())
    obj["made"] = "2000-01-01T00:00:00Z"
    sig.write_text(json.dumps(obj))
    changed = cli("ceremony", "verify", event)
    assert changed.code == 1 and "changed after it was recorded" in changed.err
    # The proposal edited after the event started.
    fresh = tmp_path / "ev-b"
    cli("keys", "generate", "z", "--dir", tmp_path)
    assert cli("ceremony", "propose", "root", "--root-key", tmp_path / "z.pub",
               "--key-mgr-key", tmp_path / "km.pub", "-o", fresh).code == 0  # fmt: skip
    proposal = json.loads((fresh / "proposed.json").read_text())
    proposal["signed"]["expiration"] = "2099-01-01T00:00:00Z"
    (fresh / "proposed.json").write_text(json.dumps(proposal))
    edited = cli("ceremony", "verify", fresh)
    assert edited.code == 1 and "proposed.json changed" in edited.err


def test_signature_carried_back_from_an_air_gapped_copy(cli: Cli, tmp_path: Path) -> None:
    event, pubs = initial_event(cli, tmp_path)
    offline = tmp_path / "usb-stick" / "ev1"
    shutil.copytree(event, offline)
    assert cli("ceremony", "sign", offline, "--key", ref(tmp_path, "b"), "--yes").code == 0
    carried = offline / "signatures" / f"{pubs['b']}.json"
    shutil.copy(carried, event / "signatures" / carried.name)
    state = json.loads(cli("ceremony", "status", event, "--json").out)
    assert state["new"]["valid"] == 1
    entries = [json.loads(x) for x in (event / "transcript.jsonl").read_text().splitlines()]
    assert [e["action"] for e in entries] == ["propose", "receive"]
    assert entries[1]["holder"] == "bob"
    assert cli("ceremony", "verify", event).code == 0
    # A signature made for another proposal counts for nothing.
    other = tmp_path / "ev-other"
    assert cli("ceremony", "propose", "root", "--root-key", tmp_path / "a.pub",
               "--root-key", tmp_path / "c.pub", "--key-mgr-key", tmp_path / "km.pub",
               "-o", other).code == 0  # fmt: skip
    assert cli("ceremony", "sign", other, "--key", ref(tmp_path, "c"), "--yes").code == 0
    foreign = other / "signatures" / f"{pubs['c']}.json"
    shutil.copy(foreign, event / "signatures" / foreign.name)
    text = cli("ceremony", "status", event).out
    assert "new root: 1/2" in text and "other bytes" in text


def test_key_mgr_event(cli: Cli, tmp_path: Path) -> None:
    event, pubs = initial_event(cli, tmp_path)
    for name in ("a", "b"):
        cli("ceremony", "sign", event, "--key", ref(tmp_path, name), "--yes")
    root = tmp_path / "1.root.json"
    assert cli("ceremony", "assemble", event, "-o", root).code == 0
    gen(cli, tmp_path, "pm")
    km_event = tmp_path / "km-event"
    made = cli("ceremony", "propose", "key_mgr", "--root", root,
               "--pkg-mgr-key", tmp_path / "pm.pub", "-o", km_event)  # fmt: skip
    assert made.code == 0, made.err
    root_key = cli("ceremony", "sign", km_event, "--key", ref(tmp_path, "a"), "--yes")
    assert root_key.code == 2 and "neither root" in root_key.err
    assert cli("ceremony", "sign", km_event, "--key", ref(tmp_path, "km"), "--yes").code == 0
    out = tmp_path / "key_mgr.json"
    assert cli("ceremony", "assemble", km_event, "-o", out).code == 0
    sig = json.loads(out.read_text())["signatures"][pubs["km"]]
    assert set(sig) == {"signature"}  # raw: conda rejects OpenPGP-style on key_mgr
    assert cli("metadata", "verify", out, "--trusted", root).code == 0
    verdict = cct_check("key_mgr", root, out)
    assert verdict.returncode == 0, verdict.stderr
    # key_mgr v2 from v1: the review shows the pkg_mgr key change against the current one.
    gen(cli, tmp_path, "pm2")
    km2 = tmp_path / "km-event-2"
    made = cli("ceremony", "propose", "key_mgr", "--root", root, "--from", out,
               "--pkg-mgr-key", tmp_path / "pm2.pub", "-o", km2)  # fmt: skip
    assert made.code == 0, made.err
    review = cli("ceremony", "sign", km2, "--key", ref(tmp_path, "km"))
    assert review.code == 2 and "version: 1 -> 2" in review.out
    pm2 = json.loads((tmp_path / "pm2.pub").read_text())["keyval"]["public"]
    assert f"pkg_mgr key added:   {pm2[:16]}" in review.out
    assert cli("ceremony", "verify", km2).code == 0


@pytest.mark.parametrize("answer", ["n", "y"])
def test_sign_asks_on_a_terminal(cli: Cli, tmp_path: Path, answer: str) -> None:
    event, _ = initial_event(cli, tmp_path)
    leader, follower = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signer.cli.main", "ceremony", "sign", str(event),
             "--key", ref(tmp_path, "a")],
            stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        os.write(leader, f"{answer}\n".encode())
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(leader)
        os.close(follower)
    assert "Sign this document? [y/N]" in out
    written = list((event / "signatures").iterdir())
    if answer == "y":
        assert proc.returncode == 0 and len(written) == 1, err
    else:
        assert proc.returncode == 2 and written == [] and "nothing written" in out


def test_bad_input_is_one_line_exit_2(cli: Cli, tmp_path: Path) -> None:
    event, _ = initial_event(cli, tmp_path)
    # An existing event is never overwritten.
    again = cli("ceremony", "propose", "root", "--root-key", tmp_path / "a.pub",
                "--key-mgr-key", tmp_path / "km.pub", "-o", event)  # fmt: skip
    assert again.code == 2 and "not overwriting" in again.err
    bad_holder = cli("ceremony", "propose", "root", "--root-key", tmp_path / "a.pub",
                     "--key-mgr-key", tmp_path / "km.pub", "--holder", "nobody",
                     "-o", tmp_path / "e2")  # fmt: skip
    assert bad_holder.code == 2 and "NAME=PUB" in bad_holder.err
    stray = cli("ceremony", "propose", "root", "--root-key", tmp_path / "a.pub",
                "--key-mgr-key", tmp_path / "km.pub", "--holder", f"x={tmp_path / 'b.pub'}",
                "-o", tmp_path / "e3")  # fmt: skip
    assert stray.code == 2 and "not a key that signs" in stray.err
    assert not (tmp_path / "e3").exists()
    missing = cli("ceremony", "status", tmp_path / "nowhere")
    assert missing.code == 2 and "not an event directory" in missing.err
    (event / "event.json").write_text("{")
    broken = cli("ceremony", "status", event)
    assert broken.code == 2 and "event.json" in broken.err and "Traceback" not in broken.err
    unknown = cli("keys", "import", "azurekms://vault/keys/k/1")
    assert unknown.code == 2 and "pkcs11:, gpg:, file: or env:" in unknown.err


def test_invalid_signature_file_is_listed_not_counted(cli: Cli, tmp_path: Path) -> None:
    event, pubs = initial_event(cli, tmp_path)
    assert cli("ceremony", "sign", event, "--key", ref(tmp_path, "a"), "--yes").code == 0
    sig = event / "signatures" / f"{pubs['a']}.json"
    obj = json.loads(sig.read_text())
    # The signature file claims key c but carries a's signature: refused, not counted.
    obj["key"] = pubs["c"]
    (event / "signatures" / f"{pubs['c']}.json").write_text(json.dumps(obj))
    state = cli("ceremony", "status", event)
    assert "new root: 1/2" in state.out and f"invalid: {pubs['c']}.json: bad signature" in state.out
