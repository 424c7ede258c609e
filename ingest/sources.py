"""Registered sources: where images come from and what their paths and label files say.

The registry lives in private/lineage/sources.json: a location may itself name a person.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from catalog import vocab
from catalog.files import atomic_write
from catalog.workspace import Workspace
from ingest.source_errors import SourceError  # noqa: F401  (its home; raised here and by the kinds)
from ingest.pacs.options import PacsOptions, is_secret_ref, resolve_secret

if TYPE_CHECKING:
    from ingest.source_kinds import SourceKind

KINDS = ("internal", "public", "phantom")
PATTERN_GROUPS = {"patient", "laterality", "split", "exam", "label", "plane", "view"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_KEYED_STORES = ("s3://", "s3a://")




@dataclass(frozen=True)
class LabelSpec:
    """`folder:TASK` (parent folder name), `pattern:TASK` (the path pattern's `label` group),
    or `csv:FILE[:key=COLUMN][:prefix=P]` (one task per other column, keyed by exam id or file stem)."""

    kind: str
    task: str | None = None
    file: str | None = None
    key: str | None = None
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> "LabelSpec":
        kind, _, rest = text.partition(":")
        if kind in ("folder", "pattern"):
            if not re.match(r"^[a-z][a-z0-9_]{0,63}$", rest):
                raise SourceError(f"label spec {text!r}: task must be snake_case, e.g. folder:kl_grade")
            return cls(kind, task=rest)
        if kind == "csv":
            parts = rest.split(":")
            opts = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            if not parts[0] or set(opts) - {"key", "prefix"}:
                raise SourceError(f"label spec {text!r}: expected csv:FILE[:key=COLUMN][:prefix=P]")
            return cls("csv", file=parts[0], key=opts.get("key"), prefix=opts.get("prefix", ""))
        raise SourceError(f"label spec {text!r}: expected folder:TASK, pattern:TASK or csv:FILE")

    def __str__(self) -> str:
        if self.kind == "csv":
            return "csv:" + ":".join([self.file] + [f"{k}={v}" for k, v in (("key", self.key), ("prefix", self.prefix)) if v])
        return f"{self.kind}:{self.task}"


@dataclass
class Source:
    name: str
    location: str
    kind: str = "internal"  # internal | public | phantom (KINDS)
    seq: int = 0
    labels: list[str] = field(default_factory=list)
    path_pattern: str | None = None
    modality: str | None = None
    body_part: str | None = None
    slice_axis: str = "auto"
    burned_in: str = "mask"  # burned-in text: mask | quarantine | off (ingest/text/screen.py)
    pacs: dict = field(default_factory=dict)  # a PACS source's options (ingest/pacs/options.py PacsOptions)
    credentials: str | None = None  # an object store's keys: env:NAME | file:NAME holding ACCESS_KEY:SECRET_KEY

    def validate(self) -> "Source":
        if not _NAME.match(self.name):
            raise SourceError(f"source name {self.name!r}: use lowercase letters, digits, '-', '_' or '.'")
        if self.kind not in KINDS:
            raise SourceError(f"source kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        for spec in self.labels:
            LabelSpec.parse(spec)
        if self.path_pattern:
            try:
                groups = set(re.compile(self.path_pattern).groupindex)
            except re.error as e:
                raise SourceError(f"path pattern does not compile: {e}") from None
            if groups - PATTERN_GROUPS:
                raise SourceError(f"path pattern groups {sorted(groups - PATTERN_GROUPS)} unknown; allowed: {sorted(PATTERN_GROUPS)}")
        if self.modality and not vocab.modality(self.modality):
            raise SourceError(f"modality {self.modality!r} is not a DICOM modality code (CR, DX, MR, CT, ...)")
        if self.body_part and self.body_part not in vocab.BODY_PARTS:
            raise SourceError(f"body part {self.body_part!r}: expected one of {sorted(vocab.BODY_PARTS)}")
        if self.slice_axis not in ("auto", "all", "0", "1", "2"):
            raise SourceError("slice axis must be auto, all, 0, 1 or 2")
        check_burned_in(self.burned_in)
        self.location_kind.validate()
        self._validate_credentials()
        return self

    def _validate_credentials(self) -> None:
        if self.credentials is None:
            return
        if not self.location.startswith(_KEYED_STORES):
            raise SourceError("--credentials for a folder or URL source needs an s3:// location (a PACS's go with "
                              "its other options)")
        if not is_secret_ref(self.credentials):
            raise SourceError("--credentials: expected env:NAME or file:NAME (a file in workspace/private/credentials)")

    def storage_options(self, credentials_dir: Path) -> dict:
        """fsspec's options for this source's URL: its keys, read here, in the process that opens it (never passed
        along); none for a store reached with the environment's own (AWS_* variables, an instance role)."""
        value = resolve_secret(self.credentials, credentials_dir, "--credentials")
        if value is None:
            return {}
        key, sep, secret = value.partition(":")
        if not sep or not key or not secret:
            raise SourceError(f"source {self.name!r}: --credentials holds no ACCESS_KEY:SECRET_KEY pair")
        return {"key": key, "secret": secret}

    @property
    def label_files(self) -> set[str]:
        """The label tables inside the source's own tree (relative csv: specs): a scan leaves them out."""
        return {s.file for s in self.label_specs if s.kind == "csv" and not os.path.isabs(s.file)}

    @property
    def location_kind(self) -> SourceKind:
        """Where the source is (a folder, an object store, a DICOMweb or DIMSE archive): what ingest asks."""
        from ingest.source_kinds import kind_of

        return kind_of(self)

    @property
    def pacs_options(self) -> PacsOptions:
        return PacsOptions.from_dict(self.pacs)

    @property
    def label_specs(self) -> list[LabelSpec]:
        return [LabelSpec.parse(s) for s in self.labels]

    @property
    def defaults(self) -> dict:
        return {"modality": vocab.modality(self.modality), "body_part": self.body_part}

    def hints(self, relpath: str) -> dict:
        if not self.path_pattern:
            return {}
        m = re.search(self.path_pattern, relpath)
        return {k: v for k, v in m.groupdict().items() if v is not None} if m else {}


def check_burned_in(policy: str) -> str:
    if policy not in ("mask", "quarantine", "off"):
        raise SourceError(f"burned-in text policy {policy!r}: expected mask, quarantine or off")
    return policy


def load_sources(ws: Workspace) -> dict[str, Source]:
    if not ws.sources_path.exists():
        return {}
    data = json.loads(ws.sources_path.read_text())
    return {d["name"]: Source(**d) for d in data["sources"]}


def save_sources(ws: Workspace, sources: dict[str, Source]) -> None:
    payload = {"version": 1, "sources": [asdict(s) for s in sorted(sources.values(), key=lambda s: s.seq)]}
    atomic_write(ws.sources_path, json.dumps(payload, indent=2), mode=0o600)  # locations may name people


def add_source(ws: Workspace, source: Source, replace: bool = False, probe: bool = True) -> Source:
    """Register a source; re-adding an identical one is a no-op, a different one needs `replace`. A PACS source
    is asked one query first (`probe`), so that a wrong AE title, password or certificate is refused here."""
    source.location_kind.prepare()
    source.validate()
    if probe:
        source.location_kind.probe(ws)
    sources = load_sources(ws)
    existing = sources.get(source.name)
    if existing is not None:
        source.seq = existing.seq
        if asdict(existing) == asdict(source):
            return existing
        if not replace:
            raise SourceError(f"source {source.name!r} exists with other settings; pass --replace to change it")
    else:
        source.seq = max((s.seq for s in sources.values()), default=0) + 1
    sources[source.name] = source
    save_sources(ws, sources)
    return source


class LabelResolver:
    """Labels of one file, from every label spec of its source."""

    def __init__(self, source: Source, read_text):
        self.specs = source.label_specs
        self.source = source
        self.tables: dict[str, dict[str, dict[str, str]]] = {}
        for spec in self.specs:
            if spec.kind == "csv":
                rows = list(csv.DictReader(io.StringIO(read_text(spec.file))))
                if not rows:
                    continue
                key = spec.key or next(iter(rows[0]))
                self.tables[str(spec)] = {
                    (r.get(key) or "").strip(): {f"{spec.prefix}{c.strip().lower()}": v for c, v in r.items() if c != key and c}
                    for r in rows
                }

    @property
    def label_files(self) -> set[str]:
        return self.source.label_files

    def labels(self, relpath: str, hints: dict) -> dict[str, str]:
        out: dict[str, str] = {}
        path = PurePosixPath(relpath)
        for spec in self.specs:
            if spec.kind == "folder" and len(path.parts) >= 2:
                value = path.parts[-2]
                if vocab.label_value(value):
                    out[spec.task] = value
            elif spec.kind == "pattern" and hints.get("label") is not None:
                out[spec.task] = hints["label"]
            elif spec.kind == "csv":
                table = self.tables.get(str(spec), {})
                stem = path.name.split(".")[0]
                for key in (hints.get("exam"), stem, relpath):
                    if key is not None and key in table:
                        out.update(table[key])
                        break
        return {t: v for t, v in out.items() if vocab.label_value(v) is not None and re.match(r"^[a-z][a-z0-9_]{0,63}$", t)}
