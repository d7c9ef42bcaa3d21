"""`pkcs11:` keys on a real SoftHSM2 token: import, raw and OpenPGP-style signatures, PINs.

Signatures are checked by cf-sign's verifier and by conda-content-trust's own functions,
run in a venv that has it ($CF_SIGN_CONDA_VENV).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from signer.trust import parse_metadata, verify_root_self
from tests.conftest import CliResult
from tests.softhsm import USER_PIN, SoftHsm, cct_check, softhsm_fixture  # noqa: F401

Cli = Callable[..., CliResult]


def make_root(cli: Cli, out: Path, *root_keys: str, km: str = "ab" * 32) -> None:
    args: list[str] = []
    for key in root_keys:
        args += ["--root-key", key]
    made = cli("root", "create", *args, "--threshold", "1", "--key-mgr-key", km, "-o", out)
    assert made.code == 0, made.err


def test_keys_import_reads_the_token_key(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:
    softhsm.init_token("admin1")
    public = softhsm.generate_ed25519("admin1", "root-key", b"\x01")
    pub_file = tmp_path / "admin1.pub"
    result = cli("keys", "import", softhsm.uri("admin1", "root-key"), "-o", pub_file)
    assert result.code == 0, result.err
    assert public in result.out
    assert json.loads(pub_file.read_text())["keyval"]["public"] == public
    # The .pub is what root create takes.
    root = tmp_path / "1.root.json"
    make_root(cli, root, str(pub_file))
    assert json.loads(root.read_text())["signed"]["delegations"]["root"]["pubkeys"] == [public]
    # Another key's .pub in the way is not overwritten.
    softhsm.generate_ed25519("admin1", "other", b"\x02")
    again = cli("keys", "import", softhsm.uri("admin1", "other"), "-o", pub_file)
    assert again.code == 2 and "not overwriting" in again.err
    assert json.loads(pub_file.read_text())["keyval"]["public"] == public


def test_key_selected_by_id_and_module_from_env(
    cli: Cli, softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    softhsm.init_token("tok")
    first = softhsm.generate_ed25519("tok", "a", b"\x01")
    second = softhsm.generate_ed25519("tok", "b", b"\x02")
    monkeypatch.setenv("PKCS11_MODULE", softhsm.module)
    by_id = cli("keys", "import", "pkcs11:token=tok;id=%02", "--json")
    assert by_id.code == 0, by_id.err
    assert json.loads(by_id.out)["keyval"]["public"] == second != first
    missing = cli("keys", "import", "pkcs11:token=tok;id=%03")
    assert missing.code == 2 and "no ed25519 key" in missing.err
    monkeypatch.delenv("PKCS11_MODULE")
    no_module = cli("keys", "import", "pkcs11:token=tok;id=%02")
    assert no_module.code == 2 and "PKCS11_MODULE" in no_module.err


def test_token_root_signature_verifies_in_cf_sign_and_conda_content_trust(
    cli: Cli, softhsm: SoftHsm, tmp_path: Path
) -> None:
    softhsm.init_token("admin1")
    public = softhsm.generate_ed25519("admin1", "root-key", b"\x01")
    root = tmp_path / "1.root.json"
    make_root(cli, root, public)
    signed = cli("metadata", "sign", root, "--key", softhsm.uri("admin1", "root-key"))
    assert signed.code == 0, signed.err
    assert USER_PIN not in signed.out + signed.err
    sig = json.loads(root.read_text())["signatures"][public]
    assert "other_headers" in sig  # OpenPGP-style, header synthesised
    assert verify_root_self(parse_metadata(root.read_bytes(), "root")).signed == (public,)
    accepted = cct_check("root-self", root)
    assert accepted.returncode == 0 and "OK" in accepted.stdout, accepted.stderr
    # Attack: the signed root altered afterwards (one more root key) is refused by both.
    doc = json.loads(root.read_text())
    doc["signed"]["delegations"]["root"]["pubkeys"].append("cd" * 32)
    forged = tmp_path / "forged.root.json"
    forged.write_text(json.dumps(doc))
    assert cct_check("root-self", forged).returncode != 0
    assert cli("metadata", "verify", forged).code == 1


def test_token_raw_signature_on_key_mgr(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:
    """A token-held key_mgr key makes raw signatures, which conda requires on key_mgr."""
    softhsm.init_token("online")
    km_public = softhsm.generate_ed25519("online", "key-mgr", b"\x07")
    cli("keys", "generate", "r1", "--dir", tmp_path)
    root = tmp_path / "1.root.json"
    make_root(cli, root, str(tmp_path / "r1.pub"), km=km_public)
    assert cli("metadata", "sign", root, "--key", f"file:{tmp_path / 'r1.key'}").code == 0
    key_mgr = tmp_path / "key_mgr.json"
    assert cli("key-mgr", "create", "--pkg-mgr-key", "ef" * 32, "-o", key_mgr).code == 0
    signed = cli("metadata", "sign", key_mgr, "--key", softhsm.uri("online", "key-mgr"))
    assert signed.code == 0, signed.err
    assert set(json.loads(key_mgr.read_text())["signatures"][km_public]) == {"signature"}
    assert cli("metadata", "verify", key_mgr, "--trusted", root).code == 0
    result = cct_check("key_mgr", root, key_mgr)
    assert result.returncode == 0, result.stderr
    # Control and attack: the same key_mgr under a root delegating to another key fails.
    other_root = tmp_path / "other.root.json"
    make_root(cli, other_root, str(tmp_path / "r1.pub"), km="12" * 32)
    assert cct_check("key_mgr", other_root, key_mgr).returncode != 0


def test_wrong_or_missing_pin_writes_nothing(
    cli_process: Callable[..., CliResult], cli: Cli, softhsm: SoftHsm, tmp_path: Path
) -> None:
    softhsm.init_token("admin1")
    public = softhsm.generate_ed25519("admin1", "root-key", b"\x01")
    root = tmp_path / "1.root.json"
    make_root(cli, root, public)
    before = root.read_bytes()
    uri = softhsm.uri("admin1", "root-key")
    env = {"SOFTHSM2_CONF": str(softhsm.conf), "CF_SIGN_PKCS11_PIN": "999999"}
    wrong = cli_process("metadata", "sign", root, "--key", uri, env=env)
    assert wrong.code == 2 and "wrong PIN" in wrong.err and "999999" not in wrong.err + wrong.out
    env["CF_SIGN_PKCS11_PIN"] = ""  # unset, and stdin is not a terminal: no prompt possible
    none = cli_process("metadata", "sign", root, "--key", uri, env=env)
    assert none.code == 2 and "CF_SIGN_PKCS11_PIN" in none.err
    assert root.read_bytes() == before


def test_pin_in_the_uri_is_refused_unprinted(cli: Cli, softhsm: SoftHsm) -> None:
    uri = f"pkcs11:token=t;object=k?module-path={softhsm.module}&pin-value=424242"
    result = cli("keys", "import", uri)
    assert result.code == 2 and "424242" not in result.err + result.out
    assert "never given in the URI" in result.err


def test_registered_as_securesystemslib_signer(softhsm: SoftHsm) -> None:
    from securesystemslib.signer import Signer, SSlibKey

    from signer.keys.pkcs11 import Pkcs11Signer

    softhsm.init_token("sslib")
    public = softhsm.generate_ed25519("sslib", "k", b"\x01")
    uri, key = Pkcs11Signer.import_(softhsm.uri("sslib", "k"))
    assert isinstance(key, SSlibKey) and key.keyval["public"] == public
    signer = Signer.from_priv_key_uri(uri, key)
    assert isinstance(signer, Pkcs11Signer)
    signature = signer.sign(b"payload")
    key.verify_signature(signature, b"payload")  # raises when it does not verify
    with pytest.raises(Exception, match=r"[Vv]erif"):
        key.verify_signature(signature, b"other payload")


def test_pin_prompt_on_a_terminal_is_not_echoed(cli: Cli, softhsm: SoftHsm, tmp_path: Path) -> None:
    """No $CF_SIGN_PKCS11_PIN: `ceremony sign` asks on the terminal; the PIN never shows."""
    import os
    import pty
    import select
    import sys
    import time

    softhsm.init_token("admin1")
    public = softhsm.generate_ed25519("admin1", "root-key", b"\x01")
    cli("keys", "generate", "km", "--dir", tmp_path)
    event = tmp_path / "event"
    made = cli("ceremony", "propose", "root", "--root-key", public,
               "--key-mgr-key", tmp_path / "km.pub", "-o", event)  # fmt: skip
    assert made.code == 0, made.err
    env = {k: v for k, v in os.environ.items() if k != "CF_SIGN_PKCS11_PIN"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: cf-sign on a real terminal
        os.execve(sys.executable, [sys.executable, "-m", "signer.cli.main", "ceremony", "sign",
                                   str(event), "--key", softhsm.uri("admin1", "root-key")],
                  env)  # fmt: skip
    output = b""
    answers = [(b"[y/N]", b"y\n"), (b"PIN for PKCS#11 token", USER_PIN.encode() + b"\n")]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if answers and answers[0][0] in output:
                os.write(fd, answers.pop(0)[1])
    _, status = os.waitpid(pid, 0)
    text = output.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "wrote" in text and USER_PIN not in text
    assert len(list((event / "signatures").iterdir())) == 1
