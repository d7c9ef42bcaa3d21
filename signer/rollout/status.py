"""`cf-sign rollout status`: the roll-out's coverage, from the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signer.rollout.http import ApiError, JsonClient

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
    channel = report.get("channel")
    if isinstance(channel, dict):
        lines += [
            "# HELP cf_sign_rollout_channel_attested_share share of a subdir's records attested",
            "# TYPE cf_sign_rollout_channel_attested_share gauge",
            f'cf_sign_rollout_channel_attested_share{{subdir="{channel["subdir"]}"}} '
            f"{float(channel['attested_share'])}",
        ]
    return "\n".join(lines) + "\n"


def channel_share(
    client: JsonClient, repodata: Path, *, sample: int, seed: int | None = None
) -> dict[str, Any]:
    """Share of a channel subdir's records whose artifact the service holds an attestation
    for, from a uniform random sample (`sample` = 0: every record)."""
    import math
    import random
    import urllib.parse

    from signer.repodata.document import read_repodata

    doc = read_repodata(repodata, members=False)
    subdir = doc.subdir
    names = [r.filename for r in doc.records]
    picked = (
        names if sample <= 0 or sample >= len(names) else random.Random(seed).sample(names, sample)
    )
    attested = 0
    for filename in picked:
        path = f"/trust/attestations/{urllib.parse.quote(subdir)}/{urllib.parse.quote(filename)}"
        try:
            client.request("HEAD", f"{path}.sig.json")
            attested += 1
        except ApiError as exc:
            if exc.status != 404:
                raise
    share = attested / len(picked) if picked else 0.0
    # 95% interval of a sampled proportion (normal approximation), 0 when all were read.
    margin = 0.0
    if picked and len(picked) < len(names):
        margin = 1.96 * math.sqrt(share * (1 - share) / len(picked))
    return {
        "subdir": subdir,
        "records": len(names),
        "sampled": len(picked),
        "attested": attested,
        "attested_share": round(share, 4),
        "margin_95": round(margin, 4),
    }
