"""SoftHSM2 tokens for tests (standing in for YubiKeys), and the real-client switches.

Each test gets its own SOFTHSM2_CONF and token directory. Keys are made on the token with
python-pkcs11 (the test's own provisioning step, as `ykman piv keys generate` would be).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
USER_PIN = "246810"
SO_PIN = "13579135"
ED25519_OID = bytes.fromhex("06032b6570")


def require_real_clients() -> bool:
    return os.environ.get("CF_SIGN_REQUIRE_REAL_CLIENTS") == "1"


def skip_or_fail(reason: str) -> None:
    if require_real_clients():
        pytest.fail(f"{reason} (CF_SIGN_REQUIRE_REAL_CLIENTS=1)")
    pytest.skip(reason)


def softhsm_module() -> str:
    given = os.environ.get("CF_SIGN_SOFTHSM2_MODULE")
    for candidate in (given,) if given else MODULE_CANDIDATES:
        if candidate and Path(candidate).is_file():
            return candidate
    skip_or_fail(
        "SoftHSM2 is not installed (apt-get install softhsm2, or set CF_SIGN_SOFTHSM2_MODULE)"
    )
    raise AssertionError("unreachable")


@dataclass
class SoftHsm:
    conf: Path
    module: str

    def init_token(self, label: str) -> None:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label,
             "--pin", USER_PIN, "--so-pin", SO_PIN],
            check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
        )  # fmt: skip

    def generate_ed25519(self, token_label: str, key_label: str, key_id: bytes) -> str:
        """Make an ed25519 key pair on the token; returns its 64-hex public key."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, Mechanism

        # The library reads SOFTHSM2_CONF when it loads: this token directory, not the
        # process's (a module-scoped fixture does not set the environment).
        before = os.environ.get("SOFTHSM2_CONF")
        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        try:
            lib = pkcs11.lib(self.module)
        finally:
            if before is None:
                os.environ.pop("SOFTHSM2_CONF", None)
            else:
                os.environ["SOFTHSM2_CONF"] = before
        try:
            token = lib.get_token(token_label=token_label)
            with token.open(rw=True, user_pin=USER_PIN) as session:
                params = session.create_domain_parameters(
                    KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: ED25519_OID}, local=True
                )
                public, _ = params.generate_keypair(
                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True,
                    label=key_label, id=key_id,
                )  # fmt: skip
                point = bytes(public[Attribute.EC_POINT])
        finally:
            lib.finalize()
        assert point[:2] == b"\x04\x20"
        return point[2:].hex()

    def uri(self, token_label: str, key_label: str, *, with_module: bool = True) -> str:
        base = f"pkcs11:token={token_label};object={key_label}"
        return base + (f"?module-path={self.module}" if with_module else "")


@pytest.fixture(name="softhsm")
def softhsm_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    module = softhsm_module()
    if shutil.which("softhsm2-util") is None:
        skip_or_fail("softhsm2-util is not on PATH (apt-get install softhsm2)")
    tokens = tmp_path / "softhsm-tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv("CF_SIGN_PKCS11_PIN", USER_PIN)
    return SoftHsm(conf, module)


def cct_python() -> str:
    """The python of a venv holding conda-content-trust ($CF_SIGN_CONDA_VENV)."""
    venv = os.environ.get("CF_SIGN_CONDA_VENV")
    if not venv or not (Path(venv) / "bin" / "python").is_file():
        skip_or_fail(
            "CF_SIGN_CONDA_VENV is not set to a venv with conda-content-trust "
            "(../shared/tools/install-conda VENV --with-cct)"
        )
    return str(Path(venv or "") / "bin" / "python")


# Run by the conda-content-trust venv's python: its own verification functions on our files.
_CCT_SCRIPT = r"""
import json, sys
from conda_content_trust.authentication import verify_root, verify_delegation, verify_signable
mode, *files = sys.argv[1:]
docs = [json.load(open(f)) for f in files]
if mode == "root-self":
    d = docs[0]["signed"]["delegations"]["root"]
    verify_signable(docs[0], d["pubkeys"], d["threshold"], gpg=True)
elif mode == "root-chain":
    for old, new in zip(docs, docs[1:]):
        verify_root(old, new)
elif mode == "key_mgr":
    verify_delegation("key_mgr", docs[1], docs[0])
else:
    raise SystemExit("unknown mode " + mode)
print("OK")
"""


def cct_check(mode: str, *files: Path) -> subprocess.CompletedProcess[str]:
    """conda-content-trust's verdict (exit 0 and OK = accepted) on root/key_mgr files."""
    return subprocess.run(
        [cct_python(), "-c", _CCT_SCRIPT, mode, *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def judge_binary() -> str:
    judge = os.environ.get("CF_SIGN_LIBMAMBA_JUDGE")
    if not judge or not Path(judge).is_file():
        skip_or_fail(
            "CF_SIGN_LIBMAMBA_JUDGE is not set to a built mamba-harness "
            "(../shared/tools/libmamba-judge/build .cache/libmamba-judge)"
        )
    return str(judge)
