"""Prometheus metrics: requests, intake verdicts, publications, document expiry, overlays.

Counters are per process (scrape every replica). Document versions and seconds until
expiry are read from the database at scrape time, so every replica reports the same and
an alert on `cf_sign_document_expiry_seconds < 7*86400` catches a refresh that stopped.
The signed overlay channels' figures (coverage, lag, age of the last refresh, failing) are
read from their rows likewise: `cf_sign_channel_refresh_age_seconds` growing means no
replica is refreshing, `cf_sign_channel_failing == 1` that the last attempt failed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from signer.service.db.models import Channel, ChannelSubdir, Document
from signer.service.db.session import Database
from signer.trust import layout
from signer.trust.timefmt import parse_time, system_clock

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Route label from the path prefix: bounded cardinality whatever clients request.
_ROUTES = ("/trust/", "/v1/attestations", "/v1/admin/", "/healthz", "/metrics", "/openapi.json")


def route_label(path: str) -> str:
    return next((r.rstrip("/") for r in _ROUTES if path.startswith(r)), "other")


class DocumentCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        version = GaugeMetricFamily(
            "cf_sign_document_version", "Published version of a trust document", labels=["path"]
        )
        expiry = GaugeMetricFamily(
            "cf_sign_document_expiry_seconds",
            "Seconds until a trust document expires (newest root, key_mgr, pkg_mgr, index)",
            labels=["path"],
        )
        try:
            with self.db.connect() as conn:
                rows = conn.execute(
                    select(Document.path, Document.version, Document.expiration).where(
                        ~Document.path.like(f"{layout.FEEDSTOCKS_DIR}/%.json")
                        | (Document.path == layout.INDEX)
                    )
                )
                docs = list(rows)
        except Exception:  # a scrape must not fail because the database is briefly away
            docs = []
        now = system_clock()
        roots = [d for d in docs if layout.is_root_path(d[0])]
        newest_root = max(roots, key=lambda d: d[1], default=None)
        for path, ver, expiration in docs:
            if layout.is_root_path(path) and newest_root and path != newest_root[0]:
                continue
            label = "root.json" if layout.is_root_path(path) else path
            version.add_metric([label], ver)
            left = parse_time(expiration, path, "expiration") - now
            expiry.add_metric([label], left.total_seconds())
        yield version
        yield expiry


_CHANNEL_GAUGES = (
    ("records", "Records in the overlay's upstream repodata"),
    ("attested", "Records signed on a verified attestation"),
    ("observed", "Records signed without one (their feedstocks are not enforced)"),
    ("unattested", "Records left unsigned: no attestation, feedstock enforced"),
    ("refused", "Records left unsigned: the attestation or the record failed a check"),
    ("coverage", "attested / records"),
    ("lag_seconds", "Upstream change seen -> signed document published, last time"),
    ("refresh_age_seconds", "Seconds since the last refresh attempt (any replica)"),
    ("failing", "1 when the last refresh attempt failed"),
)


class ChannelCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges = {
            name: GaugeMetricFamily(f"cf_sign_channel_{name}", text, labels=["channel", "subdir"])
            for name, text in _CHANNEL_GAUGES
        }
        try:
            with self.db.connect() as conn:
                rows = list(
                    conn.execute(
                        select(Channel.name, ChannelSubdir.subdir, ChannelSubdir.records,
                               ChannelSubdir.attested, ChannelSubdir.observed,
                               ChannelSubdir.unattested, ChannelSubdir.refused,
                               ChannelSubdir.lag_seconds, ChannelSubdir.refreshed_at,
                               ChannelSubdir.error)
                        .join(Channel, ChannelSubdir.channel_id == Channel.id)
                    )
                )  # fmt: skip
        except Exception:  # a scrape must not fail because the database is briefly away
            rows = []
        now = system_clock()
        for (
            channel,
            subdir,
            records,
            attested,
            observed,
            unattested,
            refused,
            lag,
            at,
            error,
        ) in rows:
            labels = [channel, subdir]
            values = {
                "records": records, "attested": attested, "observed": observed,
                "unattested": unattested, "refused": refused,
                "coverage": attested / records if records else 1.0, "lag_seconds": lag,
                "failing": 1 if error else 0,
            }  # fmt: skip
            if at is not None:
                values["refresh_age_seconds"] = (now - at).total_seconds()
            for name, value in values.items():
                gauges[name].add_metric(labels, float(value))
        yield from gauges.values()


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cf_sign_http_requests",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cf_sign_http_request_seconds",
            "HTTP request duration",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.attestations = Counter(
            "cf_sign_attestations",
            "Artifacts submitted, by verdict",
            ["status"],
            registry=self.registry,
        )
        self.publications = Counter(
            "cf_sign_publications", "Documents published", registry=self.registry
        )
        self.registry.register(DocumentCollector(db))
        self.registry.register(ChannelCollector(db))

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = [500]

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                route = route_label(scope["path"])
                self.requests.labels(route, scope["method"], str(status[0])).inc()
                self.latency.labels(route).observe(time.perf_counter() - start)

        return wrapped
