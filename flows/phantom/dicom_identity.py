"""The phantom's UIDs and the identifying DICOM attributes planted in every object it writes."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from flows.phantom.patients import PhantomPatient
from flows.phantom.planted import (
    INSTITUTION,
    INSTITUTION_ADDRESS,
    OPERATOR,
    PRIVATE_TEXT,
    REFERRING,
    SERIAL,
    STATION,
    UID_ROOT,
)


def new_uid(rng: np.random.Generator) -> str:
    """A UID under the phantom's root, drawn from rng (three draws' worth of digits)."""
    return UID_ROOT + ".".join(str(int(v)) for v in rng.integers(1, 10**8, 3))


def plant_identity(ds: Dataset, p: PhantomPatient, study_uid: str, series_uid: str, rng) -> None:
    """Every identifying attribute a careless pipeline could leak, planted."""
    ds.PatientName = p.dicom_name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = "F" if p.index % 2 else "M"
    ds.PatientAge = f"{(int(p.study_date[:4]) - int(p.birth_date[:4])):03d}Y"
    ds.PatientAddress = f"{p.index + 3} {p.family} Row, Grimsby"
    ds.PatientTelephoneNumbers = f"+44 7700 9{p.index:05d}"
    ds.OtherPatientIDs = f"{p.patient_id}-OLD"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = p.study_date
    ds.StudyTime = ds.SeriesTime = "101530"
    ds.AccessionNumber = p.accession
    ds.StudyID = f"S{p.accession[-4:]}"
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.ReferringPhysicianName = REFERRING
    ds.PerformingPhysicianName = REFERRING
    ds.OperatorsName = OPERATOR
    ds.StationName = STATION
    ds.DeviceSerialNumber = SERIAL
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Skyra Grimsby"
    ds.StudyDescription = f"KNEE {p.family} followup"
    ds.ImageComments = f"{p.given} {p.family} fell from a ladder; MRN {p.patient_id}"
    ds.AdditionalPatientHistory = f"Patient {p.family} reports pain since {p.birth_date}"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = new_uid(rng)
    ds.FrameOfReferenceUID = study_uid + ".9"
    _plant_nested(ds, p)
    block = ds.private_block(0x0011, "PHANTOMCO", create=True)
    block.add_new(0x01, "LO", PRIVATE_TEXT)
    block.add_new(0x02, "LO", p.patient_id)


def _plant_nested(ds: Dataset, p: PhantomPatient) -> None:
    """Identity two sequences deep: the accession and the name inside the request attributes."""
    req = Dataset()
    req.RequestedProcedureDescription = f"Knee for {p.family}"
    req.AccessionNumber = p.accession
    inner = Dataset()
    inner.PatientName = p.dicom_name
    req.ReferencedStudySequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([req])
