"""`cf-sign rollout`: keys into feedstocks' CI through the providers' APIs, resumably.

The GitHub and Azure DevOps APIs are stand-ins on loopback speaking the real request and
response shapes (bench/rollout_sim.py); the GitHub stand-in opens each sealed box with the
repository's private key. The trust service is the real one (`cf-sign serve`, SQLite).
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_service_support import Server, World, database_for, make_world

from signer.cli.main import main
from signer.keys.material import parse_private_key, public_key_of

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import rollout_sim as sim

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def make_registry(root: Path, names: list[str]) -> Path:
    for name in names:
        for output in (name, f"lib{name}"):
            path = root / "outputs" / output[0] / output[1] / output[2] / f"{output}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"feedstocks": [name]}))
    # One entry names its feedstock with the suffix, as a few real ones do.
    odd = root / "outputs" / "g" / "o" / "l" / "golf-tools.json"
    odd.parent.mkdir(parents=True, exist_ok=True)
    odd.write_text(json.dumps({"feedstocks": ["golf-feedstock"]}))
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Server]]:
    base = tmp_path_factory.mktemp("rollout-service")
    world = make_world(base, database_for("sqlite", base))
    server = world.server()
    yield world, server
    server.stop()


class Providers:
    def __init__(self, names: list[str]) -> None:
        self.github = sim.GitHubStandIn({f"{n}-feedstock" for n in names})
        self.azure = sim.AzureStandIn()
        for name in names:
            self.azure.add(f"{name}-feedstock")

    def close(self) -> None:
        self.github.close()
        self.azure.close()


@pytest.fixture
def providers() -> Iterator[Providers]:
    p = Providers([*NAMES, "golf", "hotel", "india", "juliet"])
    yield p
    p.close()


def _env(world: World) -> dict[str, str]:
    return {
        "CF_SIGN_ADMIN_TOKEN": world.admin_token,
        "GITHUB_TOKEN": sim.TOKEN_GITHUB,
        "AZURE_DEVOPS_TOKEN": sim.TOKEN_AZURE,
    }


def _args(registry: Path, server: Server, state: Path, providers: Providers) -> list[str]:
    return [
        "--registry", str(registry), "--service", server.url, "--state-dir", str(state),
        "--github-api", providers.github.url, "--azure-devops-url", providers.azure.url,
        "--rate", "1000",
    ]  # fmt: skip


def _cli(env: dict[str, str], *args: object) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "signer.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _registered(world: World, server: Server, name: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{server.url}/v1/admin/feedstocks/{name}",
        headers={"Authorization": f"Bearer {world.admin_token}"},
        timeout=30,
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _active(view: dict[str, Any] | None) -> list[str]:
    return [k["keyid"] for k in (view or {}).get("keys", []) if not k["revoked_at"]]


def _secret_keyid(providers: Providers, name: str) -> str:
    """The keyid of the key GitHub holds (decrypted by the stand-in) for `name`."""
    value, _, _ = providers.github.secrets[(f"{name}-feedstock", "CF_SIGN_KEY")]
    return public_key_of(parse_private_key(value, name, None)).keyid


def test_plan_then_apply_only(
    service: tuple[World, Server], providers: Providers, tmp_path: Path
) -> None:
    world, server = service
    registry = make_registry(tmp_path / "feedstock-outputs", NAMES[:3])
    env = _env(world)
    code, out, err = _cli(env, "rollout", "plan", "--registry", registry, "--service",
                          server.url, "--json")  # fmt: skip
    assert code == 0, err
    plan = json.loads(out)
    assert plan["needs_keys"] == ["alpha", "bravo", "charlie", "golf"]  # golf-feedstock normalised
    state = tmp_path / "state"
    args = _args(registry, server, state, providers)
    code, out, err = _cli(env, "rollout", "apply", *args, "--only", "alpha", "bravo")
    assert code == 0, out + err
    assert "2 done" in out and "PRIVATE KEY" not in out + err

    for name in ("alpha", "bravo"):
        view = _registered(world, server, name)
        assert view is not None and sorted(view["outputs"]) == [name, f"lib{name}"]
        # GitHub's sealed box opened to the very key the service delegates...
        assert _active(view) == [_secret_keyid(providers, name)]
        # ... and Azure holds the same key, as a secret variable, with its keyid beside it.
        number = providers.azure.by_name[f"{name}-feedstock"]
        value = providers.azure.secret_values[(number, "CF_SIGN_KEY")]
        assert value.encode() == providers.github.secrets[(f"{name}-feedstock", "CF_SIGN_KEY")][0]
        variables = providers.azure.definitions[number]["variables"]
        assert variables["CF_SIGN_KEY"] == {"value": None, "isSecret": True, "allowOverride": False}
        assert variables["CF_SIGN_KEY_ID"]["value"] == _active(view)[0]
        assert variables["BINSTAR_TOKEN"]["isSecret"]  # other variables kept
    assert _registered(world, server, "charlie") is None

    # The state dir: 0700, the journal 0600, no private key left once both secrets hold it.
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "journal.jsonl").stat().st_mode) == 0o600
    assert not [p for p in state.rglob("*.key")]
    assert "PRIVATE KEY" not in (state / "journal.jsonl").read_text()

    code, out, err = _cli(env, "rollout", "plan", "--registry", registry, "--service",
                          server.url, "--json")  # fmt: skip
    assert json.loads(out)["needs_keys"] == ["charlie", "golf"]

    # Re-running does nothing twice; the rest gets done.
    code, out, err = _cli(env, "rollout", "apply", *args, "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert (report["done"], report["already"]) == (2, 2)
    assert all(n == 1 for n in providers.github.puts.values())
    assert all(n == 1 for n in providers.azure.puts.values())
    assert len(providers.github.puts) == len(providers.azure.puts) == 4


def test_dry_run_writes_nothing(
    service: tuple[World, Server], providers: Providers, tmp_path: Path
) -> None:
    world, server = service
    registry = make_registry(tmp_path / "reg", ["hotel"])
    state = tmp_path / "state"
    env = {**_env(world), "GITHUB_TOKEN": "", "AZURE_DEVOPS_TOKEN": ""}  # not needed to plan
    code, out, err = _cli(env, "rollout", "apply", *_args(registry, server, state, providers),
                          "--only", "hotel", "--dry-run")  # fmt: skip
    assert code == 0, out + err
    assert "PLAN   hotel: key, registered, github, azure, done" in out
    assert providers.github.requests == providers.azure.requests == 0
    assert _registered(world, server, "hotel") is None
    assert not list(state.rglob("*.key"))


def test_rate_limits_are_waited_out(
    service: tuple[World, Server], providers: Providers, tmp_path: Path
) -> None:
    world, server = service
    registry = make_registry(tmp_path / "reg", ["india"])
    providers.github.limit_every = 2  # 403 + Retry-After (secondary limit)
    providers.azure.limit_every = 2  # 429 + Retry-After
    code, out, err = _cli(_env(world), "rollout", "apply",
                          *_args(registry, server, tmp_path / "s", providers), "--only", "india",
                          "--json")  # fmt: skip
    assert code == 0, out + err
    report = json.loads(out)
    assert report["done"] == 1 and report["rate_limit_waits"] >= 2
    assert providers.github.limited >= 1 and providers.azure.limited >= 1
    assert providers.github.puts == {("india-feedstock", "CF_SIGN_KEY"): 1}


def test_azure_definition_saved_meanwhile(
    service: tuple[World, Server], providers: Providers, tmp_path: Path
) -> None:
    world, server = service
    registry = make_registry(tmp_path / "reg", ["mike"])
    providers.github.repos = None
    providers.azure.add("mike-feedstock")
    providers.azure.edited_meanwhile.add("mike-feedstock")  # a stale revision: 409 once
    args = _args(registry, server, tmp_path / "s", providers)
    code, out, err = _cli(_env(world), "rollout", "apply", *args, "--only", "mike")
    assert code == 0 and "1 done" in out, out + err
    assert providers.azure.puts == {("mike-feedstock", "CF_SIGN_KEY"): 1}
    number = providers.azure.by_name["mike-feedstock"]
    assert providers.azure.definitions[number]["revision"] == 3  # theirs, then ours


def test_a_refusal_is_reported_and_the_rest_goes_on(
    service: tuple[World, Server], tmp_path: Path
) -> None:
    world, server = service
    registry = make_registry(tmp_path / "reg", ["juliet", "kilo"])
    p = Providers(["juliet"])  # kilo has no pipeline in Azure and no repository on GitHub
    try:
        code, out, err = _cli(_env(world), "rollout", "apply",
                              *_args(registry, server, tmp_path / "s", p), "--only", "juliet",
                              "kilo")  # fmt: skip
    finally:
        p.close()
    assert code == 1, out + err
    assert (
        "FAILED kilo: github GET /repos/conda-forge/kilo-feedstock/actions/secrets/public-key"
        in out
    )
    assert "1 done" in out and "1 failed" in out


def test_state_dir_must_be_private(
    service: tuple[World, Server], providers: Providers, tmp_path: Path
) -> None:
    world, server = service
    state = tmp_path / "open"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    registry = make_registry(tmp_path / "reg", ["alpha"])
    code, _out, err = _cli(_env(world), "rollout", "apply",
                          *_args(registry, server, state, providers))  # fmt: skip
    assert code == 2 and "must be 0700" in err and "Traceback" not in err
    code, _, err = _cli({}, "rollout", "plan", "--registry", registry, "--service", server.url)
    assert code == 2 and "CF_SIGN_ADMIN_TOKEN" in err


def test_interrupted_at_a_random_point_then_resumed(
    service: tuple[World, Server], tmp_path: Path
) -> None:
    """SIGKILL right after the k-th secret is stored (before GitHub answers); a re-run
    finishes the rest without writing any secret twice."""
    world, server = service
    names = [f"zulu{i:02d}" for i in range(12)]
    registry = make_registry(tmp_path / "reg", names)
    p = Providers([*names, "golf"])
    state = tmp_path / "state"
    k = random.Random(os.getpid()).randint(1, len(names) - 1)
    procs: list[subprocess.Popen[bytes]] = []
    sim.kill_after(p.github, k, procs)
    cmd = [sys.executable, "-m", "signer.cli.main", "rollout", "apply",
           *_args(registry, server, state, p), "--jobs", "2", "--json"]  # fmt: skip
    env = {**os.environ, **_env(world)}
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, start_new_session=True)
        procs.append(proc)
        proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL
        assert sum(p.github.puts.values()) == k
        p.github.after_put = None
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        assert report["done"] + report["already"] == len(names) + 1 and report["failed"] == 0
        # The secret stored in the moment of the kill was found at GitHub, not written again.
        assert '"recovered": true' in (state / "journal.jsonl").read_text()
        result = sim.check(p.github, p.azure, names)
        assert result == {"written_twice_github": [], "written_twice_azure": [], "missing": 0,
                          "github_and_azure_differ": 0}  # fmt: skip
        for name in names:
            assert _active(_registered(world, server, name)) == [_secret_keyid(p, name)]
    finally:
        p.close()


def test_rotate(service: tuple[World, Server], providers: Providers, tmp_path: Path) -> None:
    world, server = service
    registry = make_registry(tmp_path / "reg", ["lima"])
    providers.github.repos = None
    providers.azure.add("lima-feedstock")
    state = tmp_path / "state"
    args = _args(registry, server, state, providers)
    assert _cli(_env(world), "rollout", "apply", *args, "--only", "lima")[0] == 0
    old = _active(_registered(world, server, "lima"))
    rot = [a for a in args if a not in ("--registry", str(registry))]
    code, out, err = _cli(_env(world), "rollout", "rotate", "lima", *rot)
    assert code == 0, out + err
    view = _registered(world, server, "lima")
    new = _active(view)
    assert len(new) == 1 and new != old
    assert [k["keyid"] for k in view["keys"] if k["revoked_at"]] == old  # type: ignore[index]
    assert _secret_keyid(providers, "lima") == new[0]
    assert providers.github.puts[("lima-feedstock", "CF_SIGN_KEY")] == 2
    assert providers.azure.puts[("lima-feedstock", "CF_SIGN_KEY")] == 2
    # A second rotation is a new round, not a replay of the first.
    code, out, err = _cli(_env(world), "rollout", "rotate", "lima", *rot)
    assert code == 0, out + err
    assert _active(_registered(world, server, "lima")) not in (old, new)


def test_library_speaks_no_cli() -> None:
    for path in (Path(__file__).resolve().parent.parent / "signer" / "rollout").glob("*.py"):
        text = path.read_text()
        assert "--" not in "".join(
            line for line in text.splitlines() if "raise" in line or "Error(" in line
        ), path


def test_main_registers_rollout() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["rollout", "--help"])
    assert exc.value.code == 0


def test_simulated_rollout_small() -> None:
    """bench/rollout_sim.py at a small scale: killed at a random secret, rate-limited, and
    finished by a second run without writing any secret twice."""
    result = sim.simulate(300, jobs=2, seed=random.randrange(1 << 30), limit_every=40)
    assert result["missing"] == 0 and result["github_and_azure_differ"] == 0
    assert result["written_twice_github"] == [] and result["written_twice_azure"] == []
    first, second = result["runs"]
    assert first["exit"] == -signal.SIGKILL and second["exit"] == 0
    assert second["report"]["done"] + second["report"]["already"] == 300
    assert second["report"]["done"] > 0 and result["rate_limited_answers"] > 0


def test_unreachable_service_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = make_registry(tmp_path / "reg", ["alpha"])
    code, _out, err = _cli({"CF_SIGN_ADMIN_TOKEN": "t"}, "rollout", "plan", "--registry",
                          registry, "--service", f"http://127.0.0.1:{port}")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "gave up after 4 attempts" in err, err
