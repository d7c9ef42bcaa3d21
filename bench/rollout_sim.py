"""Simulated roll-out: `cf-sign rollout apply` over a registry of many feedstocks.

Stand-ins on loopback speak the real request and response shapes of GitHub's Actions
secrets API (per-repository X25519 keys; the stand-in opens each sealed box with its
private key and checks it holds an ed25519 private key), Azure DevOps' build definitions
API (revisions, secret variables that are never returned), and the trust service's admin
API (the tests use the real service; here a stand-in, so the run measures the roll-out and
not the service's publishing). The roll-out runs as a real `cf-sign rollout apply` process;
the GitHub stand-in kills it (SIGKILL) right after storing the K-th secret, K random, before
answering: the worst moment. A second run finishes the rest. The report says whether any
secret was written twice, the rate in feedstocks/s and the client's peak memory.

    python bench/rollout_sim.py [--feedstocks 29000] [--jobs 4] [--seed N] [--json]
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nacl.public import PrivateKey, SealedBox

TOKEN_GITHUB = "ghp_standin"
TOKEN_AZURE = "azure-pat-standin"
TOKEN_ADMIN = "admin-standin"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs
    disable_nagle_algorithm = True  # headers and body go in two writes
    app: StandIn

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        return json.loads(data) if data else None

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        body = self._body()
        status, payload, headers = self.app.handle(self.command, self.path, self.headers, body)
        try:
            self._send(status, payload, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client was killed mid-request

    do_GET = do_PUT = do_POST = do_DELETE = _dispatch


class StandIn:
    """A loopback HTTP server; subclasses implement `route`."""

    def __init__(self) -> None:
        handler = type("Handler", (_Handler,), {"app": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.lock = threading.Lock()
        self.requests = 0
        self.limited = 0
        # Every n-th request is rate-limited (403 + Retry-After on GitHub, 429 on Azure).
        self.limit_every = 0
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(
        self, method: str, path: str, headers: Any, body: Any
    ) -> tuple[int, Any, dict[str, str] | None]:
        with self.lock:
            self.requests += 1
            limit = self.limit_every and self.requests % self.limit_every == 0
            if limit:
                self.limited += 1
        if limit:
            return self.rate_limited()
        if not self.authorized(headers.get("Authorization", "")):
            return 401, {"message": "Bad credentials"}, None
        return self.route(method, path, body)

    def rate_limited(self) -> tuple[int, Any, dict[str, str] | None]:
        return 429, {"message": "slow down"}, {"Retry-After": "0"}

    def authorized(self, header: str) -> bool:
        raise NotImplementedError

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str] | None]:
        raise NotImplementedError


_GH_KEY = re.compile(r"\A/repos/([^/]+)/([^/]+)/actions/secrets/public-key\Z")
_GH_SECRET = re.compile(r"\A/repos/([^/]+)/([^/]+)/actions/secrets/([A-Za-z_][A-Za-z0-9_]*)\Z")


class GitHubStandIn(StandIn):
    def __init__(self, repos: set[str] | None = None, owner: str = "conda-forge") -> None:
        self.repos = repos  # None: every repository exists
        self.owner = owner
        self.keys: dict[str, tuple[str, PrivateKey]] = {}
        self.secrets: dict[tuple[str, str], tuple[bytes, str, str]] = {}  # value, created, updated
        self.puts: dict[tuple[str, str], int] = {}
        self.after_put: Callable[[int], None] | None = None
        super().__init__()

    def authorized(self, header: str) -> bool:
        return header == f"Bearer {TOKEN_GITHUB}"

    def rate_limited(self) -> tuple[int, Any, dict[str, str] | None]:
        # GitHub's secondary rate limit: 403 with Retry-After.
        return 403, {"message": "You have exceeded a secondary rate limit"}, {"Retry-After": "0"}

    def _repo(self, owner: str, repo: str) -> str | None:
        if owner != self.owner or not repo.endswith("-feedstock"):
            return None
        if self.repos is not None and repo not in self.repos:
            return None
        return repo

    def _key(self, repo: str) -> tuple[str, PrivateKey]:
        with self.lock:
            if repo not in self.keys:
                self.keys[repo] = (str(random.getrandbits(62)), PrivateKey.generate())
            return self.keys[repo]

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str] | None]:
        path = urlsplit(path).path
        match = _GH_KEY.match(path)
        if match and method == "GET":
            repo = self._repo(*match.groups())
            if repo is None:
                return 404, {"message": "Not Found"}, None
            key_id, private = self._key(repo)
            public = base64.b64encode(bytes(private.public_key)).decode()
            return 200, {"key_id": key_id, "key": public}, None
        match = _GH_SECRET.match(path)
        if not match:
            return 404, {"message": "Not Found"}, None
        repo = self._repo(match.group(1), match.group(2))
        if repo is None:
            return 404, {"message": "Not Found"}, None
        name = match.group(3)
        if method == "GET":
            with self.lock:
                found = self.secrets.get((repo, name))
            if found is None:
                return 404, {"message": "Not Found"}, None
            return 200, {"name": name, "created_at": found[1], "updated_at": found[2]}, None
        if method != "PUT":
            return 405, {"message": "Method Not Allowed"}, None
        if not isinstance(body, dict) or set(body) != {"encrypted_value", "key_id"}:
            return 422, {"message": "Invalid request"}, None
        key_id, private = self._key(repo)
        if body["key_id"] != key_id:
            return 422, {"message": "key_id does not match the repository's public key"}, None
        try:
            value = SealedBox(private).decrypt(base64.b64decode(body["encrypted_value"]))
        except Exception:
            return 422, {"message": "could not decrypt encrypted_value"}, None
        if b"PRIVATE KEY" not in value:
            return 422, {"message": "not a signing key"}, None
        with self.lock:
            now = _now()
            old = self.secrets.get((repo, name))
            self.secrets[(repo, name)] = (value, old[1] if old else now, now)
            count = self.puts[(repo, name)] = self.puts.get((repo, name), 0) + 1
            total = sum(self.puts.values())
        del count
        if self.after_put is not None:
            self.after_put(total)
        return (204 if old else 201), None, None


_AZ_LIST = re.compile(r"\A/([^/]+)/([^/]+)/_apis/build/definitions\Z")
_AZ_ONE = re.compile(r"\A/([^/]+)/([^/]+)/_apis/build/definitions/(\d+)\Z")


class AzureStandIn(StandIn):
    def __init__(self, org: str = "conda-forge", project: str = "feedstock-builds") -> None:
        self.org, self.project = org, project
        self.by_name: dict[str, int] = {}
        self.definitions: dict[int, dict[str, Any]] = {}
        self.secret_values: dict[tuple[int, str], str] = {}
        self.puts: dict[tuple[str, str], int] = {}
        # Definitions someone else saves between our GET and our PUT (once each).
        self.edited_meanwhile: set[str] = set()
        super().__init__()

    def add(self, name: str) -> None:
        number = len(self.definitions) + 1
        self.by_name[name] = number
        self.definitions[number] = {
            "id": number,
            "name": name,
            "revision": 1,
            "path": "\\",
            "queueStatus": "enabled",
            "repository": {"type": "GitHub", "name": f"conda-forge/{name}"},
            "process": {"type": 2, "yamlFilename": "azure-pipelines.yml"},
            "variables": {"BINSTAR_TOKEN": {"value": None, "isSecret": True}},
        }
        self.secret_values[(number, "BINSTAR_TOKEN")] = "existing-secret"

    def authorized(self, header: str) -> bool:
        expected = base64.b64encode(f":{TOKEN_AZURE}".encode()).decode()
        return header == f"Basic {expected}"

    def _visible(self, definition: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(json.dumps(definition))
        for var in out.get("variables", {}).values():
            if var.get("isSecret"):
                var["value"] = None  # Azure never returns a secret's value
        return out

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str] | None]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        if query.get("api-version") != ["7.1"]:
            return 400, {"message": "api-version is required"}, None
        match = _AZ_LIST.match(parts.path)
        if match and method == "GET":
            if match.groups() != (self.org, self.project):
                return 404, {"message": "project not found"}, None
            name = unquote(query.get("name", [""])[0])
            with self.lock:
                number = self.by_name.get(name)
                found = [] if number is None else [self.definitions[number]]
                refs = [{k: d[k] for k in ("id", "name", "revision", "path")} for d in found]
            return 200, {"count": len(refs), "value": refs}, None
        match = _AZ_ONE.match(parts.path)
        if not match or match.groups()[:2] != (self.org, self.project):
            return 404, {"message": "not found"}, None
        number = int(match.group(3))
        with self.lock:
            current = self.definitions.get(number)
            if current is None:
                return 404, {"message": "definition not found"}, None
            if method == "GET":
                return 200, self._visible(current), None
            if method != "PUT":
                return 405, {"message": "method not allowed"}, None
            if not isinstance(body, dict) or body.get("id") != number:
                return 400, {"message": "body is not this definition"}, None
            if current["name"] in self.edited_meanwhile:
                self.edited_meanwhile.discard(current["name"])
                current["revision"] += 1
            if body.get("revision") != current["revision"]:
                return 409, {"message": "the definition was updated by someone else"}, None
            variables: dict[str, Any] = {}
            for name, var in (body.get("variables") or {}).items():
                secret = bool(var.get("isSecret"))
                value = var.get("value")
                if secret and value is None:  # unchanged secret
                    if (number, name) not in self.secret_values:
                        return 400, {"message": f"secret {name} has no value"}, None
                elif secret:
                    self.secret_values[(number, name)] = str(value)
                    key = (current["name"], name)
                    self.puts[key] = self.puts.get(key, 0) + 1
                variables[name] = {**var, "value": None if secret else value}
            current = {**body, "variables": variables, "revision": current["revision"] + 1}
            self.definitions[number] = current
            return 200, self._visible(current), None


_SVC_ONE = re.compile(r"\A/v1/admin/feedstocks/([^/]+)\Z")
_SVC_KEYS = re.compile(r"\A/v1/admin/feedstocks/([^/]+)/keys\Z")


class ServiceStandIn(StandIn):
    """The admin API's feedstock registration, in memory (the bench only)."""

    def __init__(self) -> None:
        self.feedstocks: dict[str, dict[str, Any]] = {}
        super().__init__()

    def authorized(self, header: str) -> bool:
        return header == f"Bearer {TOKEN_ADMIN}"

    def _view(self, name: str) -> dict[str, Any]:
        entry = self.feedstocks[name]
        return {"name": name, "keys": [{"keyid": k, "revoked_at": None} for k in entry["keys"]]}

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str] | None]:
        from signer.trust.keys import PublicKey

        parts = urlsplit(path)
        with self.lock:
            if parts.path == "/v1/admin/feedstocks" and method == "POST":
                name = body["name"]
                if name in self.feedstocks:
                    return 409, {"detail": "exists"}, None
                keys = [PublicKey.from_dict(k, "body", "keys").keyid for k in body["keys"]]
                self.feedstocks[name] = {"keys": keys, "outputs": body["outputs"]}
                return 201, {"feedstock": self._view(name), "published": {}}, None
            if parts.path == "/v1/admin/feedstocks" and method == "GET":
                query = parse_qs(parts.query)
                after = query.get("after", [""])[0]
                limit = int(query.get("limit", ["100"])[0])
                names = sorted(n for n in self.feedstocks if n > after)[:limit]
                nxt = names[-1] if len(names) == limit else None
                return 200, {"feedstocks": [self._view(n) for n in names], "next_after": nxt}, None
            match = _SVC_ONE.match(parts.path)
            if match and method == "GET":
                name = unquote(match.group(1))
                if name not in self.feedstocks:
                    return 404, {"detail": "unknown feedstock"}, None
                return 200, self._view(name), None
        return 404, {"detail": "not here"}, None


# ----------------------------------------------------------------------------- the simulation


def make_registry(root: Path, count: int) -> list[str]:
    """A feedstock-outputs checkout: `count` feedstocks, one or two outputs each."""
    names = []
    for i in range(count):
        name = f"pkg{i:05d}"
        names.append(name)
        outputs = [name] + ([f"lib{name}"] if i % 3 == 0 else [])
        for output in outputs:
            path = root / "outputs" / output[0] / output[1] / output[2] / f"{output}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"feedstocks": [name]}))
    return names


def apply_command(
    registry: Path, state: Path, service: str, github: str, azure: str, jobs: int
) -> list[str]:
    return [
        sys.executable, "-m", "signer.cli.main", "rollout", "apply",
        "--registry", str(registry), "--service", service, "--state-dir", str(state),
        "--github-api", github, "--azure-devops-url", azure, "--jobs", str(jobs),
        "--rate", "100000", "--json",
    ]  # fmt: skip


def rollout_env() -> dict[str, str]:
    return {
        **os.environ,
        "CF_SIGN_ADMIN_TOKEN": TOKEN_ADMIN,
        "GITHUB_TOKEN": TOKEN_GITHUB,
        "AZURE_DEVOPS_TOKEN": TOKEN_AZURE,
    }


def kill_after(github: GitHubStandIn, k: int, proc: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL the roll-out right after the k-th secret is stored, before the answer."""

    def hook(total: int) -> None:
        if total == k and proc:
            os.killpg(proc[0].pid, signal.SIGKILL)  # the process group: time and cf-sign
            time.sleep(0.2)  # let it die before this request is answered

    github.after_put = hook


def check(github: GitHubStandIn, azure: AzureStandIn, names: list[str]) -> dict[str, Any]:
    """Each feedstock holds exactly one secret write per provider, and the same key."""
    twice_gh = sorted(r for (r, _), n in github.puts.items() if n > 1)
    twice_az = sorted(r for (r, _), n in azure.puts.items() if n > 1)
    missing = [
        n for n in names
        if (f"{n}-feedstock", "CF_SIGN_KEY") not in github.secrets
        or (f"{n}-feedstock", "CF_SIGN_KEY") not in azure.puts
    ]  # fmt: skip
    mismatched = 0
    for name in names:
        repo = f"{name}-feedstock"
        gh = github.secrets.get((repo, "CF_SIGN_KEY"))
        number = azure.by_name.get(repo)
        az = azure.secret_values.get((number, "CF_SIGN_KEY")) if number else None
        if gh is not None and az is not None and gh[0].decode() != az:
            mismatched += 1
    return {
        "written_twice_github": twice_gh,
        "written_twice_azure": twice_az,
        "missing": len(missing),
        "github_and_azure_differ": mismatched,
    }


def simulate(count: int, jobs: int, seed: int, limit_every: int = 0) -> dict[str, Any]:
    random.seed(seed)
    with tempfile.TemporaryDirectory(prefix="rollout-sim-") as tmp:
        base = Path(tmp)
        t0 = time.monotonic()
        names = make_registry(base / "feedstock-outputs", count)
        registry_s = time.monotonic() - t0
        github, azure, service = GitHubStandIn(), AzureStandIn(), ServiceStandIn()
        github.limit_every = azure.limit_every = limit_every
        for name in names:
            azure.add(f"{name}-feedstock")
        state = base / "state"
        cmd = apply_command(
            base / "feedstock-outputs", state, service.url, github.url, azure.url, jobs
        )
        k = random.randint(1, max(1, count - 1))
        procs: list[subprocess.Popen[bytes]] = []
        kill_after(github, k, procs)
        runs = []
        try:
            for attempt in range(2):
                start = time.monotonic()
                proc = subprocess.Popen(
                    ["/usr/bin/time", "-f", "%M", *cmd],
                    env=rollout_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
                procs[:] = [proc]
                out, err = proc.communicate(timeout=3600)
                seconds = time.monotonic() - start
                lines = err.decode().strip().splitlines()
                peak_kib = int(lines[-1]) if lines and lines[-1].isdigit() else None
                report = json.loads(out) if proc.returncode in (0, 1) and out else None
                runs.append(
                    {
                        "attempt": attempt + 1,
                        "exit": proc.returncode,
                        "seconds": round(seconds, 2),
                        "peak_rss_mib": round(peak_kib / 1024, 1) if peak_kib else None,
                        "report": {k2: v for k2, v in (report or {}).items()
                                   if k2 not in ("planned", "failures")},
                        "failures": (report or {}).get("failures", [])[:5],
                    }
                )  # fmt: skip
                github.after_put = None  # only the first run is interrupted
        finally:
            result = check(github, azure, names)
            github.close()
            azure.close()
            service.close()
        finished = runs[-1]["report"]
        total_s = sum(r["seconds"] for r in runs)
        return {
            "feedstocks": count,
            "jobs": jobs,
            "killed_after_secret": k,
            "registry_seconds": round(registry_s, 2),
            "runs": runs,
            "feedstocks_per_second": round(count / total_s, 1) if total_s else None,
            "second_run_done": finished.get("done"),
            "second_run_already": finished.get("already"),
            "rate_limited_answers": github.limited + azure.limited,
            **result,
            "self_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feedstocks", type=int, default=29000)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--limit-every", type=int, default=0, help="rate-limit every n-th request")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = simulate(args.feedstocks, args.jobs, args.seed, args.limit_every)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    ok = not (result["written_twice_github"] or result["written_twice_azure"] or result["missing"]
              or result["github_and_azure_differ"])  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
