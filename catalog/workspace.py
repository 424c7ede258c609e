"""A workspace: one folder that holds the store, the catalog and the private area.

Layout (documented in docs/catalog.md):

    workspace/
      catalog/parts/<part_id>/{files,occurrences,labels}.parquet   shareable, append-only
      catalog/runs/<run_id>-<phase>.parquet                         shareable, append-only
      catalog/signatures/*.parquet, catalog/splits/*.parquet        curation, append-only
      catalog/curation/<run_id>/{dups,quality,leakage}.parquet      curation results, newest is current
      catalog/catalog.duckdb                                        views, rebuilt after each run
      catalog/evals/<eval_id>.parquet                               evaluation results, one row per result
      runs/<run_id>/              pretraining runs: config, run.json, metrics, checkpoint, backbone
      evals/<eval_id>/            evaluations: metrics.json, report.html, plots
      evals/embeddings/           frozen features cached by (checkpoint sha256, input size, image id)
      store/ab/<image_id>.png                                       de-identified pixels
      private/secret.key          0600, keys every pseudonym
      private/lineage/*.parquet   file id -> source path; never exported
      private/lineage/sources.json  registered sources (locations may name people)
      private/lineage/batches/    the file lists of running ingests (paths); cleared under the lock
      private/staging/            batch lists and half-written parts; cleared under the lock
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from catalog.errors import BusyError

DEFAULT_WORKSPACE = "workspace"
_HELD: dict[Path, int] = {}  # locks this process holds: nested flows must not deadlock on themselves


def resolve_workspace(path: str | os.PathLike | None = None) -> Path:
    """`path`, else ORTHO_WORKSPACE, else ./workspace. The one environment read below the top floor: callers
    outside the repo rely on `Workspace.open()` honouring the variable as `ortho --workspace` does."""
    return Path(path or os.environ.get("ORTHO_WORKSPACE") or DEFAULT_WORKSPACE).absolute()


class WorkspaceBusy(BusyError, RuntimeError):
    """Another process holds the workspace's write lock."""


@dataclass(frozen=True)
class Workspace:
    root: Path

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
        raise RuntimeError("workspace secret is unreadable; restore private/secret.key from backup")

    @contextlib.contextmanager
    def write_lock(self, wait_s: float = 0.0):
        """Exclusive writer lock, re-entrant within a process. Readers (ortho sql) never take it:
        they see only renamed parts."""
        path = self.private_dir / "write.lock"
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
