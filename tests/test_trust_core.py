"""The trust core on generated keys: formats, signatures, thresholds, chain, state."""

from __future__ import annotations

import json
import random
import string
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from signer.trust import (
    Delegation,
    ExpiredError,
    FormatError,
    KeyMgr,
    RollbackError,
    Root,
    Signable,
    ThresholdError,
    TrustState,
    VerificationError,
    canonical_bytes,
    check_not_expired,
    envelope_signer,
    parse_metadata,
    sign_envelope,
    verify_root_update,
    verify_threshold,
)
from signer.trust.canonical import canonical_bytes_fast
from signer.trust.ed25519 import keypair_from_seed, sign_raw, verify_openpgp, verify_raw
from signer.trust.repository import choose_anchor, load_key_mgr, update_root
from signer.trust.timefmt import parse_time

NOW = parse_time("2030-01-01T00:00:00Z", "t", "t")


class SeedSigner:
    """A MessageSigner over a raw seed (the core's protocol, no securesystemslib)."""

    def __init__(self, n: int) -> None:
        self.public, self.secret = keypair_from_seed(bytes([n]) * 32)

    @property
    def public_key_hex(self) -> str:
        return self.public.hex()

    def sign_message(self, message: bytes) -> bytes:
        return sign_raw(self.secret, message)


KEYS = [SeedSigner(i) for i in range(1, 8)]


def make_root(
    version: int,
    keys: list[SeedSigner],
    threshold: int,
    signers: list[SeedSigner],
    expires: str = "2031-01-01T00:00:00Z",
    openpgp: bool = True,
) -> bytes:
    meta = Root(version, "2029-01-01T00:00:00Z", expires, {
        "root": Delegation(tuple(k.public_key_hex for k in keys), threshold),
        "key_mgr": Delegation((KEYS[6].public_key_hex,), 1),
    })  # fmt: skip
    env = Signable(meta.to_signed(), {}, "root")
    for s in signers:
        sign_envelope(env, envelope_signer(s, openpgp=openpgp))
    return env.to_bytes()


def make_key_mgr(
    version: int,
    signer: SeedSigner = KEYS[6],
    expires: str = "2031-01-01T00:00:00Z",
    openpgp: bool = False,
) -> bytes:
    meta = KeyMgr(
        version,
        "2029-01-01T00:00:00Z",
        expires,
        {"pkg_mgr": Delegation((KEYS[5].public_key_hex,), 1)},
    )
    env = Signable(meta.to_signed(), {}, "key_mgr")
    sign_envelope(env, envelope_signer(signer, openpgp=openpgp))
    return env.to_bytes()


# ---------------------------------------------------------------- canonical bytes


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return rng.randrange(-(2**70), 2**70)
    if kind == 1:
        alphabet = string.printable + "éü中\u2028\x00\x7f"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind == 2:
        return rng.choice([True, False, None, 1.5, 1e-05, 1e16, 0.1])
    if kind == 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["".join(rng.choice("abcé_Z") for _ in range(rng.randrange(1, 5))) for _ in range(4)]
    return {k: _random_value(rng, depth + 1) for k in keys}


def test_canonical_bytes_match_reference_on_random_values() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        value = {"r": _random_value(rng)}
        assert canonical_bytes_fast(value) == canonical_bytes(value)


def test_canonical_bytes_exact_shape() -> None:
    assert canonical_bytes({"b": [1, "é"], "a": {}}) == (
        b'{\n  "a": {},\n  "b": [\n    1,\n    "\\u00e9"\n  ]\n}'
    )


# ---------------------------------------------------------------- signatures


def test_raw_and_openpgp_signatures_verify_and_fail_on_tamper() -> None:
    key = KEYS[0]
    env = Signable({"x": 1}, {}, "doc")
    raw = sign_envelope(env, envelope_signer(key, openpgp=False))
    assert verify_raw(key.public, bytes.fromhex(raw.signature), env.canonical)
    assert not verify_raw(key.public, bytes.fromhex(raw.signature), env.canonical + b" ")
    pgp = sign_envelope(env, envelope_signer(key, openpgp=True))
    assert pgp.other_headers and pgp.see_also and len(pgp.see_also) == 40
    headers = bytes.fromhex(pgp.other_headers)
    assert verify_openpgp(key.public, bytes.fromhex(pgp.signature), env.canonical, headers)
    assert not verify_openpgp(key.public, bytes.fromhex(pgp.signature), b"{}", headers)


def test_threshold_counts_each_key_once_and_reports_invalid() -> None:
    env = Signable({"v": 1}, {}, "doc")
    sign_envelope(env, envelope_signer(KEYS[0], openpgp=False))
    good = env.signatures[KEYS[0].public_key_hex]
    # Key 1's slot holds key 0's signature: invalid, and not a second count for key 0.
    env.signatures[KEYS[1].public_key_hex] = good
    sign_envelope(env, envelope_signer(KEYS[4], openpgp=False))  # outside the delegation
    delegation = Delegation(
        (KEYS[0].public_key_hex, KEYS[1].public_key_hex, KEYS[2].public_key_hex), 2
    )
    result = verify_threshold(env.canonical, env.signatures, delegation, "root")
    assert result.signed == (KEYS[0].public_key_hex,)
    assert result.invalid == {KEYS[1].public_key_hex: "bad signature"}
    assert result.missing == (KEYS[2].public_key_hex,)
    assert result.unknown == (KEYS[4].public_key_hex,)
    assert not result.ok
    with pytest.raises(ThresholdError, match="1 valid, 2 required"):
        result.require("doc")


def test_openpgp_signature_refused_where_raw_is_required() -> None:
    data = make_key_mgr(1, openpgp=True)
    root = parse_metadata(make_root(1, KEYS[:1], 1, KEYS[:1]), "root").meta
    assert isinstance(root, Root)
    from signer.trust.repository import verify_key_mgr

    with pytest.raises(ThresholdError, match="OpenPGP-style signature not accepted"):
        verify_key_mgr(parse_metadata(data, "key_mgr.json"), root)


# ---------------------------------------------------------------- strict parsing


def _mutated(change: Any) -> bytes:
    obj = json.loads(make_root(1, KEYS[:1], 1, KEYS[:1]))
    change(obj)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o.update(extra=1), "extra"),
        (lambda o: o["signed"].update(type="timestamp"), "signed.type"),
        (
            lambda o: o["signed"]["delegations"].update(
                targets={"pubkeys": ["a" * 64], "threshold": 1}
            ),
            "signed.delegations",
        ),
        (lambda o: o["signed"]["delegations"]["root"].update(threshold=2), "threshold"),
        (lambda o: o["signed"]["delegations"]["root"].update(threshold=0), "threshold"),
        (lambda o: o["signed"]["delegations"]["root"].update(pubkeys=["A" * 64]), "pubkeys[0]"),
        (lambda o: o["signed"].update(version="1"), "signed.version"),
        (lambda o: o["signed"].update(expiration="2031-01-01 00:00:00"), "signed.expiration"),
        (lambda o: o.update(signatures={"AB" * 32: {"signature": "0" * 128}}), "signatures"),
        (lambda o: o.update(signatures={"ab" * 32: {"signature": "F" * 128}}), "signature"),
        (lambda o: o["signed"].pop("timestamp"), "signed.timestamp"),
    ],
)
def test_strict_parsing_names_the_field(change: Any, field: str) -> None:
    with pytest.raises(FormatError) as err:
        parse_metadata(_mutated(change), "bad.json")
    assert err.value.source == "bad.json"
    assert field in err.value.field


def test_duplicate_keys_and_bad_json_refused() -> None:
    with pytest.raises(FormatError, match="duplicate key"):
        parse_metadata(b'{"signatures": {}, "signatures": {}, "signed": {}}', "dup.json")
    with pytest.raises(FormatError, match="malformed JSON"):
        parse_metadata(make_root(1, KEYS[:1], 1, KEYS[:1])[:-20], "cut.json")
    with pytest.raises(FormatError, match="cap"):
        parse_metadata(b" " * (600 * 1024), "big.json")


# ---------------------------------------------------------------- chain, expiry, state


def test_root_update_needs_old_and_new_thresholds() -> None:
    old = parse_metadata(make_root(1, KEYS[:2], 2, KEYS[:2]), "1.root.json")
    new_keys = KEYS[2:4]
    # Signed by the new keys only: fails the old threshold.
    only_new = parse_metadata(make_root(2, new_keys, 2, new_keys), "2.root.json")
    with pytest.raises(ThresholdError, match="v1 root"):
        verify_root_update(old, only_new)
    # Old keys only: fails the new threshold.
    only_old = parse_metadata(make_root(2, new_keys, 2, KEYS[:2]), "2.root.json")
    with pytest.raises(ThresholdError, match="v2 root"):
        verify_root_update(old, only_old)
    both = parse_metadata(make_root(2, new_keys, 2, KEYS[:4]), "2.root.json")
    step = verify_root_update(old, both)
    assert step.by_old_keys.ok and step.by_new_keys.ok
    skip = parse_metadata(make_root(3, new_keys, 2, KEYS[:4]), "3.root.json")
    with pytest.raises(VerificationError, match="must be version 2"):
        verify_root_update(old, skip)


def test_expiry_with_skew() -> None:
    meta = parse_metadata(
        make_root(1, KEYS[:1], 1, KEYS[:1], expires="2030-01-01T00:00:00Z"), "r"
    ).meta
    check_not_expired(meta, "r", NOW + timedelta(seconds=59))
    with pytest.raises(ExpiredError):
        check_not_expired(meta, "r", NOW + timedelta(seconds=61))
    check_not_expired(meta, "r", NOW + timedelta(seconds=3600), timedelta(hours=2))


def _repo(tmp_path: Path, files: dict[str, bytes]) -> Any:
    def fetch(path: str, max_bytes: int) -> bytes | None:
        return files.get(path)

    return fetch


def test_update_root_walks_chain_and_state_refuses_rollback(tmp_path: Path) -> None:
    files = {
        "1.root.json": make_root(1, KEYS[:2], 2, KEYS[:2]),
        "2.root.json": make_root(2, KEYS[1:3], 2, KEYS[:3]),
        "key_mgr.json": make_key_mgr(2),
    }
    state = TrustState(tmp_path / "state")
    anchor = choose_anchor(files["1.root.json"], "1.root.json", state)
    trusted = update_root(_repo(tmp_path, files), anchor, NOW, state=state)
    assert trusted.meta.version == 2 and len(trusted.steps) == 1
    assert load_key_mgr(_repo(tmp_path, files), trusted, NOW, state=state).meta.version == 2
    # The state now starts from v2 even when v1 is passed again.
    assert choose_anchor(files["1.root.json"], "1.root.json", state).meta.version == 2
    files["key_mgr.json"] = make_key_mgr(1)
    with pytest.raises(RollbackError):
        load_key_mgr(_repo(tmp_path, files), trusted, NOW, state=state)


def test_update_root_fails_on_expired_final_root_and_bad_step(tmp_path: Path) -> None:
    files = {"2.root.json": make_root(2, KEYS[:2], 2, KEYS[:2], expires="2029-06-01T00:00:00Z")}
    anchor = parse_metadata(make_root(1, KEYS[:2], 2, KEYS[:2]), "1.root.json")
    with pytest.raises(ExpiredError):
        update_root(_repo(tmp_path, files), anchor, NOW)
    files = {"2.root.json": b"{not json"}
    with pytest.raises(VerificationError, match=r"2\.root\.json: format"):
        update_root(_repo(tmp_path, files), anchor, NOW)


def test_no_anchor_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="no trusted root") as caught:
        choose_anchor(None, "root", TrustState(tmp_path / "empty"))
    assert "--" not in str(caught.value)  # the library names no flag; the CLI adds it


def test_state_rejects_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "versions.json").write_text("[1,2")
    with pytest.raises(FormatError, match="corrupt"):
        TrustState(tmp_path).seen_version("key_mgr.json")


@pytest.mark.parametrize(
    "error",
    [
        FormatError("a.json", "signed.version", "expected an integer"),
        FormatError("a.json", "", "no such file"),
        VerificationError("pkg.conda", "scope", "not delegated"),
        ExpiredError("key_mgr.json", "expired at 2020-01-01T00:00:00Z"),
        RollbackError("key_mgr.json", "version 1 is older than version 2"),
        ThresholdError("1.root.json", "0 valid, 1 required"),
    ],
)
def test_errors_pickle_with_their_subclass(error: Exception) -> None:
    import pickle

    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert back.__dict__ == error.__dict__


def test_one_threshold_counter_counts_each_key_once() -> None:
    from signer.trust.threshold import tally

    tried: list[str] = []

    def check(key: str, sig: str) -> str | None:
        tried.append(key)
        return None if sig == "good" else "bad signature"

    pairs = [("a", "bad"), ("a", "good"), ("a", "good"), ("x", "good"), ("b", "bad")]
    result = tally("role", 2, ["a", "b", "c"], pairs, check)
    assert result.signed == ("a",) and not result.ok  # "a" twice is still one key
    assert result.invalid == {"b": "bad signature"} and result.missing == ("c",)
    assert result.unknown == ("x",) and "x" not in tried  # never checked
    assert tally("role", 2, ["a", "b"], [("a", "good"), ("b", "good")], check).ok
