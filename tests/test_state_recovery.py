"""The verifier's state against its anchor (rule 10) and after a key compromise (rule 11).

Each attack has a control: the same forged setup with the one thing under test removed,
which must behave the other way, so the test fails for the reason it names.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from test_feedstock_support import World, make_world, resign, run

from signer.client import TrustSession
from signer.devrepo import make_dev_trust_repo
from signer.keys import KeyHandle, generate_key, load_key
from signer.trust.errors import VerificationError
from signer.trust.layout import INDEX, KEY_MGR, PKG_MGR, root_path
from signer.trust.metadata import Delegation, KeyMgr, Root, Signable
from signer.trust.signing import sign_envelope
from signer.trust.state import write_atomic
from signer.trust.timefmt import format_time, system_clock

STOLEN_VERSION = 10**9


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _new_key(world: World, name: str) -> KeyHandle:
    path, _, _ = generate_key(name, world.base / "newkeys")
    return load_key(f"file:{path}").artifact_signer()


def _times() -> tuple[str, str]:
    now = system_clock().replace(microsecond=0)
    return format_time(now), format_time(now + timedelta(days=30))


def _root(
    version: int, keys: list[KeyHandle], key_mgr: list[str], signers: list[KeyHandle]
) -> bytes:
    stamp, expires = _times()
    meta = Root(version, stamp, expires, {
        "root": Delegation(tuple(k.public_key_hex for k in keys), 2 if len(keys) > 1 else 1),
        "key_mgr": Delegation(tuple(key_mgr), 1),
    })  # fmt: skip
    envelope = Signable(meta.to_signed(), {}, root_path(version))
    for signer in signers:
        sign_envelope(envelope, signer.root_signer())
    return envelope.to_bytes()


def _key_mgr(version: int, pkg_mgr: list[str], signer: KeyHandle) -> bytes:
    stamp, expires = _times()
    meta = KeyMgr(version, stamp, expires, {"pkg_mgr": Delegation(tuple(pkg_mgr), 1)})
    envelope = Signable(meta.to_signed(), {}, KEY_MGR)
    sign_envelope(envelope, signer.channel_signer())
    return envelope.to_bytes()


def _session(world: World, *, root: bool = True) -> TrustSession:
    return TrustSession.open(world.trust, root=world.root if root else None, state_dir=world.state)


def _bump(version: int) -> object:
    def mutate(signed: dict[str, object]) -> None:
        signed["version"] = version

    return mutate


def _versions(world: World) -> dict[str, int]:
    data: dict[str, int] = json.loads((world.state / "versions.json").read_text())
    return data


# ----------------------------------------------------------------------------- rule 11


@pytest.mark.parametrize("legacy_state", [False, True])
def test_key_mgr_rotation_recovers_from_a_stolen_key_mgr_key(
    world: World, legacy_state: bool
) -> None:
    repo = world.repo
    assert repo.key_mgr_key is not None
    _session(world).delegation("numpy")
    # The attacker, holding the online key_mgr key, serves documents at a huge version.
    resign(world.trust / KEY_MGR, [repo.key_mgr_key], _bump(STOLEN_VERSION))
    resign(world.trust / INDEX, [repo.key_mgr_key], _bump(STOLEN_VERSION))
    _session(world).delegation("numpy")
    assert _versions(world)[KEY_MGR] == _versions(world)[INDEX] == STOLEN_VERSION
    if legacy_state:  # a state written before keys were recorded: the root step tells
        (world.state / "keys.json").unlink()

    # Recovery: root v2 moves key_mgr to a new key; everything it signs starts afresh.
    fresh = _new_key(world, "key_mgr2")
    write_atomic(world.trust / root_path(2),
                 _root(2, repo.root_keys, [fresh.public_key_hex], repo.root_keys[:2]))  # fmt: skip
    pkg = [k.public_key_hex for k in (repo.pkg_mgr_key, repo.mamba_key) if k is not None]
    write_atomic(world.trust / KEY_MGR, _key_mgr(1, pkg, fresh))
    shutil.rmtree(world.trust / "feedstocks")
    new_ref = f"file:{world.base / 'newkeys' / 'key_mgr2.key'}"
    publish = ("delegations", "publish", world.source, "--trust", world.trust, "--key", new_ref)
    assert run(*publish) == 0

    session = _session(world)
    assert session.root.meta.version == 2 and session.key_mgr.meta.version == 1
    assert session.delegation("numpy").index_version == 1
    assert _versions(world)[KEY_MGR] == 1


def test_control_same_key_mgr_keys_still_refuse_rollback(world: World) -> None:
    repo = world.repo
    assert repo.key_mgr_key is not None
    resign(world.trust / KEY_MGR, [repo.key_mgr_key], _bump(STOLEN_VERSION))
    _session(world).refresh()
    # A new root that keeps the key_mgr keys: the versions seen stay, rollback is refused.
    write_atomic(world.trust / root_path(2), _root(
        2, repo.root_keys, [repo.key_mgr_key.public_key_hex], repo.root_keys[:2]))  # fmt: skip
    pkg = [k.public_key_hex for k in (repo.pkg_mgr_key, repo.mamba_key) if k is not None]
    write_atomic(world.trust / KEY_MGR, _key_mgr(1, pkg, repo.key_mgr_key))
    with pytest.raises(VerificationError) as caught:
        _session(world).refresh()
    assert caught.value.check == "rollback" and caught.value.subject == KEY_MGR


@pytest.mark.parametrize("rotate", [True, False])
def test_pkg_mgr_rotation_recovers_from_a_stolen_pkg_mgr_key(world: World, rotate: bool) -> None:
    repo = world.repo
    assert repo.key_mgr_key is not None and repo.pkg_mgr_key is not None
    _session(world).refresh()
    resign(world.trust / PKG_MGR, [repo.pkg_mgr_key], _bump(STOLEN_VERSION))
    _session(world).refresh()
    assert _versions(world)[PKG_MGR] == STOLEN_VERSION
    # key_mgr v2: a new pkg_mgr key (or, the control, the same one); pkg_mgr.json v1.
    signer = _new_key(world, "pkg_mgr2") if rotate else repo.pkg_mgr_key
    keys = [signer.public_key_hex]
    if not rotate and repo.mamba_key is not None:
        keys.append(repo.mamba_key.public_key_hex)  # the very same key set as before
    write_atomic(world.trust / KEY_MGR, _key_mgr(2, keys, repo.key_mgr_key))
    resign(world.trust / PKG_MGR, [signer], _bump(1))
    if rotate:
        session = _session(world)
        assert session.pkg_mgr is not None and session.pkg_mgr.meta.version == 1
        assert _versions(world)[PKG_MGR] == 1
        assert _versions(world)[KEY_MGR] == 2  # key_mgr's own version is kept
    else:
        with pytest.raises(VerificationError) as caught:
            _session(world).refresh()
        assert caught.value.check == "rollback" and caught.value.subject == PKG_MGR


# ----------------------------------------------------------------------------- rule 10


def _planted(world: World) -> Path:
    """An attacker's repository and, planted in the victim's state, its root v5."""
    evil = make_dev_trust_repo(world.base / "evil", root_threshold=1, root_keys=1)
    assert evil.key_mgr_key is not None
    v5 = _root(5, evil.root_keys, [evil.key_mgr_key.public_key_hex], evil.root_keys)
    write_atomic(world.state / "root.json", v5)
    return evil.trust_dir


def test_a_planted_state_root_does_not_override_the_anchor(world: World) -> None:
    _session(world).refresh()  # the state exists, with the genuine root
    evil_trust = _planted(world)
    session = TrustSession.open(evil_trust, root=world.root, state_dir=world.state)
    with pytest.raises(VerificationError) as caught:
        session.refresh()  # from the given root, the attacker's key_mgr is not trusted
    assert caught.value.subject == KEY_MGR and caught.value.check == "signature"
    (notice,) = session.notices
    assert "does not chain from the given root v1" in notice and "ignored" in notice


def test_control_the_planted_root_is_otherwise_a_valid_anchor(world: World) -> None:
    evil_trust = _planted(world)
    session = TrustSession.open(evil_trust, root=None, state_dir=world.state)
    session.refresh()  # with no --root, the state's root is the anchor, and it verifies
    assert session.root.meta.version == 5 and not session.notices


def test_a_state_root_that_chains_from_the_anchor_is_used(world: World) -> None:
    repo = world.repo
    assert repo.key_mgr_key is not None
    write_atomic(world.trust / root_path(2), _root(
        2, repo.root_keys, [repo.key_mgr_key.public_key_hex], repo.root_keys[:2]))  # fmt: skip
    assert _session(world).root.meta.version == 2
    # The repository no longer serves 2.root.json (a lagging mirror): the state's own copy
    # of the chain proves v2 follows from the given v1.
    (world.trust / root_path(2)).unlink()
    session = _session(world)
    assert session.root.meta.version == 2 and not session.notices
    # The same-version root with other content is not "the same": ignored, and said so.
    other = _root(1, repo.root_keys, [repo.key_mgr_key.public_key_hex], repo.root_keys[:2])
    write_atomic(world.state / "root.json", other)
    shutil.rmtree(world.state / "roots")
    session = _session(world)
    assert session.root.meta.version == 1
    assert "different root of the same version" in session.notices[0]


def test_cli_tells_the_user_about_an_ignored_state_root(world: World, cli: object) -> None:
    pkg = world.build("numpy", "2.0", "h0_0")
    assert world.sign(pkg, "numpy") == 0
    _planted(world)
    res = cli(*world.verify_args(pkg))  # type: ignore[operator]
    assert res.code == 0 and res.out.startswith("OK")
    assert "note:" in res.err and "does not chain" in res.err
    # The state now follows the anchor: nothing to tell the next time.
    res = cli(*world.verify_args(pkg))  # type: ignore[operator]
    assert res.code == 0 and "note:" not in res.err
