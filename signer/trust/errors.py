"""Exceptions of the trust core.

Two families, matching the CLI's exit codes: `FormatError` (input could not be read or
parsed: exit 2 when the file was named on the command line) and `VerificationError`
(the input parsed but is not trustworthy: exit 1). Every message is one line that names
the document, the field or check, and the reason. Messages name no command-line flag: the
CLI adds those (the same errors reach HTTP clients of the service).
"""

from __future__ import annotations


class TrustError(Exception):
    """Base of every error cf-sign raises on purpose."""

    def _message(self) -> str:
        return ""

    def __reduce__(self) -> tuple[object, tuple[type[TrustError], dict[str, str]]]:
        # Picklable with its subclass (whatever its constructor takes), so errors raised in
        # worker processes reach the parent intact.
        return (_rebuild, (type(self), dict(self.__dict__)))


def _rebuild(cls: type[TrustError], fields: dict[str, str]) -> TrustError:
    error = cls.__new__(cls)
    error.__dict__.update(fields)
    Exception.__init__(error, error._message())
    return error


def one_line(text: str) -> str:
    """`text` with control and other unprintable characters escaped: a name taken from a
    hostile document (a key holding a newline) cannot forge a second line of output."""
    text = str(text)  # a Path slips through now and then
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class FormatError(TrustError):
    """A document or file is malformed, missing, oversized or of the wrong shape."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        source, field, reason = one_line(source), one_line(field), one_line(reason)
        self.source = source
        self.field = field
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        return f"{where}: {self.reason}"


class VerificationError(TrustError):
    """A check of section 4 failed: `check` names it (signature, expiry, rollback, ...)."""

    def __init__(self, subject: str, check: str, reason: str) -> None:
        subject, check, reason = one_line(subject), one_line(check), one_line(reason)
        self.subject = subject
        self.check = check
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        return f"{self.subject}: {self.check}: {self.reason}"


class ExpiredError(VerificationError):
    """A document is past its expiration (freeze attack or stale metadata)."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(subject, "expired", reason)


class RollbackError(VerificationError):
    """A document's version is lower than one already seen."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(subject, "rollback", reason)


class ThresholdError(VerificationError):
    """Fewer valid signatures than the delegation's threshold."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(subject, "signature", reason)
