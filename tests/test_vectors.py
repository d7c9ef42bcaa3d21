"""The third-party vectors (tests/vectors, from ../shared/vectors) judged as their README states."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from signer.trust import (
    ExpiredError,
    ThresholdError,
    check_not_expired,
    parse_metadata,
    verify_key_mgr,
    verify_root_self,
    verify_root_update,
)
from signer.trust.metadata import Root, SignedMetadata
from signer.trust.timefmt import parse_time
from tests.conftest import VECTORS, CliResult

CCT = VECTORS / "conda-content-trust"
MAMBA_ROOT = VECTORS / "mamba" / "1.sv0.6.root.json"
CLOCK = parse_time("2021-01-12T00:00:00Z", "test", "clock")


def load(path: Path) -> SignedMetadata:
    return parse_metadata(path.read_bytes(), path.name)


def root_of(doc: SignedMetadata) -> Root:
    assert isinstance(doc.meta, Root)
    return doc.meta


@pytest.mark.parametrize("path", [CCT / "1.root.json", MAMBA_ROOT])
def test_roots_self_signature_valid(path: Path) -> None:
    result = verify_root_self(load(path))
    assert result.ok and len(result.signed) == 1 and not result.invalid
    check_not_expired(
        load(path).meta,
        path.name,
        CLOCK if "sv0" not in path.name else parse_time("2021-06-01T00:00:00Z", "t", "t"),
    )


def test_root_chain_1_2_3_valid() -> None:
    one, two, three = (load(CCT / f"{n}.root.json") for n in (1, 2, 3))
    step2 = verify_root_update(one, two)
    assert step2.by_old_keys.signed == (
        "c8bd83b3bfc991face417d97b9c0db011b5d256476b602b92fec92849fc2b36c",
    )
    assert len(step2.by_new_keys.signed) == 2 and step2.by_new_keys.threshold == 2
    step3 = verify_root_update(two, three)
    assert step3.by_old_keys.ok and step3.by_new_keys.threshold == 1
    for doc in (one, two, three):
        check_not_expired(doc.meta, "root", CLOCK)


@pytest.mark.parametrize(("trusted", "invalid"), [("1", "2"), ("2", "3")])
def test_invalid_root_updates_rejected(trusted: str, invalid: str) -> None:
    with pytest.raises(ThresholdError) as err:
        verify_root_update(
            load(CCT / f"{trusted}.root.json"), load(CCT / f"{invalid}.root_invalid.json")
        )
    assert err.value.check == "signature"
    assert "not delegated" in err.value.reason


@pytest.mark.parametrize("root", ["1.root.json", "3.root.json"])
def test_key_mgr_valid_under_roots(root: str) -> None:
    result = verify_key_mgr(load(CCT / "key_mgr.json"), root_of(load(CCT / root)))
    assert result.signed == ("013ddd714962866d12ba5bae273f14d48c89cf0773dee2dbf6d4561e521c83f7",)
    check_not_expired(load(CCT / "key_mgr.json").meta, "key_mgr", CLOCK)


def test_key_mgr_invalid_rejected() -> None:
    with pytest.raises(ThresholdError):
        verify_key_mgr(load(CCT / "key_mgr_invalid.json"), root_of(load(CCT / "1.root.json")))


def test_key_mgr_verify_only_under_invalid_root_delegation() -> None:
    doc = load(CCT / "key_mgr_verify.json")
    assert verify_key_mgr(doc, root_of(load(CCT / "2.root_invalid.json"))).ok
    for root in ("1.root.json", "2.root.json", "3.root.json"):
        with pytest.raises(ThresholdError):
            verify_key_mgr(doc, root_of(load(CCT / root)))


@pytest.mark.parametrize(
    "name", ["1.root.json", "2.root.json", "3.root.json", "key_mgr.json", "key_mgr_verify.json"]
)
def test_vectors_expired_without_injected_clock(name: str) -> None:
    with pytest.raises(ExpiredError):
        check_not_expired(load(CCT / name).meta, name, datetime.now(tz=CLOCK.tzinfo))


def test_mamba_root_expired_without_clock(cli: Callable[..., CliResult]) -> None:
    result = cli("metadata", "verify", MAMBA_ROOT)
    assert result.code == 1 and "expired" in result.err


def test_cli_judges_chain_with_clock(cli: Callable[..., CliResult]) -> None:
    at = ("--at", "2021-01-12T00:00:00Z")
    assert (
        cli("metadata", "verify", CCT / "2.root.json", "--trusted", CCT / "1.root.json", *at).code
        == 0
    )
    assert (
        cli("metadata", "verify", CCT / "3.root.json", "--trusted", CCT / "2.root.json", *at).code
        == 0
    )
    bad = cli(
        "metadata", "verify", CCT / "2.root_invalid.json", "--trusted", CCT / "1.root.json", *at
    )
    assert bad.code == 1 and "signature" in bad.err
    # The same chain step is refused once the documents have expired.
    late = cli("metadata", "verify", CCT / "2.root.json", "--trusted", CCT / "1.root.json")
    assert late.code == 1 and "expired" in late.err


def test_vectors_are_the_files_that_came_with_their_licences() -> None:
    import hashlib

    lines = (VECTORS / "SHA256SUMS").read_text().splitlines()
    listed = {name: digest for digest, name in (line.split("  ", 1) for line in lines)}
    assert {"conda-content-trust/LICENSE", "mamba/LICENSE"} <= set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == digest, name
    # Where the workspace's originals are beside the project, the copies are identical.
    shared = Path(__file__).resolve().parents[2] / "shared" / "vectors"
    if shared.is_dir():
        for name in listed:
            assert (shared / name).read_bytes() == (VECTORS / name).read_bytes(), name
