"""Canonical bytes of the channel layer and the feedstock delegations.

The bytes are those of conda-content-trust's `canonserialize`:
``json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True)`` in UTF-8. orjson yields the
same bytes for ASCII-only (DEL excluded), float-free values (same separators with
indent=2, same key order for ASCII keys) at a fraction of the cost; anything else takes
the reference path.
"""

from __future__ import annotations

import json
from typing import Any

_orjson: Any = None  # imported on first use: small documents never need it


def _load_orjson() -> Any:
    global _orjson
    import orjson

    _orjson = orjson
    return orjson


def _float_free(value: Any) -> bool:
    # orjson formats floats differently (1e-05 vs 1e-5) and maps NaN to null.
    # Exact type checks, since this runs once per repodata record.
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        return kind is not float
    for item in items:
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is float or not _float_free(item):
            return False
    return True


def canonical_bytes(obj: Any) -> bytes:
    """Canonical bytes of a trust document (the reference path: no orjson import).

    orjson's import pulls in `dataclasses` and `inspect`, more than a small document's
    serialisation costs; bulk work (repodata records) uses `canonical_bytes_fast`.
    """
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True).encode("utf-8")


def canonical_bytes_fast(obj: Any, *, float_free: bool = False) -> bytes:
    """Canonical bytes of `obj`, identical to `canonical_bytes`, via orjson.

    `float_free=True` says the caller knows `obj` holds no float (e.g. its parser refused
    them), which spares the walk that checks.
    """
    if float_free or _float_free(obj):
        orjson = _orjson or _load_orjson()
        try:
            out = orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        except TypeError:  # ints beyond 64 bits, non-str keys
            pass
        else:
            # json escapes DEL (0x7f) even though it is ASCII; orjson does not.
            if out.isascii() and b"\x7f" not in out:
                return bytes(out)
    return canonical_bytes(obj)
