"""The curation report: one self-contained HTML page of a curation run's decisions, to review and sign off.

    write_curation_report(ws, run_id=None)  ->  workspace/reports/curation-<run_id>.html

Sections: what changed since the previous run; near-duplicate groups side by side with their evidence (the method,
its similarity against the threshold it had to reach, and for the crop search the alignment recomputed from the
stored keypoints, shown as the aligned overlap), sampled per method (the most borderline and a random draw) and
sortable; a gallery per quality reason; quarantined files by reason (file ids, never paths); per split the patients,
images, labels per class and the modality / body part mix.

Every number is a DuckDB query over the run's tables (catalog/curation/<run_id>/) and the catalog views; only the
sampled rows reach Python. Galleries are bounded by ReportLimits (stated on the page), so the page does not grow
with the catalog. Thumbnails are the de-identified store's pixels, windowed to 8 bits, PNG with pixel chunks only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catalog import db
from catalog.config import to_dict
from catalog.embeddings import latest_clustered
from catalog.errors import OrthoError
from catalog.figures import figure_png
from catalog.files import atomic_write
from catalog.html import display_u8, document, esc, img_tag, reduce_u8, thumbnail_png
from catalog.ids import new_run_id
from catalog.pixel_budget import PixelsRefused
from catalog.pixels import encode_png
from catalog.schema import DUPS, LEAKAGE, QUALITY, empty_select
from catalog.store import ImageStore
from catalog.unreadable import Unreadable
from catalog.workspace import Workspace
from curation.cluster_gallery import clusters_section
from curation.dedup import crop_match, keypoints
from curation.report_unreadable import unreadable_section
from curation.run import CurateConfig, resolve_config

TABLES = {"dups": DUPS, "quality": QUALITY, "leakage": LEAKAGE}
METHOD_NAMES = {"embedding": "global signature", "embedding_flip": "mirrored signature", "crop": "crop search",
                "crop_flip": "mirrored crop search"}
# what each quality reason measured, as a SQL value over the image row i and its pixel statistics s
REASON_VALUES = {
    "blank_image": ("grey levels from p1 to p99", "round((s.p99 - s.p01) * (pow(2, i.bits) - 1), 1)"),
    "too_small": ("shorter side", "least(i.rows, i.cols)"),
    "extreme_aspect": ("aspect ratio", "round(greatest(i.rows, i.cols) / least(i.rows, i.cols), 2)"),
    "saturated": ("share at the maximum", "round(s.frac_at_max, 3)"),
    "localizer": ("image kind", "i.image_kind"),
    "unknown_body_part": ("body part", "coalesce(i.body_part, 'none')"),
}


class CurationReportError(OrthoError):
    """No curation run to report, or not the one asked for."""


@dataclass(frozen=True)
class ReportLimits:
    groups: int = 36  # near-duplicate groups shown: per method, half the most borderline, half a random draw
    members: int = 3  # images per group (the representative first, then the weakest matches)
    per_reason: int = 12  # images per quality reason (a random draw)
    file_ids: int = 20  # file ids listed per quarantine reason
    tasks: int = 12  # label tasks plotted
    side: int = 120  # a thumbnail's longer side, pixels


def curation_runs(ws: Workspace) -> list[str]:
    """The kept curation runs, oldest first (the newest is current)."""
    if not ws.curation_dir.is_dir():
        return []
    return sorted(p.name for p in ws.curation_dir.iterdir() if (p / "dups.parquet").is_file())


def reports_dir(ws: Workspace) -> Path:
    return ws.root / "reports"


def report_path(ws: Workspace, run_id: str, out_dir: str | Path | None = None) -> Path:
    return Path(out_dir or reports_dir(ws)) / f"curation-{run_id}.html"


def write_curation_report(ws: Workspace, run_id: str | None = None, out_dir: str | Path | None = None,
                          limits: ReportLimits = ReportLimits()) -> Path:
    """Render the report of `run_id` (default: the current run) to `out_dir` (default: workspace/reports)."""
    run_id, prev_id = _pick_runs(ws, run_id)
    with db.connection(ws) as con:
        run = _Run(ws, con, run_id, prev_id, limits)
        run.register_views()
        body = [*_header(run), *_changes_section(run), *_dups_section(run), *_quality_section(run),
                *_quarantine_section(run), *_splits_section(run),
                *clusters_section(con, lambda i: _thumb_tag(run, i), latest_clustered(ws))]
        body += unreadable_section(con, run.unreadable)
    run.unreadable.save(ws)
    path = report_path(ws, run_id, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, document(f"Curation {run_id}", body, CSS, SORT_SCRIPT))
    return path


def _pick_runs(ws: Workspace, run_id: str | None) -> tuple[str, str | None]:
    """(the run to report, the kept run before it or None)."""
    runs = curation_runs(ws)
    if not runs:
        raise CurationReportError("no curation run in this workspace yet: run `ortho curate` first")
    run_id = run_id or runs[-1]
    if run_id not in runs:
        raise CurationReportError(f"no curation run {run_id!r} in this workspace; kept: {', '.join(runs)}")
    i = runs.index(run_id)
    return run_id, (runs[i - 1] if i else None)


def _quoted(text: str | Path) -> str:
    return "'" + str(text).replace("'", "''") + "'"


@dataclass
class _Run:
    """One run being reported: its connection with the run's tables as views (run_*, prev_* for the run before),
    its settings, and the thumbnails drawn so far."""

    ws: Workspace
    con: object
    run_id: str
    prev_id: str | None
    limits: ReportLimits
    cfg: CurateConfig = field(default_factory=CurateConfig)
    settings_found: bool = False
    thumbs: dict = field(default_factory=dict)
    splits: list = field(default_factory=list)  # (split, patients, images, excluded, held out)
    mix: list = field(default_factory=list)  # (split, "modality body_part", images)

    def __post_init__(self):
        self.store = ImageStore(self.ws.store_dir)
        self.unreadable = Unreadable("report", new_run_id())
        self.cfg, self.settings_found = _settings(self.ws, self.run_id)

    def rows(self, sql: str, params: dict | list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def value(self, sql: str, params: dict | list | None = None):
        return self.rows(sql, params)[0][0]

    def register_views(self) -> None:
        for prefix, rid in (("run", self.run_id), ("prev", self.prev_id)):
            for name, schema in TABLES.items():
                path = self.ws.curation_dir / rid / f"{name}.parquet" if rid else None
                src = f"read_parquet({_quoted(path)})" if path and path.is_file() else f"({empty_select(schema)})"
                self.con.execute(f"CREATE TEMP VIEW {prefix}_{name} AS SELECT * FROM {src}")
        self.con.execute(f"CREATE TEMP VIEW run_splits AS SELECT * FROM splits WHERE run_id <= {_quoted(self.run_id)}")
        self.con.execute(RUN_IMAGES)
        self.con.execute(RUN_META)
        rows = self.rows(SPLIT_COUNTS)
        self.splits = [(s, *counts) for s, _, whole, *counts in rows if whole]  # split, patients, images, ...
        self.mix = [(s, kind, n) for s, kind, whole, _, n, *_ in rows if not whole]

    def thumb(self, image_id: str) -> bytes | None:
        if image_id not in self.thumbs:
            pixels = self.pixels(image_id)
            self.thumbs[image_id] = None if pixels is None else thumbnail_png(pixels, self.limits.side)
        return self.thumbs[image_id]

    def pixels(self, image_id: str) -> np.ndarray | None:
        try:
            return self.store.open(image_id)
        except PixelsRefused as e:  # the stage's firewall: no thumbnail, recorded with its reason
            self.unreadable.add(image_id, e.reason)
            return None


def _settings(ws: Workspace, run_id: str) -> tuple[CurateConfig, bool]:
    path = ws.curation_dir / run_id / "settings.yaml"
    return (resolve_config(file=path), True) if path.is_file() else (CurateConfig(), False)


# Each image with the run's split and decisions (the `images` view's own columns follow the current run).
RUN_IMAGES = """CREATE TEMP VIEW run_images AS
    SELECT i.image_id, i.patient_key, i.modality, i.body_part, coalesce(sp.split, 'unassigned') AS split,
           (coalesce(NOT d.representative, false) OR q.image_id IS NOT NULL) AS excluded,
           l.image_id IS NOT NULL AS leaked
    FROM images i
    LEFT JOIN run_splits sp ON sp.patient_key = i.patient_key
    LEFT JOIN run_dups d ON d.image_id = i.image_id
    LEFT JOIN (SELECT DISTINCT image_id FROM run_quality WHERE excluding) q ON q.image_id = i.image_id
    LEFT JOIN run_leakage l ON l.image_id = i.image_id"""

# The catalog columns the cards show, of the images the run grouped or flagged only: read from `images` once.
RUN_META = """CREATE TEMP TABLE run_meta AS
    SELECT i.image_id, i.source, i.modality, i.body_part, i.laterality, i.series_key, i.image_kind, i.bits, i.rows,
           i.cols, coalesce(sp.split, 'unassigned') AS split
    FROM images i LEFT JOIN run_splits sp ON sp.patient_key = i.patient_key
    WHERE i.image_id IN (SELECT image_id FROM run_dups UNION SELECT image_id FROM run_quality)"""

# Per split, and per split, modality and body part: patients, images, excluded, held out; one pass over images.
SPLIT_COUNTS = """SELECT split, coalesce(modality, '?') || ' ' || coalesce(body_part, '?'), grouping(modality) = 1,
                         count(DISTINCT patient_key), count(*), count(*) FILTER (WHERE excluded),
                         count(*) FILTER (WHERE leaked)
                  FROM run_images GROUP BY GROUPING SETS ((split), (split, modality, body_part)) ORDER BY ALL"""


# ---------------------------------------------------------------------------------------------------- header

def _header(run: _Run) -> list[str]:
    images, excluded, held_out = (sum(r[k] for r in run.splits) for k in (2, 3, 4))
    unassigned = sum(r[2] for r in run.splits if r[0] == "unassigned")
    groups = run.value("SELECT count(DISTINCT dup_group) FROM run_dups")
    return [f"<h1>Curation {esc(run.run_id)}</h1>",
            (f"<p class=meta>{images:,} images in the catalog · {groups:,} near-duplicate groups · {excluded:,} "
            f"excluded from training selections · {held_out:,} held out by the leakage guard · {unassigned:,} "
            "without a split (no patient key, or ingested after this run)</p>"),
            _settings_line(run), _limits_line(run.limits), NAV]


def _settings_line(run: _Run) -> str:
    d, q = run.cfg.dedup, run.cfg.quality
    missing = "" if run.settings_found else " (its settings.yaml is missing: the defaults are shown)"
    return (f"<p class=meta>Settings of this run{missing}: global signature cosine &ge; {d.threshold:g} (slices of "
            f"one series &ge; {d.same_series_threshold:g}; mirrored queries {'on' if d.use_flip else 'off'}); crop "
            f"search {'on' if d.crops.enabled else 'off'}, aligned-overlap cosine &ge; {d.crops.threshold:g}; "
            f"excluding reasons: {esc(', '.join(q.exclude) or 'none')}.</p>")


def _limits_line(lim: ReportLimits) -> str:
    return (f"<p class=meta>Sampled so the page stays small at any catalog size: at most {lim.groups} near-duplicate "
            f"groups (taken in turn from each method's most borderline and a random draw), {lim.members} images each; "
            f"{lim.per_reason} images per quality reason (a random draw); {lim.file_ids} file ids per quarantine "
            f"reason; thumbnails {lim.side} px. Counts are always of the whole catalog.</p>")


NAV = ("<p class=meta><a href='#changes'>changes</a> · <a href='#dups'>near-duplicates</a> · "
       "<a href='#quality'>quality</a> · <a href='#quarantine'>quarantine</a> · <a href='#splits'>splits</a> · "
       "<a href='#clusters'>embedding clusters</a></p>")


# --------------------------------------------------------------------------------------------------- changes

def _changes_section(run: _Run) -> list[str]:
    out = ["<h2 id=changes>Changes since the previous curation</h2>"]
    if run.prev_id is None:
        earlier = run.value(f"SELECT count(*) FROM splits WHERE run_id < {_quoted(run.run_id)}")
        out.append("<p class=meta>" + ("The previous run's tables are no longer kept (the workspace keeps the "
                                       "last three runs)." if earlier else "First curation.") + "</p>")
        return out + _new_patients_table(run)
    out.append(f"<p class=meta>Against run <code>{esc(run.prev_id)}</code>.</p>")
    out.append("<table id=changes-table><tr><th>what</th><th>before</th><th>now</th><th>added</th>"
               "<th>removed</th></tr>")
    out += [f"<tr><td>{esc(what)}</td>" + "".join(f"<td class=num>{v:,}</td>" for v in values) + "</tr>"
            for what, *values in _change_rows(run)]
    out.append("</table>")
    return out + _new_patients_table(run) + _settings_changes(run)


def _set_change(run: _Run, what: str, select: str) -> tuple:
    """(what, before, now, added, removed) of the rows `select` gives over {p}_ tables, prev against run."""
    before, now = select.format(p="prev"), select.format(p="run")
    return (what, *run.rows(f"""SELECT (SELECT count(*) FROM ({before})), (SELECT count(*) FROM ({now})),
                                       (SELECT count(*) FROM ({now} EXCEPT {before})),
                                       (SELECT count(*) FROM ({before} EXCEPT {now}))""")[0])


def _change_rows(run: _Run) -> list[tuple]:
    rows = [_set_change(run, "near-duplicate groups (by their members)",
                        "SELECT list(image_id ORDER BY image_id) FROM {p}_dups GROUP BY dup_group"),
            _set_change(run, "images in a group", "SELECT image_id FROM {p}_dups"),
            _set_change(run, "near-duplicates (not representative)",
                        "SELECT image_id FROM {p}_dups WHERE NOT representative"),
            _set_change(run, "images excluded", "SELECT image_id FROM {p}_dups WHERE NOT representative "
                                                "UNION SELECT image_id FROM {p}_quality WHERE excluding"),
            _set_change(run, "held out by the leakage guard", "SELECT image_id FROM {p}_leakage")]
    reasons = [r for (r,) in run.rows("SELECT DISTINCT reason FROM (SELECT reason FROM run_quality UNION "
                                      "SELECT reason FROM prev_quality) ORDER BY 1")]
    for r in reasons:
        rows.append(_set_change(run, f"quality: {r}", f"SELECT image_id FROM {{p}}_quality WHERE reason = {_quoted(r)}"))
    return rows


def _new_patients_table(run: _Run) -> list[str]:
    """Patients per split before and after the run (a patient's split never changes, so none is removed)."""
    rows = run.rows(f"""SELECT split, count(*) FILTER (WHERE run_id < {_quoted(run.run_id)}),
                               count(*), count(*) FILTER (WHERE run_id = {_quoted(run.run_id)})
                        FROM run_splits GROUP BY ALL ORDER BY ALL""")
    if not rows:
        return []
    return ([("<table id=split-changes><tr><th>split</th><th>patients before</th><th>now</th>"
             "<th>added by this run</th></tr>")]
            + [f"<tr><td>{esc(s)}</td><td class=num>{b:,}</td><td class=num>{n:,}</td><td class=num>{a:,}</td></tr>"
               for s, b, n, a in rows]
            + ["</table><p class=meta>A patient's split is decided once and never changes.</p>"])


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _settings_changes(run: _Run) -> list[str]:
    now = _flat(to_dict(run.cfg))
    before = _flat(to_dict(_settings(run.ws, run.prev_id)[0]))
    changed = [(k, before.get(k), now.get(k)) for k in sorted(set(now) | set(before)) if before.get(k) != now.get(k)]
    if not changed:
        return ["<p class=meta>Settings unchanged.</p>"]
    return ["<p class=meta>Settings changed: " + "; ".join(f"<code>{esc(k)}</code> {esc(b)} &rarr; {esc(n)}"
                                                           for k, b, n in changed) + ".</p>"]


# ------------------------------------------------------------------------------------------- near-duplicates

# Each grouped image with the threshold its recorded match had to reach and what the card shows of it.
DUP_EVIDENCE = """CREATE TEMP TABLE dup_evidence AS
    SELECT d.image_id, d.dup_group, d.representative, d.group_size, d.matched_image_id, d.method, d.similarity,
           CASE WHEN d.method IN ('crop', 'crop_flip') THEN $crop
                WHEN i.series_key IS NOT NULL AND i.series_key = j.series_key THEN $same ELSE $global END AS threshold,
           i.source, i.bits, i.rows, i.cols, i.laterality, i.modality, i.split
    FROM run_dups d
    LEFT JOIN run_meta i ON i.image_id = d.image_id
    LEFT JOIN run_meta j ON j.image_id = d.matched_image_id"""

# Per group its weakest evidence (the member whose best match is closest to its threshold), then the sample, taken
# in turn up to the limit: each method's most borderline group, each one's first random draw (md5 order: the same on
# every run), each one's second most borderline, ...
DUP_SAMPLE = """CREATE TEMP TABLE shown_groups AS
    WITH g AS (SELECT dup_group, count(*) AS size, min(similarity - threshold) AS margin,
                      arg_min(method, similarity - threshold) AS method
               FROM dup_evidence GROUP BY dup_group),
    r AS (SELECT *, row_number() OVER (PARTITION BY method ORDER BY margin, dup_group) AS by_margin,
                    row_number() OVER (PARTITION BY method ORDER BY md5(dup_group)) AS by_draw FROM g)
    SELECT dup_group, size, margin, method, by_margin <= by_draw AS borderline FROM r
    ORDER BY least(by_margin, by_draw), by_margin > by_draw, margin, dup_group LIMIT $limit"""

DUP_MEMBERS = """SELECT image_id, dup_group, representative, matched_image_id, method, similarity, threshold,
                        source, bits, rows, cols, laterality, modality, split
                 FROM dup_evidence WHERE dup_group IN (SELECT dup_group FROM shown_groups)
                 QUALIFY row_number() OVER (PARTITION BY dup_group
                                            ORDER BY NOT representative, similarity - threshold, image_id) <= $members
                 ORDER BY dup_group, NOT representative, similarity - threshold, image_id"""


def _dups_section(run: _Run) -> list[str]:
    d = run.cfg.dedup
    run.con.execute(DUP_EVIDENCE, {"crop": d.crops.threshold, "same": d.same_series_threshold,
                                   "global": d.threshold})
    out = ["<h2 id=dups>Near-duplicate groups</h2>"]
    stats = run.rows("""SELECT method, count(*), count(DISTINCT dup_group), min(similarity), median(similarity),
                               max(similarity), min(threshold) FROM dup_evidence GROUP BY ALL ORDER BY ALL""")
    if not stats:
        return out + ["<p class=meta>No near-duplicate groups in this run.</p>"]
    out += _method_table(stats)
    out.append(img_tag(_similarity_plot(run, stats), "similarity against threshold, per method"))
    run.con.execute(DUP_SAMPLE, {"limit": run.limits.groups})
    shown = {g: (size, margin, method, borderline)
             for g, size, margin, method, borderline in run.rows("SELECT * FROM shown_groups")}
    members: dict[str, list[tuple]] = {}
    for row in run.rows(DUP_MEMBERS, {"members": run.limits.members}):
        members.setdefault(row[1], []).append(row)
    total = run.value("SELECT count(DISTINCT dup_group) FROM dup_evidence")
    out.append(f"<p class=meta>{len(shown)} of {total:,} groups shown; <b>margin</b> = a match's similarity "
               "minus the threshold it had to reach (small = borderline). Sort: " + SORT_BUTTONS + "</p>")
    cards = [_group_card(run, g, *shown[g], members[g])
             for g in sorted(shown, key=lambda g: (shown[g][1], g))]
    return out + ["<div id=groups>", *cards, "</div>"]


def _method_table(stats: list[tuple]) -> list[str]:
    rows = [f"<tr><td>{esc(METHOD_NAMES.get(m, m))}</td><td class=num>{n:,}</td><td class=num>{g:,}</td>"
            f"<td class=num>{lo:.3f}</td><td class=num>{med:.3f}</td><td class=num>{hi:.3f}</td>"
            f"<td class=num>{thr:g}</td></tr>" for m, n, g, lo, med, hi, thr in stats]
    return [("<table id=dup-methods><tr><th>evidence (each image's best match)</th><th>images</th><th>groups</th>"
            "<th>min</th><th>median</th><th>max</th><th>threshold</th></tr>"), *rows, "</table>"]


def _similarity_plot(run: _Run, stats: list[tuple]) -> bytes:
    plt = _pyplot()
    bins = run.rows("""SELECT method, least(floor(similarity * 50), 49) / 50 AS lo, count(*)
                       FROM dup_evidence GROUP BY ALL ORDER BY ALL""")
    fig, axes = plt.subplots(1, len(stats), figsize=(3.3 * len(stats), 2.4), squeeze=False)
    for ax, (method, *_, thr) in zip(axes[0], stats):
        xs = [(lo, n) for m, lo, n in bins if m == method]
        ax.bar([x for x, _ in xs], [n for _, n in xs], width=0.02, align="edge", color="#4a6fa5")
        ax.axvline(thr, color="#c0392b", linestyle="--", linewidth=1)
        ax.set_xlim(max(0.0, thr - 0.1), 1.0)
        ax.set_title(f"{METHOD_NAMES.get(method, method)} (threshold {thr:g})", fontsize=8)
        ax.set_xlabel("similarity of each image's best match", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("images", fontsize=7)
    return _png(fig)


def _group_card(run: _Run, group: str, size: int, margin: float, method: str, borderline: bool,
                members: list[tuple]) -> str:
    figures = [_member_figure(run, m) for m in members]
    crop = next((m for m in members if m[4] in ("crop", "crop_flip")), None)
    if crop is not None:
        figures.append(_alignment_figure(run, crop[0], crop[3], crop[5], mirrored=crop[4] == "crop_flip"))
    more = f" · {size - len(members)} more not shown" if size > len(members) else ""
    return (f"<div class=group data-group='{esc(group)}' data-margin='{margin:.6f}' data-size='{size}' "
            f"data-method='{esc(method)}'><div class=ghead><b>group {esc(group[:12])}</b> · {size} images{more} · "
            f"weakest evidence: {esc(METHOD_NAMES.get(method, method))}, margin {margin:+.3f} · "
            f"{'borderline' if borderline else 'random draw'}</div><div class=members>{''.join(figures)}</div></div>")


def _member_figure(run: _Run, m: tuple) -> str:
    image_id, _, rep, matched, method, sim, thr, source, bits, rows, cols, lat, modality, split = m
    about = (f"{esc(source)} · {esc(modality or '?')} · {bits}-bit {cols}&times;{rows}"
             + (f" · {esc(lat)}" if lat else "") + f" · {esc(split)}" if source else "no longer in the catalog")
    caption = (f"<b>{'representative' if rep else 'near-duplicate'}</b> {esc(image_id[:12])}<br>{about}<br>"
               f"{esc(METHOD_NAMES.get(method, method))} {sim:.3f} (&ge; {thr:g}) &rarr; {esc((matched or '')[:12])}")
    return f"<figure>{_thumb_tag(run, image_id)}<figcaption>{caption}</figcaption></figure>"


def _thumb_tag(run: _Run, image_id: str) -> str:
    return img_tag(run.thumb(image_id), image_id[:12]) or "<div class=missing>pixels not in the store</div>"


def _alignment_figure(run: _Run, x: str, y: str, recorded: float, mirrored: bool = False) -> str:
    """The crop search's evidence for the pair (x, y), recomputed from their stored keypoints: the smaller id's
    image (mirrored, for a mirrored match) mapped onto the other's frame (as the search does), both cut to the
    aligned overlap."""
    a, b = sorted((x, y))
    found = _alignment(run, a, b, mirrored)
    if found is None:
        return ("<figure><div class=missing>alignment not reproduced from the stored keypoints</div>"
                "<figcaption>aligned overlap</figcaption></figure>")
    mapped, cut, mat, rect, cosine = found
    scale = float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))  # an affine map's mean scale
    angle = float(np.degrees(np.arctan2(mat[1, 0] - mat[0, 1], mat[0, 0] + mat[1, 1])))  # of the nearest rotation
    return (f"<figure class=overlap>{img_tag(mapped, 'aligned overlap, mapped')}{img_tag(cut, 'aligned overlap')}"
            f"<figcaption><b>aligned overlap</b> {esc(a[:12])}{' mirrored' if mirrored else ''} mapped onto "
            f"{esc(b[:12])}: scale {scale:.2f}, "
            f"rotation {angle:+.1f}&deg;, {rect[4]:.0%} of the smaller image; texture cosine {cosine:.3f} "
            f"(recomputed here; the run recorded {recorded:.3f})</figcaption></figure>")


def _alignment(run: _Run, a: str, b: str, mirrored: bool = False):
    """(PNG of a mapped onto b's overlap, PNG of b's overlap, the 2x3 transform, the overlap rect, the aligned
    texture cosine), or None when the transform is not found again."""
    kp = {i: (np.frombuffer(k, np.float32).reshape(-1, 4), np.frombuffer(d, np.uint8).reshape(-1, keypoints.DESC))
          for i, k, d in run.rows("SELECT image_id, kp, \"desc\" FROM keypoints WHERE image_id IN (?, ?) AND n > 0", [a, b])}
    pa, pb = run.pixels(a), run.pixels(b)
    if len(kp) < 2 or pa is None or pb is None:
        return None
    cfg = run.cfg.dedup.crops
    (pts_a, desc_a), (pts_b, desc_b) = kp[a], kp[b]
    if mirrored:  # as the mirrored pass casts its votes: a's descriptors and points mirrored
        pa, pts_a, desc_a = np.ascontiguousarray(pa[:, ::-1]), keypoints.mirrored(pts_a, pa.shape[1]), desc_a[:, keypoints.MIRROR]
    ua, ub = (d.astype(np.float32) / np.maximum(np.linalg.norm(d.astype(np.float32), axis=1, keepdims=True), 1e-6)
              for d in (desc_a, desc_b))
    qa, jb = np.nonzero(ua @ ub.T >= cfg.descriptor_similarity)  # the pair's votes, as the search casts them
    mat = crop_match.transform(pts_a[qa, :2], pts_b[jb, :2], cfg, tol_px=0.012 * max(pb.shape))
    rect = None if mat is None else crop_match.overlap_rect(pa.shape, pb.shape, mat)
    if rect is None:
        return None
    cosine = crop_match.aligned_similarity(pa, pb, mat, rect)
    return (*_overlap_pngs(pa, pb, mat, rect, run.limits.side), mat, rect, cosine)


def _overlap_pngs(pa: np.ndarray, pb: np.ndarray, mat: np.ndarray, rect: tuple, side: int) -> tuple[bytes, bytes]:
    """A warped into B's frame and B, both cut to the overlap, drawn at `side` pixels."""
    import cv2

    x0, y0, x1, y1 = (int(v + 0.5) for v in rect[:4])
    ua, ub = display_u8(pa), display_u8(pb)
    mapped = cv2.warpAffine(ua, mat.astype(np.float64), (pb.shape[1], pb.shape[0]), flags=cv2.INTER_LINEAR)
    return tuple(encode_png(reduce_u8(np.ascontiguousarray(u[y0:y1, x0:x1]), side), compress_level=3)
                 for u in (mapped, ub))


# --------------------------------------------------------------------------------------------------- quality

def _quality_section(run: _Run) -> list[str]:
    out = ["<h2 id=quality>Quality flags</h2>"]
    reasons = run.rows("SELECT reason, bool_or(excluding), count(*) FROM run_quality GROUP BY ALL ORDER BY ALL")
    if not reasons:
        return out + ["<p class=meta>No image flagged by a quality filter.</p>"]
    out += ["<table id=quality-table><tr><th>reason</th><th>images</th><th>effect</th></tr>"]
    out += [f"<tr><td>{esc(r)}</td><td class=num>{n:,}</td><td>{'excluded' if ex else 'flag only'}</td></tr>"
            for r, ex, n in reasons]
    out.append("</table>")
    for reason, excluding, n in reasons:
        out += _reason_gallery(run, reason, excluding, n)
    return out


def _reason_gallery(run: _Run, reason: str, excluding: bool, n: int) -> list[str]:
    label, value = REASON_VALUES.get(reason, ("value", "NULL"))
    rows = run.rows(f"""SELECT q.image_id, i.source, i.modality, i.body_part, i.bits, i.rows, i.cols, {value}
                        FROM run_quality q JOIN run_meta i USING (image_id) LEFT JOIN signatures s USING (image_id)
                        WHERE q.reason = ? ORDER BY md5(q.image_id) LIMIT ?""", [reason, run.limits.per_reason])
    figures = [f"<figure>{_thumb_tag(run, i)}<figcaption>{esc(i[:12])}<br>{esc(src)} · {esc(mod)} · {esc(part)} · {bits}-bit "
               f"{cols}&times;{rows}<br>{esc(label)}: {esc(v)}</figcaption></figure>"
               for i, src, mod, part, bits, rows, cols, v in rows]
    return [(f"<h3 id='quality-{esc(reason)}'>{esc(reason)} <span class=meta>({n:,} images, "
            f"{'excluded' if excluding else 'flag only: not excluded'}; {len(rows)} shown)</span></h3>"),
            f"<div class=gallery data-reason='{esc(reason)}'>{''.join(figures)}</div>"]


# ------------------------------------------------------------------------------------------------ quarantine

def _quarantine_section(run: _Run) -> list[str]:
    status = run.rows("SELECT status, count(*) FROM files GROUP BY ALL ORDER BY ALL")
    out = ["<h2 id=quarantine>Input files and quarantine</h2>",
           "<p class=meta>Files by status (ingest's decisions, as the catalog holds them now): "
           + (" · ".join(f"{esc(s)} {n:,}" for s, n in status) or "no files") + ". A file is named by its file id; "
           "<code>ortho lineage FILE_ID</code> shows where it came from to whoever may see the private lineage.</p>"]
    rows = run.rows("""SELECT reason, count(*), string_agg(DISTINCT source, ', ' ORDER BY source),
                              list(file_id ORDER BY file_id)[1:$n]
                       FROM files WHERE status = 'quarantined' GROUP BY reason ORDER BY 2 DESC, 1""",
                    {"n": run.limits.file_ids})
    if not rows:
        return out + ["<p class=meta>No file quarantined.</p>"]
    out.append("<table id=quarantine-table><tr><th>reason</th><th>files</th><th>sources</th><th>file ids</th></tr>")
    for reason, n, sources, ids in rows:
        more = f" <span class=meta>and {n - len(ids):,} more</span>" if n > len(ids) else ""
        out.append(f"<tr><td>{esc(reason)}</td><td class=num>{n:,}</td><td>{esc(sources)}</td>"
                   f"<td><code>{' '.join(esc(i) for i in ids)}</code>{more}</td></tr>")
    return out + ["</table>"]


# ---------------------------------------------------------------------------------------------------- splits

def _splits_section(run: _Run) -> list[str]:
    counts = run.splits
    out = ["<h2 id=splits>Splits</h2>"]
    if not counts:
        return out + ["<p class=meta>The catalog holds no images.</p>"]
    out += [("<table id=split-table><tr><th>split</th><th>patients</th><th>images</th><th>excluded</th>"
            "<th>held out by the leakage guard</th></tr>")]
    out += [f"<tr><td>{esc(s)}</td>" + "".join(f"<td class=num>{v:,}</td>" for v in vals) + "</tr>"
            for s, *vals in counts]
    out.append("</table>")
    labels = run.rows("""SELECT l.task, r.split, l.value, count(DISTINCT l.image_id) FROM labels l
                         JOIN run_images r USING (image_id) GROUP BY ALL ORDER BY ALL""")
    out.append(img_tag(_split_counts_plot(counts), "patients and images per split"))
    out += _labels_table(labels)
    out.append(img_tag(_labels_plot(labels, run.limits.tasks), "labels per class and split"))
    out.append(img_tag(_mix_plot(run.mix), "modality and body part per split"))
    return out


def _labels_table(labels: list[tuple]) -> list[str]:
    by: dict[tuple[str, str], list[str]] = {}
    for task, split, value, n in labels:
        by.setdefault((task, split), []).append(f"{esc(value)}: {n:,}")
    if not by:
        return ["<p class=meta>No labels.</p>"]
    return (["<table id=label-table><tr><th>task</th><th>split</th><th>labelled images per class</th></tr>"]
            + [f"<tr><td>{esc(t)}</td><td>{esc(s)}</td><td>{' · '.join(v)}</td></tr>" for (t, s), v in by.items()]
            + ["</table>"])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    data = figure_png(fig, dpi=100)
    _pyplot().close(fig)
    return data


def _split_counts_plot(counts: list[tuple]) -> bytes:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.4))
    names = [c[0] for c in counts]
    for ax, col, title in ((axes[0], 1, "patients"), (axes[1], 2, "images")):
        bars = ax.bar(names, [c[col] for c in counts], color="#4a6fa5")
        ax.bar_label(bars, fontsize=7)
        ax.set_title(f"{title} per split", fontsize=9)
        ax.tick_params(labelsize=8)
    return _png(fig)


def _labels_plot(labels: list[tuple], max_tasks: int) -> bytes | None:
    """Per task, each split's labelled images as a bar stacked by class (share of the split)."""
    tasks = sorted({t for t, *_ in labels})[:max_tasks]
    if not tasks:
        return None
    plt = _pyplot()
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
    return _png(fig)


def _mix_plot(mix: list[tuple], top: int = 8) -> bytes:
    """Each split's images stacked by modality and body part (the `top` most common; the rest as other)."""
    plt = _pyplot()
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
    return _png(fig)


CSS = """
.group{border:1px solid #dde;border-radius:6px;margin:.6rem 0;padding:.4rem .6rem}
.ghead{font-size:.85rem;margin-bottom:.3rem} .members,.gallery{display:flex;flex-wrap:wrap;gap:.6rem}
figure{margin:0;max-width:250px} figure img{display:block;margin:0 0 .2rem 0;background:#000}
figure.overlap img{display:inline-block;margin-right:.2rem} figcaption{font-size:.72rem;color:#4a5263}
.missing{width:120px;height:120px;background:#f1f3f8;font-size:.7rem;display:flex;align-items:center;
text-align:center} button{font-size:.8rem;margin:0 .2rem} h3{font-size:1rem;margin-top:1.2rem}
"""

SORT_BUTTONS = ("<button onclick=\"sortGroups('margin',1)\">borderline first</button>"
                "<button onclick=\"sortGroups('margin',-1)\">strongest first</button>"
                "<button onclick=\"sortGroups('size',-1)\">largest first</button>"
                "<button onclick=\"sortGroups('method',1)\">by method</button>")

SORT_SCRIPT = """
function sortGroups(key, dir) {
  const box = document.getElementById('groups');
  const value = e => key === 'method' ? e.dataset.method : parseFloat(e.dataset[key]);
  const cmp = (a, b) => { const x = value(a), y = value(b);
    return (x < y ? -dir : x > y ? dir : 0) || parseFloat(a.dataset.margin) - parseFloat(b.dataset.margin); };
  Array.from(box.children).sort(cmp).forEach(e => box.appendChild(e));
}
"""
