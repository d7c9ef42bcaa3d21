"""Online root signing events (`/v1/admin/signing-events`) and `cf-sign ceremony push`,
against a real `cf-sign serve` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from test_service_support import World

from signer.keys import KeyHandle, generate_key, resolve_keyref
from signer.trust.canonical import canonical_bytes
from signer.trust.signing import make_signature
from tests.softhsm import cct_check

pytest_plugins = ("test_service_support",)  # fixtures: world (per database)


def _cf_sign(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer.cli.main", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_online_event_from_pushed_offline_signatures(world: World, tmp_path: Path) -> None:
    server = world.server()
    keys = world.repo.keys_dir
    env = {**os.environ, "CF_SIGN_ADMIN_TOKEN": world.admin_token,
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}  # fmt: skip
    admin = {"Authorization": f"Bearer {world.admin_token}"}
    api = f"{server.url}/v1/admin/signing-events"
    one = world.publish_dir / "1.root.json"
    new_key, new_pub, _ = generate_key("root4", tmp_path)
    event = tmp_path / "event-2"
    made = _cf_sign(
        env, "ceremony", "propose", "root", "--from", one,
        "--root-key", keys / "root1.pub", "--root-key", keys / "root2.pub",
        "--root-key", new_pub, "--threshold", "2", "--holder", f"dora={new_pub}", "-o", event,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    def sign(keyref: str) -> None:
        done = _cf_sign(env, "ceremony", "sign", event, "--key", keyref, "--yes")
        assert done.returncode == 0, done.stderr

    def push() -> dict[str, object]:
        pushed = _cf_sign(env, "ceremony", "push", event, "--service", server.url, "--json")
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        return dict(json.loads(pushed.stdout))

    sign(f"file:{keys / 'root1.key'}")
    first = push()
    state = first["status"]
    assert isinstance(state, dict)
    assert state["old"] == {"valid": 1, "threshold": 2} and state["new"]["valid"] == 1
    sign(f"file:{new_key}")
    second = push()
    assert second["event"] == first["event"]  # the same online event
    event_id = first["event"]
    state = httpx.get(f"{api}/{event_id}", headers=admin).json()
    assert state["old"]["valid"] == 1 and state["new"]["valid"] == 2
    assert {"key": json.loads(new_pub.read_text())["keyval"]["public"], "holder": "dora"} \
        not in state["missing"]  # fmt: skip
    # Below the old root's threshold: not published.
    early = httpx.post(f"{api}/{event_id}/publish", headers=admin, timeout=60)
    assert early.status_code == 409 and early.json()["error"] == "threshold_not_met"
    assert httpx.get(f"{server.url}/trust/2.root.json").status_code == 404

    # Attack: a valid signature by a key in neither root is refused; control: by root2 it is
    # accepted (below). A bad signature and a raw one are refused too.
    proposed = json.loads((event / "proposed.json").read_text())
    message = canonical_bytes(proposed["signed"])
    stranger = resolve_keyref(f"file:{generate_key('stranger', tmp_path)[0]}")
    assert isinstance(stranger, KeyHandle)
    forged = make_signature(stranger, message, openpgp=True)
    refused = httpx.post(f"{api}/{event_id}/signatures", headers=admin, timeout=60, json={
        "key": stranger.public_key_hex, "signature": forged.to_dict()})  # fmt: skip
    assert refused.status_code == 409 and refused.json()["error"] == "not_a_root_key"
    root2 = resolve_keyref(f"file:{keys / 'root2.key'}")
    assert isinstance(root2, KeyHandle)
    raw = make_signature(root2, message, openpgp=False)
    assert httpx.post(f"{api}/{event_id}/signatures", headers=admin, timeout=60, json={
        "key": root2.public_key_hex, "signature": raw.to_dict()}).status_code == 400  # fmt: skip
    wrong = make_signature(root2, message + b" ", openpgp=True)
    assert httpx.post(f"{api}/{event_id}/signatures", headers=admin, timeout=60, json={
        "key": root2.public_key_hex, "signature": wrong.to_dict()}).status_code == 400  # fmt: skip
    registrar = {"Authorization": f"Bearer {world.registrar_token}"}
    assert httpx.get(f"{api}/{event_id}", headers=registrar).status_code == 403

    sign(f"file:{keys / 'root2.key'}")
    assert push()["added"] == [root2.public_key_hex]
    published = httpx.post(f"{api}/{event_id}/publish", headers=admin, timeout=60)
    assert published.status_code == 200, published.text
    assert published.json()["event"]["state"] == "published"
    two = tmp_path / "2.root.json"
    two.write_bytes(httpx.get(f"{server.url}/trust/2.root.json").content)
    checked = _cf_sign(env, "metadata", "verify", two, "--trusted", one)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verdict = cct_check("root-chain", one, two)
    assert verdict.returncode == 0, verdict.stderr
    again = httpx.post(f"{api}/{event_id}/publish", headers=admin, timeout=60)
    assert again.status_code == 409
    actions = [
        e["action"]
        for e in httpx.get(f"{server.url}/v1/admin/audit", headers=admin).json()["entries"]
    ]
    assert actions.count("signing_event.sign") == 3
    for action in ("signing_event.propose", "signing_event.publish", "root.publish"):
        assert action in actions
    pushes = [json.loads(x) for x in (event / "transcript.jsonl").read_text().splitlines()]
    assert [p["action"] for p in pushes].count("push") == 3
