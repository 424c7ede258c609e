"""Quality filters: each a name, a stable reason code and a SQL condition over the image row `i`
and its pixel statistics `s` (curation/dedup/signatures.py, values in [0, 1] of the stored range).
Filters flag; only the reasons listed in `exclude` make an image `excluded` from training
selections. Parameters and the exclusion list come from the curation config."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.errors import SettingRefused

FILTERS: dict[str, str] = {
    # nearly constant: 98% of the pixels within a few grey levels of the stored depth
    "blank_image": "(s.p99 - s.p01) * (pow(2, i.bits) - 1) < {blank_levels}",
    "too_small": "least(i.rows, i.cols) < {min_size}",
    "extreme_aspect": "greatest(i.rows, i.cols) > {max_aspect} * least(i.rows, i.cols)",
    "saturated": "s.frac_at_max > {saturated_fraction} AND s.max > s.min",
    "localizer": "i.image_kind = 'localizer'",
    "unknown_body_part": "i.body_part = 'unknown' OR i.body_part IS NULL",
}


@dataclass(frozen=True)
class QualityConfig:
    blank_levels: int = 4
    min_size: int = 64
    max_aspect: float = 4.0
    saturated_fraction: float = 0.25
    enabled: tuple = tuple(FILTERS)
    exclude: tuple = ("blank_image", "too_small", "extreme_aspect", "localizer")

    def conditions(self) -> dict[str, str]:
        params = {"blank_levels": self.blank_levels, "min_size": self.min_size, "max_aspect": self.max_aspect,
                  "saturated_fraction": self.saturated_fraction}
        unknown = set(self.enabled) - set(FILTERS)
        if unknown:
            raise SettingRefused(f"unknown quality filters {sorted(unknown)}; registered: {sorted(FILTERS)}")
        return {name: FILTERS[name].format(**params) for name in self.enabled}

    def queries(self) -> dict[str, str]:
        """reason -> SELECT image_id of the images it flags. Run one at a time: as one UNION ALL, the
        six expansions of the `images` view ran at once and outgrew DuckDB's 256 MB budget on a
        1,400-image catalog."""
        return {name: f"SELECT i.image_id FROM images i JOIN signatures s USING (image_id) WHERE {cond}"
                for name, cond in self.conditions().items()}
