"""The registry of downstream tasks: what a label means, so evaluation can treat it right (and the command line
can list it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # ordinal | binary | multiclass
    classes: tuple[str, ...]
    anatomy: str
    modality: str  # the modalities the task is defined on
    level: str  # image | exam (an exam's label is inherited by all its slices)
    description: str


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("kl_grade", "ordinal", ("0", "1", "2", "3", "4"), "knee", "DX,CR", "image",
             "Kellgren-Lawrence osteoarthritis grade of a knee radiograph"),
    TaskSpec("hip_kl_grade", "ordinal", ("0", "1", "2", "3", "4"), "hip", "DX,CR", "image",
             "Kellgren-Lawrence osteoarthritis grade of a hip radiograph"),
    TaskSpec("mri_abnormal", "binary", ("0", "1"), "knee", "MR", "exam", "any abnormality on knee MRI (MRNet)"),
    TaskSpec("mri_acl", "binary", ("0", "1"), "knee", "MR", "exam", "anterior cruciate ligament tear (MRNet)"),
    TaskSpec("mri_meniscus", "binary", ("0", "1"), "knee", "MR", "exam", "meniscal tear (MRNet)"),
)}


def describe(name: str, values: set[str]) -> TaskSpec:
    """The registered spec, or one inferred from the values seen (unregistered tasks still list)."""
    if name in TASKS:
        return TASKS[name]
    kind = "binary" if values <= {"0", "1"} else "multiclass"
    return TaskSpec(name, kind, tuple(sorted(values)), "unknown", "unknown", "image", "not registered")
