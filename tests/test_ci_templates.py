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
from collections.abc import Iterator, Mapping
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
    # Left in the build dir by another variant or recipe: not this build's to sign.
    world.build("numpy-extra", "1.0", "h0_0", out=bld / "linux-64")
    return root


OUTPUTS = "numpy numpy-base libnumpy-data"


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

    packages = [
        p
        for p in root.rglob("*")
        if p.name.endswith((".conda", ".tar.bz2")) and not p.name.startswith("numpy-extra-")
    ]
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
    script, step_env = _azure_script({"outputs": OUTPUTS}, variables)
    env = _base_env({**AZURE_VARS, "BUILD_REASON": reason, **step_env, **extra})
    return _bash(script, root, env)


def test_azure_template_signs_on_ci_builds(world: World, tmp_path: Path) -> None:
    root = _feedstock(world, tmp_path)
    secret = world.secrets["numpy"]
    run = _run_azure(world, root, "IndividualCI", secret)
    assert run.code == 0, run.out
    assert len(run.sidecars) == 3 and secret not in run.out
    assert "(not submitted)" in run.out  # no serviceUrl given
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
    assert action["inputs"]["outputs"]["required"] is True
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
    script, step_env = _github_script({"key": secret, "outputs": OUTPUTS})
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


def test_azure_template_submits_what_it_signed(
    world: World, service: tuple[object, object], tmp_path: Path
) -> None:
    import httpx

    from signer.rollout.apply import key_from_pem

    svc_world, server = service
    url = server.url  # type: ignore[attr-defined]
    public, _ = key_from_pem(world.secrets["numpy"].encode(), "numpy")
    token = svc_world.registrar_token  # type: ignore[attr-defined]
    body = {"name": "numpy", "outputs": ["numpy", "numpy-base", "libnumpy-data"],
            "keys": [public]}  # fmt: skip
    response = httpx.post(f"{url}/v1/admin/feedstocks", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.status_code == 201, response.text
    root = _feedstock(world, tmp_path)
    # A sidecar an earlier step left: not this step's to submit.
    stale = next((root / "build_artifacts" / "linux-64").glob("numpy-extra-*.conda"))
    stale.with_name(stale.name + ".sig.json").write_text("{}")
    variables = {"CF_SIGN_KEY": world.secrets["numpy"]}
    script, step_env = _azure_script({"outputs": OUTPUTS, "serviceUrl": url}, variables)
    env = _base_env({**AZURE_VARS, "BUILD_REASON": "IndividualCI", **step_env})
    run = _bash(script, root, env)
    assert run.code == 0, run.out
    assert "submitting 3 attestation(s)" in run.out and "3 accepted, 0 refused" in run.out
    assert world.secrets["numpy"] not in run.out


def test_azure_template_needs_the_outputs(world: World, tmp_path: Path) -> None:
    root = _feedstock(world, tmp_path)
    script, step_env = _azure_script({"outputs": ""}, {"CF_SIGN_KEY": world.secrets["numpy"]})
    env = _base_env({**AZURE_VARS, "BUILD_REASON": "IndividualCI", **step_env})
    run = _bash(script, root, env)
    assert run.code == 2 and "CF_SIGN_OUTPUTS is empty" in run.out
    assert run.sidecars == []


def test_step_script_is_shared() -> None:
    azure = (TEMPLATES / "azure" / "cf-sign-steps.yml").read_text()
    github = (TEMPLATES / "github" / "action.yml").read_text()
    assert "cf-sign-step.sh" in azure and "cf-sign-step.sh" in github
    proc = subprocess.run(["bash", "-n", str(STEP_SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(STEP_SCRIPT)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


# ----------------------------------------------------------------------------- vendored files

VENDOR = REPO.parent / "shared" / "vendor"
SMITHY_ARCHIVE = VENDOR / "conda-smithy-templates-2026.8.5.post1.tar.gz"
CI_SETUP_ARCHIVE = VENDOR / "conda-forge-ci-setup-4.27.1.tar.gz"
SMITHY_PATCH = TEMPLATES / "conda-smithy" / "conda-forge-output-signing.patch"
CI_SETUP_PATCH = TEMPLATES / "conda-forge-ci-setup" / "output-signing.patch"


def _need_vendor() -> None:
    missing = [p.name for p in (SMITHY_ARCHIVE, CI_SETUP_ARCHIVE) if not p.is_file()]
    if not missing:
        return
    message = f"vendored conda-forge files missing in {VENDOR}: {', '.join(missing)}"
    if os.environ.get("CF_SIGN_REQUIRE_REAL_CLIENTS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _unpack(archive: Path, dest: Path) -> Path:
    import tarfile

    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (top,) = dest.iterdir()
    return top


def _apply(patch_file: Path, tree: Path, tool: str) -> None:
    if tool == "git":
        cmd = ["git", "apply", "-p1", "--whitespace=error", str(patch_file)]
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    else:
        cmd = ["patch", "-p1", "--forward", "--no-backup-if-mismatch", "-F0", "-i", str(patch_file)]
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        # A clean patch: no fuzz, no offset, nothing rejected.
        assert "offset" not in proc.stdout and "fuzz" not in proc.stdout, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@dataclass
class Vendored:
    smithy_orig: Path
    smithy: Path
    ci_setup_orig: Path
    ci_setup: Path


@pytest.fixture(scope="module")
def vendored(tmp_path_factory: pytest.TempPathFactory) -> Vendored:
    _need_vendor()
    base = tmp_path_factory.mktemp("vendor")
    trees = [
        _unpack(archive, base / name)
        for archive, name in (
            (SMITHY_ARCHIVE, "smithy-orig"),
            (SMITHY_ARCHIVE, "smithy"),
            (CI_SETUP_ARCHIVE, "ci-setup-orig"),
            (CI_SETUP_ARCHIVE, "ci-setup"),
        )
    ]
    _apply(SMITHY_PATCH, trees[1], "patch")
    _apply(CI_SETUP_PATCH, trees[3], "patch")
    return Vendored(*trees)


@pytest.mark.parametrize("tool", ["patch", "git"])
def test_patches_apply_cleanly(tmp_path: Path, tool: str) -> None:
    _need_vendor()
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}")
    for archive, patch_file in ((SMITHY_ARCHIVE, SMITHY_PATCH), (CI_SETUP_ARCHIVE, CI_SETUP_PATCH)):
        tree = _unpack(archive, tmp_path / archive.name)
        _apply(patch_file, tree, tool)
    # Reversing restores the vendored files byte for byte (nothing else was touched).
    tree = _unpack(SMITHY_ARCHIVE, tmp_path / "again")
    orig = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    _apply(SMITHY_PATCH, tree, tool)
    assert any(p.read_bytes() != data for p, data in orig.items())
    proc = subprocess.run(
        ["patch", "-p1", "-R", "-i", str(SMITHY_PATCH)], cwd=tree, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
    assert all(p.read_bytes() == data for p, data in orig.items())


# ----------------------------------------------------------------------------- rendering

PLATFORMS = {"linux": "linux-64", "osx": "osx-arm64", "win": "win-64"}


def _config(os_name: str) -> dict[str, object]:
    platform = PLATFORMS[os_name]
    return {
        "config_name": f"{os_name}_64_",
        "config_name_short": f"{os_name}_64",
        "build_platform": platform,
        "config": {"docker_image": ["quay.io/condaforge/linux-anvil-x86_64:alma9"]},
        "upload": True,
        "store_build_artifacts": False,
        "free_disk_space": "skip",
        "pagefile_size": 0,
        "resize_partitions": False,
        "gha_os": {"linux": "ubuntu", "osx": "macos", "win": "windows"}[os_name],
        "gha_runs_on": ["ubuntu-latest"],
        "build_workspace_dir": "build_artifacts",
        "tools_install_dir": "~/miniforge3",
        "docker_run_args": "",
    }


def _context(signing: bool | None, secrets: list[str] | None = None) -> dict[str, object]:
    """What conda-smithy passes its templates (forge_config), for one job per platform."""
    ctx: dict[str, object] = {
        "configs": [_config(o) for o in PLATFORMS],
        "secrets": secrets or ["BINSTAR_TOKEN", "FEEDSTOCK_TOKEN", "STAGING_BINSTAR_TOKEN"],
        "azure_yaml": "pool:\n  vmImage: ubuntu-latest",
        "clone_depth": None,
        "upload_on_branch": None,
        "azure": {"settings_win": {"install_atl": False}},
        "github_actions": {
            "triggers": ["push", "pull_request"],
            "cancel_in_progress": True,
            "max_parallel": None,
            "timeout_minutes": 360,
            "artifact_retention_days": 14,
        },
        "choco": [],
        "recipe_dir": "recipe",
        "docker": {
            "executable": "docker",
            "command": "bash",
            "fallback_image": "quay.io/condaforge/linux-anvil-x86_64:alma9",
        },
        "conda_forge_output_validation": True,
    }
    if signing is not None:
        ctx["conda_forge_output_signing"] = signing
    return ctx


def _render(tree: Path, name: str, ctx: Mapping[str, object]) -> str:
    import jinja2

    # As conda-smithy's make_jinja_env: a loader on the templates and the `do` extension.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(tree / "conda_smithy" / "templates")),
        extensions=["jinja2.ext.do"],
    )
    return env.get_template(name).render(**ctx)


TEMPLATE_NAMES = (
    "azure-pipelines-linux.yml.tmpl",
    "azure-pipelines-osx.yml.tmpl",
    "azure-pipelines-win.yml.tmpl",
    "github-actions.yml.tmpl",
    "run_docker_build.sh.tmpl",
)


@pytest.mark.parametrize("signing", [None, False])
def test_rendering_unchanged_when_off(vendored: Vendored, signing: bool | None) -> None:
    for name in TEMPLATE_NAMES:
        before = _render(vendored.smithy_orig, name, _context(None))
        after = _render(vendored.smithy, name, _context(signing))
        assert after == before, name
        assert "CF_SIGN" not in after


def _azure_build_step(text: str) -> dict[str, object]:
    doc = yaml.safe_load(text)
    (job,) = doc["jobs"]
    steps = [s for s in job["steps"] if "script" in s and "run_" in s["script"]]
    (step,) = steps
    assert isinstance(step, dict)
    return step


@pytest.mark.parametrize("os_name", ["linux", "osx", "win"])
def test_azure_renders_the_key(vendored: Vendored, os_name: str) -> None:
    on = _render(vendored.smithy, f"azure-pipelines-{os_name}.yml.tmpl", _context(True))
    step = _azure_build_step(on)
    env = step["env"]
    assert isinstance(env, dict)
    # Like FEEDSTOCK_TOKEN: the secret macro; on PR builds it stays the literal "$(CF_SIGN_KEY)".
    assert env["CF_SIGN_KEY"] == "$(CF_SIGN_KEY)"
    assert env["FEEDSTOCK_TOKEN"] == "$(FEEDSTOCK_TOKEN)"
    off = _azure_build_step(
        _render(vendored.smithy, f"azure-pipelines-{os_name}.yml.tmpl", _context(False))
    )
    assert {**off["env"], "CF_SIGN_KEY": "$(CF_SIGN_KEY)"} == env  # type: ignore[dict-item]
    # Already listed under `secrets:` by hand: once, not twice (YAML would keep the last).
    listed = _render(
        vendored.smithy,
        f"azure-pipelines-{os_name}.yml.tmpl",
        _context(True, ["BINSTAR_TOKEN", "CF_SIGN_KEY"]),
    )
    assert listed.count("CF_SIGN_KEY: $(CF_SIGN_KEY)") == 1


def test_github_actions_renders_the_key(vendored: Vendored) -> None:
    doc = yaml.safe_load(_render(vendored.smithy, "github-actions.yml.tmpl", _context(True)))
    steps = {s["name"]: s for s in doc["jobs"]["build"]["steps"]}
    for name in ("Build on Linux", "Build on macOS", "Build on windows"):
        env = steps[name]["env"]
        assert env["CF_SIGN_KEY"] == "${{ secrets.CF_SIGN_KEY }}", name
        assert env["FEEDSTOCK_TOKEN"] == "${{ secrets.FEEDSTOCK_TOKEN }}", name
    assert "permissions" not in doc  # no OIDC token: the key is the credential


DOCKER_STANDIN = """#!/usr/bin/env bash
# docker stand-in: records `docker run`'s arguments and what the container would receive.
if [[ "$1" == "run" ]]; then
    printf '%s\\n' "$@" > "$STANDIN_DIR/docker-args"
    if [[ -n "${CF_SIGN_KEY:-}" ]]; then echo present > "$STANDIN_DIR/key-in-env"; fi
    touch "$STANDIN_DIR/build_artifacts/conda-forge-build-done-$CONFIG"
fi
"""


@pytest.mark.parametrize("signing", [True, False])
def test_run_docker_build_passes_the_key_by_name(
    vendored: Vendored, tmp_path: Path, signing: bool
) -> None:
    root = tmp_path / "zlib-feedstock"
    (root / ".scripts").mkdir(parents=True)
    script = root / ".scripts" / "run_docker_build.sh"
    script.write_text(_render(vendored.smithy, "run_docker_build.sh.tmpl", _context(signing)))
    (root / ".scripts" / "logging_utils.sh").write_text("startgroup() { :; }\nendgroup() { :; }\n")
    docker = tmp_path / "docker"
    docker.write_text(DOCKER_STANDIN)
    docker.chmod(0o755)
    secret = "0123456789abcdef" * 4
    env = _base_env(
        {
            "DOCKER_EXECUTABLE": str(docker),
            "STANDIN_DIR": str(root),
            "CONFIG": "linux_64_",
            "CI": "azure",
            "DOCKER_IMAGE": "quay.io/condaforge/linux-anvil-x86_64:alma9",
            "sha": "0" * 40,
            "CF_SIGN_KEY": secret,
        }
    )
    run = _bash(f"bash {script}", root, env)
    assert run.code == 0, run.out
    args = (root / "docker-args").read_text().splitlines()
    assert secret not in run.out and secret not in "\n".join(args)
    pairs = {args[i + 1] for i, a in enumerate(args[:-1]) if a == "-e"}
    assert "FEEDSTOCK_TOKEN" in pairs
    assert ("CF_SIGN_KEY" in pairs) is signing
    assert ("CF_SIGN_SERVICE_URL" in pairs) is signing


# ----------------------------------------------------------------------------- upload step

# Stand-ins for what conda-forge-ci-setup imports but this test does not exercise: the
# anaconda.org API client (nothing exists on the channel unless STANDIN_PROD names it),
# conda's context, conda-build's render (the variant's outputs, from outputs.json).
STUB_MODULES = {
    "binstar_client/__init__.py": "class BinstarError(Exception):\n    pass\n",
    "binstar_client/errors.py": (
        "from binstar_client import BinstarError\n\n\nclass NotFound(BinstarError):\n    pass\n"
    ),
    "binstar_client/utils.py": """
import os
from urllib.parse import unquote

from binstar_client.errors import NotFound


class _Session:
    def request(self, *args, **kwargs):
        raise NotFound("stand-in")


class _Api:
    def __init__(self, token):
        self.token = token
        self.session = _Session()

    def distribution(self, owner, name, version, basename=None):
        prod = os.environ.get("STANDIN_PROD", "").split()
        if owner == "conda-forge" and basename and unquote(basename) in prod:
            return {"labels": ["main"]}
        raise NotFound(basename)


def get_server_api(token=None, **kwargs):
    return _Api(token)
""",
    "conda/__init__.py": "",
    "conda/base/__init__.py": "",
    "conda/base/context.py": (
        "class _Context:\n    subdir = 'linux-64'\n\n\ncontext = _Context()\n"
    ),
    "conda_build/__init__.py": "",
    "conda_build/config.py": """
import os

croot = os.environ["CONDA_BLD_PATH"]


class Config:
    def __init__(self, **kwargs):
        self.target_subdir = "linux-64"
""",
    "conda_build/api.py": """
import json
import os


class _Meta:
    def __init__(self, name, subdir):
        self._name = name

        class _C:
            target_subdir = subdir

        self.config = _C()

    def name(self):
        return self._name

    def skip(self):
        return False


def render(recipe_dir, variant_config_files=None, **kwargs):
    with open(os.path.join(recipe_dir, "outputs.json")) as f:
        spec = json.load(f)
    return [(_Meta(n, spec["subdir"]), None, None) for n in spec["names"]]
""",
    "conda_build/variants.py": (
        "def combine_specs(*a, **k):\n    return {}\n\n\n"
        "def parse_config_file(*a, **k):\n    return {}\n"
    ),
    "joblib/__init__.py": (
        "class Memory:\n    def __init__(self, *a, **k):\n        pass\n\n"
        "    def cache(self, f):\n        return f\n"
    ),
    "rattler_build_conda_compat/__init__.py": "",
    "rattler_build_conda_compat/render.py": "def render(*a, **k):\n    raise NotImplementedError\n",
    "conda_forge_metadata/__init__.py": "",
    "conda_forge_metadata/feedstock_outputs.py": (
        "def package_to_feedstock(name):\n    return []\n\n\n"
        "def feedstock_outputs_config():\n    return {}\n"
    ),
}

# `anaconda` on PATH: records each upload (and that the file's sidecar was already made).
ANACONDA_STANDIN = """#!{python}
import json, os, sys
args = sys.argv[1:]
path = args[args.index("upload") + 1]
with open(os.environ["STANDIN_EVENTS"], "a") as f:
    f.write(json.dumps({{"event": "upload", "file": os.path.basename(path),
                        "sidecar": os.path.exists(path + ".sig.json"), "args": args}}) + "\\n")
"""

UPLOAD_DRIVER = """
import os, sys
from conda_forge_ci_setup import feedstock_outputs
from conda_forge_ci_setup import upload_or_check_non_existence as u

feedstock_outputs.VALIDATION_ENDPOINT = os.environ["STANDIN_WEBSERVICE"]
try:
    u.retry_upload_or_check(
        "zlib", os.environ["RECIPE_DIR"], "cf-staging", "main", [os.environ["CONFIG_FILE"]],
        validate=True, git_sha="0" * 40, feedstock_root=os.environ["FEEDSTOCK_ROOT"],
    )
except u.AttestationRefused as exc:
    print("REFUSED:", exc)
    sys.exit(3)
"""


class _Recorder:
    """Loopback HTTP stand-ins: conda-forge's webservice, and a recording front for the
    real cf-sign service (requests forwarded as they are)."""

    def __init__(self, events: Path, service_url: str) -> None:
        import http.server
        import json
        import threading
        import urllib.error
        import urllib.request

        recorder = self
        self.copies: list[dict[str, object]] = []
        self.submissions: list[dict[str, object]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                doc = json.loads(body)
                if self.path == "/feedstock-outputs/copy":
                    assert self.headers["FEEDSTOCK_TOKEN"] == "feedstock-token"
                    recorder.copies.append(doc)
                    with events.open("a") as f:
                        f.write(json.dumps({"event": "copy", "files": sorted(doc["outputs"])}))
                        f.write("\n")
                    copied = {name: True for name in doc["outputs"]}
                    self._reply(200, json.dumps({"copied": copied}).encode())
                    return
                recorder.submissions.append(doc)
                with events.open("a") as f:
                    files = sorted(doc.get("artifacts", {}))
                    f.write(json.dumps({"event": "submit", "files": files}) + "\n")
                request = urllib.request.Request(
                    service_url + self.path,
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        self._reply(response.status, response.read())
                except urllib.error.HTTPError as exc:
                    self._reply(exc.code, exc.read())

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, object]]:
    import test_service_support as support

    base = tmp_path_factory.mktemp("service")
    svc_world = support.make_world(base, support.database_for("sqlite", base))
    server = svc_world.server()
    yield svc_world, server
    server.stop()


_ZLIB_SECRET: dict[str, str] = {}


def _register_zlib(svc_world: object, server: object) -> str:
    """Register feedstock zlib (outputs zlib, libzlib) with a new key once; the secret."""
    import httpx

    url = server.url  # type: ignore[attr-defined]
    if url in _ZLIB_SECRET:
        return _ZLIB_SECRET[url]
    keyref, pub = svc_world.feedstock_key("zlib")  # type: ignore[attr-defined]
    token = svc_world.registrar_token  # type: ignore[attr-defined]
    response = httpx.post(
        f"{url}/v1/admin/feedstocks",
        json={"name": "zlib", "outputs": ["zlib", "libzlib"], "keys": [pub]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    _ZLIB_SECRET[url] = Path(keyref[len("file:") :]).read_text()
    return _ZLIB_SECRET[url]


def _upload_tree(tmp_path: Path, signing: bool) -> tuple[Path, Path, Path]:
    """A feedstock checkout with a conda-build output dir, and the stand-in modules."""
    from signer.artifacts.build import build_package

    root = tmp_path / "zlib-feedstock"
    recipe = root / "recipe"
    recipe.mkdir(parents=True)
    (recipe / "outputs.json").write_text('{"names": ["zlib", "libzlib"], "subdir": "linux-64"}')
    (root / ".ci_support").mkdir()
    (root / ".ci_support" / "linux_64_.yaml").write_text("docker_image:\n- x\n")
    switch = "conda_forge_output_signing: true\n" if signing else ""
    (root / "conda-forge.yml").write_text("conda_forge_output_validation: true\n" + switch)
    # Not $MINIFORGE_HOME/conda-bld: the upload step follows $CONDA_BLD_PATH (osx included).
    croot = tmp_path / "somewhere" / "conda-bld"
    build_package(croot / "linux-64", "zlib", "1.3.1", "h4ab18f5_1", subdir="linux-64")
    build_package(croot / "linux-64", "libzlib", "1.3.1", "h4ab18f5_1", subdir="linux-64")
    build_package(croot / "linux-64", "libzlib", "1.3.0", "h4ab18f5_0", subdir="linux-64")
    # Left by another recipe: not this variant's output, neither signed nor uploaded.
    build_package(croot / "linux-64", "bzip2", "1.0.8", "h0_0", subdir="linux-64")
    stubs = tmp_path / "stubs"
    for name, text in STUB_MODULES.items():
        (stubs / name).parent.mkdir(parents=True, exist_ok=True)
        (stubs / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    anaconda = bin_dir / "anaconda"
    anaconda.write_text(ANACONDA_STANDIN.format(python=sys.executable))
    anaconda.chmod(0o755)
    return root, croot, stubs


def _run_upload(
    vendored: Vendored,
    tmp_path: Path,
    service_url: str,
    secret: str,
    events: Path,
    signing: bool = True,
    **extra: str,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    root, croot, stubs = _upload_tree(tmp_path, signing)
    recorder_env = {
        "PYTHONPATH": os.pathsep.join([str(vendored.ci_setup / "recipe"), str(stubs)]),
        "PATH": f"{tmp_path / 'bin'}:{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CONDA_BLD_PATH": str(croot),
        "FEEDSTOCK_ROOT": str(root),
        "RECIPE_DIR": str(root / "recipe"),
        "CONFIG_FILE": str(root / ".ci_support" / "linux_64_.yaml"),
        "STAGING_BINSTAR_TOKEN": "staging-token",
        "FEEDSTOCK_TOKEN": "feedstock-token",
        "CF_SIGN_KEY": secret,
        "CF_SIGN_SERVICE_URL": service_url,
        "STANDIN_EVENTS": str(events),
        "CI": "azure",
        "FEEDSTOCK_NAME": "zlib-feedstock",
        "sha": "0" * 40,
        **extra,
    }
    proc = subprocess.run(
        [sys.executable, "-c", UPLOAD_DRIVER],
        cwd=tmp_path,
        env=recorder_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=300,
    )
    return proc, croot


def _events(path: Path) -> list[dict[str, object]]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_upload_step_signs_and_submits_exactly_what_it_uploads(
    vendored: Vendored, service: tuple[object, object], tmp_path: Path
) -> None:
    import json

    svc_world, server = service
    secret = _register_zlib(svc_world, server)
    events = tmp_path / "events.jsonl"
    recorder = _Recorder(events, server.url)  # type: ignore[attr-defined]
    try:
        # libzlib 1.3.0 is already in production: not uploaded again, so not signed either.
        proc, croot = _run_upload(
            vendored,
            tmp_path,
            recorder.url,
            secret,
            events,
            STANDIN_WEBSERVICE=recorder.url,
            STANDIN_PROD="linux-64/libzlib-1.3.0-h4ab18f5_0.conda",
        )
    finally:
        recorder.close()
    assert proc.returncode == 0, proc.stdout
    assert secret not in proc.stdout
    log = _events(events)
    uploaded = sorted(str(e["file"]) for e in log if e["event"] == "upload")
    expected = ["libzlib-1.3.1-h4ab18f5_1.conda", "zlib-1.3.1-h4ab18f5_1.conda"]
    assert uploaded == expected
    # Submitted once, as one batch, before the first upload; copy (production) last.
    kinds = [e["event"] for e in log]
    assert kinds == ["submit", "upload", "upload", "copy"], kinds
    assert log[0]["files"] == [f"linux-64/{name}" for name in expected]
    assert all(e["sidecar"] for e in log if e["event"] == "upload")
    assert len(recorder.submissions) == 1 and len(recorder.copies) == 1
    sidecars = sorted(p.name for p in croot.rglob("*.sig.json"))
    assert sidecars == [f"{name}.sig.json" for name in expected]
    # Sidecars are never uploaded: only the packages went to anaconda.org.
    assert all(not str(e["file"]).endswith(".sig.json") for e in log if e["event"] == "upload")
    doc = json.loads((croot / "linux-64" / f"{expected[1]}.sig.json").read_text())
    assert doc["feedstock"] == "zlib"

    # The service accepted and now serves them: verify the uploaded files against it.
    import test_service_support as support

    code, out, err = support.run_process(
        "verify",
        *(croot / "linux-64" / name for name in expected),
        "--trust",
        f"{server.url}/trust",  # type: ignore[attr-defined]
        "--root",
        svc_world.repo.root_file,  # type: ignore[attr-defined]
        "--state-dir",
        tmp_path / "state",
    )
    assert code == 0, out + err


def test_refused_attestation_fails_the_upload(
    vendored: Vendored, service: tuple[object, object], tmp_path: Path
) -> None:
    from signer.keys import generate_key

    svc_world, server = service
    _register_zlib(svc_world, server)
    # Control's counterpart: a key the service never delegated for zlib (a stolen or a
    # stale secret). Everything else is as in the accepted run above.
    key_path, _, _ = generate_key("intruder", tmp_path / "keys")
    events = tmp_path / "events.jsonl"
    recorder = _Recorder(events, server.url)  # type: ignore[attr-defined]
    try:
        proc, _ = _run_upload(
            vendored,
            tmp_path,
            recorder.url,
            key_path.read_text(),
            events,
            STANDIN_WEBSERVICE=recorder.url,
        )
    finally:
        recorder.close()
    assert proc.returncode == 3, proc.stdout
    assert "refused" in proc.stdout
    kinds = [e["event"] for e in _events(events)]
    assert kinds == ["submit"]  # refused once, no retry, nothing uploaded or copied


@pytest.mark.parametrize("value", ["", "$(CF_SIGN_KEY)"])
def test_upload_step_without_the_key_uploads_nothing(
    vendored: Vendored, tmp_path: Path, value: str
) -> None:
    events = tmp_path / "events.jsonl"
    proc, croot = _run_upload(
        vendored,
        tmp_path,
        "http://127.0.0.1:9",
        value,
        events,
        STANDIN_WEBSERVICE="http://127.0.0.1:9",
    )
    assert proc.returncode == 3 and "CF_SIGN_KEY secret is not set" in proc.stdout
    assert _events(events) == [] and not list(croot.rglob("*.sig.json"))


def test_upload_step_off_is_unchanged(vendored: Vendored, tmp_path: Path) -> None:
    """conda_forge_output_signing unset: uploads as before, cf-sign never runs."""
    events = tmp_path / "events.jsonl"
    recorder = _Recorder(events, "http://127.0.0.1:9")
    try:
        # CF_SIGN=false: were cf-sign called at all, the run would fail.
        proc, croot = _run_upload(
            vendored, tmp_path, recorder.url, "", events, signing=False,
            STANDIN_WEBSERVICE=recorder.url, CF_SIGN="false",
        )  # fmt: skip
    finally:
        recorder.close()
    assert proc.returncode == 0, proc.stdout
    kinds = [e["event"] for e in _events(events)]
    assert kinds == ["upload", "upload", "upload", "copy"], kinds
    assert not list(croot.rglob("*.sig.json")) and recorder.submissions == []
