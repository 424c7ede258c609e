"""De-identified DICOM export: planted values in the attributes of PS3.15 table E.1-1 (nested and
private too) never reach the output, every output file opens, and its pixels are the store's."""

import dataclasses
import io
from collections import Counter

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from catalog.pixels import image_id
from catalog.deid import DATE_KEYWORDS, Pseudonymizer
from catalog.store import ImageStore
from curation.export_dicom import CatalogFile, ExportOptions, StoredFrame, export_files
from ingest.readers import ReadContext
from ingest.readers.dicom import read_dicom
from tests.ingest.dicom_factory import exported_frames, make_dicom

SECRET = b"k" * 32

# Attributes of table E.1-1 (a broad sample across patient, study, series, equipment, request).
E11 = """AccessionNumber AcquisitionComments AcquisitionDate AcquisitionDateTime AcquisitionDeviceProcessingDescription
AcquisitionTime ActualHumanPerformersSequence AdditionalPatientHistory AdmissionID AdmittingDiagnosesDescription
Allergies AuthorObserverSequence BranchOfService CassetteID CommentsOnThePerformedProcedureStep ConsultingPhysicianName
ContentCreatorName ContentDate ContentTime ContrastBolusAgent CountryOfResidence CurrentPatientLocation
DerivationDescription DetectorID DeviceSerialNumber DeviceUID EthnicGroup FrameComments GantryID GeneratorID
ImageComments InstitutionAddress InstitutionalDepartmentName InstitutionName IssuerOfPatientID MedicalAlerts
MedicalRecordLocator MilitaryRank NameOfPhysiciansReadingStudy Occupation OperatorsName OtherPatientIDs
OtherPatientNames PatientAddress PatientBirthDate PatientBirthName PatientBirthTime PatientComments PatientID
PatientMotherBirthName PatientName PatientReligiousPreference PatientState PatientTelephoneNumbers PerformedLocation
PerformedProcedureStepDescription PerformedProcedureStepID PerformingPhysicianName PhysiciansOfRecord PlateID
ProtocolName ReferringPhysicianAddress ReferringPhysicianName ReferringPhysicianTelephoneNumbers RegionOfResidence
RequestAttributesSequence RequestedProcedureDescription RequestedProcedureID RequestingPhysician
ResponsibleOrganization ResponsiblePerson ScheduledProcedureStepDescription SeriesDate SeriesDescription SeriesTime
StationName StudyDate StudyDescription StudyID StudyTime TextString TimezoneOffsetFromUTC
ReferencedPatientSequence ReferencedStudySequence SourceImageSequence ManufacturerModelName""".split()


def planted_dataset() -> tuple[bytes, list[str]]:
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096
    ds = pydicom.dcmread(io.BytesIO(make_dicom(pixels, BodyPartExamined="KNEE")))
    planted = []
    for i, kw in enumerate(E11):
        tag = tag_for_keyword(kw)
        if tag is None:
            continue
        vr = dictionary_VR(tag)
        value = f"QZPLANT{i:03d}X"
        if vr == "SQ":
            item = Dataset()
            item.PatientName = f"QZNEST{i:03d}X"
            item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.7731.{i}"
            inner = Dataset()
            inner.InstitutionName = f"QZDEEP{i:03d}X"
            item.ContentSequence = Sequence([inner])
            setattr(ds, kw, Sequence([item]))
            planted += [f"QZNEST{i:03d}X", f"QZDEEP{i:03d}X"]
            continue
        if vr == "DA":
            value = "19580317"
        elif vr == "TM":
            value = "235959.123456"
        elif vr == "DT":
            value = "19580317235959"
        elif vr == "UI":
            value = f"1.2.826.0.1.3680043.10.7731.{i}"
        elif vr not in ("LO", "SH", "PN", "LT", "ST", "UT", "CS", "AE", "UC"):
            continue
        setattr(ds, kw, value)
        planted.append(value)
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.7731.999"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.7731.998"
    block = ds.private_block(0x0011, "QZPRIVATE", create=True)
    block.add_new(0x01, "LO", "QZPRIVVALUEX")
    planted += ["QZPRIVATE", "QZPRIVVALUEX", "1.2.826.0.1.3680043.10.7731"]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), planted


def catalog_file(tmp_path, data: bytes, name: str = "in.dcm", screened: bool = False) -> tuple[CatalogFile, ImageStore]:
    """What an ingest would have recorded for one file: its frames read by the DICOM reader, stored."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / name).write_bytes(data)
    store = ImageStore(tmp_path / "store")
    frames, attrs = [], {}
    for f in read_dicom(data, ReadContext(Pseudonymizer(SECRET), "f" * 16)):
        store.put(image_id(f.pixels), f.pixels)
        attrs = f.attrs
        frames.append(StoredFrame(image_id(f.pixels), attrs["intensity_scale"], attrs["intensity_offset"],
                                  attrs["window_center"], attrs["window_width"], screened))
    return CatalogFile("f" * 16, str(src), name, len(data), attrs["patient_key"], tuple(frames)), store


def export_one(tmp_path, data: bytes, options: ExportOptions = ExportOptions(), screened: bool = False,
               secret: bytes = SECRET, out: str = "out"):
    f, store = catalog_file(tmp_path, data, screened=screened)
    result = export_files([f], store, tmp_path / out, secret, options)
    return result, f, store


def stored_frames(f: CatalogFile, store: ImageStore) -> np.ndarray:
    return np.stack([store.get(fr.image_id) for fr in f.frames])


def codes(ds) -> list[str]:
    return [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize("options", [ExportOptions(), ExportOptions(retain_modified_dates=False),
                                     ExportOptions(retain_patient_characteristics=True)])
def test_no_planted_value_survives_and_outputs_open(tmp_path, options):
    data, planted = planted_dataset()
    result, f, store = export_one(tmp_path, data, options)
    assert len(result.written) == 1 and result.skipped == {}
    out = result.written[0]
    raw = out.read_bytes().decode("latin-1")
    leaked = [p for p in planted if p in raw]
    assert leaked == []
    assert "QZ" not in str(out) and "7731" not in str(out)
    ds = pydicom.dcmread(out)
    assert np.array_equal(exported_frames(ds), stored_frames(f, store))
    assert ds.PatientIdentityRemoved == "YES" and ds.BodyPartExamined == "KNEE"
    assert ds.PatientID == ds.PatientName == f.patient_key
    assert codes(ds)[0] == "113100" and ("113107" in codes(ds)) == options.retain_modified_dates
    assert not any(e.tag.is_private for e in ds.iterall())


def test_uids_are_remapped_consistently(tmp_path):
    data, _ = planted_dataset()
    a = export_one(tmp_path, data, out="o1")[0].written[0]
    b = export_one(tmp_path, data, out="o2")[0].written[0]
    c = export_one(tmp_path, data, secret=b"j" * 32, out="o3")[0].written[0]
    da, db_, dc = (pydicom.dcmread(p) for p in (a, b, c))
    assert da.StudyInstanceUID == db_.StudyInstanceUID != dc.StudyInstanceUID
    assert da.StudyInstanceUID.startswith("2.25.")


def test_burned_in_annotation_is_not_exported_unless_allowed_or_screened(tmp_path):
    flagged = make_dicom(np.zeros((8, 8), np.uint16), BurnedInAnnotation="YES")
    r = export_one(tmp_path, flagged, out="o1")[0]
    assert r.written == [] and r.skipped == {"burned_in_annotation": 1}
    r = export_one(tmp_path, flagged, ExportOptions(allow_burned_in=True), out="o2")[0]
    ds = pydicom.dcmread(r.written[0])
    assert ds.BurnedInAnnotation == "YES" and "113101" not in codes(ds)
    ds = pydicom.dcmread(export_one(tmp_path, flagged, screened=True, out="o3")[0].written[0])
    assert ds.BurnedInAnnotation == "NO" and "113101" in codes(ds)


def test_an_unscreened_file_claims_no_clean_pixels(tmp_path):
    for i, flag in enumerate(({}, {"BurnedInAnnotation": "NO"})):
        data = make_dicom(np.zeros((8, 8), np.uint16), **flag)
        ds = pydicom.dcmread(export_one(tmp_path, data, out=f"o{i}")[0].written[0])
        assert "BurnedInAnnotation" not in ds and "113101" not in codes(ds)


def test_pixels_come_from_the_store_not_the_source(tmp_path):
    data = make_dicom(np.full((8, 8), 700, np.uint16))
    f, store = catalog_file(tmp_path, data, screened=True)
    masked = np.zeros((8, 8), np.uint16)  # what screening stored instead of the source's pixels
    store.put(image_id(masked), masked)
    f = dataclasses.replace(f, frames=(StoredFrame(image_id(masked), screened=True),))
    ds = pydicom.dcmread(export_files([f], store, tmp_path / "out", SECRET, ExportOptions()).written[0])
    assert np.array_equal(ds.pixel_array, masked)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_monochrome1_is_written_as_the_stored_monochrome2_with_its_window(tmp_path):
    arr = np.array([[0, 100], [4000, 4095]], dtype=np.uint16)
    data = make_dicom(arr, PhotometricInterpretation="MONOCHROME1", Modality="CR", WindowCenter=1000, WindowWidth=800,
                      RedPaletteColorLookupTableDescriptor=[256, 0, 16], PixelIntensityRelationship="LIN",
                      PixelIntensityRelationshipSign=1)
    result, f, store = export_one(tmp_path, data)
    ds = pydicom.dcmread(result.written[0])
    assert ds.PhotometricInterpretation == "MONOCHROME2" and np.array_equal(ds.pixel_array, 4095 - arr)
    assert np.array_equal(ds.pixel_array, store.get(f.frames[0].image_id))
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (4095 - 1000, 800)
    assert ds.PixelIntensityRelationshipSign == -1 and "RedPaletteColorLookupTableDescriptor" not in ds
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 0)


def test_signed_multiframe_keeps_its_real_values_under_one_rescale(tmp_path):
    raw = np.stack([np.array([[-1000, 0], [10, 20]]), np.array([[5, 6], [7, 3000]])]).astype(np.int16)
    data = make_dicom(raw, signed=True, bits_stored=16, frames=2, Modality="CT", RescaleSlope=2, RescaleIntercept=-1024)
    result, f, store = export_one(tmp_path, data)
    assert len({fr.intensity_offset for fr in f.frames}) == 2  # the frames were stored with different shifts
    ds = pydicom.dcmread(result.written[0])
    assert ds.NumberOfFrames == 2 and ds.PixelRepresentation == 0
    real = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(real, raw * 2.0 - 1024)


def test_export_from_the_catalog_leaves_no_phantom_phi(phantom_workspace, tmp_path):
    import re

    from typer.testing import CliRunner

    from catalog import db
    from flows.cli import app
    from flows.phantom import planted_values

    ws, _ = phantom_workspace
    out = tmp_path / "export"
    r = CliRunner().invoke(app, ["export", "dicom", "--query", "SELECT image_id FROM images", "--out", str(out),
                                 "--workspace", str(ws.root)])
    assert r.exit_code == 0, r.output
    files = list(out.rglob("*.dcm"))
    expected = db.query(ws, "SELECT count(DISTINCT file_id) FROM images WHERE format = 'dicom'")[1][0][0]
    assert len(files) == expected > 0 and "not_dicom" in r.output
    pattern = re.compile("|".join(re.escape(v) for v in planted_values()), re.IGNORECASE)
    shifted = {d.strftime("%Y%m%d") for (d,) in db.query(ws, "SELECT DISTINCT study_date FROM images")[1] if d}
    for f in files:
        assert not pattern.search(str(f.relative_to(out)))
        ds = pydicom.dcmread(f)
        ds.pixel_array
        dates = Counter(str(ds[kw].value) for kw in DATE_KEYWORDS if ds.get(kw))
        assert set(dates) <= shifted, f.name  # every date the export writes is the catalog's shifted one
        # A patient's shifted date may fall on a date planted for another patient: that is not a leak. Any other
        # occurrence of a planted value, or one more than the date elements account for, is.
        found = Counter(m.group(0) for m in pattern.finditer(f.read_bytes().decode("latin-1")))
        assert all(n <= dates[v] for v, n in found.items()), (f.name, found)


def test_retained_ages_over_89_are_reported_as_90(tmp_path):
    data = make_dicom(np.zeros((8, 8), np.uint16), PatientAge="097Y", PatientSex="F")
    ds = pydicom.dcmread(export_one(tmp_path, data, ExportOptions(retain_patient_characteristics=True))[0].written[0])
    assert ds.PatientAge == "090Y" and ds.PatientSex == "F"
    assert "PatientAge" not in pydicom.dcmread(export_one(tmp_path, data, out="o2")[0].written[0])


def test_retained_characteristics_that_are_not_one_are_removed(tmp_path):
    """A kept age, sex, size or weight holds only its kind of value: a name typed into one never passes."""
    data = make_dicom(np.zeros((8, 8), np.uint16), PatientAge="045Y", PatientSex="F", PatientSize="1.80",
                      PatientWeight="72.5")
    # written as an export with no validation would write them: a name in the age, a sex, a size
    data = data.replace(b"045Y", b"ZQVX").replace(b"F ", b"ZQ").replace(b"1.80", b"ZQXW")
    ds = pydicom.dcmread(export_one(tmp_path, data, ExportOptions(retain_patient_characteristics=True))[0].written[0])
    assert "PatientAge" not in ds and "PatientSex" not in ds and "PatientSize" not in ds
    assert float(ds.PatientWeight) == 72.5
    raw = open(ds.filename, "rb").read()
    assert b"ZQ" not in raw
