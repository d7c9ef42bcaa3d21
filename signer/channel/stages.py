"""Staged enforcement in channel signing (section 15): which unattested records are signed.

Without stages every record lacking a verified attestation is refused (full enforcement).
With the service's stages (`GET /v1/stages`, or the same JSON in a file), a record without
a verified attestation is judged by the feedstocks whose verified delegation covers its
package name (`outputs`, `output_globs`):

- every such feedstock in `off` or `observe`: the record is signed and reported as observed;
- any such feedstock in `enforce`: refused, unless the record's `timestamp` says it was
  uploaded before the feedstock entered `enforce` (`since`), when it is signed and reported
  as observed ("grace"): those builds predate enforcement and can never be attested;
- no feedstock covers the name, or a covering feedstock is not in the stages: refused.
  Nobody is delegated to publish that name, so no stage can speak for it.

A record whose `timestamp` is missing or not a number is enforced (its age cannot be told),
as is every record of a feedstock whose `since` is null. Record-level problems (file name,
sha256, subdir) are refused whatever the stage: they are not a missing attestation.

The owners of a name come from walking every bin of the trust repository's feedstock index,
each checked as a single delegation is (key_mgr signatures and threshold, the index's
sha256 and version for the bin, expiry, rollback against the session's state): a
repository that could hide a feedstock's delegation could turn enforce into observe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Literal, NamedTuple
from urllib.parse import urlencode, urljoin, urlsplit

from signer.client import TrustSession
from signer.trust.errors import FormatError
from signer.trust.feedstocks import verify_bin, verify_index
from signer.trust.jsonload import MIB, load_json, read_file
from signer.trust.timefmt import format_time, parse_time

Stage = Literal["off", "observe", "enforce"]
STAGES: tuple[Stage, ...] = ("off", "observe", "enforce")
MAX_STAGES_PAGE = 8 * MIB  # one page of GET /v1/stages (at most 10,000 rows of ~100 bytes)
MAX_STAGES_TOTAL = 64 * MIB  # every page of one run together
PAGE_LIMIT = 10000
# conda's convention: a timestamp above this many seconds is in milliseconds.
_MS_THRESHOLD = 253402300799


class FeedstockStage(NamedTuple):
    stage: Stage
    since: datetime | None


def parse_stages_page(data: bytes, source: str) -> tuple[dict[str, FeedstockStage], str | None]:
    """One `GET /v1/stages` answer: ({name: stage}, next_after). FormatError when malformed."""
    doc = load_json(data, source, MAX_STAGES_PAGE)
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list):
        raise FormatError(source, "stages", "expected an object with a list of stages")
    unknown = set(doc) - {"stages", "next_after"}
    if unknown:
        raise FormatError(source, sorted(unknown)[0], "unknown field")
    after = doc.get("next_after")
    if after is not None and (not isinstance(after, str) or not after):
        raise FormatError(source, "next_after", "expected a feedstock name or null")
    out: dict[str, FeedstockStage] = {}
    for i, row in enumerate(doc["stages"]):
        where = f"stages[{i}]"
        if not isinstance(row, dict) or not {"name", "stage", "since"} <= set(row):
            raise FormatError(source, where, "expected {name, stage, since}")
        if set(row) - {"name", "stage", "since", "previous"}:
            raise FormatError(source, where, "unknown field")
        name, stage, since = row["name"], row["stage"], row["since"]
        if not isinstance(name, str) or not name or len(name) > 256:
            raise FormatError(source, f"{where}.name", "expected a feedstock name")
        if stage not in STAGES:
            raise FormatError(source, f"{where}.stage", f"expected one of {', '.join(STAGES)}")
        if name in out:
            raise FormatError(source, f"{where}.name", f"feedstock {name} listed twice")
        moment = None if since is None else parse_time(since, source, f"{where}.since")
        out[name] = FeedstockStage(stage, moment)
    return out, after


def _http_get(url: str, origin: tuple[str, str], timeout: float, cap: int) -> bytes:
    import http.client
    import urllib.error
    import urllib.request

    class SameOrigin(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            target = urlsplit(urljoin(req.full_url, newurl))
            if (target.scheme, target.netloc) != origin:
                raise FormatError(url, "", f"redirect to another host: {newurl}")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    request = urllib.request.Request(
        url, headers={"User-Agent": "cf-sign", "Accept": "application/json"}
    )
    try:
        with urllib.request.build_opener(SameOrigin()).open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > cap:
                raise FormatError(url, "", f"{length} bytes exceeds the {cap}-byte cap")
            data: bytes = response.read(cap + 1)
    except urllib.error.HTTPError as exc:
        raise FormatError(url, "", f"HTTP {exc.code}") from None
    except FormatError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FormatError(url, "", f"cannot fetch the stages: {reason}") from None
    if len(data) > cap:
        raise FormatError(url, "", f"exceeds the {cap}-byte cap")
    return data


def load_stages(
    location: str, *, timeout: float = 20.0, page_limit: int = PAGE_LIMIT
) -> dict[str, FeedstockStage]:
    """Every feedstock's stage, from the service's `GET /v1/stages` URL or a file of it.

    A URL is walked page by page (`after`, `next_after`) within one run's caps; a file
    must hold the whole list (`next_after` null). FormatError on any failure: nothing is
    assumed about a stage that could not be read.
    """
    if not location.startswith(("http://", "https://")):
        data = read_file(location, MAX_STAGES_PAGE)
        whole, after = parse_stages_page(data, location)
        if after is not None:
            raise FormatError(location, "next_after", "a file must hold every stage (null)")
        return whole
    split = urlsplit(location)
    if split.query or split.fragment:
        raise FormatError(location, "", "expected the stages URL without a query")
    origin = (split.scheme, split.netloc)
    stages: dict[str, FeedstockStage] = {}
    total, after = 0, ""
    while True:
        url = f"{location}?{urlencode({'after': after, 'limit': page_limit})}"
        data = _http_get(url, origin, timeout, MAX_STAGES_PAGE)
        total += len(data)
        if total > MAX_STAGES_TOTAL:
            raise FormatError(location, "", f"stages exceed the {MAX_STAGES_TOTAL}-byte cap")
        page, following = parse_stages_page(data, url)
        for name, stage in page.items():
            if name in stages or name <= after:
                raise FormatError(url, "stages", f"feedstock {name} out of order or repeated")
            stages[name] = stage
        if following is None:
            return stages
        if following <= after or not page:
            raise FormatError(url, "next_after", "does not move forward")
        after = following


_WILD = re.compile(r"[*?\[]")


@dataclass
class Owners:
    """Which feedstocks' verified delegations cover a package name."""

    exact: dict[str, list[str]] = field(default_factory=dict)
    globs: list[tuple[str, str]] = field(default_factory=list)  # (pattern, feedstock)
    # Globs by their literal prefix (up to the first wildcard): a name is matched only
    # against the globs whose prefix it starts with, not all of them.
    _by_prefix: dict[str, list[tuple[str, str]]] = field(default_factory=dict, repr=False)
    _lengths: set[int] = field(default_factory=set, repr=False)
    _memo: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def add_glob(self, pattern: str, feedstock: str) -> None:
        self.globs.append((pattern, feedstock))
        wild = _WILD.search(pattern)
        prefix = pattern[: wild.start()] if wild else pattern
        self._by_prefix.setdefault(prefix, []).append((pattern, feedstock))
        self._lengths.add(len(prefix))
        self._memo.clear()

    def of(self, name: str) -> list[str]:
        known = self._memo.get(name)
        if known is not None:
            return known
        found = set(self.exact.get(name, ()))
        for length in self._lengths:
            for pattern, feedstock in self._by_prefix.get(name[:length], ()):
                if fnmatchcase(name, pattern):
                    found.add(feedstock)
        known = sorted(found)
        self._memo[name] = known
        return known


def walk_owners(session: TrustSession) -> Owners:
    """Every delegation of the repository: the index and each bin verified by the core's
    own rule-3 checks (signatures, rollback, the index's pins, expiry)."""
    root = session.root.meta
    now, skew, state = session.now(), session.config.clock_skew, session.state
    index = verify_index(session.fetch, root, now, skew, state).document
    owners = Owners()
    for bin_name in sorted(index.shards):
        shard = verify_bin(
            session.fetch, root, index, bin_name, index.shards[bin_name], now, skew, state
        ).bin
        for feedstock, delegation in shard.delegations.items():
            for output in delegation.outputs:
                owners.exact.setdefault(output, []).append(feedstock)
            for pattern in delegation.output_globs:
                owners.add_glob(pattern, feedstock)
    return owners


class Decision(NamedTuple):
    sign: bool
    feedstock: str | None  # the covering feedstock the decision names
    note: str  # why, for the report


def record_time(record: dict[str, Any]) -> datetime | None:
    """The record's `timestamp` (seconds or, past year 9999, milliseconds); None if absent."""
    value = record.get("timestamp")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    seconds = value / 1000 if value > _MS_THRESHOLD else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


class StagePolicy:
    """The stages and the owners of names: what happens to a record lacking an attestation."""

    def __init__(self, stages: dict[str, FeedstockStage], owners: Owners) -> None:
        self.stages = stages
        self.owners = owners

    @classmethod
    def open(cls, stages: dict[str, FeedstockStage], session: TrustSession) -> StagePolicy:
        return cls(stages, walk_owners(session))

    def decide(self, name: object, record: dict[str, Any]) -> Decision:
        if not isinstance(name, str):
            return Decision(False, None, "no package name")
        feedstocks = self.owners.of(name)
        if not feedstocks:
            return Decision(False, None, "no feedstock's delegation covers the name")
        relaxed: list[tuple[str, str]] = []
        for feedstock in feedstocks:
            known = self.stages.get(feedstock)
            if known is None:
                return Decision(False, feedstock, f"feedstock {feedstock} has no stage")
            if known.stage != "enforce":
                relaxed.append((feedstock, known.stage))
                continue
            uploaded = record_time(record)
            if known.since is None or uploaded is None or uploaded >= known.since:
                since = format_time(known.since) if known.since else "always"
                return Decision(False, feedstock, f"feedstock {feedstock} enforces (since {since})")
            relaxed.append((feedstock, f"enforce since {format_time(known.since)}, record older"))
        feedstock, stage = relaxed[0]
        return Decision(True, feedstock, stage)
