"""Publishing a trust repository (and signed channels) to Azure Blob Storage.

`azblob://<account>/<container>[/prefix]`. Writes are conditional, so two replicas (or a
replica and a stale one) never overwrite a newer document with an older one:
- immutable files (`N.root.json`) with `If-None-Match: *`: an existing blob with the same
  bytes is fine, different bytes are refused;
- versioned documents (key_mgr, pkg_mgr, the feedstock index and bins) are read first and
  replaced with `If-Match: <etag>` only when ours is newer; a concurrent writer makes the
  condition fail and the decision is taken again on what it wrote;
- other files (attestations, which the service may replace or withdraw, and signed
  channels' repodata) with `If-Match` on what was read.
Order is the caller's (the layout's write order: bins before the index that names them), so
a reader never sees an index naming a bin that is not there.
Content types are JSON (zstd for `.zst`), cache headers long for immutable files and short
for everything that changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlparse

from signer.trust import layout
from signer.trust.errors import FormatError

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

SCHEME = "azblob"
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
MUTABLE_CACHE = "public, max-age=60, must-revalidate"
MAX_READ = 256 * 1024 * 1024  # a signed channel's repodata may be large; documents are small
_ACCOUNT = re.compile(r"\A[a-z0-9]{3,24}\Z")
_CONTAINER = re.compile(r"\A[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}\Z")
PARALLEL_WRITES = 8  # Blob Storage takes many concurrent writes; each is a read and a write


class BlobLocation(NamedTuple):
    account: str
    container: str
    prefix: str  # "" or "a/b/" (always ends with "/")

    @property
    def url(self) -> str:
        return f"{SCHEME}://{self.account}/{self.container}/{self.prefix}".rstrip("/")


def parse_blob_url(url: str) -> BlobLocation:
    """`azblob://<account>/<container>[/prefix]`, checked against Azure's naming rules."""
    parsed = urlparse(url)
    if parsed.scheme != SCHEME or not parsed.netloc:
        raise FormatError(url, "", "expected azblob://<account>/<container>[/prefix]")
    if parsed.query or parsed.fragment or parsed.params:
        raise FormatError(url, "", "no query or fragment in a blob location")
    account = parsed.netloc
    container, _, prefix = parsed.path.lstrip("/").partition("/")
    if not _ACCOUNT.match(account):
        raise FormatError(url, "account", "3-24 lowercase letters and digits")
    if not _CONTAINER.match(container):
        raise FormatError(url, "container", "3-63 lowercase letters, digits and single hyphens")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise FormatError(url, "prefix", "empty, '.' or '..' path segments")
    return BlobLocation(account, container, f"{prefix}/" if prefix else "")


def _is_versioned(path: str) -> bool:
    return path in (layout.KEY_MGR, layout.PKG_MGR) or layout.is_feedstocks_path(path)


def document_version(data: bytes) -> int | None:
    """`signed.version` of a trust document, None when it has none or does not parse."""
    try:
        version = json.loads(data)["signed"]["version"]
    except (ValueError, KeyError, TypeError):
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _parallel_safe(path: str) -> bool:
    # Bins and attestations: no document written in the same run names another by hash.
    return layout.is_bin_path(path) or path.startswith(layout.ATTESTATIONS_DIR + "/")


def content_type(path: str) -> str:
    if path.endswith(".zst"):
        return "application/zstd"
    return "application/json"


class WriteOutcome(NamedTuple):
    path: str
    action: str  # "written", "unchanged", "kept-newer"
    detail: str = ""


class BlobTarget:
    """A publish target with the interface of the service's publish directory."""

    def __init__(
        self,
        location: BlobLocation | str,
        *,
        endpoint: str | None = None,
        container_client: ContainerClient | None = None,
        retries: int = 3,
    ) -> None:
        self.location = parse_blob_url(location) if isinstance(location, str) else location
        self._client = container_client
        self._endpoint = endpoint
        self._retries = retries
        self.outcomes: list[WriteOutcome] = []

    # ------------------------------------------------------------------ connection

    @property
    def client(self) -> ContainerClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> ContainerClient:
        try:
            from azure.storage.blob import BlobServiceClient, ExponentialRetry
        except ImportError:
            raise FormatError(
                self.location.url,
                "",
                "Blob Storage needs the azure extra: pip install 'cf-sign[azure]'",
            ) from None
        # The SDK's default backs off 15 s, then 45 s: a publisher should fail within seconds.
        policy = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=self._retries)
        options: dict[str, Any] = {"retry_policy": policy, "connection_timeout": 10}
        conn = os.environ.get(CONNECTION_STRING_ENV)
        if conn:
            service = BlobServiceClient.from_connection_string(conn, **options)
        else:
            from signer.keys.azure import azure_credential

            endpoint = self._endpoint or f"https://{self.location.account}.blob.core.windows.net"
            service = BlobServiceClient(endpoint, credential=azure_credential(), **options)
        client = service.get_container_client(self.location.container)
        self._call("create container", lambda: _create_if_missing(client))
        return client

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        from azure.core.exceptions import AzureError

        try:
            return call()
        except AzureError as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: BaseException) -> FormatError:
        status = getattr(exc, "status_code", None)
        code = getattr(exc, "error_code", None)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return FormatError(
            self.location.url, "", f"{what}: {f'{status} {code}' if status else first}"
        )

    def _name(self, path: str) -> str:
        if path.startswith("/") or ".." in path.split("/") or "\0" in path:
            raise FormatError(path, "", "not a relative path of the trust repository")
        return self.location.prefix + path

    # ------------------------------------------------------------------ reading

    def read_with_etag(self, path: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.client.get_blob_client(self._name(path))

        def download() -> tuple[bytes, str] | None:
            try:
                stream = blob.download_blob()
            except ResourceNotFoundError:
                return None
            if stream.size > MAX_READ:
                raise FormatError(path, "", f"blob larger than {MAX_READ} bytes")
            return stream.readall(), str(stream.properties.etag)

        return self._call(f"read {path}", download)  # type: ignore[no-any-return]

    def read(self, path: str) -> bytes | None:
        found = self.read_with_etag(path)
        return found[0] if found is not None else None

    # ------------------------------------------------------------------ writing

    def publish(
        self, files: Mapping[str, bytes], order: Callable[[str], Any] | None = None
    ) -> list[WriteOutcome]:
        """Write `files` in `order`, each conditionally (see the module docstring).

        Runs of files that nothing else names by content (bins, attestations) are written
        concurrently; the documents that name them (the index, key_mgr) wait for the run.
        """
        done: list[WriteOutcome] = []
        batch: list[str] = []
        for path in [*sorted(files, key=order), None]:
            if path is not None and _parallel_safe(path):
                batch.append(path)
                continue
            done.extend(self._put_many(batch, files))
            batch = []
            if path is not None:
                done.append(self.put(path, files[path]))
        self.outcomes.extend(done)
        return done

    def _put_many(self, paths: list[str], files: Mapping[str, bytes]) -> list[WriteOutcome]:
        if len(paths) < 2:
            return [self.put(path, files[path]) for path in paths]
        from concurrent.futures import ThreadPoolExecutor

        self.client  # noqa: B018  (connect once, before the threads share the client)
        with ThreadPoolExecutor(max_workers=PARALLEL_WRITES) as pool:
            return list(pool.map(lambda p: self.put(p, files[p]), paths))

    def put_file(self, path: str, source: Path, sha256: str) -> WriteOutcome:
        """An artifact (immutable by name), streamed; its sha256 is kept as blob metadata, so
        that the same file again is recognised without reading it back."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        blob = self.client.get_blob_client(self._name(path))
        settings = ContentSettings(
            content_type="application/octet-stream", cache_control=IMMUTABLE_CACHE
        )

        def upload() -> WriteOutcome:
            try:
                with open(source, "rb") as handle:
                    blob.upload_blob(
                        handle,
                        overwrite=False,
                        content_settings=settings,
                        metadata={"sha256": sha256},
                        max_concurrency=4,
                    )
            except ResourceExistsError:
                there = (blob.get_blob_properties().metadata or {}).get("sha256")
                if there != sha256:
                    raise FormatError(
                        self.location.url, path, "already published with another sha256"
                    ) from None
                return WriteOutcome(path, "unchanged")
            return WriteOutcome(path, "written")

        return self._call(f"upload {path}", upload)  # type: ignore[no-any-return]

    def delete(self, path: str) -> bool:
        """Remove a blob; False when it was not there."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.client.get_blob_client(self._name(path))

        def delete() -> bool:
            try:
                blob.delete_blob()
            except ResourceNotFoundError:
                return False
            return True

        return bool(self._call(f"delete {path}", delete))

    # The rest of the publish directory's interface (signer/service/publish_dir.py).

    def check_writable(self) -> None:
        """Connect (and create the container): fails here, not in the middle of a publication."""
        self.client  # noqa: B018

    def write_attestation(self, relpath: str, data: bytes) -> None:
        self.outcomes.append(self.put(relpath, data))

    def read_attestation(self, relpath: str) -> bytes | None:
        return self.read(relpath)

    def remove_attestation(self, relpath: str) -> bool:
        """Delete a withdrawn attestation; False when it was not there."""
        return self.delete(relpath)

    def attestation_files(self) -> Iterator[str]:
        """Every `attestations/<subdir>/<file>.sig.json` in the container."""
        prefix = self.location.prefix + layout.ATTESTATIONS_DIR + "/"
        names = self._call(
            "list attestations", lambda: list(self.client.list_blob_names(name_starts_with=prefix))
        )
        for name in names:
            rel = name[len(self.location.prefix) :]
            if rel.endswith(layout.SIDECAR_SUFFIX) and rel.count("/") == 2:
                yield rel

    def put(self, path: str, data: bytes) -> WriteOutcome:
        from azure.storage.blob import ContentSettings

        immutable = layout.is_immutable(path)
        settings = ContentSettings(
            content_type=content_type(path),
            cache_control=IMMUTABLE_CACHE if immutable else MUTABLE_CACHE,
        )
        blob = self.client.get_blob_client(self._name(path))
        for _ in range(5):  # each retry follows a concurrent writer's change
            current = self.read_with_etag(path)
            if current is not None:
                old = current[0]
                if old == data:
                    return WriteOutcome(path, "unchanged")
                if immutable:
                    raise FormatError(
                        self.location.url, path, "already published with other bytes (immutable)"
                    )
                if _is_versioned(path):
                    ours, theirs = document_version(data), document_version(old)
                    if ours is not None and theirs is not None and theirs >= ours:
                        return WriteOutcome(path, "kept-newer", f"v{theirs} there, ours v{ours}")
            if not self._upload(blob, path, data, settings, current):
                continue  # someone wrote meanwhile: decide again on what is there now
            return WriteOutcome(path, "written")
        raise FormatError(self.location.url, path, "kept changing under concurrent writers")

    def _upload(
        self,
        blob: Any,
        path: str,
        data: bytes,
        settings: Any,
        current: tuple[bytes, str] | None,
    ) -> bool:
        """One conditional write; False when the condition failed (a concurrent writer)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError

        try:
            if current is None:  # If-None-Match: *
                blob.upload_blob(data, overwrite=False, content_settings=settings)
            else:
                blob.upload_blob(
                    data,
                    overwrite=True,
                    content_settings=settings,
                    etag=current[1],
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return False
        except AzureError as exc:
            raise self._error(f"write {path}", exc) from None
        return True

    def sync(
        self, files: Mapping[str, bytes], order: Callable[[str], Any] | None = None
    ) -> list[WriteOutcome]:
        """Repair: write what is missing or older than `files` (the database's state)."""
        return self.publish(files, order)


def _create_if_missing(client: ContainerClient) -> None:
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):  # an existing container is fine
        client.create_container()


__all__ = [
    "CONNECTION_STRING_ENV",
    "SCHEME",
    "BlobLocation",
    "BlobTarget",
    "WriteOutcome",
    "document_version",
    "parse_blob_url",
]
