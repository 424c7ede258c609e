"""De-identified DICOM export: planted values in the attributes of PS3.15 table E.1-1 (nested and
private too) never reach the output, and every output file opens with its pixels intact."""

import io

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from curation.export_dicom import ExportOptions, export_files
from tests.ingest.dicom_factory import make_dicom

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


@pytest.mark.parametrize("options", [ExportOptions(), ExportOptions(retain_modified_dates=False),
                                     ExportOptions(retain_patient_characteristics=True)])
def test_no_planted_value_survives_and_outputs_open(tmp_path, options):
    data, planted = planted_dataset()
    src = tmp_path / "src"
    src.mkdir()
    (src / "in.dcm").write_bytes(data)
    result = export_files([("f" * 16, str(src), "in.dcm")], tmp_path / "out", b"k" * 32, options)
    assert len(result.written) == 1
    out = result.written[0]
    raw = out.read_bytes().decode("latin-1")
    leaked = [p for p in planted if p in raw]
    assert leaked == []
    assert "QZ" not in str(out) and "7731" not in str(out)
    ds = pydicom.dcmread(out)
    original = pydicom.dcmread(io.BytesIO(data))
    assert np.array_equal(ds.pixel_array, original.pixel_array)
    assert ds.PatientIdentityRemoved == "YES" and ds.BodyPartExamined == "KNEE"
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and ("113107" in codes) == options.retain_modified_dates
    assert not any(e.tag.is_private for e in ds.iterall())


def test_uids_are_remapped_consistently(tmp_path):
    data, _ = planted_dataset()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.dcm").write_bytes(data)
    a = export_files([("a" * 16, str(src), "a.dcm")], tmp_path / "o1", b"k" * 32, ExportOptions()).written[0]
    b = export_files([("a" * 16, str(src), "a.dcm")], tmp_path / "o2", b"k" * 32, ExportOptions()).written[0]
    c = export_files([("a" * 16, str(src), "a.dcm")], tmp_path / "o3", b"j" * 32, ExportOptions()).written[0]
    da, db_, dc = (pydicom.dcmread(p) for p in (a, b, c))
    assert da.StudyInstanceUID == db_.StudyInstanceUID != dc.StudyInstanceUID
    assert da.StudyInstanceUID.startswith("2.25.")


def test_burned_in_annotation_is_not_exported_unless_allowed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.dcm").write_bytes(make_dicom(np.zeros((8, 8), np.uint16), BurnedInAnnotation="YES"))
    r = export_files([("b" * 16, str(src), "b.dcm")], tmp_path / "o", b"k" * 32, ExportOptions())
    assert r.written == [] and r.skipped == {"burned_in_annotation": 1}
    r = export_files([("b" * 16, str(src), "b.dcm")], tmp_path / "o", b"k" * 32, ExportOptions(allow_burned_in=True))
    assert len(r.written) == 1


def test_export_from_the_catalog_leaves_no_phantom_phi(phantom_workspace, tmp_path):
    import re

    from typer.testing import CliRunner

    from catalog import db
    from flows.cli import app
    from ingest.phantom import planted_values

    ws, _ = phantom_workspace
    out = tmp_path / "export"
    r = CliRunner().invoke(app, ["export", "dicom", "--query", "SELECT image_id FROM images", "--out", str(out),
                                 "--workspace", str(ws.root)])
    assert r.exit_code == 0, r.output
    files = list(out.rglob("*.dcm"))
    expected = db.query(ws, "SELECT count(DISTINCT file_id) FROM images WHERE format = 'dicom'")[1][0][0]
    assert len(files) == expected > 0 and "not_dicom" in r.output
    pattern = re.compile("|".join(re.escape(v) for v in planted_values()), re.IGNORECASE)
    for f in files:
        assert not pattern.search(str(f.relative_to(out)))
        assert not pattern.search(f.read_bytes().decode("latin-1")), f.name
        pydicom.dcmread(f).pixel_array


def test_retained_ages_over_89_are_reported_as_90(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.dcm").write_bytes(make_dicom(np.zeros((8, 8), np.uint16), PatientAge="097Y", PatientSex="F"))
    r = export_files([("c" * 16, str(src), "old.dcm")], tmp_path / "o", b"k" * 32,
                     ExportOptions(retain_patient_characteristics=True))
    ds = pydicom.dcmread(r.written[0])
    assert ds.PatientAge == "090Y" and ds.PatientSex == "F"
    r = export_files([("c" * 16, str(src), "old.dcm")], tmp_path / "o2", b"k" * 32, ExportOptions())
    assert "PatientAge" not in pydicom.dcmread(r.written[0])
