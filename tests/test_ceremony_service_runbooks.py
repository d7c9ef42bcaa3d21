"""Runbooks 04-06 against a real `cf-sign serve`: key_mgr rotation through a root signing
event and publish-root.sh, pkg_mgr overlap and retirement, feedstock key add and revoke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_service_support import World, database_for, make_world

from signer.keys import generate_key
from tests.conftest import REPO_ROOT
from tests.softhsm import cct_check

pytest_plugins = ("test_service_support",)
SCRIPTS = REPO_ROOT / "keys-ceremony" / "scripts"


def _script(env: dict[str, str], cwd: Path, name: str, *args: object) -> str:
    proc = subprocess.run(
        ["bash", str(SCRIPTS / name), *map(str, args)], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{name} {args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def sqlite_world(tmp_path: Path) -> World:
    return make_world(tmp_path, database_for("sqlite", tmp_path))


def test_online_key_and_feedstock_key_runbooks(sqlite_world: World, tmp_path: Path) -> None:
    world = sqlite_world
    server = world.server()
    try:
        keys = world.repo.keys_dir
        env = {
            **os.environ,
            "CF_SIGN": f"{sys.executable} -m signer.cli.main",
            "PYTHONPATH": str(REPO_ROOT),
            "SERVICE": server.url,
            "CF_SIGN_ADMIN_TOKEN": world.admin_token,
            "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        }
        env.pop("CF_SIGN_LIBMAMBA_JUDGE", None)
        # Runbook 04, key_mgr: a root rotation naming a new key_mgr key, then publish-root.sh.
        new_km, new_km_pub, _ = generate_key("key_mgr-2027", tmp_path / "online")
        env["KEY_MGR_PUB"] = str(new_km_pub)
        one = world.publish_dir / "1.root.json"
        _script(env, tmp_path, "root-rotation.sh", "propose", one, "event-2", "2",
                *(f"new:admin{i}={keys / f'root{i}.pub'}" for i in (1, 2, 3)))  # fmt: skip
        for i in (1, 2):
            subprocess.run(
                [sys.executable, "-m", "signer.cli.main", "ceremony", "sign", "event-2",
                 "--key", f"file:{keys / f'root{i}.key'}", "--yes"],
                cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        _script(env, tmp_path, "root-rotation.sh", "finish", one, "event-2", "out")
        two = tmp_path / "out" / "2.root.json"
        published = json.loads(_script(env, tmp_path, "publish-root.sh", two, f"file:{new_km}"))
        assert "2.root.json" in published["published"] and "key_mgr.json" in published["published"]
        assert httpx.get(f"{server.url}/trust/2.root.json").content == two.read_bytes()
        key_mgr = tmp_path / "key_mgr.json"
        key_mgr.write_bytes(httpx.get(f"{server.url}/trust/key_mgr.json").content)
        signers = set(json.loads(key_mgr.read_text())["signatures"])
        assert signers == {json.loads(new_km_pub.read_text())["keyval"]["public"]}
        verdict = cct_check("key_mgr", two, key_mgr)
        assert verdict.returncode == 0, verdict.stderr

        # Runbook 04, key_mgr with an overlap: root 3 delegates to both keys (threshold 1)
        # and is published with the current key; root 4 keeps only the newer key.
        newer_km, newer_km_pub, _ = generate_key("key_mgr-2028", tmp_path / "online")

        def root_event(name: str, previous: Path, *options: object) -> Path:
            cli = [sys.executable, "-m", "signer.cli.main"]
            subprocess.run([*cli, "ceremony", "propose", "root", "--from", previous, *options,
                            "-o", name], cwd=tmp_path, env=env, check=True,
                           capture_output=True, timeout=120)  # fmt: skip
            for i in (1, 2):
                subprocess.run([*cli, "ceremony", "sign", name, "--key",
                                f"file:{keys / f'root{i}.key'}", "--yes"], cwd=tmp_path,
                               env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
            _script(env, tmp_path, "root-rotation.sh", "finish", previous, name, "out")
            return (
                tmp_path
                / "out"
                / f"{json.loads(previous.read_text())['signed']['version'] + 1}.root.json"
            )

        three = root_event("event-3", two, "--key-mgr-key", new_km_pub,
                           "--key-mgr-key", newer_km_pub, "--key-mgr-threshold", "1")  # fmt: skip
        _script(env, tmp_path, "publish-root.sh", three)
        key_mgr.write_bytes(httpx.get(f"{server.url}/trust/key_mgr.json").content)
        assert cct_check("key_mgr", three, key_mgr).returncode == 0
        four = root_event("event-4", three, "--key-mgr-key", newer_km_pub)
        _script(env, tmp_path, "publish-root.sh", four, f"file:{newer_km}")
        key_mgr.write_bytes(httpx.get(f"{server.url}/trust/key_mgr.json").content)
        newer_hex = json.loads(newer_km_pub.read_text())["keyval"]["public"]
        assert set(json.loads(key_mgr.read_text())["signatures"]) == {newer_hex}
        verdict = cct_check("key_mgr", four, key_mgr)
        assert verdict.returncode == 0, verdict.stderr
        # Control: under root 2 (the old key only) the new key_mgr.json is refused.
        assert cct_check("key_mgr", two, key_mgr).returncode != 0

        # Runbook 04, pkg_mgr: overlap (old and new, threshold 1), then retirement.
        new_pm, new_pm_pub, _ = generate_key("pkg_mgr-2027", tmp_path / "online")
        old_pm = world.repo.keyref("pkg_mgr")

        def pkg_mgr_keys() -> list[str]:
            doc = httpx.get(f"{server.url}/trust/key_mgr.json").json()
            return sorted(doc["signed"]["delegations"]["pkg_mgr"]["pubkeys"])

        new_hex = json.loads(new_pm_pub.read_text())["keyval"]["public"]
        assert world.repo.pkg_mgr_key is not None
        old_hex = world.repo.pkg_mgr_key.public_key_hex
        _script(env, tmp_path, "pkg-mgr-keys.sh", "1", old_pm, f"file:{new_pm}")
        assert pkg_mgr_keys() == sorted([old_hex, new_hex])
        _script(env, tmp_path, "pkg-mgr-keys.sh", "1", f"file:{new_pm}")
        assert pkg_mgr_keys() == [new_hex]

        # Runbook 05: add a second key to a feedstock (overlap); 06: revoke the stolen one.
        _, first = world.feedstock_key("numpy")
        registered = httpx.post(
            f"{server.url}/v1/admin/feedstocks",
            json={"name": "numpy", "outputs": ["numpy"], "keys": [first]},
            headers={"Authorization": f"Bearer {world.registrar_token}"}, timeout=60,
        )  # fmt: skip
        assert registered.status_code == 201, registered.text
        old_keyid = registered.json()["feedstock"]["keys"][0]["keyid"]
        _, second_path, _ = generate_key("numpy-2027", tmp_path / "feedstock")
        _script(env, tmp_path, "feedstock-key.sh", "add", "numpy", second_path)
        shown = json.loads(_script(env, tmp_path, "feedstock-key.sh", "show", "numpy"))
        assert [k["revoked_at"] for k in shown["keys"]] == [None, None]
        _script(env, tmp_path, "feedstock-key.sh", "revoke", "numpy", old_keyid)
        shown = json.loads(_script(env, tmp_path, "feedstock-key.sh", "show", "numpy"))
        revoked = {k["keyid"]: k["revoked_at"] for k in shown["keys"]}
        assert revoked[old_keyid] is not None and list(revoked.values()).count(None) == 1
        # Control: a call the service refuses makes the script fail (exit 1), not pass.
        bad = subprocess.run(
            ["bash", str(SCRIPTS / "feedstock-key.sh"), "revoke", "numpy", old_keyid],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert bad.returncode == 1 and "HTTP 409" in bad.stderr
        assert world.admin_token not in bad.stdout + bad.stderr
    finally:
        server.stop()
