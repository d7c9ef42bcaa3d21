"""The real clients that judge cf-sign's output: libmamba's verifier and conda with cct.

Tests get them from environment variables (CI sets them in .ci/run):
- CF_SIGN_LIBMAMBA_JUDGE: the `mamba-harness` binary built by
  ../shared/tools/libmamba-judge/build (libmamba's own validation code);
- CF_SIGN_CONDA_CCT_VENV: a virtual environment holding conda and conda-content-trust
  (../shared/tools/install-conda VENV --with-cct).
Unset, a test needing one skips with the reason; with CF_SIGN_REQUIRE_REAL_CLIENTS=1 it
fails instead, so a broken CI set-up cannot pass as a row of skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import pytest

REQUIRE = "CF_SIGN_REQUIRE_REAL_CLIENTS"
JUDGE = "CF_SIGN_LIBMAMBA_JUDGE"
CONDA_VENV = "CF_SIGN_CONDA_CCT_VENV"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} (required: {REQUIRE}=1)", pytrace=False)
    pytest.skip(reason)


def libmamba_judge() -> Path:
    """The judge binary, or skip (fail when required)."""
    value = os.environ.get(JUDGE, "")
    if not value:
        _unavailable(f"{JUDGE} is not set to a built mamba-harness; build one with "
                     "../shared/tools/libmamba-judge/build .cache/libmamba-judge")  # fmt: skip
    path = Path(value)
    if not path.is_file() or not os.access(path, os.X_OK):
        _unavailable(f"{JUDGE}={value} is not an executable file")
    return path


def conda_cct_venv() -> Path:
    """A venv with conda and conda-content-trust, or skip (fail when required)."""
    value = os.environ.get(CONDA_VENV, "")
    if not value:
        _unavailable(f"{CONDA_VENV} is not set to a venv with conda and conda-content-trust; "
                     "make one with ../shared/tools/install-conda VENV --with-cct")  # fmt: skip
    venv = Path(value)
    python = venv / "bin" / "python"
    site = list(venv.glob("lib/python3*/site-packages"))
    if not python.exists() or not site:
        _unavailable(f"{CONDA_VENV}={value} is not a virtual environment")
    for package in ("conda", "conda_content_trust"):
        if not (site[0] / package).is_dir():
            _unavailable(f"{CONDA_VENV}={value} has no {package} installed")
    return venv


def run_judge(judge: Path, *args: object, timeout: float = 300) -> dict[str, Any]:
    """Run one judge command; its one-line JSON verdict (exit 0 is asserted)."""
    proc = subprocess.run([str(judge), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"judge exit {proc.returncode}: {proc.stderr[-2000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"judge printed nothing: {proc.stderr[-2000:]}"
    verdict: dict[str, Any] = json.loads(lines[-1])
    return verdict


def conda_overlay(base: Path, venv: Path) -> Path:
    """A fresh venv at `base` that runs `venv`'s conda with its own prefix.

    conda-content-trust keeps the trusted root in `sys.prefix/etc/conda/`; an overlay (a
    venv whose site-packages points at the shared venv's) gives each test its own prefix
    without copying or touching the shared installation.
    """
    subprocess.run([str(venv / "bin" / "python"), "-m", "venv", "--without-pip", str(base)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    (shared_site,) = venv.glob("lib/python3*/site-packages")
    (own_site,) = base.glob("lib/python3*/site-packages")
    line = f"import site; site.addsitedir({str(shared_site)!r})\n"
    (own_site / "_shared_conda.pth").write_text(line)
    (base / "etc" / "conda").mkdir(parents=True, exist_ok=True)
    return base / "bin" / "python"


def conda_env(base: Path, condarc: Path) -> dict[str, str]:
    """Environment for an isolated conda run: its own condarc, package cache and home."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "PYTHON"))}
    return {**keep, "CONDARC": str(condarc), "CONDA_PKGS_DIRS": str(base / "pkgs"),
            "HOME": str(base / "home"), "XDG_CONFIG_HOME": str(base / "home" / ".config"),
            "PYTHONNOUSERSITE": "1", "NO_COLOR": "1"}  # fmt: skip



# conda's plan line: "  name   channel/subdir::name-version-build (package metadata is X)"
PLAN_LINE = re.compile(r"^\s+(\S+)\s+\S+::(\S+)(?: \((.+)\))?$", re.M)
TRUSTED = "package metadata is TRUSTED"
UNTRUSTED = "package metadata is UNTRUSTED"


class Plan(NamedTuple):
    code: int
    out: str  # stdout and stderr
    marks: dict[str, str]  # package -> its trust mark ("" when conda printed none)
    prefix: Path


class Conda:
    """A real conda with conda-content-trust, its own prefix (own etc/conda/ holding the
    trusted root), condarc and package caches, installing from one channel."""

    def __init__(self, base: Path, trusted_root: Path, channel: str, signing_url: str,
                 *, root_name: str | None = None) -> None:  # fmt: skip
        self.base, self.channel = base, channel
        self.python = conda_overlay(base / "venv", conda_cct_venv())
        self.av_data_dir = base / "venv" / "etc" / "conda"
        shutil.copy(trusted_root, self.av_data_dir / (root_name or trusted_root.name))
        self.condarc = base / "condarc"
        self.condarc.write_text(
            "extra_safety_checks: true\n"
            f"signing_metadata_url_base: {signing_url}\n"
            "number_channel_notices: 0\n"
            "notify_outdated_conda: false\n"
        )
        self.runs = 0

    def create(self, *specs: str, dry_run: bool = False) -> Plan:
        """`conda create` into a new prefix, with a fresh package cache (so conda reads the
        channel's repodata again)."""
        self.runs += 1
        env = conda_env(self.base, self.condarc)
        env["CONDA_PKGS_DIRS"] = str(self.base / f"pkgs-{self.runs}")
        prefix = self.base / f"env-{self.runs}"
        proc = subprocess.run(
            [str(self.python), "-m", "conda", "create", *(["--dry-run"] if dry_run else []),
             "--yes", "-p", str(prefix), "--override-channels", "-c", self.channel,
             "--solver", "classic", "--repodata-fn", "repodata.json", *specs],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        marks = {m.group(1): m.group(3) or "" for m in PLAN_LINE.finditer(proc.stdout)}
        return Plan(proc.returncode, proc.stdout + proc.stderr, marks, prefix)

    def dry_run(self, *specs: str) -> tuple[str, dict[str, str]]:
        """conda create --dry-run: its output and {package: its trust mark}."""
        plan = self.create(*specs, dry_run=True)
        return plan.out, plan.marks
