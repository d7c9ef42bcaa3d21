"""`cf-sign rollout plan|apply|rotate`: keys into many feedstocks' CI, resumably.

Per feedstock, in this order, each step journalled (signer.rollout.state) once it is done:
`key` (generated into the state directory), `registered` (the service's admin API),
`github` and `azure` (the CF_SIGN_KEY secret in each CI provider), `done` (the private key
is deleted). A re-run skips what the journal says is done. A step cut short after its
request left (`<step>-begin` journalled, not `<step>`) is first checked at the provider
(GitHub: the secret's `updated_at`; Azure: the companion key id variable) so a secret is
never written twice. Rotation runs the same steps with a new key, then revokes the old.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from signer.rollout.http import ApiError
from signer.rollout.providers import AzureVariables, GitHubSecrets
from signer.rollout.service import ServiceAdmin
from signer.rollout.state import StateDir
from signer.trust.errors import FormatError

PROVISION = "provision"
ROTATE = "rotate"
STEPS = ("key", "registered", "github", "azure", "done")
# A begin mark is compared with the provider's clock: allow for skew between the two.
CLOCK_MARGIN = timedelta(minutes=2)


@dataclass(frozen=True)
class Feedstock:
    name: str
    outputs: tuple[str, ...]
    globs: tuple[str, ...] = ()


def read_feedstocks(registry: Path) -> list[Feedstock]:
    """The feedstock-outputs registry as feedstocks (sorted), with the allowlist's globs."""
    from signer.feedstock.outputs_import import ALLOWLIST_NAME, read_allowlist, read_registry
    from signer.trust.feedstocks import normalize_feedstock

    raw, _ = read_registry(registry)
    # A few entries name the repository (`zlib-feedstock`) rather than the feedstock.
    by_feedstock: dict[str, set[str]] = {}
    for name, outputs in raw.items():
        by_feedstock.setdefault(normalize_feedstock(name), set()).update(outputs)
    allow = registry / ALLOWLIST_NAME
    globs = read_allowlist(allow) if allow.is_file() else {}
    globs = {normalize_feedstock(k): v for k, v in globs.items()}
    names = sorted(set(by_feedstock) | set(globs))
    return [
        Feedstock(n, tuple(sorted(by_feedstock.get(n, ()))), tuple(globs.get(n, ()))) for n in names
    ]


@dataclass
class Plan:
    registry: int
    registered: int
    needs_keys: list[str]
    provisioned: list[str]
    unknown: list[str]  # in the service, not in the registry

    def to_json(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "registered": self.registered,
            "needs_keys": self.needs_keys,
            "provisioned": len(self.provisioned),
            "not_in_registry": self.unknown,
        }


def make_plan(feedstocks: Iterable[Feedstock], service: ServiceAdmin) -> Plan:
    names = {f.name for f in feedstocks}
    keyed: set[str] = set()
    registered: set[str] = set()
    for entry in service.feedstocks():
        registered.add(entry.name)
        if entry.active_keys:
            keyed.add(entry.name)
    return Plan(
        registry=len(names),
        registered=len(registered),
        needs_keys=sorted(names - keyed),
        provisioned=sorted(names & keyed),
        unknown=sorted(registered - names),
    )


@dataclass
class Clients:
    service: ServiceAdmin
    github: GitHubSecrets
    azure: AzureVariables

    def close(self) -> None:
        for api in (self.service, self.github, self.azure):
            api.client.close()

    def counts(self) -> tuple[int, int]:
        apis = (self.service, self.github, self.azure)
        return sum(a.client.requests for a in apis), sum(a.client.waits for a in apis)


@dataclass
class Outcome:
    feedstock: str
    status: str  # done | already | planned | failed
    detail: str = ""
    steps: tuple[str, ...] = ()


@dataclass
class Report:
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: list[Outcome] = field(default_factory=list)
    planned: list[Outcome] = field(default_factory=list)
    requests: int = 0
    waits: int = 0
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome.status] = self.outcomes.get(outcome.status, 0) + 1
        if outcome.status == "failed":
            self.failures.append(outcome)
        elif outcome.status == "planned":
            self.planned.append(outcome)

    def to_json(self) -> dict[str, Any]:
        total = sum(self.outcomes.values())
        return {
            "feedstocks": total,
            **{k: self.outcomes.get(k, 0) for k in ("done", "already", "planned", "failed")},
            "failures": [{"feedstock": o.feedstock, "reason": o.detail} for o in self.failures],
            "planned": [{"feedstock": o.feedstock, "steps": list(o.steps)} for o in self.planned],
            "requests": self.requests,
            "rate_limit_waits": self.waits,
            "seconds": round(self.seconds, 3),
            "feedstocks_per_second": round(total / self.seconds, 1) if self.seconds else None,
        }


def new_key() -> tuple[bytes, dict[str, Any], str]:
    """A fresh ed25519 key: (PKCS#8 PEM, public key dict, keyid)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from signer.keys.material import private_pem, public_key_of

    key = ed25519.Ed25519PrivateKey.generate()
    public = public_key_of(key)
    return private_pem(key, None), public.to_dict(), public.keyid


def key_from_pem(pem: bytes, source: str) -> tuple[dict[str, Any], str]:
    from signer.keys.material import parse_private_key, public_key_of

    public = public_key_of(parse_private_key(pem, source, None))
    return public.to_dict(), public.keyid


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Roller:
    """One operation (provision or rotate) over feedstocks; thread-safe."""

    def __init__(
        self, state: StateDir, *, dry_run: bool = False, keyed: frozenset[str] = frozenset()
    ) -> None:
        self.state = state
        self.dry_run = dry_run
        # Feedstocks the service already has a key for (the plan): provisioned before, by
        # another run or by hand; only a run that started them here continues them.
        self.keyed = keyed

    # the shared steps

    def _key(self, op: str, name: str) -> tuple[bytes, dict[str, Any], str]:
        pem = self.state.load_key(op, name)
        if pem is None:
            if self.state.progress(op, name).done("key"):
                # The key left the state dir (deleted by hand) before both secrets held it.
                raise FormatError(name, "state dir", "the key in flight is missing")
            pem, public, keyid = new_key()
            self.state.save_key(op, name, pem)
        else:
            public, keyid = key_from_pem(pem, f"{self.state.path}/keys")
        if not self.state.progress(op, name).done("key"):
            self.state.record(op, name, "key", keyid=keyid, public=public)
        return pem, public, keyid

    def _secrets(self, op: str, name: str, pem: bytes, keyid: str, clients: Clients) -> None:
        progress = self.state.progress(op, name)
        if not progress.done("github"):
            begin = progress.get("github-begin").get("at")
            since = datetime.fromisoformat(begin) - CLOCK_MARGIN if begin else None
            if since is not None and clients.github.updated_since(name, since):
                self.state.record(op, name, "github", recovered=True)
            else:
                self.state.record(op, name, "github-begin", at=_now().isoformat())
                clients.github.put(name, pem)
                self.state.record(op, name, "github")
        if not progress.done("azure"):
            began = progress.done("azure-begin")
            if began and clients.azure.holds(name, keyid):
                self.state.record(op, name, "azure", recovered=True)
            else:
                self.state.record(op, name, "azure-begin", at=_now().isoformat())
                clients.azure.put(name, pem.decode("ascii"), keyid)
                self.state.record(op, name, "azure")

    def _finish(self, op: str, name: str) -> None:
        self.state.drop_key(op, name)
        self.state.record(op, name, "done")

    # operations

    def provision(self, feedstock: Feedstock, clients: Clients) -> Outcome:
        op, name = PROVISION, feedstock.name
        progress = self.state.progress(op, name)
        if progress.done("done"):
            return Outcome(name, "already")
        if name in self.keyed and not progress.steps:
            return Outcome(name, "already", "provisioned before")
        if self.dry_run:
            todo = tuple(s for s in STEPS if not progress.done(s))
            return Outcome(name, "planned", steps=todo)
        try:
            pem, public, keyid = self._key(op, name)
            if not self.state.progress(op, name).done("registered"):
                clients.service.register(name, feedstock.outputs, feedstock.globs, public, keyid)
                self.state.record(op, name, "registered")
            self._secrets(op, name, pem, keyid, clients)
            self._finish(op, name)
        except (ApiError, FormatError) as exc:
            return Outcome(name, "failed", str(exc))
        return Outcome(name, "done")

    def rotate(self, name: str, clients: Clients) -> Outcome:
        op = ROTATE
        progress = self.state.progress(op, name)
        try:
            if not progress.steps or progress.done("done"):
                current = clients.service.get(name)
                if current is None or not current.active_keys:
                    return Outcome(name, "failed", "not provisioned: nothing to rotate")
                if self.dry_run:
                    return Outcome(name, "planned", steps=(*STEPS[:4], "revoked", "done"))
                self.state.record(op, name, "start", old=list(current.active_keys))
            elif self.dry_run:
                todo = tuple(s for s in (*STEPS[:4], "revoked", "done") if not progress.done(s))
                return Outcome(name, "planned", steps=todo)
            old = list(self.state.progress(op, name).get("start").get("old", []))
            pem, public, keyid = self._key(op, name)
            if not self.state.progress(op, name).done("registered"):
                clients.service.add_key(name, public, keyid)
                self.state.record(op, name, "registered")
            self._secrets(op, name, pem, keyid, clients)
            if not self.state.progress(op, name).done("revoked"):
                for old_keyid in old:
                    if old_keyid != keyid:
                        clients.service.revoke_key(name, old_keyid)
                self.state.record(op, name, "revoked")
            self._finish(op, name)
        except (ApiError, FormatError) as exc:
            return Outcome(name, "failed", str(exc))
        return Outcome(name, "done")


def run_all(
    items: Iterable[Any],
    work: Callable[[Any, Clients], Outcome],
    make_clients: Callable[[], Clients],
    *,
    jobs: int = 4,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Report:
    """`work` over `items` on `jobs` threads (each with its own connections), at most a few
    items in flight per thread, so memory stays bounded however long the registry is."""
    import time

    report = Report()
    local = threading.local()
    made: list[Clients] = []
    lock = threading.Lock()

    def one(item: Any) -> Outcome:
        clients = getattr(local, "clients", None)
        if clients is None:
            clients = local.clients = make_clients()
            with lock:
                made.append(clients)
        return work(item, clients)

    start = time.monotonic()
    iterator: Iterator[Any] = iter(items)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        pending: set[Future[Outcome]] = set()
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < jobs * 4:
                try:
                    pending.add(pool.submit(one, next(iterator)))
                except StopIteration:
                    exhausted = True
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                outcome = future.result()
                report.add(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
    report.seconds = time.monotonic() - start
    for clients in made:
        requests, waits = clients.counts()
        report.requests += requests
        report.waits += waits
        clients.close()
    return report
