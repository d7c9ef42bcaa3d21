"""Offline signing events: propose, sign (detached), status, assemble, verify.

An event directory holds:
- `event.json`: the role, the key holders (`{pubkey: name}`), the files below;
- `proposed.json`: the unsigned document (root N+1, a first root, or a key_mgr);
- `previous.json`: the current root (a root rotation), or the root whose key_mgr keys must
  sign (a key_mgr event); absent for a first root;
- `current.json`: a key_mgr event's current key_mgr (what the review compares with), if given;
- `signatures/<pubkey>.json`: one detached signature per key, made on whatever machine holds
  the key and carried back (`{"key", "holder", "made", "signed_sha256", "signature"}`);
- `transcript.jsonl`: every step, hash-chained (signer.ceremony.transcript).

A root needs the threshold of the previous root's keys AND of its own (DESIGN section 4); a
first root only its own; a key_mgr the root's key_mgr threshold, with raw signatures.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signer.ceremony import transcript
from signer.ceremony.review import changes, short, summary
from signer.trust.errors import FormatError, VerificationError
from signer.trust.jsonload import MAX_DELEGATING, load_json
from signer.trust.metadata import (
    Delegation,
    KeyMgr,
    Root,
    Signable,
    Signature,
    SignedMetadata,
    is_public_key_hex,
    parse_metadata,
)
from signer.trust.signing import MessageSigner, make_signature
from signer.trust.threshold import check_signature, verify_threshold
from signer.trust.timefmt import format_time, system_clock

EVENT = "event.json"
PROPOSED = "proposed.json"
PREVIOUS = "previous.json"
CURRENT = "current.json"
SIGNATURES = "signatures"
FORMAT = "cf-sign-signing-event-1"
MAX_SIG_FILE = 64 * 1024
MAX_SIG_FILES = 1024  # far above any root's key count
ROLES = ("root", "key_mgr")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return format_time(system_clock().replace(microsecond=0))


def _read(path: Path, cap: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(cap + 1)
    except FileNotFoundError:
        raise FormatError(str(path), "", "missing from the event directory") from None
    except OSError as exc:
        raise FormatError(str(path), "", f"cannot read: {exc.strerror}") from None
    if len(data) > cap:
        raise FormatError(str(path), "", f"larger than the {cap}-byte cap")
    return data


def _write_new(path: Path, data: bytes) -> None:
    """Create `path`; an existing file is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise FormatError(str(path), "", "already exists; not overwriting") from None
    except OSError as exc:
        raise FormatError(str(path), "", f"cannot create: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


# ----------------------------------------------------------------------------- the event


@dataclass(frozen=True)
class Authority:
    """One threshold the proposed document must meet."""

    label: str  # "old root", "new root", "key_mgr keys of root v3"
    delegation: Delegation


@dataclass(frozen=True)
class DetachedSignature:
    key: str
    signature: Signature
    holder: str | None
    made: str
    signed_sha256: str
    file_sha256: str
    path: Path


@dataclass
class Tally:
    """What the signature files in the event add up to."""

    valid: dict[str, DetachedSignature] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # file name -> why


@dataclass(frozen=True)
class Event:
    directory: Path
    role: str
    proposed: SignedMetadata
    previous: SignedMetadata | None
    holders: Mapping[str, str]
    current: SignedMetadata | None = None  # a key_mgr event: the key_mgr it replaces

    @property
    def message(self) -> bytes:
        return self.proposed.envelope.canonical

    @property
    def signed_sha256(self) -> str:
        return sha256_hex(self.message)

    @property
    def openpgp(self) -> bool:
        return self.role == "root"  # conda reads only OpenPGP-style signatures on roots

    @property
    def transcript_path(self) -> Path:
        return self.directory / transcript.NAME

    def authorities(self) -> list[Authority]:
        meta = self.proposed.meta
        if self.role == "root":
            assert isinstance(meta, Root)
            out = []
            if self.previous is not None:
                assert isinstance(self.previous.meta, Root)
                out.append(Authority("old root", self.previous.meta.root_keys))
            out.append(Authority("new root", meta.root_keys))
            return out
        assert self.previous is not None and isinstance(self.previous.meta, Root)
        label = f"key_mgr keys of root v{self.previous.meta.version}"
        return [Authority(label, self.previous.meta.key_mgr_keys)]

    def signing_keys(self) -> list[str]:
        """Every key whose signature counts, in order, each once."""
        seen: dict[str, None] = {}
        for authority in self.authorities():
            seen.update(dict.fromkeys(authority.delegation.pubkeys))
        return list(seen)

    def roles_of(self, key: str) -> list[str]:
        return [a.label for a in self.authorities() if key in a.delegation.pubkeys]

    def review(self) -> list[str]:
        """What the signer is shown: the changes from the current document."""
        prev = self.previous.meta if self.previous is not None and self.role == "root" else None
        if self.role == "key_mgr" and self.current is not None:
            prev = self.current.meta
        lines = changes(prev, self.proposed.meta, self.holders)
        if prev is not None:
            lines += ["the proposed root in full:", *summary(self.proposed.meta, self.holders)]
        if self.role == "key_mgr":
            lines.append(f"to be signed by: {self.authorities()[0].label}")
        lines.append(f"signed bytes sha256: {self.signed_sha256}")
        return lines

    # -- signatures

    def signature_path(self, key: str) -> Path:
        return self.directory / SIGNATURES / f"{key}.json"

    def _load_signature(self, path: Path) -> DetachedSignature:
        source = str(path)
        data = _read(path, MAX_SIG_FILE)
        obj = load_json(data, source, MAX_SIG_FILE)
        if not isinstance(obj, dict) or set(obj) != {
            "key", "holder", "made", "signed_sha256", "signature"
        }:  # fmt: skip
            raise FormatError(source, "", "expected key, holder, made, signed_sha256, signature")
        key = obj["key"]
        if not is_public_key_hex(key) or path.name != f"{key}.json":
            raise FormatError(source, "key", "must be the 64-hex key the file is named after")
        holder = obj["holder"]
        if holder is not None and not isinstance(holder, str):
            raise FormatError(source, "holder", "expected a string or null")
        if not isinstance(obj["made"], str) or not isinstance(obj["signed_sha256"], str):
            raise FormatError(source, "made", "expected strings")
        signature = Signature.from_dict(obj["signature"], source, "signature")
        return DetachedSignature(
            key, signature, holder, obj["made"], obj["signed_sha256"], sha256_hex(data), path
        )

    def tally(self) -> Tally:
        """Check every signature file: for these bytes, by a key that counts, valid."""
        out = Tally()
        folder = self.directory / SIGNATURES
        names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if len(names) > MAX_SIG_FILES:
            raise FormatError(str(folder), "", f"more than {MAX_SIG_FILES} files")
        counting = set(self.signing_keys())
        for name in names:
            path = folder / name
            if not name.endswith(".json") or not path.is_file() or path.is_symlink():
                out.invalid[name] = "not a regular .json signature file"
                continue
            try:
                sig = self._load_signature(path)
            except FormatError as exc:
                out.invalid[name] = exc.reason
                continue
            why = None
            if sig.key not in counting:
                why = "key is in neither root (counts toward no threshold)"
            elif sig.signed_sha256 != self.signed_sha256:
                why = "made over other bytes (another proposal)"
            else:
                why = check_signature(
                    sig.key, sig.signature, self.message,
                    allow_raw=not self.openpgp, allow_openpgp=self.openpgp,
                )  # fmt: skip
            if why is None:
                out.valid[sig.key] = sig
            else:
                out.invalid[name] = why
        return out

    def counts(self, tally: Tally) -> list[tuple[Authority, int]]:
        sigs = {k: s.signature for k, s in tally.valid.items()}
        out = []
        for authority in self.authorities():
            result = verify_threshold(
                self.message, sigs, authority.delegation, authority.label,
                allow_raw=not self.openpgp, allow_openpgp=self.openpgp,
            )  # fmt: skip
            out.append((authority, len(result.signed)))
        return out

    def complete(self, tally: Tally) -> bool:
        return all(n >= a.delegation.threshold for a, n in self.counts(tally))


# ----------------------------------------------------------------------------- loading


def _event_source(directory: Path) -> str:
    return str(directory / EVENT)


def load_event(directory: Path) -> Event:
    if not directory.is_dir():
        raise FormatError(str(directory), "", "not an event directory")
    source = _event_source(directory)
    info = load_json(_read(directory / EVENT, MAX_DELEGATING), source, MAX_DELEGATING)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise FormatError(source, "format", f"expected {FORMAT!r}")
    role = info.get("role")
    if role not in ROLES:
        raise FormatError(source, "role", "expected root or key_mgr")
    holders = info.get("holders")
    if not isinstance(holders, dict) or not all(
        is_public_key_hex(k) and isinstance(v, str) for k, v in holders.items()
    ):
        raise FormatError(source, "holders", "expected {64-hex key: name}")
    proposed_path = directory / PROPOSED
    proposed = parse_metadata(_read(proposed_path, MAX_DELEGATING), str(proposed_path), role)
    if proposed.envelope.signatures:
        raise FormatError(str(proposed_path), "signatures", "the proposal must be unsigned")
    previous = None
    if info.get("previous") is not None:
        prev_path = directory / PREVIOUS
        previous = parse_metadata(_read(prev_path, MAX_DELEGATING), str(prev_path), "root")
    if role == "key_mgr" and previous is None:
        raise FormatError(source, "previous", "a key_mgr event needs the root that delegates it")
    current = None
    if info.get("current") is not None:
        cur_path = directory / CURRENT
        current = parse_metadata(_read(cur_path, MAX_DELEGATING), str(cur_path), "key_mgr")
    return Event(directory, role, proposed, previous, dict(holders), current)


# ----------------------------------------------------------------------------- propose


def parse_holders(pairs: Sequence[str], load_key: Callable[[str], str]) -> dict[str, str]:
    """`NAME=PUB` pairs to {pubkey: name}; one person may hold several keys, a key one person."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, pub = pair.partition("=")
        name = name.strip()
        if not eq or not name or not pub:
            raise FormatError(pair, "holder", "expected NAME=PUB")
        key = load_key(pub)
        if key in out and out[key] != name:
            raise FormatError(pair, "holder", f"key already held by {out[key]!r}")
        out[key] = name
    return out


def propose(
    directory: Path,
    document: Root | KeyMgr,
    previous_bytes: bytes | None,
    holders: Mapping[str, str],
    current_bytes: bytes | None = None,
) -> Event:
    """Create the event directory with the unsigned document; refuses an existing event."""
    role = document.ROLE
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FormatError(str(directory), "", "exists and is not empty; not overwriting an event")
    previous = None
    if previous_bytes is not None:
        previous = parse_metadata(previous_bytes, PREVIOUS, "root")
    envelope = Signable(document.to_signed(), {}, PROPOSED)
    proposed = SignedMetadata(document, envelope)
    current = parse_metadata(current_bytes, CURRENT, "key_mgr") if current_bytes else None
    event = Event(directory, role, proposed, previous, dict(holders), current)
    if role == "root" and previous is not None:
        assert isinstance(previous.meta, Root)
        if document.version != previous.meta.version + 1:
            raise FormatError(PROPOSED, "version", f"must be {previous.meta.version + 1}")
    unknown = [k for k in holders if k not in event.signing_keys()]
    if unknown:
        raise FormatError(short(unknown[0]), "holder", "not a key that signs this event")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SIGNATURES).mkdir()
    proposed_bytes = envelope.to_bytes()
    _write_new(directory / PROPOSED, proposed_bytes)
    if previous_bytes is not None:
        _write_new(directory / PREVIOUS, previous_bytes)
    if current_bytes is not None:
        _write_new(directory / CURRENT, current_bytes)
    info = {
        "format": FORMAT,
        "role": role,
        "created": _now(),
        "holders": dict(sorted(holders.items())),
        "previous": PREVIOUS if previous_bytes is not None else None,
        "current": CURRENT if current_bytes is not None else None,
    }
    _write_new(directory / EVENT, _json_bytes(info))
    transcript.append(
        event.transcript_path, "propose", time=info["created"], role=role,
        version=document.version, proposed_sha256=sha256_hex(proposed_bytes),
        signed_sha256=event.signed_sha256,
        previous_sha256=sha256_hex(previous_bytes) if previous_bytes is not None else None,
        current_sha256=sha256_hex(current_bytes) if current_bytes is not None else None,
        holders=info["holders"],
    )  # fmt: skip
    return event


# ----------------------------------------------------------------------------- sign


def check_can_sign(event: Event, key: str) -> list[str]:
    """The thresholds `key` counts toward; refuses a key in none, or one that already signed."""
    roles = event.roles_of(key)
    if not roles:
        raise FormatError(
            short(key), "key", "signs for neither root of this event; nothing written"
        )
    if event.signature_path(key).exists():
        raise FormatError(str(event.signature_path(key)), "", "this key has already signed")
    return roles


def sign(event: Event, signer: MessageSigner) -> DetachedSignature:
    """Make and write the detached signature of `signer` (after the caller's confirmation)."""
    verify(event)  # never add to an event whose record was tampered with
    key = signer.public_key_hex
    check_can_sign(event, key)
    signature = make_signature(signer, event.message, openpgp=event.openpgp)
    why = check_signature(key, signature, event.message)
    if why is not None:
        raise FormatError(short(key), "key", f"the new signature does not verify ({why})")
    made = _now()
    holder = event.holders.get(key)
    data = _json_bytes({
        "key": key, "holder": holder, "made": made,
        "signed_sha256": event.signed_sha256, "signature": signature.to_dict(),
    })  # fmt: skip
    path = event.signature_path(key)
    path.parent.mkdir(exist_ok=True)
    _write_new(path, data)
    transcript.append(
        event.transcript_path, "sign", time=made, key=key, holder=holder,
        roles=event.roles_of(key), signature_file=f"{SIGNATURES}/{path.name}",
        signature_sha256=sha256_hex(data),
    )  # fmt: skip
    return DetachedSignature(
        key, signature, holder, made, event.signed_sha256, sha256_hex(data), path
    )


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Status:
    counts: list[tuple[Authority, int]]
    missing: list[tuple[str, str | None]]
    invalid: dict[str, str]
    complete: bool
    holders: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)  # name -> keys

    def to_json(self) -> dict[str, Any]:
        old = next(({"valid": n, "threshold": a.delegation.threshold}
                    for a, n in self.counts if a.label == "old root"), None)  # fmt: skip
        new = next({"valid": n, "threshold": a.delegation.threshold}
                   for a, n in self.counts if a.label != "old root")  # fmt: skip
        return {
            "old": old,
            "new": new,
            "missing": [{"key": k, "holder": h} for k, h in self.missing],
        }

    def lines(self) -> list[str]:
        out = [f"{a.label}: {n}/{a.delegation.threshold}" for a, n in self.counts]
        out += [f"missing: {k}  {h or '(no holder named)'}" for k, h in self.missing]
        for name, keys in sorted(self.holders.items()):
            done = ", ".join(f"{short(k)} {'signed' if ok else 'MISSING'}" for k, ok in keys)
            out.append(f"holder {name}: {done}")
        out += [f"invalid: {name}: {why}" for name, why in sorted(self.invalid.items())]
        out.append("complete: both thresholds met" if self.complete else "not complete")
        return out


def record_received(event: Event, tally: Tally) -> None:
    """Signatures carried in from elsewhere (an air-gapped copy) enter the transcript once."""
    recorded = {
        e.get("signature_sha256")
        for _, e in transcript.read_entries(event.transcript_path)
        if e["action"] in ("sign", "receive")
    }
    for key, sig in sorted(tally.valid.items()):
        if sig.file_sha256 not in recorded:
            transcript.append(
                event.transcript_path, "receive", time=_now(), key=key, holder=sig.holder,
                made=sig.made, signature_file=f"{SIGNATURES}/{sig.path.name}",
                signature_sha256=sig.file_sha256,
            )  # fmt: skip


def status(event: Event) -> Status:
    verify(event)
    tally = event.tally()
    record_received(event, tally)
    missing = [(k, event.holders.get(k)) for k in event.signing_keys() if k not in tally.valid]
    holders: dict[str, list[tuple[str, bool]]] = {}
    for key in event.signing_keys():
        name = event.holders.get(key)
        if name is not None:  # one person may hold several keys (old and new)
            holders.setdefault(name, []).append((key, key in tally.valid))
    return Status(event.counts(tally), missing, tally.invalid, event.complete(tally), holders)


# ----------------------------------------------------------------------------- assemble


def assemble(event: Event, output: Path) -> tuple[bytes, Status]:
    """Write the signed document to a NEW file, only when every threshold is met."""
    state = status(event)
    if not state.complete:
        short_of = ", ".join(
            f"{a.label} {n}/{a.delegation.threshold}" for a, n in state.counts
            if n < a.delegation.threshold
        )  # fmt: skip
        raise VerificationError(str(event.directory), "threshold", f"not met: {short_of}")
    if output.exists() or output.is_symlink():
        raise FormatError(str(output), "", "already exists; a signed document is never overwritten")
    tally = event.tally()
    envelope = Signable(
        event.proposed.envelope.signed,
        {k: s.signature for k, s in tally.valid.items()},
        str(output),
    )
    data = envelope.to_bytes()
    _final_check(event, data, str(output))
    _write_new(output, data)
    transcript.append(
        event.transcript_path, "assemble", time=_now(), output=output.name,
        output_sha256=sha256_hex(data), signatures=sorted(tally.valid),
    )  # fmt: skip
    return data, state


def _final_check(event: Event, data: bytes, source: str) -> None:
    """The trust core's own rule on the assembled bytes, as a verifier will apply it."""
    from signer.trust.chain import verify_root_self, verify_root_update
    from signer.trust.repository import verify_key_mgr

    doc = parse_metadata(data, source, event.role)
    if event.role == "key_mgr":
        assert event.previous is not None and isinstance(event.previous.meta, Root)
        verify_key_mgr(doc, event.previous.meta)
    elif event.previous is not None:
        verify_root_update(event.previous, doc)
    else:
        verify_root_self(doc)


# ----------------------------------------------------------------------------- verify


def verify(event: Event) -> str:
    """Check the transcript against the files; returns the head hash."""
    entries = transcript.read_entries(event.transcript_path)
    where = str(event.transcript_path)
    first = entries[0][1]
    if first["action"] != "propose":
        raise VerificationError(where, "transcript", "the first entry must be the proposal")
    proposed_bytes = _read(event.directory / PROPOSED, MAX_DELEGATING)
    if first.get("proposed_sha256") != sha256_hex(proposed_bytes):
        raise VerificationError(where, "transcript", "proposed.json changed after the proposal")
    prev_sha = first.get("previous_sha256")
    if (prev_sha is None) != (event.previous is None):
        raise VerificationError(where, "transcript", "previous.json added or removed")
    if prev_sha is not None and prev_sha != sha256_hex(
        _read(event.directory / PREVIOUS, MAX_DELEGATING)
    ):
        raise VerificationError(where, "transcript", "previous.json changed after the proposal")
    cur_sha = first.get("current_sha256")
    if (cur_sha is None) != (event.current is None) or (
        cur_sha is not None
        and cur_sha != sha256_hex(_read(event.directory / CURRENT, MAX_DELEGATING))
    ):
        raise VerificationError(where, "transcript", "current.json changed after the proposal")
    if first.get("holders") != dict(sorted(event.holders.items())):
        raise VerificationError(where, "transcript", "the key holders changed after the proposal")
    for number, (_, entry) in enumerate(entries, start=1):
        if entry["action"] == "propose" and number != 1:
            raise VerificationError(f"{where}:{number}", "transcript", "a second proposal")
        if entry["action"] in ("sign", "receive"):
            name = entry.get("signature_file")
            path = event.directory / str(name)
            if not isinstance(name, str) or path.parent != event.directory / SIGNATURES:
                raise VerificationError(f"{where}:{number}", "transcript", "bad signature_file")
            try:
                data = _read(path, MAX_SIG_FILE)
            except FormatError:
                raise VerificationError(
                    f"{where}:{number}", "transcript", f"{name} is recorded but missing"
                ) from None
            if sha256_hex(data) != entry.get("signature_sha256"):
                raise VerificationError(
                    f"{where}:{number}", "transcript", f"{name} changed after it was recorded"
                )
    return transcript.head(entries)
