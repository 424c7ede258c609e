"""The curation report's plots (matplotlib, drawn off-screen to PNG)."""

from __future__ import annotations

import numpy as np

from catalog.figures import figure_png


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    data = figure_png(fig, dpi=100)
    pyplot().close(fig)
    return data


def split_counts_plot(counts: list[tuple]) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.4))
    names = [c[0] for c in counts]
    for ax, col, title in ((axes[0], 1, "patients"), (axes[1], 2, "images")):
        bars = ax.bar(names, [c[col] for c in counts], color="#4a6fa5")
        ax.bar_label(bars, fontsize=7)
        ax.set_title(f"{title} per split", fontsize=9)
        ax.tick_params(labelsize=8)
    return png(fig)


def labels_plot(labels: list[tuple], max_tasks: int) -> bytes | None:
    """Per task, each split's labelled images as a bar stacked by class (share of the split)."""
    tasks = sorted({t for t, *_ in labels})[:max_tasks]
    if not tasks:
        return None
    plt = pyplot()
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.2 * rows), squeeze=False)
    for ax, task in zip(axes.ravel(), tasks):
        mine = [r for r in labels if r[0] == task]
        splits = sorted({s for _, s, _, _ in mine})
        classes = sorted({v for _, _, v, _ in mine}, key=lambda v: (len(v), v))
        totals = {s: sum(n for _, s2, _, n in mine if s2 == s) for s in splits}
        left = np.zeros(len(splits))
        for v in classes:
            share = np.array([sum(n for _, s2, v2, n in mine if s2 == s and v2 == v) / totals[s] for s in splits])
            ax.barh(splits, share, left=left, label=v)
            left += share
        ax.set_yticks(range(len(splits)), [f"{s} ({totals[s]})" for s in splits], fontsize=7)
        ax.set_title(task, fontsize=8)
        ax.set_xticks([])
        ax.legend(fontsize=6, ncol=len(classes), loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.suptitle("labels per class (share of each split's labelled images; n in brackets)", fontsize=9)
    fig.tight_layout()
    return png(fig)


def mix_plot(mix: list[tuple], top: int = 8) -> bytes:
    """Each split's images stacked by modality and body part (the `top` most common; the rest as other)."""
    plt = pyplot()
    totals: dict[str, int] = {}
    for _, kind, n in mix:
        totals[kind] = totals.get(kind, 0) + n
    kinds = sorted(totals, key=lambda k: -totals[k])[:top]
    splits = sorted({s for s, _, _ in mix})
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(splits)))
    left = np.zeros(len(splits))
    for kind in kinds + (["other"] if len(totals) > top else []):
        n = np.array([sum(c for s2, k, c in mix if s2 == s and (k == kind or (kind == "other" and k not in kinds)))
                      for s in splits], float)
        share = n / np.array([sum(c for s2, _, c in mix if s2 == s) for s in splits], float)
        ax.barh(splits, share, left=left, label=kind)
        left += share
    ax.set_title("modality and body part per split (share of its images)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return png(fig)
