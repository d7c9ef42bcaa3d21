"""Per-channel trust configuration: `.condarc`'s `plugins.cf_sign_channels`.

    plugins:
      cf_sign_channels:
        conda-forge:                        # a channel name or URL, as given to conda
          trust: https://trust.example.org  # trust repository: http(s) URL or directory
          root: /home/me/cf-root.json       # the anchor root FILE (never fetched blindly)
          policy: enforce                   # enforce (default) | observe

Parsing and validation are plain Python (no conda import), shared by the plugin and the
`cf-sign conda` commands. A malformed entry is an error, never "not configured": a user
who believes a channel is enforced must not silently get nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signer.trust.errors import FormatError

SETTING = "cf_sign_channels"
WHERE = f"plugins.{SETTING}"
POLICIES = ("enforce", "observe")
FIELDS = ("trust", "root", "policy")
MAX_CONDARC = 1024 * 1024


@dataclass(frozen=True)
class ChannelTrust:
    """One configured channel."""

    channel: str  # as written in .condarc
    trust: str  # http(s) URL, or an absolute directory path
    root: Path  # absolute
    policy: str  # "enforce" | "observe"

    @property
    def enforcing(self) -> bool:
        return self.policy == "enforce"

    def to_condarc(self) -> dict[str, str]:
        return {"trust": self.trust, "root": str(self.root), "policy": self.policy}


def normalise_trust(value: str) -> str:
    """An http(s) URL (no trailing slash) or an absolute directory path; file:// taken too."""
    if value.startswith(("http://", "https://")):
        return value.rstrip("/")
    if value.startswith("file://"):
        value = value[len("file://") :]
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        raise ValueError("must be an http(s) URL or an absolute directory path")
    return str(path)


def parse_entry(channel: str, raw: object, where: str = WHERE) -> ChannelTrust:
    """Validate one entry; FormatError naming the channel and field otherwise."""
    subject = f"{where}[{channel!r}]"
    if not isinstance(channel, str) or not channel.strip():
        raise FormatError(where, "channel", "a channel name or URL must be a non-empty string")
    if not isinstance(raw, Mapping):
        raise FormatError(subject, "", "must be a mapping with trust, root and policy")
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        raise FormatError(subject, unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    values: dict[str, str] = {}
    for field in FIELDS:
        value = raw.get(field)
        if value is None:
            if field == "policy":
                values[field] = "enforce"
                continue
            raise FormatError(subject, field, "missing")
        if not isinstance(value, str) or not value.strip():
            raise FormatError(subject, field, "must be a non-empty string")
        values[field] = value.strip()
    try:
        trust = normalise_trust(values["trust"])
    except ValueError as exc:
        raise FormatError(subject, "trust", f"{values['trust']!r}: {exc}") from None
    root = Path(os.path.expanduser(values["root"]))
    if not root.is_absolute():
        raise FormatError(subject, "root", f"{values['root']!r}: must be an absolute path")
    if values["policy"] not in POLICIES:
        raise FormatError(
            subject, "policy", f"{values['policy']!r}: must be one of {', '.join(POLICIES)}"
        )
    return ChannelTrust(channel.strip(), trust, root, values["policy"])


def parse_channels(raw: object, where: str = WHERE) -> list[ChannelTrust]:
    """Every entry of the setting (None or empty: nothing configured)."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise FormatError(where, "", "must be a mapping of channel -> {trust, root, policy}")
    return [parse_entry(str(name), value, where) for name, value in raw.items()]


def plain(value: object) -> Any:
    """conda's frozendicts and tuples (or ruamel's types) as dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def prefix_condarc() -> Path:
    """The active prefix's .condarc: $CONDA_PREFIX, else this Python's prefix."""
    return Path(os.environ.get("CONDA_PREFIX") or sys.prefix) / ".condarc"


def user_condarc() -> Path:
    return Path(os.path.expanduser("~")) / ".condarc"


def _load_yaml(path: Path) -> Any:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > MAX_CONDARC:
        raise FormatError(str(path), "", f"larger than {MAX_CONDARC} bytes")
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FormatError(str(path), "", f"not valid YAML: {str(exc).splitlines()[0]}") from None


def read_condarc_channels(path: Path) -> list[ChannelTrust]:
    """The entries of one .condarc file (none when the file or the setting is absent)."""
    data = _load_yaml(path)
    if data is None:
        return []
    if not isinstance(data, Mapping):
        raise FormatError(str(path), "", "not a mapping")
    plugins = data.get("plugins")
    if plugins is None:
        return []
    if not isinstance(plugins, Mapping):
        raise FormatError(str(path), "plugins", "not a mapping")
    return parse_channels(plugins.get(SETTING), f"{path}: {WHERE}")


def write_channel(path: Path, entry: ChannelTrust) -> None:
    """Add or replace `entry` in the .condarc at `path`, atomically.

    With ruamel.yaml (conda's own YAML library, present wherever conda is) the rest of the
    file keeps its comments and layout; otherwise it is rewritten by PyYAML.
    """
    from signer.trust.state import write_atomic

    text = ""
    if path.exists():
        if path.stat().st_size > MAX_CONDARC:
            raise FormatError(str(path), "", f"larger than {MAX_CONDARC} bytes")
        text = path.read_text(encoding="utf-8")
    _load_yaml(path)  # a file that does not parse is refused before anything is written
    try:
        from ruamel.yaml import YAML
    except ImportError:
        YAML = None
    if YAML is not None:
        import io

        yaml_rt = YAML()
        yaml_rt.width = 4096  # long paths stay on one line
        data = yaml_rt.load(text) if text.strip() else None
        data = {} if data is None else data
        out = io.StringIO()
        _merge_entry(data, entry, path)
        yaml_rt.dump(data, out)
        rendered = out.getvalue()
    else:
        import yaml

        data = yaml.safe_load(text) if text.strip() else None
        data = {} if data is None else data
        _merge_entry(data, entry, path)
        rendered = yaml.safe_dump(data, sort_keys=False)
    write_atomic(path, rendered.encode("utf-8"))


def _merge_entry(data: Any, entry: ChannelTrust, path: Path) -> None:
    if not isinstance(data, dict):
        raise FormatError(str(path), "", "not a mapping")
    plugins = data.setdefault("plugins", {})
    if not isinstance(plugins, dict):
        raise FormatError(str(path), "plugins", "not a mapping")
    channels = plugins.get(SETTING)
    if channels is None:
        channels = plugins[SETTING] = {}
    if not isinstance(channels, dict):
        raise FormatError(str(path), WHERE, "not a mapping")
    channels[entry.channel] = entry.to_condarc()
