"""Azure Key Vault keys through the real azure-identity and azure-keyvault-keys SDKs.

The SDKs talk to a local HTTPS stand-in of Key Vault, the managed-identity endpoint, Entra
ID's token endpoint and the CI providers' OIDC endpoints (tests/azure_standin.py), with a
self-signed certificate the SDK is told to trust. What the SDK does (the 401 challenge and
its resource check, token acquisition, retries on 429, local wrap, remote sign and unwrap)
runs as it does against Azure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure_standin import CLIENT_ID, TENANT, StandIn, running_standin
from test_feedstock_support import environ, make_world, run

from signer.keys import KeyHandle, resolve_keyref
from signer.trust.errors import FormatError

_AZURE_VARS = (
    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME", "SYSTEM_OIDCREQUESTURI", "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID",
    "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "MSI_ENDPOINT",
)  # fmt: skip


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[tuple[StandIn, dict[str, str]]]:
    """The stand-in and a managed-identity environment pointing at it (applied)."""
    from signer.keys import azure as azure_keys

    with running_standin(tmp_path) as (state, cert):
        env: dict[str, str | None] = {name: None for name in _AZURE_VARS}
        env.update(state.env(cert))
        env["AZURE_CONFIG_DIR"] = str(tmp_path / "no-az-cli")  # no Azure CLI login to find
        with environ(env):
            azure_keys._UNWRAPPED.clear()
            yield state, {k: v for k, v in env.items() if v is not None}
            azure_keys._UNWRAPPED.clear()


def _handle(keyref: str) -> KeyHandle:
    handle = resolve_keyref(keyref)
    assert isinstance(handle, KeyHandle)
    return handle


# --------------------------------------------------------------------------- azurekms://


def test_azurekms_key_signs_through_the_vault(vault: tuple[StandIn, dict[str, str]]) -> None:
    state, _ = vault
    key = state.add_ec_key("feedstock-numpy")
    handle = _handle(state.keyref(key))
    # The public key was read from the vault, in securesystemslib's ECDSA form.
    assert handle.public.scheme == "ecdsa-sha2-nistp256"
    sig = handle.signer.sign(b"statement bytes")
    assert handle.public.verify(bytes.fromhex(sig.signature), b"statement bytes")
    assert not handle.public.verify(bytes.fromhex(sig.signature), b"other bytes")  # control
    assert state.count("POST", "/sign") == 1  # signing happens in the vault, not locally
    # The first request met the 401 challenge; the SDK then authenticated with managed identity.
    assert state.count("GET", "/msi/token") >= 1


def test_ci_job_signs_with_azurekms_key_and_verifies(
    vault: tuple[StandIn, dict[str, str]], tmp_path: Path, cli_process: Callable[..., Any]
) -> None:
    """A simulated Azure Pipelines job signs with a Key Vault key via OIDC; cf-sign verifies."""
    state, env = vault
    key = state.add_ec_key("feedstock-numpy")
    keyref = state.keyref(key)
    world = make_world(tmp_path / "w")
    pub = world.fkeys / "numpy-kv.pub"
    pub.write_text(json.dumps(_handle(keyref).public.to_dict()))
    entries = world.default_entries()
    entries["numpy"]["keys"] = [f"keys/{pub.name}"]
    world.write_source(entries)
    assert world.publish() == 0
    pkg = world.build("numpy")
    ci = {k: v for k, v in env.items() if k not in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
    ci.update({
        "SYSTEM_OIDCREQUESTURI": f"{state.url}/pipelines-oidc",
        "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID": "cf-sign-keys",
        "AZURESUBSCRIPTION_CLIENT_ID": CLIENT_ID,
        "AZURESUBSCRIPTION_TENANT_ID": TENANT,
        "SYSTEM_ACCESSTOKEN": state.system_access_token,
        "IDENTITY_ENDPOINT": "",
        "IDENTITY_HEADER": "",
    })  # fmt: skip
    res = cli_process("sign", pkg, "--feedstock", "numpy", "--key", keyref, env=ci)
    assert res.code == 0, res.err
    assert state.count("POST", "/pipelines-oidc") >= 1  # the pipeline's OIDC token was used
    res = cli_process(*world.verify_args(pkg), "--json")
    assert res.code == 0, res.out + res.err
    assert json.loads(res.out)[0]["keyids"] == [_handle(keyref).keyid]
    # Control: the same Key Vault key is not delegated for another feedstock's names.
    other = world.build("evil")
    res = cli_process("sign", other, "--feedstock", "numpy", "--key", keyref, env=ci)
    assert res.code == 0
    res = cli_process(*world.verify_args(other))
    assert res.code == 1 and "scope" in res.out


def test_github_oidc_credential(vault: tuple[StandIn, dict[str, str]]) -> None:
    state, _ = vault
    key = state.add_ec_key("gh")
    with environ({
        "IDENTITY_ENDPOINT": None,
        "IDENTITY_HEADER": None,
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"{state.url}/github-oidc",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": state.github_request_token,
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_TENANT_ID": TENANT,
    }):  # fmt: skip
        from signer.keys.azure import credential_source

        assert credential_source() == "github-oidc"
        handle = _handle(state.keyref(key))
        sig = handle.signer.sign(b"m")
    assert handle.public.verify(bytes.fromhex(sig.signature), b"m")
    assert state.count("GET", "/github-oidc") >= 1


def test_wrong_request_token_is_one_line(vault: tuple[StandIn, dict[str, str]]) -> None:
    state, _ = vault
    key = state.add_ec_key("gh")
    with environ({
        "IDENTITY_ENDPOINT": None,
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"{state.url}/github-oidc",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "wrong",
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_TENANT_ID": TENANT,
    }), pytest.raises(FormatError) as info:  # fmt: skip
        _handle(state.keyref(key))
    assert "\n" not in str(info.value) and state.keyref(key) in str(info.value)


# --------------------------------------------------------------------------- errors


def test_disabled_key_is_one_clear_line(vault: tuple[StandIn, dict[str, str]]) -> None:
    state, _ = vault
    key = state.add_ec_key("off")
    handle = _handle(state.keyref(key))
    key.enabled = False
    with pytest.raises(FormatError) as info:
        handle.signer.sign(b"m")
    text = str(info.value)
    assert "disabled" in text and "\n" not in text


def test_throttling_is_retried_then_reported(vault: tuple[StandIn, dict[str, str]]) -> None:
    state, _ = vault
    key = state.add_ec_key("busy")
    handle = _handle(state.keyref(key))
    state.throttle = 2  # two 429s, then the vault answers: the SDK's retry absorbs them
    sig = handle.signer.sign(b"m")
    assert handle.public.verify(bytes.fromhex(sig.signature), b"m")
    state.throttle = 100  # throttled throughout: one line naming the throttling
    with pytest.raises(FormatError) as info:
        handle.signer.sign(b"m")
    assert "429" in str(info.value) and "throttled" in str(info.value)


def test_challenge_for_another_resource_is_refused(vault: tuple[StandIn, dict[str, str]]) -> None:
    """The SDK's check that the challenge's resource matches the vault host still runs."""
    state, _ = vault
    key = state.add_ec_key("k")
    state.challenge_resource = "https://attacker.example"
    with pytest.raises(FormatError) as info:
        _handle(state.keyref(key))
    assert "does not match" in str(info.value)
    assert state.count("GET", "/msi/token") == 0  # no token was ever asked for that resource


def test_missing_key_and_bad_uri(vault: tuple[StandIn, dict[str, str]]) -> None:
    state, _ = vault
    with pytest.raises(FormatError) as info:
        _handle(f"azurekms://{state.host}/keys/nothere/0123")
    assert "404" in str(info.value)
    with pytest.raises(FormatError) as info:
        _handle("azurekms://vault/notkeys")
    assert "azurekms://<vault host>/keys/<name>/<version>" in str(info.value)


# --------------------------------------------------------------------------- wrapped:


def test_wrapped_seed_unwraps_once_and_signs_like_the_file_key(
    vault: tuple[StandIn, dict[str, str]], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    state, _ = vault
    rsa = state.add_rsa_key("online-wrap")
    seed_file = tmp_path / "key_mgr.seed"
    seed_file.write_text(os.urandom(32).hex())
    out = tmp_path / "key_mgr.wrapped.json"
    res = cli("keys", "wrap", f"file:{seed_file}", "--vault-key", state.keyref(rsa), "-o", out)
    assert res.code == 0, res.err
    assert f"wrapped:{out}" in res.out
    assert seed_file.read_text() not in out.read_text()  # the seed is not in the file
    assert out.stat().st_mode & 0o777 == 0o600
    file_key, wrapped = _handle(f"file:{seed_file}"), _handle(f"wrapped:{out}")
    assert wrapped.public == file_key.public
    assert wrapped.sign_message(b"record") == file_key.sign_message(b"record")  # ed25519
    again = _handle(f"wrapped:{out}")
    assert again.sign_message(b"x") == file_key.sign_message(b"x")
    assert state.count("POST", "/unwrapkey") == 1  # once per process, then memory only
    # Refused: writing over an existing file; a file whose public key was swapped.
    res = cli("keys", "wrap", f"file:{seed_file}", "--vault-key", state.keyref(rsa), "-o", out)
    assert res.code == 2 and "already exists" in res.err
    forged = json.loads(out.read_text())
    forged["public"]["keyval"]["public"] = "ab" * 32
    bad = tmp_path / "forged.json"
    bad.write_text(json.dumps(forged))
    with pytest.raises(FormatError) as info:
        _handle(f"wrapped:{bad}")
    assert "not this file's public key" in str(info.value)


def test_keys_wrap_generates_a_seed(
    vault: tuple[StandIn, dict[str, str]], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    state, _ = vault
    rsa = state.add_rsa_key("wrap2")
    out = tmp_path / "pkg_mgr.wrapped.json"
    res = cli("keys", "wrap", "--vault-key", state.keyref(rsa), "-o", out)
    assert res.code == 0, res.err
    public = json.loads(out.read_text())["public"]["keyval"]["public"]
    assert public in res.out
    assert _handle(f"wrapped:{out}").public_key_hex == public


def test_service_runs_with_wrapped_online_keys(
    vault: tuple[StandIn, dict[str, str]], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """`service init` with key_mgr and pkg_mgr seeds in Key Vault; the result verifies."""

    from signer.devrepo import make_dev_trust_repo

    state, _ = vault
    rsa = state.add_rsa_key("service-wrap")
    repo = make_dev_trust_repo(tmp_path / "dev")
    wrapped = {}
    for name in ("key_mgr", "pkg_mgr", "pkg_mgr_mamba"):
        out = tmp_path / f"{name}.wrapped.json"
        assert (
            run("keys", "wrap", repo.keyref(name), "--vault-key", state.keyref(rsa), "-o", out) == 0
        )
        wrapped[name] = f"wrapped:{out}"
    db, publish = f"sqlite:///{tmp_path / 'svc.db'}", tmp_path / "publish"
    res = cli(
        "service", "init", "--db", db, "--publish-dir", publish, "--root", repo.root_file,
        "--key-mgr-key", wrapped["key_mgr"], "--pkg-mgr-key", wrapped["pkg_mgr"],
        "--pkg-mgr-key", wrapped["pkg_mgr_mamba"],
    )  # fmt: skip
    assert res.code == 0, res.err
    res = cli("metadata", "verify", publish / "key_mgr.json", "--trusted", repo.root_file, "--json")
    assert res.code == 0, res.out + res.err
    assert state.count("POST", "/unwrapkey") == 3  # one per key, in this process


def test_key_vault_made_signatures_pass_conda_and_libmamba(
    vault: tuple[StandIn, dict[str, str]], tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """key_mgr.json and pkg_mgr.json signed through wrapped seeds: conda-content-trust's own
    verification and libmamba's judge accept them; a key_mgr signed by another key fails."""
    import subprocess

    from softhsm import cct_check, judge_binary

    from signer.devrepo import make_dev_trust_repo

    judge = judge_binary()
    state, _ = vault
    rsa = state.add_rsa_key("service-wrap")
    repo = make_dev_trust_repo(tmp_path / "dev")
    refs = {}
    for name in ("key_mgr", "pkg_mgr", "pkg_mgr_mamba"):
        out = tmp_path / f"{name}.wrapped.json"
        assert (
            run("keys", "wrap", repo.keyref(name), "--vault-key", state.keyref(rsa), "-o", out) == 0
        )
        refs[name] = f"wrapped:{out}"
    publish = tmp_path / "publish"
    res = cli(
        "service", "init", "--db", f"sqlite:///{tmp_path / 'svc.db'}", "--publish-dir", publish,
        "--root", repo.root_file, "--key-mgr-key", refs["key_mgr"],
        "--pkg-mgr-key", refs["pkg_mgr"], "--pkg-mgr-key", refs["pkg_mgr_mamba"],
    )  # fmt: skip
    assert res.code == 0, res.err
    trust = tmp_path / "trust"
    trust.mkdir()
    for name in ("1.root.json", "key_mgr.json", "pkg_mgr.json"):
        (trust / name).write_bytes((publish / name).read_bytes())
    checked = cct_check("key_mgr", trust / "1.root.json", trust / "key_mgr.json")
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr
    files = [str(trust / n) for n in ("1.root.json", "key_mgr.json", "pkg_mgr.json")]
    verdict = subprocess.run(
        [judge, "pkg-mgr", *files],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verdict.returncode == 0 and json.loads(verdict.stdout.splitlines()[-1])["ok"] is True
    # Control: the same key_mgr re-signed by a key the root does not delegate to.
    forged = json.loads((trust / "key_mgr.json").read_text())
    other = _handle(repo.keyref("pkg_mgr"))
    from signer.trust.canonical import canonical_bytes

    forged["signatures"] = {
        other.public_key_hex: {
            "signature": other.sign_message(canonical_bytes(forged["signed"])).hex()
        }
    }
    (trust / "key_mgr.json").write_text(json.dumps(forged))
    assert cct_check("key_mgr", trust / "1.root.json", trust / "key_mgr.json").returncode != 0
    verdict = subprocess.run(
        [judge, "key-mgr", str(trust / "1.root.json"), str(trust / "key_mgr.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert json.loads(verdict.stdout.splitlines()[-1])["ok"] is False
