"""The two rich consoles (stdout, stderr), made on first use, and the one error line: shared by the command line
(flows/cli/common.py) and the interrupt handler (flows/interrupt.py), which must not import each other."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def consoles() -> tuple[Console, Console]:
    from rich.console import Console

    return Console(), Console(stderr=True)


def print_error(message: str) -> None:
    from rich.text import Text

    # Text, not markup: a message may hold brackets; soft_wrap: one line, never wrapped.
    consoles()[1].print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
