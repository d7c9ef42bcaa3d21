"""The strict JSON reader's fast path (orjson, exact re-serialisation) gives the verdict
of the reference path on every input: hostile documents are never let through by it."""

from __future__ import annotations

import sys
from typing import Any

import orjson
import pytest

from signer.trust.errors import FormatError
from signer.trust.jsonload import _fast, load_json

CANONICAL_INDENTED = b'{\n  "a": [\n    1,\n    "x"\n  ],\n  "b": {}\n}\n'
CANONICAL_COMPACT = b'{"a":[1,"x"],"b":{}}'
HOSTILE = [
    b'{\n  "a": 1,\n  "a": 2\n}\n',  # duplicate key, in the indented form
    b'{"a":1,"a":1}',  # duplicate key, compact, same value
    b'{"a":{"b":1,"b":2}}',  # nested duplicate
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"a":"\xff"}',  # not UTF-8
    b'{"a":"\\ud800"}',  # lone surrogate (the reference path accepts it)
    b'{"a":123456789012345678901234567890}',  # beyond 64 bits (accepted, not by orjson)
    b'{"b":1,"a":2}',  # unsorted: not the fast path's form
    b'{ "a": 1 }',
    b"[1,2",
    b"",
]


def _reference(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "orjson")
        return _outcome(data)


def _outcome(data: bytes) -> tuple[str, Any]:
    try:
        return ("ok", load_json(data, "doc.json", 1 << 20))
    except FormatError as exc:
        return ("error", (exc.field, exc.reason))


def test_fast_path_is_taken_for_canonical_documents() -> None:
    assert "orjson" in sys.modules  # imported above: the bulk callers' situation
    for data in (CANONICAL_INDENTED, CANONICAL_INDENTED[:-1], CANONICAL_COMPACT):
        assert _fast(data) == ({"a": [1, "x"], "b": {}},)


@pytest.mark.parametrize("data", [CANONICAL_INDENTED, CANONICAL_COMPACT, *HOSTILE])
def test_fast_and_reference_paths_agree(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _outcome(data) == _reference(data, monkeypatch)


@pytest.mark.parametrize("data", HOSTILE[:6])
def test_hostile_documents_never_take_the_fast_path(data: bytes) -> None:
    assert _fast(data) is None
    with pytest.raises(FormatError):
        load_json(data, "doc.json", 1 << 20)


def test_cap_is_applied_before_either_path() -> None:
    with pytest.raises(FormatError, match="cap"):
        load_json(CANONICAL_COMPACT, "doc.json", 4)
    assert orjson.loads(CANONICAL_COMPACT)  # control: the document itself is fine
