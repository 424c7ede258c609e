"""The embedded default source: a small, realistic, deliberately hostile export tree.

`write_phantom(root)` draws knee radiographs (femur, tibia, fibula; joint-space narrowing,
osteophytes and sclerosis by a KL-like grade 0-4) and knee MRI volumes (condyles, cartilage,
menisci, an ACL that is torn in some exams), and writes them the way real exports arrive:

  root/pacs/    DICOM as a PACS exports it: names and birth dates in folder and file names,
                every identifying attribute a de-identifier must handle (see planted.py), private
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

The modules, one concept each: patients (who), planted (the other identifying values), burned_text,
drawing (shared primitives), radiographs (knee and hip), mri (volumes and NIfTI), dicom_identity and
dicom (the DICOM objects), public (the PNG copies), broken (the broken files), tree (writing it all).
"""

from flows.phantom.broken import broken_files
from flows.phantom.burned_text import (
    burn_film_label,
    burn_identity,
    burned_lines,
    has_burned_text,
)
from flows.phantom.dicom import (
    CR_CLASS,
    DX_CLASS,
    MR_CLASS,
    SR_CLASS,
    mri_slices,
    multiframe_mri,
    radiograph_dicom,
    structured_report,
)
from flows.phantom.mri import draw_mri, nifti_gz
from flows.phantom.patients import PhantomPatient, patients
from flows.phantom.planted import (
    INSTITUTION,
    INSTITUTION_ADDRESS,
    OPERATOR,
    PRIVATE_TEXT,
    REFERRING,
    SERIAL,
    STATION,
    planted_values,
)
from flows.phantom.public import cropped_reexport
from flows.phantom.radiographs import draw_hip, draw_radiograph
from flows.phantom.tree import MARKER, write_phantom

__all__ = [
    "CR_CLASS", "DX_CLASS", "INSTITUTION", "INSTITUTION_ADDRESS", "MARKER", "MR_CLASS", "OPERATOR", "PRIVATE_TEXT",
    "REFERRING", "SERIAL", "SR_CLASS", "STATION", "PhantomPatient", "broken_files", "burn_film_label",
    "burn_identity", "burned_lines", "cropped_reexport", "draw_hip", "draw_mri", "draw_radiograph",
    "has_burned_text", "mri_slices", "multiframe_mri", "nifti_gz", "patients", "planted_values",
    "radiograph_dicom", "structured_report", "write_phantom",
]
