"""The one error type of the project, and the exit code each kind of failure ends a command with.

An OrthoError's message is written for a user: reason codes, file ids and names the user chose, never a path from
a source or a value read from a file. So it may be printed, logged, and stored as a Prefect state; anything else is
scrubbed to its type name before it leaves the process (flows/firewall.py).
"""

from __future__ import annotations

import os
import signal


class OrthoError(Exception):
    """A user's mistake or a refused request: one line, no traceback, exit code 2."""

    exit_code = 2


class BusyError(OrthoError):
    """Someone else holds what was asked for (the workspace's write lock): try again later."""

    exit_code = os.EX_TEMPFAIL  # 75


class InternalError(OrthoError):
    """An unexpected failure, reduced to where it happened and the exception's type name."""

    exit_code = 1


class SettingRefused(OrthoError, ValueError):
    """A settings dataclass refuses a value (in its __post_init__); the config loader names the section it came from."""


class BrokenInvariant(RuntimeError):
    """A fact the code relies on, its own saved state included, does not hold: a bug or a damaged file the code wrote,
    never a user's mistake. Not an OrthoError: like any unexpected error, only its type name leaves a stage."""


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop (Ctrl-C, SIGTERM, SIGHUP): a KeyboardInterrupt, so clean-up runs as for Ctrl-C;
    the exit code is the shell's, 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(int(signum))  # args as given: the exception pickles and copies as it is
        self.signum = int(signum)
        self.exit_code = 128 + self.signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


interrupting: int | None = None  # the signal ending this process, set by the command line's handler


def outcome_of(e: BaseException) -> str:
    """How a run that raised `e` ended: `interrupted` when it was asked to stop (whatever a library made of the
    interrupt on its way up: a KeyboardInterrupt raised inside a callback can come back wrapped), else `failed`."""
    return "interrupted" if interrupting is not None or not isinstance(e, Exception) else "failed"
