"""`cf-sign rollout plan|apply|rotate|status|stage`: parse, call signer.rollout, print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signer.cli.common import positive_int
from signer.trust.errors import FormatError

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
    from signer.rollout import Endpoints
    from signer.rollout.apply import Outcome, Report

TOKENS = {"admin": "CF_SIGN_ADMIN_TOKEN", "github": "GITHUB_TOKEN", "azure": "AZURE_DEVOPS_TOKEN"}


def register(sub: Subparsers) -> None:
    ro = sub.add_parser("rollout", help="provision feedstock keys into CI; staged enforcement")
    ro_sub = ro.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    plan = ro_sub.add_parser("plan", help="which feedstocks need keys")
    _registry(plan)
    _service(plan)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=plan_cmd)

    apply = ro_sub.add_parser("apply", help="generate, register and store keys (resumable)")
    _registry(apply)
    _service(apply)
    _work(apply)
    apply.set_defaults(handler=apply_cmd)

    rotate = ro_sub.add_parser("rotate", help="re-key feedstocks the same way")
    rotate.add_argument("names", nargs="+", metavar="FEEDSTOCK")
    _service(rotate)
    _work(rotate, only=False)
    rotate.set_defaults(handler=rotate_cmd)

    status = ro_sub.add_parser("status", help="coverage: provisioned, signing, enforced")
    _service(status)
    status.add_argument(
        "--days", type=positive_int, default=30, help="signing = attested a build this recently"
    )
    status.add_argument(
        "--repodata",
        type=Path,
        metavar="FILE",
        help="also: share of this subdir's records attested",
    )
    status.add_argument(
        "--sample", type=int, default=1000, metavar="N", help="records sampled (0: all)"
    )
    status.add_argument("--json", action="store_true")
    status.add_argument("--metrics", action="store_true", help="Prometheus text format")
    status.set_defaults(handler=status_cmd)

    stage = ro_sub.add_parser("stage", help="set feedstocks' stage: off, observe, enforce")
    stage.add_argument("stage", choices=("off", "observe", "enforce"))
    stage.add_argument("names", nargs="+", metavar="FEEDSTOCK")
    _service(stage)
    stage.set_defaults(handler=stage_cmd)


def _registry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry", required=True, type=Path, metavar="FEEDSTOCK_OUTPUTS_DIR",
        help="a checkout of conda-forge/feedstock-outputs",
    )  # fmt: skip


def _service(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", required=True, metavar="URL", help="the trust service")


def _work(p: argparse.ArgumentParser, *, only: bool = True) -> None:
    p.add_argument(
        "--state-dir", required=True, type=Path, metavar="D", help="0700; keeps the journal"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be done only")
    if only:
        p.add_argument("--only", nargs="+", metavar="NAME", default=None)
    p.add_argument("--github-api", default=None, metavar="URL")
    p.add_argument("--azure-devops-url", default=None, metavar="URL")
    p.add_argument("--jobs", type=positive_int, default=4)
    p.add_argument("--rate", type=float, default=10.0, help="requests/s per API (default 10)")
    p.add_argument("--json", action="store_true", help="the final report as JSON")


def _token(kind: str, needed: bool = True) -> str:
    value = os.environ.get(TOKENS[kind], "")
    if needed and not value:
        raise FormatError(f"${TOKENS[kind]}", "", "not set")
    return value


def _endpoints(args: argparse.Namespace, *, providers: bool) -> Endpoints:
    from signer.rollout import AZURE_DEVOPS, GITHUB_API, Endpoints

    if not args.service.startswith(("http://", "https://")):
        raise FormatError(args.service, "--service", "expected an http(s) URL")
    rate = getattr(args, "rate", 10.0)
    if not rate > 0:
        raise FormatError(str(rate), "--rate", "must be > 0")
    dry = getattr(args, "dry_run", False)
    return Endpoints(
        service_url=args.service,
        admin_token=_token("admin"),
        github_api=getattr(args, "github_api", None) or GITHUB_API,
        github_token=_token("github", providers and not dry),
        azure_url=getattr(args, "azure_devops_url", None) or AZURE_DEVOPS,
        azure_token=_token("azure", providers and not dry),
        rate=rate,
    )


def _api_errors(func: Any) -> Any:
    from signer.rollout.http import ApiError

    try:
        return func()
    except ApiError as exc:
        status = f"HTTP {exc.status}: " if exc.status else ""
        raise FormatError(exc.where, "", f"{status}{exc.reason}") from None
    except ValueError as exc:
        raise FormatError("--service", "URL", str(exc)) from None


def plan_cmd(args: argparse.Namespace) -> int:
    from signer.rollout.apply import make_plan, read_feedstocks
    from signer.rollout.service import ServiceAdmin

    endpoints = _endpoints(args, providers=False)
    feedstocks = read_feedstocks(args.registry)
    plan = _api_errors(lambda: make_plan(feedstocks, ServiceAdmin(endpoints.service_client())))
    if args.json:
        print(json.dumps(plan.to_json(), indent=2, sort_keys=True))
        return 0
    print(f"registry: {plan.registry} feedstocks; service: {plan.registered} registered")
    print(f"provisioned: {len(plan.provisioned)}; need keys: {len(plan.needs_keys)}")
    for name in plan.needs_keys[:20]:
        print(f"  {name}")
    if len(plan.needs_keys) > 20:
        print(f"  ... {len(plan.needs_keys) - 20} more (--json lists all)")
    if plan.unknown:
        print(f"in the service but not in the registry: {len(plan.unknown)}")
    return 0


def _run(args: argparse.Namespace, items: list[Any], work: Any, endpoints: Endpoints) -> int:
    from signer.rollout.apply import run_all

    progress = None
    task = None
    if sys.stderr.isatty() and not args.json:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        progress = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        task = progress.add_task("feedstocks", total=len(items))
        progress.start()

    def tick(outcome: Outcome) -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    try:
        report = run_all(items, work, endpoints.clients, jobs=args.jobs, on_outcome=tick)
    finally:
        if progress is not None:
            progress.stop()
    _print_report(report, args.json)
    return 1 if report.failures else 0


def _print_report(report: Report, as_json: bool) -> None:
    data = report.to_json()
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    for item in data["planned"]:
        print(f"PLAN   {item['feedstock']}: {', '.join(item['steps'])}")
    for item in data["failures"]:
        print(f"FAILED {item['feedstock']}: {item['reason']}")
    print(
        f"{data['feedstocks']} feedstocks: {data['done']} done, {data['already']} already done, "
        f"{data['planned']} planned, {data['failed']} failed; {data['requests']} requests, "
        f"{data['rate_limit_waits']} rate-limit waits, {data['seconds']} s"
    )


def _state(args: argparse.Namespace) -> Any:
    from signer.rollout.state import StateDir

    return StateDir(args.state_dir)


def apply_cmd(args: argparse.Namespace) -> int:
    from signer.rollout.apply import Roller, make_plan, read_feedstocks
    from signer.rollout.service import ServiceAdmin

    endpoints = _endpoints(args, providers=True)
    feedstocks = read_feedstocks(args.registry)
    if args.only:
        wanted = set(args.only)
        unknown = wanted - {f.name for f in feedstocks}
        if unknown:
            raise FormatError(", ".join(sorted(unknown)), "--only", "not in the registry")
        feedstocks = [f for f in feedstocks if f.name in wanted]
    plan = _api_errors(lambda: make_plan(feedstocks, ServiceAdmin(endpoints.service_client())))
    state = _state(args)
    try:
        roller = Roller(state, dry_run=args.dry_run, keyed=frozenset(plan.provisioned))
        return _run(args, feedstocks, roller.provision, endpoints)
    finally:
        state.close()


def rotate_cmd(args: argparse.Namespace) -> int:
    from signer.rollout.apply import Roller

    endpoints = _endpoints(args, providers=True)
    state = _state(args)
    try:
        roller = Roller(state, dry_run=args.dry_run)
        return _run(args, sorted(set(args.names)), roller.rotate, endpoints)
    finally:
        state.close()


def status_cmd(args: argparse.Namespace) -> int:
    from signer.rollout.status import coverage, prometheus

    endpoints = _endpoints(args, providers=False)
    report = _api_errors(lambda: coverage(endpoints.service_client(), days=args.days))
    if args.repodata is not None:
        from signer.rollout.status import channel_share

        if not args.repodata.is_file():
            raise FormatError(str(args.repodata), "--repodata", "no such file")
        client = endpoints.service_client()
        report["channel"] = _api_errors(
            lambda: channel_share(client, args.repodata, sample=args.sample)
        )
    if args.metrics:
        sys.stdout.write(prometheus(report))
    elif args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(
            f"feedstocks: {report['feedstocks']}; provisioned: {report['provisioned']}; "
            f"signing (last {args.days} days): {report['signing']}; "
            f"observe: {report['observe']}; enforced: {report['enforced']}"
        )
        channel = report.get("channel")
        if channel:
            print(
                f"{channel['subdir']}: {channel['attested_share']:.1%} of "
                f"{channel['records']} records attested (sample {channel['sampled']}, "
                f"+/- {channel['margin_95']:.1%})"
            )
    return 0


def stage_cmd(args: argparse.Namespace) -> int:
    from signer.rollout.service import ServiceAdmin

    endpoints = _endpoints(args, providers=False)
    admin = ServiceAdmin(endpoints.service_client())
    for name in args.names:
        body = _api_errors(lambda n=name: admin.set_stage(n, args.stage))
        print(f"{name}: {body.get('previous', '?')} -> {body.get('stage', args.stage)}")
    return 0
