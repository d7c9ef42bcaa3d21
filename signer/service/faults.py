"""Crash points for the kill -9 tests of publication (DESIGN.md section 7's convergence).

`CF_SIGN_CRASH_AT=<name>` makes a real process SIGKILL itself when it reaches `<name>`, so
tests crash the service between two real steps (after a commit, before its files)
rather than imitating a crash. Unset, a crash point is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CF_SIGN_CRASH_AT"


def crashpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
