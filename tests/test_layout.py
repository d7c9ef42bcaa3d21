"""The trust repository layout (section 5): names, newest root and the write order."""

from __future__ import annotations

import random

from signer.trust import layout


def test_paths_of_every_document() -> None:
    assert layout.root_path(7) == "7.root.json"
    assert layout.bin_path("ab") == "feedstocks/ab.json"
    assert layout.attestation_path("linux-64", "a-1-h0_0.conda") == (
        "attestations/linux-64/a-1-h0_0.conda.sig.json"
    )
    assert layout.channel_repodata_path("cf", "noarch") == "channels/cf/noarch/repodata.json"
    assert layout.is_feedstocks_path(layout.INDEX) and layout.is_bin_path("feedstocks/0.json")
    assert not layout.is_bin_path(layout.INDEX) and not layout.is_bin_path(layout.KEY_MGR)


def test_root_versions_and_newest_root() -> None:
    assert layout.root_version("12.root.json") == 12
    for bad in ("0.root.json", "01.root.json", "x.root.json", "a/2.root.json", "root.json",
                "٣.root.json", "2.root.json.tmp"):  # fmt: skip
        assert layout.root_version(bad) is None, bad
    # Numeric, not lexical: 10 is newer than 9.
    assert layout.newest_root(["9.root.json", "10.root.json", "key_mgr.json"]) == "10.root.json"
    assert layout.newest_root(["key_mgr.json"]) is None


def test_write_order_puts_what_others_name_first() -> None:
    paths = [
        "feedstocks/index.json", "feedstocks/0a.json", "pkg_mgr.json", "key_mgr.json",
        "10.root.json", "2.root.json", "attestations/noarch/x-1-0.conda.sig.json",
    ]  # fmt: skip
    for _ in range(5):
        random.shuffle(paths)
        order = layout.write_order(paths)
        assert order[:4] == ["2.root.json", "10.root.json", "key_mgr.json", "pkg_mgr.json"]
        assert order[-1] == layout.INDEX
        assert order.index("feedstocks/0a.json") < order.index(layout.INDEX)
