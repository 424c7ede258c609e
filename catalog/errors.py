"""The one error type of the project, and the exit code each kind of failure ends a command with.

An OrthoError's message is written for a user: reason codes, file ids and names the user chose, never a path from
a source or a value read from a file. So it may be printed, logged, and stored as a Prefect state; anything else is
scrubbed to its type name before it leaves the process (flows/firewall.py).
"""

from __future__ import annotations

import os


class OrthoError(Exception):
    """A user's mistake or a refused request: one line, no traceback, exit code 2."""

    exit_code = 2


class BusyError(OrthoError):
    """Someone else holds what was asked for (the workspace's write lock): try again later."""

    exit_code = os.EX_TEMPFAIL  # 75


class InternalError(OrthoError):
    """An unexpected failure, reduced to where it happened and the exception's type name."""

    exit_code = 1
