"""What each client verifies of a repodata record: the conda and the mamba signing profiles.

conda (conda-content-trust) verifies the canonical bytes of the whole record as served.

mamba (libmamba 2.x) verifies `PackageInfo::json_signable().dump(2)` of the record as its
solver database holds it (libmamba's `specs/package_info.cpp`, read through
`solver/libsolv/helpers.cpp`): `name, version, build, build_number, subdir, size,
timestamp, license, md5, sha256, depends`, and `constrains` only when non-empty; no
`noarch` (dropped from the signable in libmamba 2.0). The values are those its repodata
reader stored:
- a field of the wrong JSON type reads as its default ("" or 0), `license: null` as "";
- a record without `subdir` takes `info.subdir`;
- `timestamp` above 253402300799 (year 9999 in seconds) is milliseconds, divided by 1000;
- every `depends`/`constrains` string is a match spec as libsolv parses and prints it
  (`pool_conda_matchspec`, `pool_dep2str`), entries that are not strings or have no name
  are skipped, and `depends` loses repeated entries (libsolv stores a dependency once);
- the text is raw UTF-8 (nlohmann's `dump(2)`, no `\\uXXXX` escapes beyond control
  characters), layout otherwise that of the canonical bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import orjson

from signer.trust.canonical import canonical_bytes_fast

Profile = Literal["conda", "mamba"]
PROFILES: tuple[Profile, ...] = ("conda", "mamba")

# libsolv's and libmamba's limit: larger timestamps are milliseconds.
_MAX_SECONDS = 253402300799
_UINT64 = 2**64
_DUMP_2 = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


class UnsignableRecord(ValueError):
    """The record cannot be turned into the bytes a client verifies."""


def conda_message(record: dict[str, Any], *, float_free: bool = False) -> bytes:
    return canonical_bytes_fast(record, float_free=float_free)


# --- libsolv's match-spec normalisation -------------------------------------------------

_NAME_END = frozenset(b" =<>!~")
_TOKEN_START = frozenset(b" -=,|<>~")  # a build string starts after one of these
_OPERATOR = frozenset(b"=!|,<>~")


def _parse_matchspec(spec: bytes) -> bytes | None:
    """libsolv's conda match-spec reading and printing (`name` or `name evr`), or None."""
    end = spec.find(b"\0")  # libsolv gets a C string
    if end >= 0:
        spec = spec[:end]
    spec = spec[spec.rfind(b":") + 1 :]  # channel and namespace prefixes are ignored
    size = len(spec)
    pos = 0
    while pos < size and spec[pos] not in _NAME_END:
        pos += 1
    if pos == 0:
        return None  # no name: libsolv refuses it and libmamba skips the entry
    name = spec[:pos]
    if not name.islower() and any(65 <= c <= 90 for c in name):
        name = bytes(c + 32 if 65 <= c <= 90 else c for c in name)  # ASCII only, as libsolv
    while pos < size and spec[pos] == 32:
        pos += 1
    if pos == size:
        return name if name[0] != 94 and b"*" not in name else name + b" *"  # 94: "^"
    start, stop = pos, size
    while stop > start and spec[stop - 1] == 32:
        stop -= 1
    build: bytes | None = None
    cut = stop
    while True:
        while cut > start and spec[cut - 1] not in _TOKEN_START:
            cut -= 1
        if cut <= start + 1 or spec[cut - 1] not in (32, 61):  # " " or "="
            break
        if spec[cut - 2] in _OPERATOR:
            if spec[cut - 1] == 32:  # a space after an operator may sit inside the build
                cut -= 1
                continue
            break
        if cut < stop:
            build, stop = spec[cut:stop], cut - 1
        break
    version = spec[start:stop]
    if version[:1] == b"=":
        if version[1:2] == b"=":
            if build is None:
                version = version[2:]
        elif build is not None:
            version = version[1:]
        elif not any(c in b"=,|" for c in version[1:]):
            version = version[1:] + b"*"  # "=1.2" means "1.2*"
    version = version.replace(b" ", b"")
    if build is not None:
        version += b" " + build
    return name + b" " + version


_SPEC_CACHE: dict[str, str | None] = {}
_SPEC_CACHE_MAX = 500_000


def libsolv_matchspec(spec: str) -> str | None:
    """`spec` as libmamba reads it back from libsolv, or None when libsolv refuses it."""
    try:
        return _SPEC_CACHE[spec]
    except KeyError:
        pass
    try:
        raw = spec.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsignableRecord("a match spec is not valid Unicode (lone surrogate)") from None
    parsed = _parse_matchspec(raw)
    out = parsed.decode("utf-8") if parsed is not None else None
    if len(_SPEC_CACHE) >= _SPEC_CACHE_MAX:
        _SPEC_CACHE.clear()
    _SPEC_CACHE[spec] = out
    return out


def _specs(value: object, *, unique: bool) -> list[str]:
    if type(value) is not list or not value:
        return []
    try:  # the common case: every entry a string seen before
        found: list[str | None] = [_SPEC_CACHE[item] for item in value]
    except (KeyError, TypeError):
        found = [libsolv_matchspec(item) if type(item) is str else None for item in value]
    if None in found:
        found = [spec for spec in found if spec is not None]
    if unique and len(found) > 1:
        found = list(dict.fromkeys(found))  # libsolv stores a dependency once, the first time
    return found  # type: ignore[return-value]  # no None left


def _text(value: object) -> str:
    return value if type(value) is str else ""


def _count(value: object) -> int:
    return value if type(value) is int and 0 <= value < _UINT64 else 0


def mamba_signable(record: dict[str, Any], default_subdir: str = "") -> dict[str, Any]:
    """libmamba's `json_signable()` of `record`; `default_subdir`: the repodata's info.subdir.

    A value of another JSON type reads as "" (strings) or 0 (unsigned integers).
    """
    get = record.get
    timestamp = _count(get("timestamp", 0))
    signable: dict[str, Any] = {
        "build": _text(get("build", "")),
        "build_number": _count(get("build_number", 0)),
        "depends": _specs(get("depends"), unique=True),
        "license": _text(get("license", "")),
        "md5": _text(get("md5", "")),
        "name": _text(get("name", "")),
        "sha256": _text(get("sha256", "")),
        "size": _count(get("size", 0)),
        "subdir": _text(get("subdir", default_subdir)),
        "timestamp": timestamp // 1000 if timestamp > _MAX_SECONDS else timestamp,
        "version": _text(get("version", "")),
    }
    constrains = get("constrains")
    if constrains:
        constrains = _specs(constrains, unique=False)
        if constrains:
            signable["constrains"] = constrains
    return signable


def _utf8_bytes(obj: dict[str, Any]) -> bytes:
    """`json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)` in UTF-8 (= dump(2))."""
    try:
        return orjson.dumps(obj, option=_DUMP_2)
    except TypeError:  # a lone surrogate: UTF-8 cannot carry it, nor can libmamba read it
        raise UnsignableRecord("a string is not valid Unicode (lone surrogate)") from None


def mamba_message(record: dict[str, Any], default_subdir: str = "") -> bytes:
    return _utf8_bytes(mamba_signable(record, default_subdir))


def mamba_message_reference(record: dict[str, Any], default_subdir: str = "") -> bytes:
    """`mamba_message` through the standard library (tests compare the two)."""
    text = json.dumps(mamba_signable(record, default_subdir), indent=2, sort_keys=True,
                      ensure_ascii=False)  # fmt: skip
    return text.encode("utf-8")


def profile_message(
    profile: Profile, record: dict[str, Any], default_subdir: str, *, float_free: bool = False
) -> bytes:
    if profile == "conda":
        return conda_message(record, float_free=float_free)
    return mamba_message(record, default_subdir)


def parse_profiles(names: Sequence[str]) -> tuple[Profile, ...]:
    """The profiles named, in PROFILES order; ValueError for an unknown name."""
    unknown = sorted(set(names) - set(PROFILES))
    if unknown:
        raise ValueError(f"unknown profile {unknown[0]!r} (known: conda, mamba)")
    return tuple(p for p in PROFILES if p in names)
