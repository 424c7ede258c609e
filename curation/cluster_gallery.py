"""The curation report's page of cluster thumbnails: what each coarse cluster of the embedding holds (ortho cluster),
by its most typical images (nearest its centroid), largest clusters first. Bounded: `max_clusters` clusters of
`per_cluster` images, whatever the catalog's size."""

from __future__ import annotations

from typing import Callable

from catalog.html import esc


def clusters_section(con, thumb_tag: Callable[[str], str], model: str | None, max_clusters: int = 12,
                     per_cluster: int = 6) -> list[str]:
    """HTML of the section for `model`'s clusters (catalog.embeddings.latest_clustered); None: how to get some."""
    out = ["<h2 id=clusters>Embedding clusters</h2>"]
    if model is None:
        return out + ["<p class=meta>No clusters yet: <code>ortho embed --checkpoint RUN</code> then "
                      "<code>ortho cluster</code> group the catalog by what its images look like.</p>"]
    level, n_clusters, n_images = con.execute(
        """SELECT level, count(DISTINCT cluster), count(*) FROM clusters
           WHERE model = ? AND level = (SELECT max(level) FROM clusters WHERE model = ?) GROUP BY level""",
        [model, model]).fetchall()[0]
    rows = con.execute(
        """WITH c AS (SELECT c.* FROM clusters c SEMI JOIN images i USING (image_id) WHERE model = ? AND level = ?),
                sized AS (SELECT cluster, count(*) AS size FROM c GROUP BY cluster
                          ORDER BY size DESC, cluster LIMIT ?)
           SELECT s.cluster, s.size, list(c.image_id ORDER BY c.distance, c.image_id)[1:?]
           FROM sized s JOIN c USING (cluster) GROUP BY ALL ORDER BY s.size DESC, s.cluster""",
        [model, level, max_clusters, per_cluster]).fetchall()
    out.append(f"<p class=meta>model {esc(model)} · level {level} (the coarsest) · {n_clusters:,} clusters of "
               f"{n_images:,} images · the {len(rows)} largest shown, each by its {per_cluster} images nearest "
               "its centroid</p>")
    for cluster, size, ids in rows:
        figures = "".join(f"<figure>{thumb_tag(i)}<figcaption>{esc(i[:12])}</figcaption></figure>" for i in ids)
        out += [f"<h3 id='cluster-{cluster}'>cluster {cluster} <span class=meta>({size:,} images)</span></h3>",
                f"<div class=gallery data-cluster='{cluster}'>{figures}</div>"]
    return out
