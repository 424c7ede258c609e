"""Ids: time-ordered run ids and short random tokens, one generator for each.

Run ids sort in creation order (UTC to the microsecond), which the catalog's views rely on for "newest";
the random tail keeps two runs started in the same microsecond apart.
"""

from __future__ import annotations

import datetime as dt
import secrets


def utc_stamp() -> str:
    """Now in UTC to the microsecond, e.g. 20250301T101500123456: sorts as it was made."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")


def token(nbytes: int = 4) -> str:
    """A short random hex token (2 * nbytes characters), for temporary and staging names."""
    return secrets.token_hex(nbytes)


def new_run_id() -> str:
    """An ingest or curation run (and the catalog parts it writes): 20250301T101500123456-a1b2c3."""
    return f"{utc_stamp()}-{token(3)}"


def new_eval_id() -> str:
    """An evaluation: eval-20250301T101500123456Z."""
    return f"eval-{utc_stamp()}Z"


def new_pretrain_id() -> str:
    """A pretraining run folder: pretrain-20250301T101500123456Z."""
    return f"pretrain-{utc_stamp()}Z"
