"""The near-duplicate search's settings (CurateConfig.dedup; `ortho curate dedup.threshold=0.7
dedup.crops.enabled=false`): the global signature search's, and the crop search's under `crops`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CropConfig:
    enabled: bool = True
    neighbours: int = 4
    query_keypoints: int = 24  # each image asks with its strongest descriptors (all of them by default)
    pca_dim: int = 64  # of the IVF search (candidates re-scored on all 128 dimensions)
    descriptor_similarity: float = 0.90
    min_votes: int = 3
    min_inliers: int = 3
    max_rotation_deg: float = 15.0  # scanners and viewers rotate a few degrees; knees are never upside down
    max_anisotropy: float = 1.35  # the larger scale over the smaller, of a refined affine map
    mirror: bool = True  # also search mirrored descriptors (a flipped re-export); laterality still decides
    min_overlap: float = 0.6  # of the smaller image's area, once mapped
    # aligned texture score (aligned_similarity); measured: different real knees <= 0.39, phantom knees <= 0.34,
    # crops median 0.9
    threshold: float = 0.45
    exact_below: int = 20_000  # descriptors (about 800 images); an IVF index above (same matches, measured)
    nprobe: int = 8
    workers: int | None = None  # threads for the pixel checks (default: CPU count)


@dataclass(frozen=True)
class DedupConfig:
    threshold: float = 0.66  # cosine; see curation/dedup/signatures.py for the measured separation
    same_series_threshold: float = 0.97  # neighbouring MRI slices are alike; only near-identical ones group
    use_flip: bool = True
    exact_below: int = 50_000
    nprobe: int = 16
    crops: CropConfig = field(default_factory=CropConfig)
