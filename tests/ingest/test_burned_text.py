"""Burned-in text: found, masked before storing, unreadable afterwards; clean images left alone.

Every check first shows that the original text reads (so the test can fail), then that nothing of
it reads after screening, by RapidOCR over the whole image and, when installed, by Tesseract (an
OCR independent of the engine screening uses).
"""

import io

import numpy as np
import pytest
from PIL import Image

from flows.phantom import draw_radiograph
from ingest.pixels import Frame
from ingest.reasons import Quarantine
from tests import ocr_judge as judge
from ingest.text.render import TextStyle, burn
from ingest.text.screen import DETECTOR_VERSION, screen, screen_frame

NAME, PID, BIRTH = "QUIMBLETON^HYACINTH", "PHX7731ZQ", "19520317"
TOKENS = ("QUIMBLETON", "HYACINTH", PID, BIRTH)


def read(pixels: np.ndarray) -> str:
    """RapidOCR over the whole image (screening runs it on candidates only), and Tesseract when installed."""
    return judge.read_text_rapidocr(pixels) + ("\n" + judge.read_text(pixels) if judge.available() else "")


def readable_tokens(pixels: np.ndarray) -> list[str]:
    text = read(pixels)
    return [t for t in TOKENS if judge.readable(t, text)]


def knee(size: int, bits: int, seed: int = 0) -> np.ndarray:
    arr = draw_radiograph(2, "L", np.random.default_rng(seed), size=size, pose=np.random.default_rng(seed + 1))
    return arr if bits == 16 else (arr >> 4).astype(np.uint8)


CASES = [
    (512, 16, TextStyle(font="DejaVuSans-Bold.ttf", height=0.03, corner="top-left")),
    (512, 8, TextStyle(font="DejaVuSansMono.ttf", height=0.025, polarity="dark", frame="box", corner="bottom-right")),
    (1024, 16, TextStyle(font="DejaVuSerif.ttf", height=0.02, frame="outline", corner="top-right")),
    (256, 8, TextStyle(font="DejaVuSans.ttf", height=0.04, frame="box", corner="bottom-left")),
]


@pytest.mark.slow
@pytest.mark.parametrize("size,bits,style", CASES, ids=[f"{s}px-{b}bit-{st.polarity}-{st.frame}" for s, b, st in CASES])
def test_burned_text_is_masked_and_reads_no_more(size, bits, style):
    shown, _ = burn(knee(size, bits), [NAME, f"{PID} {BIRTH}"], style)
    assert len(readable_tokens(shown)) >= 2, "the rendered text must read before screening"
    result = screen(shown)
    assert result.cleaned and result.pixels.dtype == shown.dtype
    assert readable_tokens(result.pixels) == []


def test_masked_regions_hold_one_value_so_no_window_brings_text_back():
    shown, (y0, x0, y1, x1) = burn(knee(512, 16), [NAME, PID], TextStyle(height=0.03, corner="top-left"))
    result = screen(shown)
    assert result.cleaned
    for b in result.regions:
        assert len(np.unique(result.pixels[b.y0:b.y1, b.x0:b.x1])) == 1
    covered = np.zeros(shown.shape, bool)
    for b in result.regions:
        covered[b.y0:b.y1, b.x0:b.x1] = True
    ink = shown != knee(512, 16)  # every pixel the text changed
    assert covered[ink].mean() > 0.99
    assert not covered[y1 + 20:, :].any()  # anatomy far from the text is untouched


def test_clean_radiographs_are_left_alone():
    for seed in range(6):
        for size, bits in ((256, 16), (512, 8), (1024, 16)):
            image = knee(size, bits, seed)
            result = screen(image)
            assert not result.cleaned and result.pixels is image


def test_clean_real_knees_are_left_alone():
    from tests.shared_data import shared_data

    files = sorted(shared_data("knee-xray-kl").rglob("*.png"))[::40]
    cleaned = [f.name for f in files if screen(np.asarray(Image.open(f))).cleaned]
    assert len(cleaned) <= 0.02 * len(files), cleaned


def frame(pixels, **attrs) -> Frame:
    return Frame(pixels, {"frame_index": 0, **attrs})


def test_policies():
    shown, _ = burn(knee(512, 16), [NAME, PID], TextStyle(height=0.03))
    pixels, cols = screen_frame(frame(shown), "mask")
    assert cols == {"text_detector": DETECTOR_VERSION, "pixels_cleaned": True, "text_regions": cols["text_regions"],
                    "text_regions_unread": 0}
    assert cols["text_regions"] >= 1 and not np.array_equal(pixels, shown)
    with pytest.raises(Quarantine) as q:
        screen_frame(frame(shown), "quarantine")
    assert q.value.reason == "burned_in_text"
    clean = knee(512, 16)
    with pytest.raises(Quarantine) as q:
        screen_frame(frame(clean, burned_in_declared=True), "quarantine")
    assert q.value.reason == "burned_in_annotation"
    pixels, cols = screen_frame(frame(clean, burned_in_declared=True), "mask")  # declared: screened like the rest
    assert cols["text_detector"] == DETECTOR_VERSION and cols["pixels_cleaned"] is False
    pixels, cols = screen_frame(frame(shown), "off")
    assert pixels is shown and cols["text_detector"] is None


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_ingest_stores_only_cleaned_pixels(tmp_path):
    from catalog import db
    from catalog.store import ImageStore
    from catalog.workspace import Workspace
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source
    from tests.ingest.dicom_factory import make_dicom

    tree = tmp_path / "export"
    tree.mkdir()
    dx = burn(knee(512, 16), [NAME, f"{PID} {BIRTH}"], TextStyle(height=0.03, corner="bottom-left"))[0]
    (tree / "a.dcm").write_bytes(make_dicom(dx, Modality="DX", BurnedInAnnotation="NO"))
    png = burn(knee(512, 8, seed=3), [f"{PID} {BIRTH}"], TextStyle(height=0.035, polarity="dark", frame="box"))[0]
    (tree / "b.png").write_bytes(_png(png))
    (tree / "c.png").write_bytes(_png(knee(512, 8, seed=4)))
    ws = Workspace.open(tmp_path / "ws")
    add_source(ws, Source("export", str(tree), "internal"))
    summary = ingest_source(ws, "export")
    assert summary.result.cleaned == 2
    con = db.connect(ws)
    rows = con.execute("SELECT image_id, pixels_cleaned, text_regions, text_detector FROM images ORDER BY ALL").fetchall()
    con.close()
    assert sorted(r[1] for r in rows) == [False, True, True] and all(r[3] == DETECTOR_VERSION for r in rows)
    store = ImageStore(ws.store_dir)
    for image_id, cleaned, regions, _ in rows:
        assert readable_tokens(store.get(image_id)) == []
        assert (regions > 0) == cleaned

    ws2 = Workspace.open(tmp_path / "ws2")
    add_source(ws2, Source("export", str(tree), "internal", burned_in="quarantine"))
    ingest_source(ws2, "export")
    con = db.connect(ws2)
    reasons = con.execute("SELECT status, reason FROM files ORDER BY ALL").fetchall()
    con.close()
    assert reasons == [("ingested", None), ("quarantined", "burned_in_text"), ("quarantined", "burned_in_text")]
    assert len(list(ws2.store_dir.rglob("*.png"))) == 1  # the clean image only: text never reached the store


def test_phantom_burned_radiographs_are_cleaned(phantom_workspace):
    from catalog import db
    from flows.phantom import has_burned_text, patients

    ws, summaries = phantom_workspace
    burned = [p for p in patients() if has_burned_text(p)]
    assert burned, "the default phantom must carry burned-in text"
    con = db.connect(ws)
    counts = con.execute("""SELECT source, count(*) FILTER (WHERE pixels_cleaned), count(*) FILTER (WHERE text_detector IS NULL)
                            FROM images GROUP BY ALL ORDER BY ALL""").fetchall()
    con.close()
    # per burned patient: two knee DICOMs in pacs/, one public PNG with the ID on a label
    assert counts == [("pacs", 2 * len(burned), 0), ("public", len(burned), 0)]
    assert sum(s.result.cleaned for s in summaries) == 3 * len(burned)
