"""Reading conda-forge's feedstock-outputs registry into a delegations source.

Layout of github.com/conda-forge/feedstock-outputs (section 8):
- `outputs/<a>/<b>/<c>/<name>.json` = ``{"feedstocks": ["numpy", ...]}``: the feedstocks
  allowed to publish package `name` (the three levels are its first alphanumeric characters;
  a few old files sit directly in `outputs/`). The mapping is many-to-many.
- `feedstock_outputs_autoreg_allowlist.yml`: feedstock -> fnmatch globs of names it may add.

The registry is inverted into feedstock -> outputs, the globs are attached, and each
feedstock's public key is looked up as `<keys-dir>/<feedstock>.pub`. Feedstocks without a
key are written with `keys: []`, so the whole registry loads as it is and provisioning can
fill the keys in later; publishing leaves them out until then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signer.feedstock.source import load_document, parse_key
from signer.trust.errors import FormatError
from signer.trust.feedstocks import check_name
from signer.trust.jsonload import load_json

ALLOWLIST_NAME = "feedstock_outputs_autoreg_allowlist.yml"
MAX_OUTPUT_FILE = 64 * 1024
MAX_ALLOWLIST = 16 * 1024 * 1024


@dataclass
class ImportResult:
    source: dict[str, dict[str, Any]] = field(default_factory=dict)
    names: int = 0
    feedstocks: int = 0
    with_keys: int = 0
    globs: int = 0
    skipped: list[str] = field(default_factory=list)  # files that are not output records
    # Repository names found where feedstock names belong (`vouch-feedstock`), normalised.
    renamed: dict[str, str] = field(default_factory=dict)


_SUFFIX = "-feedstock"


def _feedstock(value: object, source: str, where: str, renamed: dict[str, str]) -> str:
    """A feedstock name; the registry sometimes spells one as its repository name."""
    name = check_name(value, source, where)
    if name.endswith(_SUFFIX) and len(name) > len(_SUFFIX):
        renamed[name] = name[: -len(_SUFFIX)]
        return renamed[name]
    return name


def _outputs_root(directory: Path) -> Path:
    nested = directory / "outputs"
    if nested.is_dir():
        return nested
    if directory.is_dir():
        return directory
    raise FormatError(str(directory), "FEEDSTOCK_OUTPUTS_DIR", "not a directory")


def _read_output(path: Path, renamed: dict[str, str]) -> list[str]:
    source = str(path)
    with open(path, "rb") as handle:
        data = handle.read(MAX_OUTPUT_FILE + 1)
    obj = load_json(data, source, MAX_OUTPUT_FILE)
    if not isinstance(obj, dict) or not isinstance(obj.get("feedstocks"), list):
        raise FormatError(source, "feedstocks", 'expected {"feedstocks": [...]}')
    feedstocks = obj["feedstocks"]
    return [_feedstock(f, source, f"feedstocks[{i}]", renamed) for i, f in enumerate(feedstocks)]


def read_registry(
    directory: Path, renamed: dict[str, str] | None = None
) -> tuple[dict[str, set[str]], list[str]]:
    """feedstock -> output names, and the files skipped (not `<name>.json`)."""
    renamed = {} if renamed is None else renamed
    root = _outputs_root(directory)
    by_feedstock: dict[str, set[str]] = {}
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.endswith(".json"):
                continue
            path = Path(dirpath) / filename
            name = filename[: -len(".json")]
            try:
                check_name(name, str(path), "file name")
            except FormatError:
                skipped.append(str(path))
                continue
            for feedstock in _read_output(path, renamed):
                by_feedstock.setdefault(feedstock, set()).add(name)
    return by_feedstock, skipped


def read_allowlist(path: Path, renamed: dict[str, str] | None = None) -> dict[str, list[str]]:
    renamed = {} if renamed is None else renamed
    obj = load_document(path, MAX_ALLOWLIST)
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise FormatError(str(path), "(top level)", "expected feedstock: [glob, ...]")
    out: dict[str, list[str]] = {}
    for raw, globs in obj.items():
        feedstock = _feedstock(raw, str(path), str(raw), renamed)
        if not isinstance(globs, list):
            raise FormatError(str(path), str(raw), "expected a list of globs")
        found = {check_name(g, str(path), f"{raw}[{i}]", glob=True) for i, g in enumerate(globs)}
        out[feedstock] = sorted(found | set(out.get(feedstock, ())))
    return out


def import_outputs(
    directory: Path,
    *,
    allowlist: Path | None = None,
    keys_dir: Path | None = None,
) -> ImportResult:
    """The delegations source (as a dict) for a feedstock-outputs checkout."""
    renamed: dict[str, str] = {}
    by_feedstock, skipped = read_registry(directory, renamed)
    if allowlist is None and (directory / ALLOWLIST_NAME).is_file():
        allowlist = directory / ALLOWLIST_NAME
    globs = read_allowlist(allowlist, renamed) if allowlist is not None else {}
    result = ImportResult(skipped=skipped, renamed=renamed)
    result.names = len({n for names in by_feedstock.values() for n in names})
    for feedstock in sorted(set(by_feedstock) | set(globs)):
        entry: dict[str, Any] = {"keys": []}
        pub = keys_dir / f"{feedstock}.pub" if keys_dir is not None else None
        if pub is not None and pub.is_file():
            key = parse_key(str(pub), Path("."), str(pub), "key")
            entry = {"keys": [key.to_dict()], "threshold": 1}
            result.with_keys += 1
        entry["outputs"] = sorted(by_feedstock.get(feedstock, ()))
        if globs.get(feedstock):
            entry["output_globs"] = globs[feedstock]
            result.globs += len(globs[feedstock])
        result.source[feedstock] = entry
    result.feedstocks = len(result.source)
    return result
