"""The CI templates' own script lines, run in bash with each CI's variables, on real packages.

The Azure step template and the GitHub composite action are read from their YAML; template
expressions are filled in the way the CI would (parameters/inputs, secret macros); then the
resulting `bash` script runs in a throwaway feedstock checkout. The conda-smithy snippets run
with conda-smithy's own `set -x` and upload condition, with `upload_package` stubbed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from test_feedstock_support import World, make_world

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "ci-templates"
STEP_SCRIPT = TEMPLATES / "cf-sign-step.sh"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@dataclass
class Run:
    code: int
    out: str
    sidecars: list[Path]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("ci"))


def _feedstock(world: World, tmp_path: Path, artifacts_dir: str = "build_artifacts") -> Path:
    """A feedstock checkout with the script vendored into .scripts/ and a fresh build."""
    root = tmp_path / "numpy-feedstock"
    (root / ".scripts").mkdir(parents=True)
    shutil.copy(STEP_SCRIPT, root / ".scripts" / "cf-sign-step.sh")
    bld = root / artifacts_dir
    world.build("numpy", "2.0", "py312h0_0", out=bld / "linux-64")
    world.build("numpy-base", "2.0", "py312h0_0", fmt="tar.bz2", out=bld / "linux-64")
    world.build("libnumpy-data", "2.0", "pyh0_0", subdir="noarch", out=bld / "noarch")
    return root


def _sidecars(root: Path) -> list[Path]:
    return sorted(root.rglob("*.sig.json"))


def _base_env(extra: Mapping[str, str]) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if k in ("HOME", "LANG", "TMPDIR", "XDG_CACHE_HOME", "PYTHONPATH")
    }
    # A clean CI-like environment: the venv's cf-sign first on PATH, nothing else inherited.
    return {**keep, "PATH": f"{BIN}:/usr/bin:/bin", **extra}


def _bash(script: str, cwd: Path, env: Mapping[str, str]) -> Run:
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=dict(env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=300,
    )
    return Run(proc.returncode, proc.stdout, _sidecars(cwd))


def _verify_all(world: World, root: Path) -> None:
    from signer.cli.main import main

    packages = [p for p in root.rglob("*") if p.name.endswith((".conda", ".tar.bz2"))]
    assert len(packages) == 3
    args = world.verify_args(*packages)
    assert main([str(a) for a in args]) == 0


# ----------------------------------------------------------------------------- Azure


def _azure_script(
    parameters: Mapping[str, str], variables: Mapping[str, str]
) -> tuple[str, dict[str, str]]:
    template = yaml.safe_load((TEMPLATES / "azure" / "cf-sign-steps.yml").read_text())
    values = {p["name"]: p.get("default", "") for p in template["parameters"]} | dict(parameters)

    def expand(text: str) -> str:
        text = re.sub(r"\$\{\{\s*parameters\.(\w+)\s*\}\}", lambda m: str(values[m.group(1)]), text)
        # Runtime macros $(VAR): defined variables expand, undefined ones stay as written.
        return re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), text)

    (step,) = template["steps"]
    assert step["condition"] == "succeeded()"
    env = {expand(k): expand(str(v)) for k, v in step["env"].items()}
    return expand(step["bash"]), env


AZURE_VARS = {
    "BUILD_REPOSITORY_NAME": "conda-forge/numpy-feedstock",
    "BUILD_SOURCEVERSION": "0123456789abcdef0123456789abcdef01234567",
    "BUILD_BUILDID": "4242",
    "TF_BUILD": "True",
}


def _run_azure(world: World, root: Path, reason: str, secret: str | None, **extra: str) -> Run:
    variables = {"CF_SIGN_KEY": secret} if secret is not None else {}
    script, step_env = _azure_script({}, variables)
    env = _base_env({**AZURE_VARS, "BUILD_REASON": reason, **step_env, **extra})
    return _bash(script, root, env)


def test_azure_template_signs_on_ci_builds(world: World, tmp_path: Path) -> None:
    root = _feedstock(world, tmp_path)
    secret = world.secrets["numpy"]
    run = _run_azure(world, root, "IndividualCI", secret)
    assert run.code == 0, run.out
    assert len(run.sidecars) == 3 and secret not in run.out
    _verify_all(world, root)


@pytest.mark.parametrize(
    ("reason", "extra", "message"),
    [
        ("PullRequest", {}, "pull-request build"),
        ("IndividualCI", {"UPLOAD_PACKAGES": "False"}, "UPLOAD_PACKAGES=False"),
    ],
)
def test_azure_template_skips_like_uploads(
    world: World, tmp_path: Path, reason: str, extra: dict[str, str], message: str
) -> None:
    root = _feedstock(world, tmp_path)
    # A fork PR has no secret: Azure leaves the macro "$(CF_SIGN_KEY)" as text.
    run = _run_azure(world, root, reason, None, **extra)
    assert run.code == 0 and message in run.out
    assert run.sidecars == []


def test_azure_template_fails_without_the_secret(world: World, tmp_path: Path) -> None:
    root = _feedstock(world, tmp_path)
    run = _run_azure(world, root, "IndividualCI", None)
    assert run.code == 1 and "no signing key in $CF_SIGN_KEY" in run.out
    assert run.sidecars == []
    run = _run_azure(world, root, "IndividualCI", None, CF_SIGN_REQUIRED="false")
    assert run.code == 0 and "unsigned" in run.out


# ----------------------------------------------------------------------------- GitHub


def _github_script(inputs: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    action = yaml.safe_load((TEMPLATES / "github" / "action.yml").read_text())
    values = {k: v.get("default", "") for k, v in action["inputs"].items()} | dict(inputs)
    context = {"github.action_path": str(TEMPLATES / "github")}

    def expand(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            expr = match.group(1).strip()
            if expr.startswith("inputs."):
                return str(values[expr[len("inputs.") :]])
            return context[expr]

        return re.sub(r"\$\{\{(.*?)\}\}", one, text)

    assert action["runs"]["using"] == "composite"
    (step,) = action["runs"]["steps"]
    assert step["shell"] == "bash"
    env = {k: expand(str(v)) for k, v in step["env"].items()}
    return expand(step["run"]), env


GITHUB_VARS = {
    "GITHUB_REPOSITORY": "conda-forge/numpy-feedstock",
    "GITHUB_SHA": "89abcdef0123456789abcdef0123456789abcdef",
    "GITHUB_RUN_ID": "777",
    "GITHUB_SERVER_URL": "https://github.com",
    "CI": "true",
}


@pytest.mark.parametrize("event", ["push", "pull_request"])
def test_github_action(world: World, tmp_path: Path, event: str) -> None:
    root = _feedstock(world, tmp_path)
    secret = world.secrets["numpy"] if event == "push" else ""  # fork PRs get no secrets
    script, step_env = _github_script({"key": secret})
    env = _base_env({**GITHUB_VARS, "GITHUB_EVENT_NAME": event, **step_env})
    run = _bash(script, root, env)
    assert run.code == 0, run.out
    if event == "pull_request":
        assert run.sidecars == [] and "pull-request build" in run.out
        return
    assert len(run.sidecars) == 3 and secret not in run.out
    _verify_all(world, root)
    import json

    doc = json.loads(run.sidecars[0].read_text())
    assert doc["feedstock"] == "numpy" and len(doc["envelopes"]) == 2


# ----------------------------------------------------------------------------- conda-smithy


def _snippet_block(name: str) -> str:
    text = (TEMPLATES / "conda-smithy" / name).read_text()
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


STUBS = """
set -xeuo pipefail
startgroup() { echo "group: $1"; }
endgroup() { :; }
upload_package() { echo "UPLOAD $*"; test -n "$(ls "$SIDECAR_DIR"/*/*.sig.json)"; }
"""


@pytest.mark.parametrize("is_pr", ["False", "True"])
def test_build_steps_snippet_in_container(world: World, tmp_path: Path, is_pr: str) -> None:
    root = _feedstock(world, tmp_path)
    secret = world.secrets["numpy"]
    env = _base_env(
        {
            "FEEDSTOCK_ROOT": str(root),
            "RECIPE_ROOT": str(root / "recipe"),
            "CONFIG_FILE": "linux_64_.yaml",
            "FEEDSTOCK_NAME": "numpy-feedstock",
            "UPLOAD_PACKAGES": "True",
            "IS_PR_BUILD": is_pr,
            "CI": "azure",
            "sha": AZURE_VARS["BUILD_SOURCEVERSION"],
            "remote_url": "https://github.com/x/y",
            "CF_SIGN_KEY": secret,
            "SIDECAR_DIR": str(root / "build_artifacts"),
        }
    )
    run = _bash(STUBS + _snippet_block("build_steps.sh.snippet"), root, env)
    assert run.code == 0, run.out
    assert secret not in run.out  # even under conda-smithy's `set -x`
    if is_pr == "True":
        assert run.sidecars == [] and "UPLOAD" not in run.out
        return
    assert len(run.sidecars) == 3 and "UPLOAD" in run.out
    assert run.out.index("signing packages") < run.out.index("UPLOAD")
    _verify_all(world, root)


def test_run_osx_build_snippet(world: World, tmp_path: Path) -> None:
    root = _feedstock(world, tmp_path, "miniforge3/conda-bld")
    secret = world.secrets["numpy"]
    env = _base_env(
        {
            "MINIFORGE_HOME": str(root / "miniforge3"),
            "CONFIG": "osx_64_",
            "CI": "azure",
            "FEEDSTOCK_NAME": "numpy-feedstock",
            "UPLOAD_PACKAGES": "True",
            "IS_PR_BUILD": "False",
            "CF_SIGN_KEY": secret,
            "SIDECAR_DIR": str(root / "miniforge3" / "conda-bld"),
        }
    )
    run = _bash(STUBS + _snippet_block("run_osx_build.sh.snippet"), root, env)
    assert run.code == 0, run.out
    assert len(run.sidecars) == 3 and secret not in run.out
    _verify_all(world, root)


def test_run_win_build_snippet_shape() -> None:
    text = (TEMPLATES / "conda-smithy" / "run_win_build.bat.snippet").read_text()
    body = [line.strip() for line in text.splitlines() if not line.startswith("::")]
    sign = next(i for i, line in enumerate(body) if line.startswith("cf-sign sign"))
    upload = next(i for i, line in enumerate(body) if line.startswith("upload_package"))
    guard = body.index('if /i "%IS_PR_BUILD%" == "false" (')
    assert body.index('if /i "%UPLOAD_PACKAGES%" == "true" (') < guard < sign < upload
    assert "--key env:CF_SIGN_KEY" in body[sign]
    # cmd echoes expanded commands: the secret's value must never be expanded in the script.
    assert "%CF_SIGN_KEY%" not in text and "!CF_SIGN_KEY!" not in text
    assert body[sign + 1] == "if !errorlevel! neq 0 exit /b !errorlevel!"


def test_step_script_is_shared(world: World) -> None:
    azure = (TEMPLATES / "azure" / "cf-sign-steps.yml").read_text()
    github = (TEMPLATES / "github" / "action.yml").read_text()
    assert "cf-sign-step.sh" in azure and "cf-sign-step.sh" in github
    for name in ("build_steps.sh.snippet", "run_osx_build.sh.snippet"):
        assert "cf-sign-step.sh" in (TEMPLATES / "conda-smithy" / name).read_text()
    proc = subprocess.run(["bash", "-n", str(STEP_SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(STEP_SCRIPT)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
