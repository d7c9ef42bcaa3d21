"""Delegation source files: the admins' (or the service's export of) feedstock -> keys, names.

JSON or YAML::

    numpy:
      keys: [numpy.pub, {keytype: ed25519, scheme: ed25519, keyval: {public: <hex>}}, <64 hex>]
      threshold: 1            # default 1
      outputs: [numpy, numpy-base]
      output_globs: ["libnumpy*"]

A key is a path to a `.pub` file (relative to the source file), a key dict, or 64 hex digits
(a raw ed25519 public key). A feedstock with `keys: []` is registered but not provisioned
yet (what `import-outputs` writes for feedstocks without a key): it is kept in the file and
left out of what is published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signer.trust.errors import FormatError
from signer.trust.feedstocks import FeedstockDelegation, check_feedstock_name, check_name
from signer.trust.jsonload import load_json, read_file
from signer.trust.keys import PublicKey
from signer.trust.metadata import is_public_key_hex, require_exact_keys

MAX_SOURCE = 256 * 1024 * 1024  # conda-forge's whole registry is a few MiB
MAX_PUB_FILE = 64 * 1024
_ENTRY_KEYS = {"keys"}
_OPTIONAL = frozenset({"threshold", "outputs", "output_globs"})


@dataclass
class DelegationsSource:
    """A parsed source file: publishable delegations plus feedstocks still without keys."""

    path: str
    delegations: dict[str, FeedstockDelegation] = field(default_factory=dict)
    unprovisioned: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=dict
    )  # feedstock -> (outputs, output_globs)


def _load_yaml(data: bytes, source: str) -> Any:
    import yaml

    # A SafeLoader that refuses duplicate keys (YAML would silently keep the last one).
    strict_loader: Any = type("StrictLoader", (yaml.SafeLoader,), {})

    def mapping(loader: Any, node: Any) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in out:
                line = key_node.start_mark.line + 1
                raise FormatError(source, str(key), f"duplicate key (line {line})")
            out[key] = loader.construct_object(value_node, deep=True)
        return out

    strict_loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(data.decode("utf-8"), Loader=strict_loader)
    except UnicodeDecodeError:
        raise FormatError(source, "", "not UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise FormatError(source, "", f"malformed YAML{where}: {problem}") from None


def load_document(path: Path, max_bytes: int = MAX_SOURCE) -> Any:
    """JSON (.json) or YAML (anything else; JSON is valid YAML too), strictly."""
    source = str(path)
    data = read_file(source, max_bytes)
    if path.suffix == ".json":
        return load_json(data, source, max_bytes)
    return _load_yaml(data, source)


def _read_pub(path: Path, source: str, where: str) -> PublicKey:
    try:
        data = path.read_bytes()[: MAX_PUB_FILE + 1]
    except FileNotFoundError:
        raise FormatError(source, where, f"key file {path} not found") from None
    except OSError as exc:
        raise FormatError(source, where, f"cannot read key file {path}: {exc.strerror}") from None
    text = data.decode("utf-8", "replace").strip()
    if is_public_key_hex(text):
        return PublicKey.ed25519(text)
    try:
        obj = json.loads(text)
    except ValueError:
        raise FormatError(source, where, f"{path} is not a key dict (.pub) file") from None
    return PublicKey.from_dict(obj, str(path), "")


def parse_key(value: object, base: Path, source: str, where: str) -> PublicKey:
    """A key entry: 64 hex, a key dict, or a `.pub` path relative to the source file."""
    if isinstance(value, dict):
        return PublicKey.from_dict(value, source, where)
    if not isinstance(value, str) or not value:
        raise FormatError(source, where, "expected a .pub path, a key dict or 64 hex digits")
    if is_public_key_hex(value):
        return PublicKey.ed25519(value)
    path = Path(value)
    return _read_pub(path if path.is_absolute() else base / path, source, where)


def _names(value: object, source: str, where: str, *, glob: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FormatError(source, where, "expected a list of names")
    names = tuple(check_name(v, source, f"{where}[{i}]", glob=glob) for i, v in enumerate(value))
    if len(set(names)) != len(names):
        raise FormatError(source, where, "entries must be unique")
    return names


def parse_source_obj(obj: object, source: str, base: Path) -> DelegationsSource:
    if not isinstance(obj, dict):
        raise FormatError(source, "(top level)", "expected a mapping of feedstock -> delegation")
    out = DelegationsSource(source)
    owners: dict[str, str] = {}  # keyid -> the feedstock that lists it
    for name, entry in obj.items():
        where = str(name)
        check_feedstock_name(name, source, where)
        data: Mapping[str, Any] = require_exact_keys(entry, _ENTRY_KEYS, source, where, _OPTIONAL)
        raw_keys = data["keys"]
        if not isinstance(raw_keys, list):
            raise FormatError(source, f"{where}.keys", "expected a list of keys")
        keys = [parse_key(k, base, source, f"{where}.keys[{i}]") for i, k in enumerate(raw_keys)]
        # keyids are over the key's normal form: two spellings of one key are one key.
        by_id = {k.keyid: k for k in keys}
        if len(by_id) != len(keys):
            raise FormatError(source, f"{where}.keys", "the same key is listed twice")
        for keyid in by_id:
            other = owners.setdefault(keyid, name)
            if other != name:
                raise FormatError(
                    source,
                    f"{where}.keys",
                    f"key {keyid} is already feedstock {other}'s (a key belongs to one feedstock)",
                )
        threshold = data.get("threshold", 1)
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise FormatError(source, f"{where}.threshold", "expected an integer >= 1")
        outputs = _names(data.get("outputs"), source, f"{where}.outputs", glob=False)
        globs = _names(data.get("output_globs"), source, f"{where}.output_globs", glob=True)
        if not keys:
            out.unprovisioned[name] = (outputs, globs)
            continue
        if threshold > len(keys):
            raise FormatError(
                source, f"{where}.threshold", f"{threshold} exceeds the {len(keys)} keys listed"
            )
        out.delegations[name] = FeedstockDelegation(by_id, threshold, outputs, globs)
    return out


def read_delegations_source(path: str | Path) -> DelegationsSource:
    """Parse a source file; key paths inside it are relative to the file."""
    file = Path(path)
    return parse_source_obj(load_document(file), str(path), file.parent)


def parse_delegations_source(path: str | Path) -> dict[str, FeedstockDelegation]:
    """The publishable delegations of a source file (feedstocks without keys left out)."""
    return read_delegations_source(path).delegations


def source_entry(
    delegation: FeedstockDelegation | None,
    outputs: tuple[str, ...] = (),
    output_globs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The source-file form of one feedstock (keys embedded as key dicts)."""
    if delegation is None:
        return {"keys": [], "outputs": sorted(outputs), "output_globs": sorted(output_globs)}
    entry: dict[str, Any] = {
        "keys": [delegation.keys[k].to_dict() for k in sorted(delegation.keys)],
        "threshold": delegation.threshold,
        "outputs": sorted(delegation.outputs),
    }
    if delegation.output_globs:
        entry["output_globs"] = sorted(delegation.output_globs)
    return entry
