"""A pull: which studies are new, one listing entry per instance of each, and what became of every study.

The private state file (workspace/private/pacs/<source>.json) records, by a keyed hash of its UID (a UID is an
identifier), each study the source has pulled, with its instance count and status. A run lists the archive's studies (one row each, cheap),
skips those complete with the same instance count, and lists the instances of the rest; instances already in the
catalog are skipped by the ingest like any file already done. The state is written once the run's batches are
committed, so a killed pull re-lists its studies and the catalog's done set keeps it free of duplicates and gaps.
A study with an instance the archive would not give (after retries) is `failed` and pulled again next run.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from catalog import db
from catalog.files import atomic_write
from catalog.deid import Pseudonymizer
from catalog.workspace import Workspace
from ingest.pacs.client import PacsClient, open_client
from ingest.pacs.errors import PacsUnavailable, RetrieveFailed
from ingest.pacs.options import PacsOptions
from ingest.pacs.study import Instance, Study, listed_until
from ingest.scan import ScanEntry

RETRY_REASONS = ("pacs_retrieve_failed", "pacs_bad_response")  # quarantines a later pull tries again
_KEEP_PULLS = 30


def state_path(ws: Workspace, source: str) -> Path:
    return ws.pacs_state_path(source)


@dataclass
class PullState:
    studies: dict[str, dict] = field(default_factory=dict)  # study key -> {instances, status, reason, attempts, run_id}
    pulls: list[dict] = field(default_factory=list)  # the latest pulls, counts only

    @classmethod
    def load(cls, ws: Workspace, source: str) -> "PullState":
        path = state_path(ws, source)
        if not path.exists():
            return cls()
        d = json.loads(path.read_text())
        return cls(d.get("studies", {}), d.get("pulls", []))

    def save(self, ws: Workspace, source: str) -> None:
        path = state_path(ws, source)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write(path, json.dumps({"version": 1, "studies": self.studies, "pulls": self.pulls[-_KEEP_PULLS:]}),
                     mode=0o600)

    def summary(self) -> dict:
        statuses = [s["status"] for s in self.studies.values()]
        last = self.pulls[-1] if self.pulls else {}
        return {"studies_complete": statuses.count("complete"), "studies_failed": statuses.count("failed"),
                "instances": sum(s["instances"] for s in self.studies.values() if s["status"] == "complete"),
                "last_pull": last.get("finished_at"), "last_new_studies": last.get("new_studies"),
                "last_stopped": last.get("stopped")}


@dataclass
class StudyPlan:
    instances: int
    relpaths: list[str]
    reason: str | None = None  # the study's instances could not be listed, or not all of them


def _studies(client: PacsClient, filters: dict, name: str) -> Iterator:
    """The archive's matching studies; a study query the archive keeps failing ends the run in one line."""
    try:
        yield from client.studies(filters)
    except RetrieveFailed as e:
        raise PacsUnavailable(f"source {name!r}: the archive's study query failed ({e.reason}: {e.detail}); "
                              f"nothing more was pulled this run") from None


def _list_study(client: PacsClient, study: Study, body_parts: list[str] | None) -> tuple[list[Instance], str | None]:
    """The study's instances, listed until they are as many as the archive's study count says (a series answer lost
    on the way would otherwise leave a study marked complete without it). Still short: what was listed is pulled and
    the study stays failed, to be listed again next run. With a body-part filter the study count covers series left
    out, so only the series' own counts hold."""
    if body_parts:
        return client.instances(study.uid, body_parts), None
    found, whole = listed_until(lambda: client.instances(study.uid, None), study.instances)
    return found, None if whole else "pacs_incomplete_listing"


class PacsListing:
    """Iterate `entries()` once (inside the run), then call `finish()` after every batch is committed."""

    def __init__(self, ws: Workspace, name: str, location: str, options: PacsOptions):
        self.ws, self.name, self.location, self.options = ws, name, location, options
        self.state = PullState.load(ws, name)
        self.pseudo = Pseudonymizer(ws.secret())
        self.planned: dict[str, StudyPlan] = {}
        self.listed = self.up_to_date = 0
        self.stopped: str | None = None  # "outside_hours" when the pull window closed mid-run

    def entries(self) -> Iterator[ScanEntry]:
        filters = self.options.filters()
        terms = filters.get("StudyDescription")
        with open_client(self.name, self.location, self.options, self.ws.credentials_dir) as client:
            for study in _studies(client, filters, self.name):
                if terms and not any(t in study.description.lower() for t in terms):
                    continue
                self.listed += 1
                known = self.state.studies.get(self.study_key(study.uid))
                if known and known["status"] == "complete" and (study.instances in (0, known["instances"])):
                    self.up_to_date += 1
                    continue
                if not self.options.in_window():
                    self.stopped = "outside_hours"
                    return
                try:
                    instances, short = _list_study(client, study, filters.get("BodyPartExamined"))
                except RetrieveFailed as e:
                    self.planned[self.study_key(study.uid)] = StudyPlan(study.instances, [], e.reason)
                    continue
                self.planned[self.study_key(study.uid)] = StudyPlan(study.instances or len(instances),
                                                                    [i.relpath for i in instances], short)
                for inst in instances:
                    yield ScanEntry(inst.relpath)

    def study_key(self, uid: str) -> str:
        return self.pseudo.key("pacs-study", f"{self.name}\x00{uid}")

    def finish(self, run_id: str) -> dict:
        """Each planned study is complete when every instance is in the catalog without a retrieval failure."""
        pseudo = self.pseudo
        outcome = self._outcomes([pseudo.file_id(self.name, r) for p in self.planned.values() for r in p.relpaths])
        counts = {"complete": 0, "failed": 0}
        for key, plan in self.planned.items():
            reasons = [outcome.get(pseudo.file_id(self.name, r), "not_committed") for r in plan.relpaths]
            reason = plan.reason or next((r for r in reasons if r in RETRY_REASONS or r == "not_committed"), None)
            status = "failed" if reason else "complete"
            before = self.state.studies.get(key, {})
            self.state.studies[key] = {"instances": plan.instances, "status": status, "reason": reason,
                                       "attempts": before.get("attempts", 0) + 1, "run_id": run_id}
            counts[status] += 1
        pull = {"run_id": run_id, "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "listed_studies": self.listed, "up_to_date": self.up_to_date, "new_studies": len(self.planned),
                "complete": counts["complete"], "failed": counts["failed"], "stopped": self.stopped}
        self.state.pulls.append(pull)
        self.state.save(self.ws, self.name)
        return pull

    def _outcomes(self, file_ids: list[str]) -> dict[str, str]:
        """file id -> its quarantine reason, or "" when it is in the catalog."""
        if not file_ids:
            return {}
        with db.connection(self.ws) as con:
            rows = con.execute("SELECT file_id, coalesce(reason, '') FROM current_files "
                               "WHERE source = ? AND file_id IN (SELECT unnest(?::VARCHAR[]))",
                               [self.name, file_ids]).fetchall()
        return dict(rows)
