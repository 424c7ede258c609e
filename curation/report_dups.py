"""The curation report's near-duplicate section: groups side by side with their evidence (the method, its
similarity against the threshold it had to reach, and for the crop search the alignment recomputed from the stored
keypoints, shown as the aligned overlap), sampled per method (the most borderline and a random draw), sortable."""

from __future__ import annotations

import numpy as np

from catalog.html import display_u8, esc, img_tag, reduce_u8
from catalog.pixels import encode_png
from curation.dedup import crop_match, keypoints
from curation.report_plots import png, pyplot
from curation.report_run import ReportRun


METHOD_NAMES = {"embedding": "global signature", "embedding_flip": "mirrored signature", "crop": "crop search",
                "crop_flip": "mirrored crop search"}


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


def dups_section(run: ReportRun) -> list[str]:
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


def _similarity_plot(run: ReportRun, stats: list[tuple]) -> bytes:
    plt = pyplot()
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
    return png(fig)


def _group_card(run: ReportRun, group: str, size: int, margin: float, method: str, borderline: bool,
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


def _member_figure(run: ReportRun, m: tuple) -> str:
    image_id, _, rep, matched, method, sim, thr, source, bits, rows, cols, lat, modality, split = m
    about = (f"{esc(source)} · {esc(modality or '?')} · {bits}-bit {cols}&times;{rows}"
             + (f" · {esc(lat)}" if lat else "") + f" · {esc(split)}" if source else "no longer in the catalog")
    caption = (f"<b>{'representative' if rep else 'near-duplicate'}</b> {esc(image_id[:12])}<br>{about}<br>"
               f"{esc(METHOD_NAMES.get(method, method))} {sim:.3f} (&ge; {thr:g}) &rarr; {esc((matched or '')[:12])}")
    return f"<figure>{run.thumb_tag(image_id)}<figcaption>{caption}</figcaption></figure>"


def _alignment_figure(run: ReportRun, x: str, y: str, recorded: float, mirrored: bool = False) -> str:
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


def _alignment(run: ReportRun, a: str, b: str, mirrored: bool = False):
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


SORT_BUTTONS = ("<button onclick=\"sortGroups('margin',1)\">borderline first</button>"
                "<button onclick=\"sortGroups('margin',-1)\">strongest first</button>"
                "<button onclick=\"sortGroups('size',-1)\">largest first</button>"
                "<button onclick=\"sortGroups('method',1)\">by method</button>")
