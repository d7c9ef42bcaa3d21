"""The feedstock layer's commands: `delegations publish|import-outputs`, `sign`, `verify`,
`feedstock provision`.

Handlers import what they use when they run: `cf-sign verify` must start fast, so it never
loads securesystemslib (only `sign` does) nor the service.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from signer.cli.common import add_expires, add_trust_options, emit_json, flags
from signer.trust.errors import FormatError, VerificationError

if TYPE_CHECKING:
    from signer.keys import KeyHandle

DEFAULT_DELEGATION_DAYS = 90.0


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: Subparsers) -> None:
    for add in COMMANDS.values():
        add(sub)


def _add_delegations(sub: Subparsers) -> None:
    dg = sub.add_parser("delegations", help="publish and import feedstock delegations")
    dg_sub = dg.add_subparsers(dest="dg_command", metavar="ACTION", required=True)
    pub = dg_sub.add_parser(
        "publish", help="sign and write feedstocks/index.json and the bins that changed"
    )
    pub.add_argument("source", metavar="SOURCE", help="delegations source (JSON or YAML)")
    pub.add_argument(
        "--trust",
        required=True,
        type=Path,
        metavar="DIR",
        help="trust repository directory to publish into",
    )
    pub.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="KEYREF",
        help="key_mgr key (repeat for a threshold above 1)",
    )
    pub.add_argument(
        "--bins",
        type=int,
        choices=(16, 256, 4096),
        help="number of bins (default: as published, else 256)",
    )
    add_expires(pub, DEFAULT_DELEGATION_DAYS)
    pub.add_argument("--passphrase-env", metavar="VAR")
    pub.add_argument("--dry-run", action="store_true", help="say what would change only")
    pub.set_defaults(handler=delegations_publish)

    imp = dg_sub.add_parser(
        "import-outputs", help="conda-forge's feedstock-outputs registry -> a delegations source"
    )
    imp.add_argument("outputs_dir", metavar="FEEDSTOCK_OUTPUTS_DIR", type=Path)
    imp.add_argument("--keys-dir", type=Path, metavar="D", help="where <feedstock>.pub live")
    imp.add_argument(
        "--allowlist",
        type=Path,
        metavar="FILE",
        help="feedstock -> globs YAML (default: the registry's "
        "feedstock_outputs_autoreg_allowlist.yml)",
    )
    imp.add_argument("-o", "--output", required=True, type=Path, metavar="SOURCE")
    imp.set_defaults(handler=delegations_import)


def _add_sign(sub: Subparsers) -> None:
    sign = sub.add_parser("sign", help="write <artifact>.sig.json for each artifact (CI)")
    sign.add_argument("artifacts", nargs="*", metavar="ARTIFACT", type=Path)
    sign.add_argument(
        "--build-dir",
        type=Path,
        metavar="D",
        help="sign the --output packages in D/<subdir>/ (conda-build output)",
    )
    sign.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAME",
        dest="outputs",
        help="with --build-dir: a package name the recipe variant builds (repeat)",
    )
    sign.add_argument(
        "--feedstock",
        metavar="NAME",
        help="feedstock name (default: $FEEDSTOCK_NAME, -feedstock stripped)",
    )
    sign.add_argument(
        "--key",
        required=True,
        metavar="KEYREF",
        help="the feedstock's key, usually env:VAR (a CI secret)",
    )
    sign.add_argument(
        "--public-key",
        metavar="PUB",
        help="public key, for KEYREFs that need it (azurekv:, pkcs11:)",
    )
    sign.add_argument("--passphrase-env", metavar="VAR")
    sign.add_argument(
        "--channel",
        default=None,
        metavar="URL",
        help="target channel (default https://conda.anaconda.org/conda-forge)",
    )
    sign.add_argument("--out-dir", type=Path, metavar="D", help="write sidecars here")
    add_trust_options(sign, required=False)
    sign.set_defaults(handler=sign_cmd)


def _add_verify(sub: Subparsers) -> None:
    ver = sub.add_parser("verify", help="verify artifacts against the feedstock delegations")
    ver.add_argument("artifacts", nargs="+", metavar="ARTIFACT", type=Path)
    add_trust_options(ver)
    ver.add_argument("--sig", type=Path, metavar="FILE", help="sidecar (one artifact only)")
    ver.add_argument("--json", action="store_true", help="machine-readable results")
    ver.set_defaults(handler=verify_cmd)


def _add_feedstock(sub: Subparsers) -> None:
    fs = sub.add_parser("feedstock", help="provision feedstock keys")
    fs_sub = fs.add_subparsers(dest="fs_command", metavar="ACTION", required=True)
    prov = fs_sub.add_parser("provision", help="make a feedstock's key pair and CI secret")
    prov.add_argument("name", metavar="NAME", help="feedstock name, without -feedstock")
    prov.add_argument("--dir", type=Path, default=Path("."), help="where NAME.pub goes")
    prov.add_argument("--type", choices=("ed25519", "ecdsa-p256"), default="ed25519")
    prov.add_argument(
        "--output",
        action="append",
        metavar="PKG",
        dest="outputs",
        help="package name the feedstock publishes (repeat; default NAME)",
    )
    where = prov.add_mutually_exclusive_group()
    where.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="write the CI secret here, mode 0600 (default D/NAME.ci-secret)",
    )
    where.add_argument(
        "--secret-stdout",
        action="store_true",
        help="print only the CI secret on stdout (everything else on stderr)",
    )
    prov.add_argument(
        "--secret-var",
        default="CF_SIGN_KEY",
        metavar="VAR",
        help="name of the CI secret variable (default CF_SIGN_KEY)",
    )
    prov.set_defaults(handler=provision_cmd)


# Top-level command -> what adds it: `cf-sign verify` builds its own parser only.
COMMANDS = {
    "delegations": _add_delegations,
    "sign": _add_sign,
    "verify": _add_verify,
    "feedstock": _add_feedstock,
}


# ----------------------------------------------------------------------------- delegations


def delegations_publish(args: argparse.Namespace) -> int:
    from signer.feedstock.publish import publish_to_directory
    from signer.feedstock.source import read_delegations_source
    from signer.keys import channel_signer
    from signer.trust.timefmt import system_clock

    source = read_delegations_source(args.source)
    signers = [channel_signer(k, passphrase_env=args.passphrase_env) for k in args.key]
    with flags({"trust directory": "--trust", "key": "--key"}):
        plan, bins = publish_to_directory(
            args.trust,
            source.delegations,
            signers,
            bins=args.bins,
            expires_days=args.expires,
            now=system_clock(),
            dry_run=args.dry_run,
        )
    verb = "would write" if args.dry_run else "wrote"
    for bin_name, reason in sorted(plan.changed_bins.items()):
        print(f"{verb} feedstocks/{bin_name}.json  ({reason})")
    if plan.index_reason:
        print(f"{verb} feedstocks/index.json  (v{plan.index_version}: {plan.index_reason})")
    print(
        f"{plan.feedstocks} feedstocks in {bins} bins: {len(plan.changed_bins)} bin(s) "
        f"changed, {plan.unchanged_bins} unchanged; index v{plan.index_version}"
    )
    if source.unprovisioned:
        print(
            f"left out {len(source.unprovisioned)} feedstock(s) without keys "
            "(provision them with `cf-sign feedstock provision`)"
        )
    return 0


def delegations_import(args: argparse.Namespace) -> int:
    import json

    from signer.feedstock.outputs_import import import_outputs
    from signer.trust.state import write_atomic

    result = import_outputs(args.outputs_dir, allowlist=args.allowlist, keys_dir=args.keys_dir)
    text = json.dumps(result.source, indent=1, sort_keys=True) + "\n"
    write_atomic(args.output, text.encode("utf-8"))
    print(
        f"wrote {args.output}: {result.feedstocks} feedstocks, {result.names} package names, "
        f"{result.globs} globs; {result.with_keys} with keys"
    )
    for path in result.skipped[:5]:
        print(f"skipped {path} (not an output record)")
    return 0


# ----------------------------------------------------------------------------- sign


def _load_key(args: argparse.Namespace) -> KeyHandle:
    from signer.keys import artifact_signer, load_public_key

    public = load_public_key(args.public_key) if args.public_key else None
    return artifact_signer(args.key, public=public, passphrase_env=args.passphrase_env)


def sign_cmd(args: argparse.Namespace) -> int:
    from signer.feedstock.sign import DEFAULT_CHANNEL, gather_artifacts, sign_artifacts
    from signer.trust.attestation import check_channel
    from signer.trust.feedstocks import check_name, normalize_feedstock

    raw_name = args.feedstock or os.environ.get("FEEDSTOCK_NAME", "")
    if not raw_name:
        raise FormatError("--feedstock", "NAME", "required (or set $FEEDSTOCK_NAME)")
    feedstock = check_name(normalize_feedstock(raw_name), "--feedstock", "NAME")
    channel = check_channel(args.channel or DEFAULT_CHANNEL, "--channel", "URL")
    if args.outputs and args.build_dir is None:
        raise FormatError("--output", "NAME", "only with --build-dir")
    outputs = None
    if args.build_dir is not None:
        # A build dir also holds what other variants or earlier builds left there: sign the
        # variant's outputs only, never everything that happens to be in a subdir.
        if not args.outputs:
            raise FormatError(
                str(args.build_dir), "--build-dir", "name the variant's outputs (--output NAME)"
            )
        outputs = {check_name(n, "--output", "NAME") for n in args.outputs}
    with flags({"build directory": "--build-dir"}):
        artifacts = gather_artifacts(args.artifacts, args.build_dir, "sign", outputs)
    delegation = None
    if args.trust:
        from signer.cli.common import open_session, report_notices, verification_hint

        session = open_session(args)
        try:
            delegation = session.delegation(feedstock).delegation
        except VerificationError as exc:
            if exc.check != "delegation":
                raise verification_hint(exc) from None
            raise FormatError(feedstock, "--feedstock", exc.reason) from None
        finally:
            report_notices(session)
    with flags({"key": "--key", "feedstock": "--feedstock", "output directory": "--out-dir"}):
        signed = sign_artifacts(
            artifacts,
            feedstock=feedstock,
            load_key=lambda: _load_key(args),
            channel=channel,
            out_dir=args.out_dir,
            delegation=delegation,
        )
    for item in signed:
        extra = " +provenance" if item.provenance else ""
        print(
            f"signed {item.artifact} -> {item.sidecar}  (feedstock {feedstock}, "
            f"key {item.keyid}{extra})"
        )
    return 0


# ----------------------------------------------------------------------------- verify


def verify_cmd(args: argparse.Namespace) -> int:
    from signer.cli.common import open_session, report_notices

    paths: list[Path] = args.artifacts
    for path in paths:
        if path.is_dir():
            raise FormatError(str(path), "ARTIFACT", "is a directory, not an artifact")
        if not path.is_file():
            raise FormatError(str(path), "ARTIFACT", "no such file")
    if args.sig is not None and len(paths) != 1:
        raise FormatError("--sig", "FILE", "applies to a single ARTIFACT")
    session = open_session(args)
    verdicts = [session.verify_artifact(path, args.sig) for path in paths]
    verdicts = [
        v._replace(reason=f"{v.reason}; pass --root FILE") if v.check == "trust anchor" else v
        for v in verdicts
    ]
    report_notices(session)
    if args.json:
        emit_json([v.to_json() for v in verdicts])
    else:
        for verdict in verdicts:
            sys.stdout.write(verdict.line() + "\n")
    return 0 if all(v.ok for v in verdicts) else 1


# ----------------------------------------------------------------------------- provision


def provision_cmd(args: argparse.Namespace) -> int:
    from signer.feedstock.provision import make_feedstock_key, write_secret_file

    secret_file: Path | None = None
    if not args.secret_stdout:
        secret_file = args.secret_file or args.dir / f"{args.name}.ci-secret"
        if secret_file.exists():
            raise FormatError(str(secret_file), "", "already exists; not overwriting a secret")
    made = make_feedstock_key(
        args.name, args.dir, keytype=args.type, outputs=tuple(args.outputs or ())
    )
    # With --secret-stdout, stdout carries the secret alone (pipe it into `gh secret set`).
    info = sys.stderr if args.secret_stdout else sys.stdout
    info.write(f"feedstock {made.feedstock}: keyid {made.public.keyid}\n")
    info.write(f"public key  {made.pub_path}\n")
    info.write("delegations source entry:\n" + made.source_snippet() + "\n")
    if secret_file is not None:
        write_secret_file(secret_file, made.secret)
        info.write(
            f"CI secret   {secret_file} (mode 0600): store its content as the secret "
            f"variable {args.secret_var}, then delete the file\n"
        )
        info.write(f"  GitHub: gh secret set {args.secret_var} < {secret_file}\n")
        info.write(f"  Azure:  a secret pipeline variable {args.secret_var}\n")
        info.write(f"  CI signs with: cf-sign sign ... --key env:{args.secret_var}\n")
    else:
        sys.stdout.write(made.secret + "\n")
        info.write(f"CI secret printed on stdout: store it as {args.secret_var}\n")
    return 0
