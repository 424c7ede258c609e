"""Training metrics: one JSON line per logged step (and TensorBoard), plus the collapse watch."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger("ortho.pretrain")


@torch.no_grad()
def collapse_stats(teacher_probs: torch.Tensor, student_cls: torch.Tensor) -> dict[str, float]:
    """teacher_probs [N, K]: mean per-sample entropy and entropy of the batch mean, both / log K.
    student_cls [B, D]: std across the batch of the L2-normalised embedding, x sqrt(D) (about 1 when
    spread uniformly on the sphere, 0 when every image maps to one point)."""
    k = teacher_probs.shape[-1]
    p = teacher_probs.float().clamp_min(1e-12)
    sample_entropy = float(-(p * p.log()).sum(-1).mean() / math.log(k))
    mean = p.mean(0)
    batch_entropy = float(-(mean * mean.log()).sum() / math.log(k))
    z = F.normalize(student_cls.float(), dim=-1)
    std = float(z.std(0).mean() * math.sqrt(z.shape[-1])) if z.shape[0] > 1 else float("nan")
    return {"teacher_entropy": sample_entropy, "teacher_batch_entropy": batch_entropy, "cls_std": std}


class CollapseWatch:
    """Warn (once per kind) when the run's own metrics say a head or the embedding has collapsed.

    Three kinds:
    - `std`: the CLS embedding std falls (every image maps to one point). DINOv3's layer-scale init (1e-5)
      gives every image nearly the same CLS token at first, so a low std is only a collapse when it falls
      after having risen, or when it never rises by `patience` steps.
    - `entropy`: the teacher's batch entropy falls after `grace` steps (a few prototypes take every image).
    - `uniform` / `ibot_uniform`: the teacher's output is uniform for every image (per-sample entropy near
      log K) and the DINO (iBOT) loss sits at its uniform value ln K: the head has stopped carrying any
      information. Every run starts near this plateau, so it is a collapse when the run returns to it after
      having left it (past `grace`), or is still on it at `patience`.
    """

    LEFT_PLATEAU = 0.9  # a per-sample entropy below this fraction of log K: the head has said something

    def __init__(self, min_std: float, min_batch_entropy: float, grace_steps: int = 0, patience: int = 0,
                 max_entropy: float = 0.98, prototypes: int | None = None, ibot_prototypes: int | None = None):
        self.min_std, self.min_entropy, self.grace, self.patience = min_std, min_batch_entropy, grace_steps, patience
        self.max_entropy, self.prototypes, self.ibot_prototypes = max_entropy, prototypes, ibot_prototypes
        self.max_std = 0.0
        self.left_plateau = False
        self.warned: dict[str, str] = {}

    def check(self, step: int, stats: dict[str, float]) -> list[str]:
        found = [*self._std(step, stats), *self._uniform(step, stats)]
        if step >= self.grace and stats["teacher_batch_entropy"] < self.min_entropy:
            found.append(("entropy", f"step {step}: teacher batch entropy {stats['teacher_batch_entropy']:.3f} of "
                                     f"log K: a few prototypes take every image (collapse)"))
        new = [(kind, msg) for kind, msg in found if kind not in self.warned]
        self.warned.update(new)
        for _, msg in new:
            log.warning(msg)
        return [msg for _, msg in new]

    def _std(self, step: int, stats: dict[str, float]) -> list[tuple[str, str]]:
        std = stats["cls_std"]
        self.max_std = max(self.max_std, std) if math.isfinite(std) else self.max_std
        if std < self.min_std and (self.max_std >= 2 * self.min_std or step >= self.patience):
            return [("std", f"step {step}: CLS embedding std {std:.3f} (x sqrt(dim)) is below "
                            f"{self.min_std}: the student may be collapsing to one point")]
        return []

    def _uniform(self, step: int, stats: dict[str, float]) -> list[tuple[str, str]]:
        entropy = stats.get("teacher_entropy", float("nan"))
        if not math.isfinite(entropy):
            return []
        self.left_plateau |= entropy < self.LEFT_PLATEAU
        due = (self.left_plateau and step >= self.grace) or step >= self.patience
        if entropy < self.max_entropy or not due:
            return []
        found = []
        for kind, loss, k, head in (("uniform", "dino", self.prototypes, "DINO"),
                                    ("ibot_uniform", "ibot", self.ibot_prototypes, "iBOT")):
            ratio = stats.get(loss, float("nan")) / math.log(k) if k and k > 1 else float("nan")
            if ratio >= self.max_entropy:
                found.append((kind, f"step {step}: the {head} head has collapsed to a uniform output ({loss} loss "
                                    f"{stats[loss]:.3f} = {ratio:.3f} x ln {k}, teacher entropy {entropy:.3f} of "
                                    "log K): it learns nothing"))
        return found


class MetricsWriter:
    def __init__(self, run_dir: Path, tensorboard: bool = True, resume_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in keep))
        self.file = open(self.path, "a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:
                log.info("tensorboard is not installed: metrics go to metrics.jsonl only")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
