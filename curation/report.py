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

from pathlib import Path

from catalog import db
from catalog.config import to_dict
from catalog.embeddings import latest_clustered
from catalog.errors import OrthoError
from catalog.files import atomic_write
from catalog.html import document, esc, img_tag
from catalog.workspace import Workspace
from curation.cluster_gallery import clusters_section
from curation.report_dups import dups_section
from curation.report_plots import labels_plot, mix_plot, split_counts_plot
from curation.report_run import ReportLimits, ReportRun, quoted, run_settings
from curation.report_unreadable import unreadable_section

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


def curation_runs(ws: Workspace) -> list[str]:
    """The kept curation runs, oldest first (the newest is current)."""
    if not ws.curation_dir.is_dir():
        return []
    return sorted(p.name for p in ws.curation_dir.iterdir() if (p / "dups.parquet").is_file())


def report_path(ws: Workspace, run_id: str, out_dir: str | Path | None = None) -> Path:
    return Path(out_dir or ws.reports_dir) / f"curation-{run_id}.html"


def write_curation_report(ws: Workspace, run_id: str | None = None, out_dir: str | Path | None = None,
                          limits: ReportLimits = ReportLimits()) -> Path:
    """Render the report of `run_id` (default: the current run) to `out_dir` (default: workspace/reports)."""
    run_id, prev_id = _pick_runs(ws, run_id)
    with db.connection(ws) as con:
        run = ReportRun(ws, con, run_id, prev_id, limits)
        run.register_views()
        body = [*_header(run), *_changes_section(run), *dups_section(run), *_quality_section(run),
                *_quarantine_section(run), *_splits_section(run),
                *clusters_section(con, run.thumb_tag, latest_clustered(ws))]
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


def _header(run: ReportRun) -> list[str]:
    images, excluded, held_out = (sum(r[k] for r in run.splits) for k in (2, 3, 4))
    unassigned = sum(r[2] for r in run.splits if r[0] == "unassigned")
    groups = run.value("SELECT count(DISTINCT dup_group) FROM run_dups")
    return [f"<h1>Curation {esc(run.run_id)}</h1>",
            (f"<p class=meta>{images:,} images in the catalog · {groups:,} near-duplicate groups · {excluded:,} "
            f"excluded from training selections · {held_out:,} held out by the leakage guard · {unassigned:,} "
            "without a split (no patient key, or ingested after this run)</p>"),
            _settings_line(run), _limits_line(run.limits), NAV]


def _settings_line(run: ReportRun) -> str:
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


def _changes_section(run: ReportRun) -> list[str]:
    out = ["<h2 id=changes>Changes since the previous curation</h2>"]
    if run.prev_id is None:
        earlier = run.value(f"SELECT count(*) FROM splits WHERE run_id < {quoted(run.run_id)}")
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


def _set_change(run: ReportRun, what: str, select: str) -> tuple:
    """(what, before, now, added, removed) of the rows `select` gives over {p}_ tables, prev against run."""
    before, now = select.format(p="prev"), select.format(p="run")
    return (what, *run.rows(f"""SELECT (SELECT count(*) FROM ({before})), (SELECT count(*) FROM ({now})),
                                       (SELECT count(*) FROM ({now} EXCEPT {before})),
                                       (SELECT count(*) FROM ({before} EXCEPT {now}))""")[0])


def _change_rows(run: ReportRun) -> list[tuple]:
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
        rows.append(_set_change(run, f"quality: {r}", f"SELECT image_id FROM {{p}}_quality WHERE reason = {quoted(r)}"))
    return rows


def _new_patients_table(run: ReportRun) -> list[str]:
    """Patients per split before and after the run (a patient's split never changes, so none is removed)."""
    rows = run.rows(f"""SELECT split, count(*) FILTER (WHERE run_id < {quoted(run.run_id)}),
                               count(*), count(*) FILTER (WHERE run_id = {quoted(run.run_id)})
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


def _settings_changes(run: ReportRun) -> list[str]:
    now = _flat(to_dict(run.cfg))
    before = _flat(to_dict(run_settings(run.ws, run.prev_id)[0]))
    changed = [(k, before.get(k), now.get(k)) for k in sorted(set(now) | set(before)) if before.get(k) != now.get(k)]
    if not changed:
        return ["<p class=meta>Settings unchanged.</p>"]
    return ["<p class=meta>Settings changed: " + "; ".join(f"<code>{esc(k)}</code> {esc(b)} &rarr; {esc(n)}"
                                                           for k, b, n in changed) + ".</p>"]


def _quality_section(run: ReportRun) -> list[str]:
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


def _reason_gallery(run: ReportRun, reason: str, excluding: bool, n: int) -> list[str]:
    label, value = REASON_VALUES.get(reason, ("value", "NULL"))
    rows = run.rows(f"""SELECT q.image_id, i.source, i.modality, i.body_part, i.bits, i.rows, i.cols, {value}
                        FROM run_quality q JOIN run_meta i USING (image_id) LEFT JOIN signatures s USING (image_id)
                        WHERE q.reason = ? ORDER BY md5(q.image_id) LIMIT ?""", [reason, run.limits.per_reason])
    figures = [f"<figure>{run.thumb_tag(i)}<figcaption>{esc(i[:12])}<br>{esc(src)} · {esc(mod)} · {esc(part)} · {bits}-bit "
               f"{cols}&times;{rows}<br>{esc(label)}: {esc(v)}</figcaption></figure>"
               for i, src, mod, part, bits, rows, cols, v in rows]
    return [(f"<h3 id='quality-{esc(reason)}'>{esc(reason)} <span class=meta>({n:,} images, "
            f"{'excluded' if excluding else 'flag only: not excluded'}; {len(rows)} shown)</span></h3>"),
            f"<div class=gallery data-reason='{esc(reason)}'>{''.join(figures)}</div>"]


def _quarantine_section(run: ReportRun) -> list[str]:
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


def _splits_section(run: ReportRun) -> list[str]:
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
    out.append(img_tag(split_counts_plot(counts), "patients and images per split"))
    out += _labels_table(labels)
    out.append(img_tag(labels_plot(labels, run.limits.tasks), "labels per class and split"))
    out.append(img_tag(mix_plot(run.mix), "modality and body part per split"))
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


CSS = """
.group{border:1px solid #dde;border-radius:6px;margin:.6rem 0;padding:.4rem .6rem}
.ghead{font-size:.85rem;margin-bottom:.3rem} .members,.gallery{display:flex;flex-wrap:wrap;gap:.6rem}
figure{margin:0;max-width:250px} figure img{display:block;margin:0 0 .2rem 0;background:#000}
figure.overlap img{display:inline-block;margin-right:.2rem} figcaption{font-size:.72rem;color:#4a5263}
.missing{width:120px;height:120px;background:#f1f3f8;font-size:.7rem;display:flex;align-items:center;
text-align:center} button{font-size:.8rem;margin:0 .2rem} h3{font-size:1rem;margin-top:1.2rem}
"""


SORT_SCRIPT = """
function sortGroups(key, dir) {
  const box = document.getElementById('groups');
  const value = e => key === 'method' ? e.dataset.method : parseFloat(e.dataset[key]);
  const cmp = (a, b) => { const x = value(a), y = value(b);
    return (x < y ? -dir : x > y ? dir : 0) || parseFloat(a.dataset.margin) - parseFloat(b.dataset.margin); };
  Array.from(box.children).sort(cmp).forEach(e => box.appendChild(e));
}
"""
