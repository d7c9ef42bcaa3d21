"""Signing every record of a repodata: conda profile, and optionally the mamba profile."""

from __future__ import annotations

from typing import Any

from signer.repodata.document import SplitRepodata, parse_record_checked
from signer.repodata.parallel import map_ranges
from signer.repodata.profiles import conda_message, mamba_message
from signer.trust.signing import MessageSigner


def sign_repodata(
    split: SplitRepodata,
    key: MessageSigner,
    mamba_key: MessageSigner | None = None,
    *,
    jobs: int = 1,
) -> dict[str, Any]:
    """Fresh `signatures` for every record (forked workers parse and sign their share)."""
    records = split.records

    def sign_range(start: int, end: int) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for item in records[start:end]:
            record, float_free = parse_record_checked(item, split.source)
            conda = key.sign_message(conda_message(record, float_free=float_free)).hex()
            mamba = mamba_key.sign_message(mamba_message(record)).hex() if mamba_key else None
            out.append((conda, mamba))
        return out

    chunks = map_ranges(sign_range, len(records), jobs)
    conda_hex, mamba_hex = key.public_key_hex, mamba_key.public_key_hex if mamba_key else None
    signatures: dict[str, Any] = {}
    results = (pair for chunk in chunks for pair in chunk)
    for item, (conda, mamba) in zip(records, results, strict=True):
        entry = {conda_hex: {"signature": conda}}
        if mamba is not None and mamba_hex is not None:
            entry[mamba_hex] = {"signature": mamba}
        signatures[item.filename] = entry
    return signatures
