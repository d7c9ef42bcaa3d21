"""`cf-sign rollout status`: the roll-out's coverage, from the service."""

from __future__ import annotations

from typing import Any

from signer.rollout.http import JsonClient

METRIC = "cf_sign_rollout_feedstocks"


def coverage(client: JsonClient, *, days: int) -> dict[str, Any]:
    body = client.request("GET", f"/v1/admin/rollout/coverage?days={int(days)}").body
    if not isinstance(body, dict):
        raise ValueError("the service's coverage answer is not an object")
    return body


def prometheus(report: dict[str, Any]) -> str:
    """The coverage as Prometheus text exposition (a node-exporter textfile, say)."""
    lines = [
        f"# HELP {METRIC} conda-forge feedstocks by roll-out state",
        f"# TYPE {METRIC} gauge",
    ]
    for state in ("feedstocks", "provisioned", "signing", "off", "observe", "enforced"):
        lines.append(f'{METRIC}{{state="{state}"}} {int(report.get(state, 0))}')
    lines += [
        "# HELP cf_sign_rollout_attestations attestations the service holds",
        "# TYPE cf_sign_rollout_attestations gauge",
        f"cf_sign_rollout_attestations {int(report.get('attestations', 0))}",
    ]
    return "\n".join(lines) + "\n"
