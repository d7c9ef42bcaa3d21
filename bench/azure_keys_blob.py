"""Benchmark: the service's online keys in Key Vault, and publishing to Blob Storage.

Three ratios, each measured in this one run:

1. start-up: resolving the three online keys as `wrapped:` KEYREFs (Azure SDK import, token,
   one unwrapKey each, against the local HTTPS stand-in of Key Vault) vs as `file:` keys;
2. signing rate through the unwrapped in-memory seed vs the file key (target: 1.0, the same
   libsodium call once the seed is in memory);
3. publishing 256 bins + the index to Azurite vs to a local publish directory.

Needs the azure extra and Azurite (`CF_SIGN_AZURITE`, see tests/azurite.py).
Usage: python bench/azure_keys_blob.py [--signatures 20000] [--bins 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from azure_standin import running_standin
from azurite import ACCOUNT, connection_string, running_azurite

from signer.devrepo import make_dev_trust_repo
from signer.keys import azure as azure_keys
from signer.keys import channel_signer
from signer.service.publish_dir import PublishDir
from signer.storage import BlobTarget

NAMES = ("key_mgr", "pkg_mgr", "pkg_mgr_mamba")


def median_time(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signatures", type=int, default=20000)
    parser.add_argument("--bins", type=int, default=256)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cf-sign-azure-bench-"))
    repo = make_dev_trust_repo(base / "dev")
    with running_standin(base) as (vault, cert), running_azurite(base / "azurite") as port:
        os.environ.update(vault.env(cert))
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = connection_string(port)
        wrap = vault.add_rsa_key("online")
        wrapped = {}
        for name in NAMES:
            content = azure_keys.wrap_keyref(repo.keyref(name), vault.keyref(wrap))
            azure_keys.write_wrapped_file(base / f"{name}.wrapped.json", content)
            wrapped[name] = f"wrapped:{base / f'{name}.wrapped.json'}"

        def start_wrapped() -> None:
            azure_keys._UNWRAPPED.clear()  # a new process: nothing unwrapped yet
            for name in NAMES:
                channel_signer(wrapped[name])

        def start_files() -> None:
            for name in NAMES:
                channel_signer(repo.keyref(name))

        t_wrapped = median_time(start_wrapped, 5)
        t_files = median_time(start_files, 5)
        print(
            f"start-up (3 keys)   wrapped {t_wrapped * 1000:8.1f} ms   "
            f"file {t_files * 1000:6.1f} ms"
            f"   ratio {t_wrapped / t_files:6.1f}x  (one unwrapKey per key, then memory)"
        )

        messages = [os.urandom(300) for _ in range(args.signatures)]
        from_vault, from_file = (
            channel_signer(wrapped["pkg_mgr"]),
            channel_signer(repo.keyref("pkg_mgr")),
        )

        def sign_all(signer: object) -> Callable[[], None]:
            def run() -> None:
                for message in messages:
                    signer.sign_message(message)  # type: ignore[attr-defined]

            return run

        rounds = []
        for _ in range(3):  # interleaved, so that drift hits both alike
            rounds.append(
                (median_time(sign_all(from_vault), 1), median_time(sign_all(from_file), 1))
            )
        t_v = statistics.median(r[0] for r in rounds)
        t_f = statistics.median(r[1] for r in rounds)
        rate_v, rate_f = args.signatures / t_v, args.signatures / t_f
        print(
            f"signing rate        wrapped {rate_v:8.0f}/s   file {rate_f:8.0f}/s"
            f"   ratio {rate_v / rate_f:6.2f}   (target 1.0)"
        )

        files = {f"feedstocks/{i:02x}.json": os.urandom(2048) for i in range(args.bins)}
        files["feedstocks/index.json"] = os.urandom(8192)
        counter = iter(range(1000))

        def to_blob() -> None:
            BlobTarget(f"azblob://{ACCOUNT}/bench-{next(counter)}").publish(files)

        def to_dir() -> None:
            PublishDir(base / f"dir-{next(counter)}").publish(files)

        t_blob, t_dir = median_time(to_blob, 3), median_time(to_dir, 3)
        print(
            f"publish {args.bins} bins    Azurite {t_blob * 1000:8.1f} ms   "
            f"dir {t_dir * 1000:7.1f} ms"
            f"   ratio {t_blob / t_dir:6.1f}x  (conditional writes: a read and a write each)"
        )


if __name__ == "__main__":
    main()
