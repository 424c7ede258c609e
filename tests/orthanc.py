"""A real Orthanc for the PACS tests and bench/pacs.py: the Debian package's binary, started on free loopback ports
from a generated JSON config (it starts in well under a second), loaded with DICOM files built in code through its
REST API. `orthanc_binary()` is None where Orthanc is not installed (`apt-get install orthanc orthanc-dicomweb`)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "ortho-test", "correct-horse-battery"
AET, CALLING_AE = "ORTHANC", "ORTHO"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
MR = "1.2.840.10008.5.1.4.1.1.4"

# Identifying values planted in every header: none may appear anywhere in a workspace after a pull.
PLANTED = {"PatientName": "Plantedname^Alicia", "PatientID": "PLT-88231", "InstitutionName": "Plantedville Clinic",
           "AccessionNumber": "ACCPLT4471", "ReferringPhysicianName": "Doctor^Plantedref",
           "PatientBirthDate": "19610203", "StudyDate": "20190314", "OperatorsName": "Operator^Plantedop",
           "StationName": "PLTSTATION9"}


def orthanc_binary() -> str | None:
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    return found if found and DICOMWEB_PLUGIN.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.http_port, self.dicom_port, self.move_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "orthanc.json").write_text(json.dumps(self.config(), indent=1))

    def config(self) -> dict:
        return {
            "Name": "ortho-test", "StorageDirectory": str(self.root / "db"), "IndexDirectory": str(self.root / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AET, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomCheckCalledAet": True, "DicomAlwaysAllowFind": False, "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False, "DicomAlwaysAllowEcho": False,
            "DicomModalities": {"ortho": {"AET": CALLING_AE, "Host": "127.0.0.1", "Port": self.move_port}},
            "StorageCompression": False, "HttpCompressionEnabled": False, "ConcurrentJobs": 4,
            "DicomScpTimeout": 30, "LimitFindResults": 0, "LimitFindInstances": 0,
        }

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"dicomweb+http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dimse(self) -> str:
        return f"dimse://{AET}@127.0.0.1:{self.dicom_port}"

    def start(self) -> "Orthanc":
        log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([orthanc_binary(), str(self.root / "orthanc.json")], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/system", auth=(USER, PASSWORD), timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("Orthanc did not start; see " + str(self.root / "orthanc.log"))

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def rest(self, method: str, path: str, **kw) -> requests.Response:
        response = requests.request(method, self.base + path, auth=(USER, PASSWORD), timeout=30, **kw)
        response.raise_for_status()
        return response

    def upload(self, data: bytes) -> str:
        return self.rest("POST", "/instances", data=data).json()["ID"]

    def clear(self) -> None:
        for study in self.rest("GET", "/studies").json():
            self.rest("DELETE", f"/studies/{study}")

    def instance_ids(self) -> list[str]:
        return self.rest("GET", "/instances").json()


def make_instance(study: str, series: str, number: int, *, modality: str = "DX", size: int = 48, seed: int = 0,
                  description: str = "KNEE 2 VIEWS", body_part: str = "KNEE") -> bytes:
    """A small 16-bit DICOM image with every planted identifying value in its header."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    pixels = (2000 + 800 * np.sin(xx / (3 + seed % 5)) + 600 * np.cos(yy / 4) + rng.normal(0, 40, (size, size)))
    ds = Dataset()
    ds.SOPClassUID = DX if modality in ("DX", "CR") else MR
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.BodyPartExamined, ds.StudyDescription = modality, body_part, description
    ds.InstanceNumber, ds.SeriesNumber = number, 1
    for key, value in PLANTED.items():
        setattr(ds, key, value)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.clip(pixels, 0, 4095).astype(np.uint16).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def load_studies(orthanc: Orthanc, n_studies: int, *, series: int = 2, per_series: int = 2, seed: int = 0,
                 modality: str = "DX", size: int = 48) -> list[str]:
    """Upload `n_studies` new studies; returns their StudyInstanceUIDs."""
    uids = []
    for s in range(n_studies):
        study = generate_uid()
        uids.append(study)
        for k in range(series):
            series_uid = generate_uid()
            for i in range(per_series):
                orthanc.upload(make_instance(study, series_uid, i + 1, modality=modality, size=size,
                                             seed=seed * 1000 + s * 100 + k * 10 + i))
    return uids
