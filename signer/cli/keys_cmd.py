"""`cf-sign keys generate` and `keys import`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from signer.cli.common import emit_json
from signer.trust.errors import FormatError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="generate key pairs, import public keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = keys_sub.add_parser("generate", help="write NAME.key (PKCS#8, 0600) and NAME.pub")
    gen.add_argument("name", metavar="NAME")
    gen.add_argument("--dir", type=Path, default=Path("."), help="output directory")
    gen.add_argument("--type", choices=("ed25519", "ecdsa-p256"), default="ed25519")
    gen.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="encrypt the private key with the passphrase in $VAR",
    )
    gen.set_defaults(handler=generate)
    wrap = keys_sub.add_parser(
        "wrap", help="wrap an ed25519 seed with a Key Vault RSA key (a wrapped: KEYREF)"
    )
    wrap.add_argument(
        "keyref", nargs="?", metavar="KEYREF", help="file: or env: seed (default: new)"
    )
    wrap.add_argument(
        "--vault-key",
        required=True,
        metavar="URI",
        help="azurekms://<vault>/keys/<rsa key>/<version> (RSA-OAEP-256)",
    )
    wrap.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    wrap.set_defaults(handler=wrap_cmd)
    imp = keys_sub.add_parser(
        "import", help="print the public key of a KEYREF (pkcs11:, gpg:, file:) and write NAME.pub"
    )
    imp.add_argument("keyref", metavar="KEYREF")
    imp.add_argument("-o", "--output", type=Path, metavar="NAME.pub")
    imp.add_argument("--passphrase-env", metavar="VAR", help="passphrase of an encrypted file key")
    imp.add_argument("--json", action="store_true", help="print the key dict as JSON")
    imp.set_defaults(handler=import_key)


def generate(args: argparse.Namespace) -> int:
    from signer.keys import generate_key

    passphrase = None
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise FormatError(
                args.passphrase_env, "--passphrase-env", "variable is not set or empty"
            )
        passphrase = value.encode("utf-8")
    key_path, pub_path, public = generate_key(args.name, args.dir, args.type, passphrase)
    print(f"private  {key_path}  (mode 0600{', encrypted' if passphrase else ''})")
    print(f"public   {pub_path}")
    print(f"keyid    {public.keyid}")
    if public.is_ed25519:
        print(f"ed25519  {public.public}")
    return 0


def wrap_cmd(args: argparse.Namespace) -> int:
    from signer.keys.azure import wrap_keyref, write_wrapped_file

    if args.output.exists():
        raise FormatError(str(args.output), "", "already exists; not overwriting a key")
    content = wrap_keyref(args.keyref, args.vault_key)
    write_wrapped_file(args.output, content)
    print(f"keyref   wrapped:{args.output}")
    print(f"ed25519  {content['public']['keyval']['public']}")
    print(f"vault    {content['vault_key']}  (RSA-OAEP-256; unwrapped once per process)")
    return 0


def import_key(args: argparse.Namespace) -> int:
    from signer.keys.keyimport import public_key_of_keyref, write_pub_file

    public = public_key_of_keyref(args.keyref, passphrase_env=args.passphrase_env)
    if args.output is not None:
        write_pub_file(args.output, public)
    if args.json:
        emit_json(public.to_dict())
        return 0
    print(f"keyid    {public.keyid}")
    if public.is_ed25519:
        print(f"ed25519  {public.public}")
    if args.output is not None:
        print(f"public   {args.output}")
    return 0
