"""A workspace: one folder that holds the store, the catalog and the private area.

`Workspace` owns every path of this layout: other modules ask it for a room (`ws.shard_sets_dir`), never join a
room's name onto the root themselves (tests/catalog/test_workspace_layout.py). Inside a room, the module that writes
it names its files. The whole tree (docs/catalog.md explains the tables):

    workspace/
      catalog/                                   shareable
        parts/<part_id>/{files,occurrences,labels}.parquet   ingested facts, append-only, one part per batch
        runs/<run_id>-<phase>.parquet             ingest and pretraining runs (the `runs` view)
        signatures/*.parquet, keypoints/*.parquet  curation's per-image features, append-only
        splits/*.parquet                          patient-level splits, append-only
        curation/<run_id>/{dups,quality,leakage}.parquet, settings.yaml   curation results, newest is current
        curation-index/MANIFEST.json, <build>/    the near-duplicate search's saved state (incremental runs)
        current/CURRENT.json, <snapshot>/         published snapshots of images, files, labels
        embeddings/<model>/                       vector parts, model.json, clusters.parquet, similarity index
        evals/<eval_id>.parquet                   evaluation results, one row per result
        unreadable/<stage>-<run_id>-*.parquet     stored images a stage could not open
        catalog.duckdb                            views, rebuilt after each run
      store/ab/<image_id>.png                    de-identified pixels
      shards/<name>/shard-NNNNNN.tar, manifest.json   shard sets
      runs/<run_id>/                             pretraining runs: config, run.json, metrics, checkpoint, backbone
      evals/<eval_id>/                           evaluations: metrics.json, report.html, plots
      evals/embeddings/<key>/                    frozen features cached by (model key, input size)
      reports/curation-<run_id>.html             curation reports
      pipeline/state.json                        what `ortho pipeline` finished, by stage and settings
      logs/<command>.log                         one line per event, file ids only; pipeline-errors.log
      private/                                   0700, never exported
        secret.key                               0600, keys every pseudonym
        write.lock                               the one writer's lock
        credentials/<NAME>                       what --credentials file:NAME and --tls-ca file:NAME name
        pacs/<source>.json                       a PACS source's pulls (study keys, never UIDs)
        lineage/*.parquet                        file id -> source path; never exported
        lineage/sources.json                     registered sources (locations may name people)
        lineage/batches/                         the file lists of running ingests (paths); cleared under the lock
        staging/                                 batch lists and half-written parts; cleared under the lock
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catalog.errors import BusyError, OrthoError

DEFAULT_WORKSPACE = "workspace"
_HELD: dict[Path, int] = {}  # locks this process holds: nested flows must not deadlock on themselves


def resolve_workspace(path: str | os.PathLike | None = None) -> Path:
    """`path`, else ORTHO_WORKSPACE, else ./workspace. The one environment read below the top floor: callers
    outside the repo rely on `Workspace.open()` honouring the variable as `ortho --workspace` does."""
    return Path(path or os.environ.get("ORTHO_WORKSPACE") or DEFAULT_WORKSPACE).absolute()


class WorkspaceBusy(BusyError, RuntimeError):
    """Another process holds the workspace's write lock."""


class SecretUnreadable(OrthoError, RuntimeError):
    """The workspace's secret is there but unreadable: no pseudonym could match the catalog's."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str from a flow's parameters works the same

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> "Workspace":
        ws = cls(resolve_workspace(path))
        for d in (ws.parts_dir, ws.runs_dir, ws.store_dir, ws.lineage_dir, ws.staging_dir, ws.logs_dir,
                  ws.signatures_dir, ws.keypoints_dir, ws.splits_dir, ws.curation_dir, ws.evals_catalog_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(ws.private_dir, 0o700)
        return ws

    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def parts_dir(self) -> Path:
        return self.catalog_dir / "parts"

    @property
    def runs_dir(self) -> Path:
        return self.catalog_dir / "runs"

    @property
    def train_runs_dir(self) -> Path:
        """Pretraining run folders (the catalog's `runs` view records them)."""
        return self.root / "runs"

    @property
    def evals_catalog_dir(self) -> Path:
        """Evaluation result rows (the catalog's `evals` view)."""
        return self.catalog_dir / "evals"

    @property
    def evals_dir(self) -> Path:
        """Evaluation folders: metrics.json, report.html, plots; and the embedding cache."""
        return self.root / "evals"

    @classmethod
    def of_eval(cls, eval_dir: Path) -> "Workspace | None":
        """The workspace an evaluation folder lies in, or None for a folder kept elsewhere (a copied report)."""
        return cls._holding(eval_dir, lambda ws: ws.evals_dir)

    @classmethod
    def of_shard_set(cls, set_dir: Path) -> "Workspace | None":
        """The workspace a shard set's folder lies in, or None for a set copied elsewhere (a cluster's disk)."""
        return cls._holding(set_dir, lambda ws: ws.shard_sets_dir)

    @classmethod
    def _holding(cls, folder: Path, parent_of: Callable[[Workspace], Path]) -> Workspace | None:
        folder = Path(folder).absolute()
        ws = cls(folder.parent.parent)
        return ws if folder.parent == parent_of(ws) and ws.store_dir.is_dir() else None

    @property
    def embeddings_dir(self) -> Path:
        """embeddings/<model>/: vectors (the `embeddings` view), clusters, the similarity index."""
        return self.catalog_dir / "embeddings"

    @property
    def signatures_dir(self) -> Path:
        return self.catalog_dir / "signatures"

    @property
    def keypoints_dir(self) -> Path:
        """Local features per image for cropped re-exports (curation/dedup/crop_match.py)."""
        return self.catalog_dir / "keypoints"

    @property
    def splits_dir(self) -> Path:
        return self.catalog_dir / "splits"

    @property
    def curation_dir(self) -> Path:
        return self.catalog_dir / "curation"

    @property
    def unreadable_dir(self) -> Path:
        """Stored images a stage excluded because they could not be opened (catalog/unreadable.py)."""
        return self.catalog_dir / "unreadable"

    @property
    def duckdb_path(self) -> Path:
        return self.catalog_dir / "catalog.duckdb"

    @property
    def current_dir(self) -> Path:
        """Published snapshots of the three main tables, and CURRENT.json naming the newest (catalog/current.py)."""
        return self.catalog_dir / "current"

    @property
    def dedup_index_dir(self) -> Path:
        """The near-duplicate search's saved state, one build folder at a time, and MANIFEST.json naming it."""
        return self.catalog_dir / "curation-index"

    @property
    def shard_sets_dir(self) -> Path:
        """shards/<name>/: one shard set's tars and its manifest.json."""
        return self.root / "shards"

    @property
    def reports_dir(self) -> Path:
        """Curation reports (HTML) written where no --out was given."""
        return self.root / "reports"

    @property
    def pipeline_state_path(self) -> Path:
        """What `ortho pipeline` finished, by stage and settings digest: a re-run skips it."""
        return self.root / "pipeline" / "state.json"

    @property
    def feature_cache_dir(self) -> Path:
        """Evaluation's frozen features, one folder per (model key, input size)."""
        return self.evals_dir / "embeddings"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def private_dir(self) -> Path:
        return self.root / "private"

    @property
    def lineage_dir(self) -> Path:
        return self.private_dir / "lineage"

    @property
    def staging_dir(self) -> Path:
        return self.private_dir / "staging"

    @property
    def sources_path(self) -> Path:
        # Source locations may name people: they are lineage, and live with it.
        return self.lineage_dir / "sources.json"

    @property
    def batches_dir(self) -> Path:
        """Per-run lists of the files to read (relative paths: lineage too). Cleared like staging."""
        return self.lineage_dir / "batches"

    @property
    def secret_path(self) -> Path:
        return self.private_dir / "secret.key"

    @property
    def write_lock_path(self) -> Path:
        return self.private_dir / "write.lock"

    @property
    def credentials_dir(self) -> Path:
        """Files that `--credentials file:NAME` and `--tls-ca file:NAME` name; the user puts them there."""
        return self.private_dir / "credentials"

    def pacs_state_path(self, source: str) -> Path:
        """A PACS source's pulls: the studies seen and planned (their keys, never their UIDs)."""
        return self.private_dir / "pacs" / f"{source}.json"

    def secret(self) -> bytes:
        """The per-workspace pseudonym key, created once with mode 0600."""
        path = self.secret_path
        if not path.exists():
            key = secrets.token_bytes(32)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process won the race; read theirs
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(key.hex().encode())
                    f.flush()
                    os.fsync(f.fileno())
        for _ in range(50):  # the winner may still be writing
            text = path.read_bytes().strip()
            if len(text) == 64:
                return bytes.fromhex(text.decode())
            time.sleep(0.01)
        raise SecretUnreadable("workspace secret is unreadable; restore private/secret.key from backup")

    @contextlib.contextmanager
    def write_lock(self, wait_s: float = 0.0):
        """Exclusive writer lock, re-entrant within a process. Readers (ortho sql) never take it:
        they see only renamed parts."""
        path = self.write_lock_path
        if _HELD.get(path, 0):
            _HELD[path] += 1
            try:
                yield
            finally:
                _HELD[path] -= 1
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                        raise WorkspaceBusy(
                            f"workspace {self.root.name!r} is busy: another ortho process "
                            f"(pid {holder}) is writing to it; wait for it or pass --wait SECONDS"
                        ) from None
                    time.sleep(0.2)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            _HELD[path] = 1
            try:
                yield
            finally:
                _HELD[path] = 0
        finally:
            os.close(fd)  # closing releases the flock


def clear_staging(ws: Workspace) -> None:
    """Leftovers of killed runs: half-written parts and batch lists. Call only under the write lock."""
    shutil.rmtree(ws.batches_dir, ignore_errors=True)
    for child in ws.staging_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
