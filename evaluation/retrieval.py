"""Nearest training images of a few test images, by cosine on the backbone's features: what the report shows."""

from __future__ import annotations

import numpy as np

from evaluation.data import EvalSplits, TaskData


def query_rows(task: TaskData, splits: EvalSplits) -> list[int]:
    """Test rows in query order: one per class first, then the rest of the test part."""
    queries: list[int] = []
    for c in range(task.n_classes):
        rows = splits.test[task.labels[splits.test] == c]
        if len(rows):
            queries.append(int(rows[0]))
    return queries + [int(i) for i in splits.test if int(i) not in queries]


def nearest_training_images(task: TaskData, splits: EvalSplits, x: np.ndarray, n_queries: int,
                            k: int = 5) -> list[dict]:
    """Up to n_queries test images and the k most similar training images of other patients."""
    if n_queries <= 0:
        return []
    norm = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = []
    for q in query_rows(task, splits)[:n_queries]:
        pool = splits.fit[task.patients[splits.fit] != task.patients[q]]  # never the query's own patient
        sim = norm[pool] @ norm[q]
        top = pool[np.argsort(-sim, kind="stable")[:k]]
        out.append({"query": task.image_ids[q], "label": task.classes[task.labels[q]],
                    "neighbours": [{"image_id": task.image_ids[i], "label": task.classes[task.labels[i]],
                                    "similarity": float(norm[i] @ norm[q])} for i in top]})
    return out
