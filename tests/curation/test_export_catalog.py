"""The export equals the catalog: for every exported file, the patient pseudonym, the shifted study date
and the pixels are the catalog's, whichever source and rule named the patient; Clean Pixel Data is
claimed only for files whose every frame was screened."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydicom
import pytest

from catalog import db
from catalog.store import ImageStore
from catalog.text_screening import TEXT_DETECTOR, claims_clean_sql
from curation.export_dicom import export_selection
from ingest.run import ingest_source
from ingest.sources import Source, add_source
from tests.ingest.dicom_factory import exported_frames, make_dicom
from tests.ingest.file_factory import nifti_bytes, png

SOURCES = {  # name: (path pattern, files)
    "hinted": (r"(?P<patient>P\d+)/", {"P001/a.dcm": dict(PatientID="OTHER-ID", PatientName="Roe^Ann")}),
    "plain": (None, {"b.dcm": dict(PatientID="P001"),
                     "c.dcm": dict(PatientID="", PatientName="Doe^Jane", PatientBirthDate="19600102")}),
    "mri": (r"(?P<patient>P\d+)_knee", {"P001_knee.nii.gz": None}),
    "xr": (r"(?P<patient>P\d+)\.png", {"P001.png": None}),
}


def _write(path, attrs, seed):
    pixels = np.random.default_rng(seed).integers(0, 4096, (16, 16), dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".dcm":
        path.write_bytes(make_dicom(pixels, Modality="DX", StudyDate="20210914", **attrs))
    elif path.name.endswith(".nii.gz"):
        path.write_bytes(nifti_bytes(pixels.astype(np.int16).reshape(16, 4, 4)))
    else:
        path.write_bytes(png((pixels >> 4).astype(np.uint8)))


@pytest.fixture
def mixed_workspace(ws, tmp_path):
    for seed, (name, (pattern, files)) in enumerate(SOURCES.items()):
        for i, (rel, attrs) in enumerate(files.items()):
            _write(tmp_path / "tree" / name / rel, attrs or {}, 10 * seed + i)
        add_source(ws, Source(name, str(tmp_path / "tree" / name), "internal", path_pattern=pattern,
                              modality="MR" if name == "mri" else "DX", body_part="knee"))
        ingest_source(ws, name)
    return ws


def set_text_detector(ws, file_id: str | None, version: str | None) -> None:
    """Rewrite the catalog's screening facts (all files when file_id is None), as an ingest would record them."""
    for path in ws.parts_dir.glob("*/occurrences.parquet"):
        t = pq.read_table(path)
        hit = pc.equal(t["file_id"], file_id) if file_id else pa.array([True] * len(t))
        column = pc.if_else(hit, pa.scalar(version, pa.string()), t["text_detector"])
        pq.write_table(t.set_column(t.schema.get_field_index("text_detector"), "text_detector", column), path)


def assert_export_equals_catalog(ws, files) -> None:
    rows = db.query(ws, f"""SELECT file_id, any_value(patient_key), any_value(study_date),
                                  list(image_id ORDER BY frame_index), bool_and({claims_clean_sql("text_detector")})
                           FROM occurrences WHERE format = 'dicom' GROUP BY file_id""")[1]
    catalog = {r[0]: r[1:] for r in rows}
    store = ImageStore(ws.store_dir)
    assert files
    for f in files:
        ds = pydicom.dcmread(f)
        key, study_date, image_ids, screened = catalog[f.stem]
        assert ds.PatientID == str(ds.PatientName) == key == f.parent.parent.name
        assert ds.StudyDate == (study_date.strftime("%Y%m%d") if study_date else "")
        assert np.array_equal(exported_frames(ds), np.stack([store.get(i) for i in image_ids]))
        codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
        assert (ds.get("BurnedInAnnotation") == "NO") == ("113101" in codes) == screened


def test_one_patient_across_dicom_nifti_and_png_sources(mixed_workspace):
    rows = db.query(mixed_workspace, """SELECT source, format, patient_key, patient_key_basis
                                        FROM occurrences ORDER BY source, file_id""")[1]
    named = {(source, fmt, key, basis) for source, fmt, key, basis in rows if basis != "name_birthdate"}
    assert {(source, fmt, basis) for source, fmt, _, basis in named} == {
        ("hinted", "dicom", "path_pattern"), ("plain", "dicom", "patient_id"),
        ("mri", "nifti", "path_pattern"), ("xr", "png", "path_pattern")}
    assert len({key for _, _, key, _ in named}) == 1  # P001 by folder, by PatientID, by NIfTI and PNG name
    assert [source for source, *_, basis in rows if basis == "name_birthdate"] == ["plain"]


def test_the_export_gives_the_catalogs_pseudonym_date_and_pixels(mixed_workspace, tmp_path):
    set_text_detector(mixed_workspace, None, None)
    cols = db.query(mixed_workspace, "SELECT text_detector, pixels_cleaned, text_regions FROM images")[0]
    assert cols == ["text_detector", "pixels_cleaned", "text_regions"]  # screening facts reach the images view
    result = export_selection(mixed_workspace, "SELECT image_id FROM images", tmp_path / "out")
    assert len(result.written) == 3 and set(result.skipped) == {"not_dicom"}
    assert_export_equals_catalog(mixed_workspace, result.written)
    shifted = {pydicom.dcmread(f).StudyDate for f in result.written}
    assert "20210914" not in shifted and all(dt.datetime.strptime(d, "%Y%m%d") for d in shifted)


def test_clean_pixel_data_is_claimed_only_for_screened_files(mixed_workspace, tmp_path):
    set_text_detector(mixed_workspace, None, None)
    (hinted,) = db.query(mixed_workspace, "SELECT DISTINCT file_id FROM occurrences WHERE source = 'hinted'")[1]
    set_text_detector(mixed_workspace, hinted[0], TEXT_DETECTOR)
    (older,) = db.query(mixed_workspace, "SELECT DISTINCT file_id FROM occurrences WHERE source = 'plain' LIMIT 1")[1]
    # a screen that read horizontal text at one window only: its images keep the source's flag
    set_text_detector(mixed_workspace, older[0], "ortho-text-1 (morphology candidates + RapidOCR PP-OCRv6)")
    result = export_selection(mixed_workspace, "SELECT image_id FROM images WHERE format = 'dicom'", tmp_path / "out")
    assert_export_equals_catalog(mixed_workspace, result.written)
    claims = {f.stem: pydicom.dcmread(f).get("BurnedInAnnotation") for f in result.written}
    assert claims == {f: ("NO" if f == hinted[0] else None) for f in claims} and len(claims) == 3


def test_the_phantom_export_equals_its_catalog(phantom_workspace, tmp_path):
    ws, _ = phantom_workspace
    result = export_selection(ws, "SELECT image_id FROM images WHERE format = 'dicom'", tmp_path / "out")
    assert result.skipped == {}
    assert_export_equals_catalog(ws, result.written)
