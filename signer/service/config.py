"""Service settings: command-line options first, then the environment, then defaults.

The defaults need no setup: an SQLite file and a publish directory under `./cf-sign-data`.
Production points `--db` / `CF_SIGN_DB` at PostgreSQL (`postgresql+psycopg://...`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from signer.trust.errors import FormatError

DEFAULT_DATA_DIR = Path("cf-sign-data")
ENV_DB = "CF_SIGN_DB"
ENV_PUBLISH_DIR = "CF_SIGN_PUBLISH_DIR"
ENV_PUBLISH_TO = "CF_SIGN_PUBLISH_TO"  # azblob://account/container[/prefix]
ENV_DATA_DIR = "CF_SIGN_DATA_DIR"
ENV_RATE = "CF_SIGN_RATE_LIMIT"  # "RATE/BURST": artifacts per second per feedstock, burst
ENV_REFRESH = "CF_SIGN_REFRESH_INTERVAL"
ENV_TRUST_CACHE = "CF_SIGN_TRUST_CACHE"
ENV_SYNC = "CF_SIGN_SYNC_INTERVAL"
ENV_CHANNELS = "CF_SIGN_CHANNEL_INTERVAL"

KIB = 1024
MIB = 1024 * KIB


def normalize_db_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 (the driver installed with cf-sign)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("postgresql+psycopg://") or url.startswith("sqlite:///"):
        return url
    raise FormatError(
        url.split("@")[-1], "database URL", "expected sqlite:///PATH or postgresql+psycopg://..."
    )


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def parse_rate(text: str) -> tuple[float, int]:
    rate_text, _, burst_text = text.partition("/")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, int(rate * 60))
    except ValueError:
        raise FormatError(text, "rate limit", "expected RATE/BURST, e.g. 5/600") from None
    if not rate > 0 or burst < 1:
        raise FormatError(text, "rate limit", "RATE must be > 0 and BURST >= 1")
    return rate, burst


@dataclass(frozen=True)
class Settings:
    db_url: str
    publish_dir: Path
    # Also publish to Azure Blob Storage (`azblob://account/container[/prefix]`); see
    # signer/storage/azblob.py. The publish directory stays the service's own copy.
    publish_to: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Per feedstock and per process (see ratelimit.py): artifacts per second, and burst.
    rate_per_second: float = 5.0
    rate_burst: int = 1000
    # Request bodies: the intake carries up to `max_artifacts` sidecars of at most 1 MiB.
    max_attestation_body: int = 32 * MIB
    max_artifacts: int = 500
    max_admin_body: int = 16 * MIB
    max_other_body: int = 64 * KIB
    # How often the server re-signs documents nearing expiry (0 = never; cron can instead).
    refresh_interval: float = 3600.0
    # How often this replica checks its publish directory against the database (another
    # replica may have published; 0 = never, only at start-up and refresh).
    sync_interval: float = 5.0
    # How often the signed overlay channels are refreshed from upstream (0 = only on
    # demand); a pass also starts soon after attestations arrive or a channel is added.
    channel_interval: float = 300.0
    # /trust answers are cached per process this long (a publication here drops them at once).
    trust_cache_seconds: float = 1.0
    # Answer /trust in front of FastAPI's routing (off: the documented route answers; the
    # two give identical answers, which the tests check).
    trust_fast_path: bool = True
    extra: Mapping[str, str] = field(default_factory=dict)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


def _seconds(env: Mapping[str, str], name: str) -> float:
    try:
        value = float(env[name])
    except ValueError:
        raise FormatError(env[name], name, "expected seconds") from None
    if not math.isfinite(value) or value < 0:
        raise FormatError(env[name], name, "must be a finite number >= 0")
    return value


def load_settings(
    db: str | None = None,
    publish_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    publish_to: str | None = None,
) -> Settings:
    """Settings from explicit values, else `CF_SIGN_*`, else `./cf-sign-data`."""
    env = os.environ if env is None else env
    data_dir = Path(env.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)
    db_url = db or env.get(ENV_DB) or sqlite_url(data_dir / "cf-sign.db")
    pub = Path(publish_dir or env.get(ENV_PUBLISH_DIR) or data_dir / "trust")
    # abspath, not resolve(): the publish directory is a symlink to its current snapshot.
    settings = Settings(db_url=normalize_db_url(db_url), publish_dir=Path(os.path.abspath(pub)))
    blob = publish_to or env.get(ENV_PUBLISH_TO)
    if blob:
        from signer.storage.azblob import parse_blob_url

        settings = replace(settings, publish_to=parse_blob_url(blob).url)
    if env.get(ENV_RATE):
        rate, burst = parse_rate(env[ENV_RATE])
        settings = replace(settings, rate_per_second=rate, rate_burst=burst)
    if env.get(ENV_REFRESH):
        settings = replace(settings, refresh_interval=_seconds(env, ENV_REFRESH))
    if env.get(ENV_SYNC):
        settings = replace(settings, sync_interval=_seconds(env, ENV_SYNC))
    if env.get(ENV_CHANNELS):
        settings = replace(settings, channel_interval=_seconds(env, ENV_CHANNELS))
    if env.get(ENV_TRUST_CACHE):
        settings = replace(settings, trust_cache_seconds=_seconds(env, ENV_TRUST_CACHE))
    return settings


def export_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `load_settings()` return `settings` (uvicorn workers)."""
    return {
        ENV_DB: settings.db_url,
        ENV_PUBLISH_DIR: str(settings.publish_dir),
        **({ENV_PUBLISH_TO: settings.publish_to} if settings.publish_to else {}),
        ENV_RATE: f"{settings.rate_per_second}/{settings.rate_burst}",
        ENV_REFRESH: str(settings.refresh_interval),
        ENV_TRUST_CACHE: str(settings.trust_cache_seconds),
        ENV_SYNC: str(settings.sync_interval),
        ENV_CHANNELS: str(settings.channel_interval),
    }
