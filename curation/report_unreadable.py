"""The curation report's section on images a stage could not open (catalog/unreadable.py): per stage and reason,
how many images of the catalog were left out, and the thumbnails this report itself could not draw."""

from __future__ import annotations

from catalog.html import esc
from catalog.unreadable import BY_STAGE, Unreadable


def unreadable_section(con, drawn: Unreadable) -> list[str]:
    out = ["<h2 id=unreadable>Images that could not be read</h2>"]
    rows = con.execute(BY_STAGE).fetchall()
    mine = drawn.counts()
    if not rows and not mine:
        return out + ["<p class=meta>Every stage could open every image it needed.</p>"]
    out += ["<p class=meta>Over the pixel budget (ORTHO_MAX_PIXELS, ORTHO_MAX_DECODED_BYTES), a stored object whose "
            "PNG declares another size than the catalog, a corrupt or missing object: each stage leaves the image "
            "out with its reason and goes on. Curation excludes them (quality reason unreadable_pixels).</p>",
            "<table id=unreadable-table><tr><th>stage</th><th>reason</th><th>images</th></tr>"]
    out += [f"<tr><td>{esc(stage)}</td><td>{esc(reason)}</td><td class=num>{n:,}</td></tr>" for stage, reason, n in rows]
    out += [f"<tr><td>this report (thumbnails)</td><td>{esc(reason)}</td><td class=num>{n:,}</td></tr>"
            for reason, n in mine.items()]
    return out + ["</table>"]
