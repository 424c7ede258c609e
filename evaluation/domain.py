"""What a backbone was pretrained on and what a task asks of it: in-domain, cross-anatomy, cross-modality."""

from __future__ import annotations

from evaluation.data import TaskData

XRAY = {"DX", "CR", "DR", "RG", "RF", "XA", "PX", "MG"}


def modality_family(modality: str) -> str:
    return "X-ray" if modality in XRAY else modality


def domain_text(body_parts, modalities) -> str:
    parts = sorted(set(body_parts)) or ["unknown"]
    mods = sorted({modality_family(m) for m in modalities}) or ["unknown"]
    return f"{'+'.join(parts)}/{'+'.join(mods)}"


def pretrained_on_text(pretrained_on: dict) -> str | None:
    """A backbone's pretraining domain as domain_text writes it; None without a run behind it."""
    if not pretrained_on:
        return None
    return domain_text(pretrained_on.get("body_part", []), pretrained_on.get("modality", []))


def task_body_parts(task: TaskData) -> set[str]:
    """The body parts of a task's images; where an image's is unknown (a NIfTI file carries none), the
    anatomy the task registry declares for the task."""
    declared = task.spec.anatomy if task.spec and task.spec.anatomy != "unknown" else "unknown"
    return {declared if p == "unknown" else p for p in task.body_parts}


def transfer_kind(pretrained_on: dict, task_parts, task_modalities) -> str:
    """in-domain, cross-anatomy, cross-modality or cross-anatomy+modality (unknown without a run)."""
    if not pretrained_on:
        return "unknown"
    anatomy = not set(task_parts) <= set(pretrained_on.get("body_part", []))
    modality = not ({modality_family(m) for m in task_modalities}
                    <= {modality_family(m) for m in pretrained_on.get("modality", [])})
    return {(False, False): "in-domain", (True, False): "cross-anatomy", (False, True): "cross-modality",
            (True, True): "cross-anatomy+modality"}[(anatomy, modality)]
