"""The embedded default source: a small, realistic, deliberately hostile export tree.

`write_phantom(root)` draws knee radiographs (femur, tibia, fibula; joint-space narrowing,
osteophytes and sclerosis by a KL-like grade 0-4) and knee MRI volumes (condyles, cartilage,
menisci, an ACL that is torn in some exams), and writes them the way real exports arrive:

  root/pacs/    DICOM as a PACS exports it: names and birth dates in folder and file names,
                every identifying attribute a de-identifier must handle (see PLANTED), private
                tags, nested sequences, MONOCHROME1, a multi-frame object, a structured report,
                a re-export of one study (exact duplicates), NIfTI volumes, labels.csv, and
                broken files (truncated, empty, random bytes, wrong extension, corrupt NIfTI).
                Some radiographs carry the patient's name, ID and birth date burned into the pixels
                without BurnedInAnnotation = YES (`has_burned_text`), as consoles and digitisers draw them.
  root/public/  a public-dataset-like PNG tree, train/val/<KL>/<id><L|R>.png, some of it the
                same pixels as pacs/ radiographs (cross-source duplicates), two of it re-windowed
                8-bit copies of them and two cropped, resized 8-bit copies (near-duplicates).

Everything is deterministic for a seed. `planted_values()` lists the strings that must never
appear in a workspace outside the private lineage table.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MARKER = ".phantom-v1-complete"
_UID_ROOT = "1.2.826.0.1.3680043.10.7731."
_FAMILY = ["Zorblatt", "Quimbleton", "Vexhallow", "Marplewick", "Draxford", "Ollivant", "Pemberthy", "Sculdrane"]
_GIVEN = ["Quentin", "Ermintrude", "Bartholomew", "Hyacinth", "Thaddeus", "Philippa", "Leopold", "Griselda"]


@dataclass(frozen=True)
class PhantomPatient:
    index: int
    family: str
    given: str
    patient_id: str
    birth_date: str
    study_date: str
    accession: str

    @property
    def dicom_name(self) -> str:
        return f"{self.family}^{self.given}"

    @property
    def folder(self) -> str:
        return f"{self.family.upper()}_{self.given.upper()}_{self.birth_date}"


def patients(n: int = 6, seed: int = 0) -> list[PhantomPatient]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20000)))
        study = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1400)))
        # distinct (family, given initial) pairs, so file names and label keys never collide: 64 pairs,
        # then double-barrelled family names (up to 512 patients)
        family = _FAMILY[i % 8] + (f"-{_FAMILY[(i // 64) % 8]}" if i >= 64 else "")
        out.append(PhantomPatient(i, family, _GIVEN[(i + i // 8) % 8], f"PHX{7731 + 97 * i}ZQ",
                                  birth.strftime("%Y%m%d"), study.strftime("%Y%m%d"), f"ACC{99812734 + 13 * i}"))
    return out


INSTITUTION = "Grimsby Orthopaedic Institute"
INSTITUTION_ADDRESS = "17 Wexcombe Lane, Grimsby"
REFERRING = "Vandersloot^Ulrika"
OPERATOR = "Thistlewood^Cornelius"
STATION = "GRIMSBYORTHO7"
SERIAL = "SN44X0917QZ"
PRIVATE_TEXT = "Private note about Zorblatt"


def planted_values(n: int = 6, seed: int = 0) -> list[str]:
    """Identifying strings planted in the tree; none may appear outside the private lineage."""
    values = [INSTITUTION, "Grimsby", "Wexcombe", "Vandersloot", "Thistlewood", STATION, SERIAL, "Zorblatt", _UID_ROOT]
    for p in patients(n, seed):
        values += [p.family, p.given, p.patient_id, p.birth_date, p.study_date, p.accession]
    return sorted(set(values))


def has_burned_text(p: PhantomPatient) -> bool:
    """Patients whose radiographs show their identity in the pixels (none of them has a public copy of the
    same pixels, so exact duplicates stay exact)."""
    return p.index % 4 == 1 and p.index != 1


def burned_lines(p: PhantomPatient) -> list[str]:
    return [f"{p.family.upper()}^{p.given.upper()}", f"{p.patient_id} {p.birth_date}"]


def burn_identity(arr: np.ndarray, p: PhantomPatient, side: str) -> np.ndarray:
    from ingest.text.render import TextStyle, burn

    style = TextStyle(font="DejaVuSans-Bold.ttf" if side == "L" else "DejaVuSansMono.ttf", height=0.035,
                      frame="box" if side == "L" else "none", corner="top-left" if side == "L" else "bottom-right")
    return burn(arr, burned_lines(p), style)[0]


# --- drawing ---------------------------------------------------------------------------------

def _soft(d: np.ndarray, width: float = 1.5) -> np.ndarray:
    return 0.5 * (1 - np.tanh(d / width))


def draw_radiograph(grade: int, side: str, rng: np.random.Generator, size: int = 256,
                    pose: np.random.Generator | None = None) -> np.ndarray:
    """A knee AP radiograph, 12 bits stored in uint16. Grade 0-4 narrows the joint space and
    adds osteophytes (>= 2) and subchondral sclerosis (>= 3). With `pose` (a generator of its own),
    the knee is positioned and exposed as real radiographs are: scale 0.85-1.15, rotation +-8
    degrees, shift +-8% of the field, exposure gain 0.75-1.25 and offset, gamma 0.8-1.25."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if pose is not None:  # draw in the knee's own frame: coordinates mapped through a random similarity
        scale, angle = pose.uniform(0.85, 1.15), np.deg2rad(pose.uniform(-8, 8))
        tx, ty = pose.uniform(-0.08, 0.08, 2) * size
        c, s_ = np.cos(angle) / scale, np.sin(angle) / scale
        u, v = x - size / 2 - tx, y - size / 2 - ty
        x, y = c * u + s_ * v + size / 2, -s_ * u + c * v + size / 2
    cx = size / 2 + rng.normal(0, 4)
    joint = size * 0.5 + rng.normal(0, 4)
    jsw = [14, 11, 8, 5, 2][grade] * size / 256
    img = 600 + 500 * _soft(np.abs(x - cx) - size * 0.36, 12)  # soft tissue
    # femur: shaft and two condyles, their lower edge at joint - jsw/2
    shaft = _soft(np.abs(x - cx) - size * 0.11) * _soft(-(joint - size * 0.12 - y))
    condyles = sum(_soft(np.hypot((x - (cx + s * size * 0.09)) / 1.25, y - (joint - jsw / 2 - size * 0.09)) - size * 0.09)
                   for s in (-1, 1))
    femur = np.clip(shaft + condyles, 0, 1) * _soft(y - (joint - jsw / 2))
    # tibia: plateau and shaft, top edge at joint + jsw/2
    plateau = _soft(np.abs(x - cx) - size * 0.2) * _soft(-(y - (joint + jsw / 2))) * _soft(y - (joint + size * 0.12))
    tshaft = _soft(np.abs(x - cx) - size * 0.1) * _soft(-(y - (joint + size * 0.1)))
    tibia = np.clip(plateau + tshaft, 0, 1)
    fib_x = cx + (size * 0.22 if side == "L" else -size * 0.22)  # fibula on the lateral side
    fibula = _soft(np.abs(x - fib_x) - size * 0.035) * _soft(-(y - (joint + size * 0.1)))
    bone = np.clip(femur + tibia + 0.8 * fibula, 0, 1)
    # trabecular texture: each knee's own, as in real bone (and what near-duplicate search keys on)
    field = rng.normal(0, 1, (size // 2, size // 2)).astype(np.float32)
    texture = np.asarray(Image.fromarray(field, mode="F").resize((size, size), Image.BICUBIC))
    img = img + 2200 * bone + 500 * texture * bone
    if grade >= 2:  # osteophytes at the four joint margins
        r = (grade - 1) * 2.5 * size / 256
        for sx in (-1, 1):
            for sy in (-1, 1):
                ox, oy = cx + sx * size * 0.2, joint + sy * (jsw / 2 + 3)
                img += 1800 * _soft(np.hypot(x - ox, y - oy) - r)
    if grade >= 3:  # sclerosis: a dense band under the plateau
        img += 500 * _soft(np.abs(y - (joint + jsw / 2 + 4)) - 3) * _soft(np.abs(x - cx) - size * 0.18)
    img += rng.normal(0, 40, img.shape)
    if pose is not None:
        gain, offset, gamma = pose.uniform(0.75, 1.25), pose.uniform(-300, 300), pose.uniform(0.8, 1.25)
        img = 4095 * (np.clip(img * gain + offset, 0, 4095) / 4095) ** gamma
    return np.clip(img, 0, 4095).astype(np.uint16)


def draw_hip(grade: int, side: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A hip AP radiograph (the phantom's second anatomy), 12 bits in uint16: the femoral head in the
    acetabulum, neck and shaft towards the lateral side. Grade 0-4 narrows the joint space and adds
    osteophytes (>= 2) and a sclerotic acetabular roof (>= 3)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    lateral = 1 if side == "L" else -1  # image left = patient right, as in an AP view
    hx, hy = size * 0.45 + rng.normal(0, 4), size * 0.42 + rng.normal(0, 4)
    r = size * 0.12
    jsw = [10, 8, 6, 4, 1.5][grade] * size / 256
    img = 700 + 400 * _soft(np.abs(y - size / 2) - size * 0.45, 12)
    head = _soft(np.hypot(x - hx, y - hy) - r)
    t = np.clip(((x - hx) * lateral * 0.7 + (y - hy) * 0.7) / (size * 0.35), 0, 1)  # neck, down and lateral
    nx, ny = hx + lateral * t * size * 0.245, hy + t * size * 0.245
    neck = _soft(np.hypot(x - nx, y - ny) - size * 0.06) * (t > 0) * (t < 1)
    sx = hx + lateral * size * 0.25
    shaft = _soft(np.abs(x - sx) - size * 0.08) * _soft(-(y - (hy + size * 0.2)))
    femur = np.clip(head + neck + shaft, 0, 1)
    ring = np.hypot(x - hx, y - hy) - (r + jsw)
    acetabulum = _soft(np.abs(ring - size * 0.03) - size * 0.03) * (y < hy + r * 0.3)
    pelvis = _soft(-(x - hx) * lateral - size * 0.05) * _soft(np.abs(y - (hy - size * 0.05)) - size * 0.2)
    bone = np.clip(femur + acetabulum + 0.7 * pelvis, 0, 1)
    field = rng.normal(0, 1, (size // 2, size // 2)).astype(np.float32)
    texture = np.asarray(Image.fromarray(field, mode="F").resize((size, size), Image.BICUBIC))
    img = img + 2100 * bone + 450 * texture * bone
    if grade >= 2:  # osteophytes at the rim of the acetabulum and the head-neck junction
        rr = (grade - 1) * 2.5 * size / 256
        for ang in (-0.6, 0.9):
            ox, oy = hx + lateral * np.cos(ang) * (r + jsw + 4), hy - np.sin(ang) * (r + jsw + 4)
            img += 1800 * _soft(np.hypot(x - ox, y - oy) - rr)
    if grade >= 3:  # sclerosis: a dense acetabular roof
        img += 600 * _soft(np.abs(ring - 3) - 3) * (y < hy - r * 0.3)
    img += rng.normal(0, 40, img.shape)
    return np.clip(img, 0, 4095).astype(np.uint16)


def draw_mri(acl_tear: bool, rng: np.random.Generator, shape=(96, 96, 12)) -> np.ndarray:
    """A sagittal proton-density knee volume (rows, cols, slices), 12-bit in uint16."""
    h, w, n = shape
    z, y, x = np.mgrid[0:n, 0:h, 0:w].astype(np.float32)
    cy, cx = h * 0.5 + rng.normal(0, 2), w * 0.5 + rng.normal(0, 2)
    vol = 300 + 0 * x
    femur = np.hypot((x - cx) / 1.2, y - (cy - h * 0.22)) - h * 0.2
    tibia = np.maximum(np.abs(x - cx) - w * 0.3, y - (cy + h * 0.4)) * -1
    tibia = np.maximum(-(y - (cy + h * 0.06)), np.abs(x - cx) - w * 0.28)
    width = 1 - np.abs(z - n / 2) / (n * 0.7)
    vol += 900 * _soft(femur) * width + 900 * _soft(tibia) * width
    vol += 1500 * _soft(np.abs(femur - 2) - 1.5) * width  # cartilage: bright rim
    for sx in (-1, 1):  # menisci: dark wedges
        vol -= 250 * _soft(np.hypot(x - (cx + sx * w * 0.2), y - (cy + h * 0.03)) - 3)
    t = (x - cx) / (w * 0.25)
    acl = _soft(np.abs(y - (cy + h * 0.03 - t * h * 0.15)) - 1.5) * (np.abs(t) < 1) * (np.abs(z - n / 2) < 2)
    if acl_tear:
        acl *= np.abs(t) > 0.3
    vol += 1200 * acl
    vol += rng.normal(0, 30, vol.shape)
    return np.clip(vol, 0, 4095).astype(np.uint16).transpose(1, 2, 0)


# --- DICOM writing ---------------------------------------------------------------------------

def _uid(rng: np.random.Generator) -> str:
    return _UID_ROOT + ".".join(str(int(v)) for v in rng.integers(1, 10**8, 3))


def _identity(ds: Dataset, p: PhantomPatient, study_uid: str, series_uid: str, rng) -> None:
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
    ds.SOPInstanceUID = _uid(rng)
    ds.FrameOfReferenceUID = study_uid + ".9"
    req = Dataset()
    req.RequestedProcedureDescription = f"Knee for {p.family}"
    req.AccessionNumber = p.accession
    inner = Dataset()
    inner.PatientName = p.dicom_name
    req.ReferencedStudySequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([req])
    block = ds.private_block(0x0011, "PHANTOMCO", create=True)
    block.add_new(0x01, "LO", PRIVATE_TEXT)
    block.add_new(0x02, "LO", p.patient_id)


def _finish(ds: Dataset, sop_class: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(prefix="1.2.826.0.1.3680043.10.")
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _pixels(ds: Dataset, arr: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = np.ascontiguousarray(arr, dtype="<u2").tobytes()


DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"


def radiograph_dicom(p: PhantomPatient, arr: np.ndarray, side: str, rng, study_uid: str, monochrome1: bool = False,
                     body_part: str = "KNEE") -> bytes:
    ds = Dataset()
    _identity(ds, p, study_uid, _uid(rng), rng)
    ds.Modality = "CR" if monochrome1 else "DX"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "AP"
    ds.ImageLaterality = side
    ds.SeriesDescription = f"{p.family} {body_part} AP {'LEFT' if side == 'L' else 'RIGHT'}"
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.InstanceNumber = 1
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.BurnedInAnnotation = "NO"
    _pixels(ds, 4095 - arr if monochrome1 else arr, "MONOCHROME1" if monochrome1 else "MONOCHROME2")
    return _finish(ds, CR_CLASS if monochrome1 else DX_CLASS)


def mri_slices(p: PhantomPatient, vol: np.ndarray, rng, study_uid: str) -> list[bytes]:
    series_uid = _uid(rng)
    out = []
    for k in range(vol.shape[2]):
        ds = Dataset()
        _identity(ds, p, study_uid, series_uid, rng)
        ds.Modality = "MR"
        ds.BodyPartExamined = "KNEE"
        ds.SeriesDescription = f"SAG PD FS {p.family}"
        ds.ProtocolName = f"knee_{p.given}_pd_fs"
        ds.MagneticFieldStrength, ds.EchoTime, ds.RepetitionTime = 3.0, 30.0, 3000.0
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [-20.0 + 3.0 * k, -60.0, 60.0]
        ds.PixelSpacing, ds.SliceThickness = [0.6, 0.6], 3.0
        ds.InstanceNumber = vol.shape[2] - k  # numbered against position: slice order must come from geometry
        _pixels(ds, vol[:, :, k])
        out.append(_finish(ds, MR_CLASS))
    return out


def multiframe_mri(p: PhantomPatient, vol: np.ndarray, rng, study_uid: str) -> bytes:
    ds = Dataset()
    _identity(ds, p, study_uid, _uid(rng), rng)
    ds.Modality = "MR"
    ds.BodyPartExamined = "KNEE"
    ds.SeriesDescription = f"COR T1 {p.family}"
    ds.NumberOfFrames = vol.shape[2]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.PixelSpacing, ds.SliceThickness = [0.6, 0.6], 3.0
    _pixels(ds, np.moveaxis(vol, 2, 0))
    return _finish(ds, MR_CLASS)


def structured_report(p: PhantomPatient, rng, study_uid: str) -> bytes:
    ds = Dataset()
    _identity(ds, p, study_uid, _uid(rng), rng)
    ds.Modality = "SR"
    item = Dataset()
    item.TextValue = f"Findings for {p.given} {p.family}: medial joint space narrowing"
    ds.ContentSequence = Sequence([item])
    return _finish(ds, SR_CLASS)


# --- the tree --------------------------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def cropped_reexport(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """12-bit knee -> 8 bits, 90-95% of each side kept at a random offset, resized back to the
    original size: what a re-release that trims borders does."""
    h, w = arr.shape
    f = rng.uniform(0.90, 0.95)
    ch, cw = round(h * f), round(w * f)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    part = Image.fromarray(arr[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32), mode="F").resize((w, h), Image.BICUBIC)
    return (np.clip(np.asarray(part), 0, 4095) / 16).astype(np.uint8)


def write_phantom(root: Path, seed: int = 0, n_patients: int | None = None, hips: bool = False,
                  poses: bool = True) -> Path:
    """Write the tree once (atomically: a temporary folder renamed into place). With n_patients=None
    an existing tree of any size is kept (6 patients when none exists); a tree drawn with another
    seed, size or anatomy than asked is drawn again. `hips` adds a second anatomy: one graded hip
    radiograph per patient (task `hip_kl_grade`), for cross-anatomy evaluation. `poses` positions and
    exposes every knee radiograph differently (see draw_radiograph), as real ones are."""
    root = Path(root)
    stamp = f"phantom v3 seed={seed} patients={n_patients or 6}{' hips' if hips else ''}{' poses' if poses else ''}\n"
    if (root / MARKER).exists() and (n_patients is None or (root / MARKER).read_text() == stamp):
        return root
    n_patients = n_patients or 6
    if n_patients > 512:
        raise ValueError("the phantom draws at most 512 distinct patients")
    tmp = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex[:6]}")
    rng = np.random.default_rng(seed)
    pacs, public = tmp / "pacs", tmp / "public"
    label_rows = []
    for p in patients(n_patients, seed):
        study_uid = _uid(rng)
        study = pacs / p.folder / f"{p.study_date}_KNEE"
        for side in ("L", "R"):
            grade = int(rng.integers(0, 5))
            pose_rng = np.random.default_rng([seed, p.index, 2, side == "L"]) if poses else None
            arr = draw_radiograph(grade, side, rng, pose=pose_rng)
            stem = f"{p.family}_{p.given[0]}_knee_{side}"
            mono1 = p.index == 1 and side == "R"
            shown = burn_identity(arr, p, side) if has_burned_text(p) else arr
            _write(study / "XR" / f"{stem}.dcm", radiograph_dicom(p, shown, side, rng, study_uid, monochrome1=mono1))
            label_rows.append({"file": stem, "kl_grade": grade, "mri_acl": ""})
            split = "val" if p.index >= n_patients - 2 else "train"
            if p.index % 2 == 0:  # a public copy of the same pixels (cross-source duplicate)
                _write(public / split / str(grade) / f"{90000 + p.index}{side}.png", _png(arr))
            elif p.index == 1:  # a re-windowed 8-bit re-release of the same knee (near-duplicate)
                enhanced = np.power(arr / 4095.0, 0.6) * 255
                _write(public / split / str(grade) / f"{90000 + p.index}{side}.png", _png(enhanced.astype(np.uint8)))
            else:  # public-only knees, 8-bit as public datasets often are
                other = draw_radiograph(grade, side, rng, pose=np.random.default_rng([seed, p.index, 3, side == "L"])
                                        if poses else None)
                out = (other >> 4).astype(np.uint8)
                if p.index == 3:  # instead (drawn all the same, so later patients keep their pixels): a
                    # cropped and resized 8-bit re-release of the pacs knee (near-duplicate)
                    out = cropped_reexport(arr, np.random.default_rng([seed, p.index, 4, side == "L"]))
                elif has_burned_text(p) and side == "L":  # a digitised film: the ID on a light label
                    from ingest.text.render import TextStyle, burn

                    out = burn(out, burned_lines(p)[1:], TextStyle(height=0.04, polarity="dark", frame="box",
                                                                   corner="bottom-left"))[0]
                _write(public / split / str(grade) / f"{90000 + p.index}{side}.png", _png(out))
        if hips:
            hip_rng = np.random.default_rng([seed, p.index, 1])  # the knee draws stay as without hips
            side = "L" if p.index % 2 else "R"
            grade = int(hip_rng.integers(0, 5))
            stem = f"{p.family}_{p.given[0]}_hip_{side}"
            _write(study / "HIP" / f"{stem}.dcm",
                   radiograph_dicom(p, draw_hip(grade, side, hip_rng), side, hip_rng, study_uid, body_part="HIP"))
            label_rows.append({"file": stem, "kl_grade": "", "mri_acl": "", "hip_kl_grade": grade})
        acl = bool(rng.integers(0, 2))
        vol = draw_mri(acl, rng)
        for k, data in enumerate(mri_slices(p, vol, rng, study_uid)):
            _write(study / "MR_SAG_PD_FS" / f"IM{k + 1:04d}.dcm", data)
        exam = f"{p.family}_{p.given[0]}_mri"
        # array (rows, cols, slices) -> (anterior-posterior, superior-inferior, left-right): sagittal slices
        affine = np.array([[0, 0, 3.0, -20], [-0.6, 0, 0, 30], [0, -0.6, 0, 30], [0, 0, 0, 1]])
        _write(pacs / "nifti" / f"{exam}.nii.gz", _nifti(vol.astype(np.int16), affine))
        label_rows.append({"file": exam, "kl_grade": "", "mri_acl": int(acl)})
        if p.index == 0:
            _write(study / "MR_COR_T1" / "multiframe.dcm", multiframe_mri(p, draw_mri(acl, rng), rng, study_uid))
            _write(study / "SR" / "report.dcm", structured_report(p, rng, study_uid))
            # A re-export of the same study: other file names, same pixels (exact duplicates).
            for src in sorted((study / "XR").iterdir()):
                _write(pacs / "reexport" / p.folder / f"copy_{src.name}", src.read_bytes())
    broken = pacs / "broken"
    good = next(iter(sorted((pacs / patients(n_patients, seed)[0].folder).rglob("*.dcm"))))
    data = good.read_bytes()
    _write(broken / "truncated.dcm", data[: len(data) // 2])
    _write(broken / "empty.dcm", b"")
    _write(broken / "random.dcm", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _write(broken / "notes.txt", b"exported by the PACS\n")
    _write(broken / "actually_png.dcm", _png(np.zeros((8, 8), np.uint8)))
    nii = nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)).to_bytes()
    _write(broken / "corrupt.nii", b"\x00" * 40 + nii[40:])
    with open(pacs / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "kl_grade", "mri_acl"] + (["hip_kl_grade"] if hips else []))
        writer.writeheader()
        writer.writerows(label_rows)
    (tmp / MARKER).write_text(stamp)
    if root.exists():
        shutil.rmtree(root)  # an incomplete earlier attempt
    root.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, root)
    return root


def _nifti(vol: np.ndarray, affine: np.ndarray) -> bytes:
    img = nib.Nifti1Image(vol, affine)
    img.header["descrip"] = b"Zorblatt knee"  # free text a reader must not copy
    raw = img.to_bytes()
    import gzip

    return gzip.compress(raw, mtime=0)
