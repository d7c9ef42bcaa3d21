"""Build provenance from the CI environment, as conda-forge's pipelines export it.

conda-smithy's scripts export `FEEDSTOCK_NAME`, `sha`, `remote_url`, `flow_run_id` and `CI`
(and pass exactly these into the Linux build container); GitHub Actions and Azure Pipelines
add their own variables, used as fallbacks. The result is an in-toto statement with an SLSA
provenance v1 predicate about the artifact, signed like the publish attestation. Only the
variables named here are read: no secret can end up in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from signer.trust.attestation import statement

SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/conda-forge/cf-sign/blob/main/docs/ci.md#provenance-v1"

# What conda-forge's own scripts export; any one of them means "this is a CI build".
CONDA_FORGE_VARS = ("FEEDSTOCK_NAME", "sha", "remote_url", "flow_run_id", "CI")

_BUILDERS = {
    "azure": "https://dev.azure.com",
    "github_actions": "https://github.com/actions/runner",
    "travis": "https://travis-ci.com",
    "circle": "https://circleci.com",
    "drone": "https://drone.io",
}


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def ci_facts(env: Mapping[str, str]) -> dict[str, str] | None:
    """The build's facts from the environment, or None outside CI."""
    if not any(env.get(name, "").strip() for name in CONDA_FORGE_VARS):
        return None
    github_repo = _first(env, "GITHUB_REPOSITORY")
    github_url = (
        f"{env.get('GITHUB_SERVER_URL', 'https://github.com').rstrip('/')}/{github_repo}"
        if github_repo
        else None
    )
    facts = {
        "feedstock": _first(env, "FEEDSTOCK_NAME"),
        "ci": _first(env, "CI"),
        "sha": _first(env, "sha", "GITHUB_SHA", "BUILD_SOURCEVERSION"),
        "remote_url": _first(env, "remote_url", "BUILD_REPOSITORY_URI") or github_url,
        "run_id": _first(env, "flow_run_id", "GITHUB_RUN_ID", "BUILD_BUILDID"),
        "config": _first(env, "CONFIG"),
        "branch": _first(env, "GIT_BRANCH"),
    }
    return {k: v for k, v in facts.items() if v is not None}


def _feedstock_name(raw: str) -> str:
    """`zlib-feedstock` or `conda-forge/zlib-feedstock` (as CI exports it) -> `zlib`."""
    name = raw.strip().rsplit("/", 1)[-1]
    return name[: -len("-feedstock")] if name.endswith("-feedstock") else name


def provenance_statement(
    artifact_filename: str, sha256: str, facts: Mapping[str, str], feedstock: str | None = None
) -> dict[str, Any]:
    """An SLSA v1 provenance statement for one artifact.

    `feedstock` is the name the sidecar carries; the provenance names the same feedstock
    (CI exports the repository name, `zlib-feedstock`, where delegations say `zlib`).
    """
    facts = dict(facts)
    if feedstock is not None:
        facts["feedstock"] = feedstock
    elif "feedstock" in facts:
        facts["feedstock"] = _feedstock_name(facts["feedstock"])
    external = {k: facts[k] for k in ("feedstock", "remote_url", "branch", "config") if k in facts}
    build: dict[str, Any] = {
        "buildType": BUILD_TYPE,
        "externalParameters": external,
        "internalParameters": {"ci": facts["ci"]} if "ci" in facts else {},
    }
    if "sha" in facts:
        dependency: dict[str, Any] = {"digest": {"gitCommit": facts["sha"]}}
        if "remote_url" in facts:
            dependency["uri"] = f"git+{facts['remote_url']}@{facts['sha']}"
        build["resolvedDependencies"] = [dependency]
    ci = facts.get("ci", "")
    run: dict[str, Any] = {
        "builder": {"id": _BUILDERS.get(ci.lower(), f"urn:ci:{ci or 'unknown'}")}
    }
    if "run_id" in facts:
        run["metadata"] = {"invocationId": facts["run_id"]}
    predicate = {"buildDefinition": build, "runDetails": run}
    return statement(artifact_filename, sha256, SLSA_PROVENANCE, predicate)
