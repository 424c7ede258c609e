"""Hierarchical k-means over one model's embeddings (Vo et al. 2024, "Automatic data curation for self-supervised
learning"): level 1 clusters the vectors, each higher level clusters the centroids of the level below, so a coarse
cluster is a union of fine ones. Spherical k-means (cosine), faiss; the `clusters` view reads the result.

Training samples at most `max_points_per_centroid` points per centroid (faiss's subsampling); every vector is then
assigned to its nearest centroid, so the cost is that of the sample plus one assignment pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import faiss
import numpy as np

from catalog import embeddings as emb
from catalog.workspace import Workspace


@dataclass
class ClusterConfig:
    model: str | None = None  # model key [default: the most recently embedded]
    ks: tuple[int, ...] = ()  # clusters per level, finest first [default: auto_ks]
    niter: int = 20
    seed: int = 0
    max_points_per_centroid: int = 256


@dataclass
class ClusterSummary:
    model: str
    images: int
    ks: list[int]
    sizes: dict = field(default_factory=dict)  # level -> (smallest, largest) cluster
    seconds: float = 0.0


def auto_ks(n: int, levels: int = 3) -> tuple[int, ...]:
    """About 25 images per level-1 cluster (at most 1,000), then a fifth as many clusters per level."""
    ks = [max(2, min(1000, n // 25))]
    while len(ks) < levels and ks[-1] >= 10:
        ks.append(max(2, ks[-1] // 5))
    return tuple(ks)


def _kmeans(x: np.ndarray, k: int, cfg: ClusterConfig, seed: int) -> np.ndarray:
    """Unit-length centroids [k, d] of x [n, d] (unit rows)."""
    km = faiss.Kmeans(x.shape[1], k, niter=cfg.niter, seed=seed, spherical=True,
                      max_points_per_centroid=cfg.max_points_per_centroid, min_points_per_centroid=1, verbose=False)
    km.train(x)
    return km.centroids


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid [n], cosine distance to it [n])."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    sim, nearest = index.search(x, 1)
    return nearest[:, 0].astype(np.int32), (1.0 - sim[:, 0]).astype(np.float32)


def hierarchical_kmeans(x: np.ndarray, ks: tuple[int, ...], cfg: ClusterConfig | None = None
                        ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """x [n, d] (unit rows) -> per level, finest first: (cluster of each vector [n], its cosine distance to that
    cluster's centroid [n], the centroids [k, d])."""
    cfg = cfg or ClusterConfig()
    labels, dists, cents = [], [], []
    points = x
    for level, k in enumerate(ks):
        k = min(k, len(points))
        c = _kmeans(points, k, cfg, cfg.seed + level)
        of_points, _ = _assign(points, c)
        # a vector's cluster at this level is that of its cluster one level down
        lab = of_points if level == 0 else of_points[labels[-1]]
        dists.append(1.0 - np.einsum("ij,ij->i", x, c[lab]).astype(np.float32))
        labels.append(lab)
        cents.append(c)
        points = c
    return labels, dists, cents


def cluster_embeddings(ws: Workspace, cfg: ClusterConfig) -> ClusterSummary:
    """Cluster every vector of the model and write its `clusters` rows (the previous clustering is replaced)."""
    info = emb.resolve_model(ws, cfg.model)
    start = time.perf_counter()
    ids, x = emb.load_vectors(ws, info.model)
    x = emb.normalised(x)
    ks = cfg.ks or auto_ks(len(ids))
    labels, dists, _ = hierarchical_kmeans(x, ks, cfg)
    emb.write_clusters(ws, info.model, ids, labels, dists)
    counts = [np.unique(lab, return_counts=True)[1] for lab in labels]  # an empty k-means cluster has no row
    sizes = {lvl + 1: (int(c.min()), int(c.max())) for lvl, c in enumerate(counts)}
    return ClusterSummary(info.model, len(ids), [len(c) for c in counts], sizes, time.perf_counter() - start)
