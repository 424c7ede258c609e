"""The curation report on the phantom, curated twice (the second run adds images a quality filter excludes): its
sections hold the catalog's counts, every image is an inlined PNG of pixels only, nothing external, no path, no
planted identifying value; it renders in a headless browser; `ortho report curation` writes it."""

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from catalog import db
from catalog.workspace import Workspace
from curation.report import ReportLimits, curation_runs, write_curation_report
from curation.run import curate, resolve_config
from flows.phantom import planted_values
from ingest.run import ingest_source
from ingest.sources import Source, add_source

PNG_CHUNKS = {b"IHDR", b"IDAT", b"IEND"}


@pytest.fixture(scope="module")
def reported(phantom_workspace, tmp_path_factory):
    """The phantom workspace curated, then a source of blank, tiny and strip images (in a folder named like a
    patient) ingested and curated again with one setting changed; the report of the second run."""
    src, _ = phantom_workspace
    ws = Workspace.open(tmp_path_factory.mktemp("reported") / "ws")
    shutil.copytree(src.root, ws.root, dirs_exist_ok=True)
    curate(ws)
    folder = tmp_path_factory.mktemp("q") / "QUIMBLETON_ERMINTRUDE_19500101"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((128, 128), 77, np.uint8)).save(folder / "blank.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / "tiny.png")
    Image.fromarray(rng.integers(0, 255, (64, 600), dtype=np.uint8)).save(folder / "strip.png")
    add_source(ws, Source("q", str(folder), "public", path_pattern=r"(?P<patient>[a-z]+)\.png", body_part="knee"))
    ingest_source(ws, "q")
    curate(ws, resolve_config(["quality.saturated_fraction=0.3"]))
    return ws, folder, write_curation_report(ws)


class Page(HTMLParser):
    """Tags with their attributes, and the text of every table cell, per table id."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.tables, self._table, self._row, self._cell = [], {}, None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> dict[str, list[str]]:
        return {r[0]: r[1:] for r in self.tables[table][1:]}

    def with_class(self, tag: str, cls: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def q(ws, sql):
    return db.query(ws, sql)[1]


def num(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_sections_hold_the_runs_counts(reported):
    ws, _, path = reported
    page = Page(path.read_text())
    assert {a.get("id") for t, a in page.tags if t == "h2"} == {"changes", "dups", "quality", "quarantine", "splits",
                                                                   "clusters", "unreadable"}
    # near-duplicates: every group shown (4 < the limit), with its evidence and the crop search's aligned overlap
    cards = page.with_class("div", "group")
    assert len(cards) == q(ws, "SELECT count(DISTINCT dup_group) FROM dup_groups")[0][0] == 4
    assert sorted(c["data-method"] for c in cards) == ["crop", "crop", "embedding", "embedding"]
    margins = [float(c["data-margin"]) for c in cards]
    assert margins == sorted(margins) and min(margins) > 0  # borderline first; every match passed its threshold
    methods = page.rows("dup-methods")
    assert num(methods["crop search"][0]) == 4 and num(methods["global signature"][0]) == 4
    text = path.read_text()
    recomputed = [float(x) for x in re.findall(r"texture cosine ([0-9.]+)", text)]
    recorded = sorted(s for (s,) in q(ws, "SELECT DISTINCT similarity FROM dup_groups WHERE method = 'crop'"))
    assert len(recomputed) == 2 and np.allclose(sorted(recomputed), recorded, atol=0.02)
    # quality: each reason's count and its gallery
    quality = page.rows("quality-table")
    assert {r: num(v[0]) for r, v in quality.items()} == dict(q(ws, "SELECT reason, count(*) FROM quality GROUP BY 1"))
    assert quality["blank_image"][1] == "excluded" and quality["unknown_body_part"][1] == "flag only"
    galleries = {a["data-reason"] for a in page.with_class("div", "gallery")}
    assert galleries == set(quality)
    # quarantine: reasons, counts and file ids of the files view
    quarantined = page.rows("quarantine-table")
    expected = q(ws, "SELECT reason, count(*), list(file_id) FROM files WHERE status = 'quarantined' GROUP BY 1")
    assert {r: num(v[0]) for r, v in quarantined.items()} == {r: n for r, n, _ in expected} and len(expected) >= 5
    assert all(set(quarantined[r][2].split()) == set(ids) for r, _, ids in expected)
    # splits: patients and images per split as the catalog has them
    splits = page.rows("split-table")
    truth = q(ws, "SELECT coalesce(split, 'unassigned'), count(DISTINCT patient_key), count(*), "
                  "count(*) FILTER (WHERE excluded) FROM images GROUP BY 1")
    assert {s: [num(x) for x in v[:3]] for s, v in splits.items()} == {s: [p, n, e] for s, p, n, e in truth}
    labels = page.rows("label-table")
    assert set(labels) == {t for (t,) in q(ws, "SELECT DISTINCT task FROM labels")}


def test_the_changes_since_the_previous_run_are_counted(reported):
    ws, _, path = reported
    assert len(curation_runs(ws)) == 2
    changes = Page(path.read_text()).rows("changes-table")
    for reason in ("blank_image", "too_small", "extreme_aspect"):
        assert [num(x) for x in changes[f"quality: {reason}"]] == [0, 1, 1, 0]
    assert [num(x) for x in changes["near-duplicate groups (by their members)"]] == [4, 4, 0, 0]
    excluded = changes["images excluded"]
    assert num(excluded[1]) - num(excluded[0]) == 3 and num(excluded[2]) == 3
    added = Page(path.read_text()).rows("split-changes")
    assert sum(num(v[2]) for v in added.values()) == 3  # the new source's three patients
    assert "Settings changed: <code>quality.saturated_fraction</code> 0.25 &rarr; 0.3." in path.read_text()


def test_every_image_is_an_inlined_png_of_pixels_only_and_nothing_leaves_the_page(reported, phantom_root):
    ws, folder, path = reported
    text = path.read_text()
    page = Page(text)
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) >= 4 * 2 + 2 * 2 + 4  # group members, two aligned overlaps, plots
    for src in images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert _chunks(data) <= PNG_CHUNKS
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert min(im.size) >= 1
    assert all(a["href"].startswith("#") for _, a in page.tags if "href" in a)  # links within the page only
    assert not any("://" in v for _, a in page.tags for v in a.values() if v and not v.startswith("data:"))
    assert "http://" not in text and "https://" not in text
    lineage = [p for (p,) in db.connect(ws, private=True).execute("SELECT DISTINCT path FROM lineage").fetchall()]
    assert len(lineage) > 50
    leaked = [p for p in lineage if p in text] + [n for n in planted_values() if n.lower() in text.lower()]
    assert leaked == [] and str(phantom_root) not in text and folder.name not in text


def test_galleries_are_bounded_by_the_limits_stated_on_the_page(reported, tmp_path):
    ws, _, _ = reported
    limits = ReportLimits(groups=2, members=1, per_reason=1, file_ids=2)
    page_text = write_curation_report(ws, out_dir=tmp_path, limits=limits).read_text()
    page = Page(page_text)
    cards = page.with_class("div", "group")
    assert len(cards) == 2 and {c["data-method"] for c in cards} == {"crop", "embedding"}  # one per method
    assert "at most 2 near-duplicate groups" in page_text and "1 images per quality reason" in page_text
    assert all(len(re.findall(r"<figure>", g)) == 1 for g in re.findall(r"<div class=gallery.*?</div>", page_text))
    ids = [v[2].split() for v in page.rows("quarantine-table").values()]
    assert all(len(i) <= 2 for i in ids)


def test_the_command_writes_it_and_keeps_evaluation_reports_apart(reported, tmp_path):
    from flows.cli import app

    ws, _, _ = reported
    runner = CliRunner()
    w = ["--workspace", str(ws.root)]
    first = curation_runs(ws)[0]
    r = runner.invoke(app, ["report", "curation", "--run", first, "--out", str(tmp_path), *w])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"curation report: {tmp_path / f'curation-{first}.html'}"
    assert "First curation." in (tmp_path / f"curation-{first}.html").read_text()
    r = runner.invoke(app, ["report", "curation", "--run", "nope", *w])
    assert r.exit_code == 2 and "no curation run 'nope'" in r.output and first in r.output
    r = runner.invoke(app, ["report", "curation", "--workspace", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no curation run in this workspace yet" in r.output
    r = runner.invoke(app, ["report", str(tmp_path), "--run", first, *w])
    assert r.exit_code == 2 and "belong to `ortho report curation`" in r.output


def test_it_renders_in_a_headless_browser(reported, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        pytest.skip("no Chromium on this machine (apt-get install chromium): the rendering is not checked")
    _, _, path = reported
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*args, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120, check=False).stdout
    assert dom.count("class=\"group\"") == 4 and "<table" in dom and dom.count("<img") >= 12
    shot = tmp_path / "shot.png"
    subprocess.run([*args, f"--screenshot={shot}", "--window-size=1200,1600", path.as_uri()],
                   capture_output=True, timeout=120, check=False)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 60).mean() > 0.01  # text, tables and thumbnails drawn, not blank


def _chunks(data: bytes) -> set[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = set(), 8
    while pos + 8 <= len(data):
        chunks.add(data[pos + 4 : pos + 8])
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return chunks
