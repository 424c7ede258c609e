"""Prefect flows and the `ortho` command line. Importing this package sets quiet, offline
defaults for Prefect before it is imported (no telemetry, a patient ephemeral server), and reads the
ORTHO_* settings from the environment, once (flows/settings.py)."""

import os

for _key, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",  # 90 s was too short on 2 cores at load 20
    "PREFECT_LOGGING_EXTRA_LOGGERS": "ortho",
    # the command's bars and summary say what happened: no line per task run over the bars, and no links to the
    # temporary server, which dies with the command. Only the console is quieted: a served run's INFO lines (each
    # stage's outcome and seconds) still reach the Prefect server's logs.
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # task code on Dask/Ray workers logs locally
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_key, _value)

from flows.firewall import quiet_curated_tracebacks  # noqa: E402  (after the defaults: it imports nothing of Prefect)

quiet_curated_tracebacks()

from flows import settings  # noqa: E402

settings.load()
