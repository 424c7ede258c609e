"""Instances/s pulled from a local Orthanc over DICOMweb and DIMSE, against the archive's own limit in the same run.

    python bench/pacs.py                        # 240 instances of 512x512 16-bit, 1 and 4 connections
    python bench/pacs.py --instances 600 --size 1024

The limit: Orthanc's REST download of the same instances (GET /instances/{id}/file, the archive reading its own
storage and sending the bytes, nothing else) with the leanest client (http.client) and the same number of
connections. Beside it, each protocol's own floor on the same archive: the same WADO-RS requests from that bare
client, and DCMTK's getscu (C++) pulling the same studies over C-GET where dcmtk is installed. Each retrieval path is timed
alone (QIDO-RS/C-FIND listing excluded, since it is paid once per study): WADO-RS through DicomWebClient, C-GET and
C-MOVE through DimseClient, and the ratio path/limit is printed (goal: at least 0.7). Then the whole pull, `ingest`
of the source (retrieve, parse, de-identify, screen for burned-in text, store, catalog), against the ingest of the
same files from a local folder. Needs Orthanc (apt-get install orthanc orthanc-dicomweb).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from catalog import files  # noqa: E402

files.configure(fsync=False)  # a benchmark needs no power-loss durability

from ingest.pacs.dicomweb import DicomWebClient  # noqa: E402
from ingest.pacs.dimse import DimseClient  # noqa: E402
from tests.orthanc import (  # noqa: E402
    AET,
    CALLING_AE,
    PASSWORD,
    USER,
    Orthanc,
    make_instance,
    orthanc_binary,
)


def load(orthanc: Orthanc, n: int, size: int, out: Path) -> None:
    """n instances in n/8 studies of one series; each also written to `out` for the local-folder comparison."""
    from pydicom.uid import generate_uid

    study = series = None
    for i in range(n):
        if i % 8 == 0:
            study, series = generate_uid(), generate_uid()
        data = make_instance(study, series, i % 8 + 1, size=size, seed=i)
        orthanc.upload(data)
        (out / f"{i:05d}.dcm").write_bytes(data)


def timed(fn, items, connections: int, client_factory, repeats: int = 3) -> float:
    """items/s with `connections` threads, each with its own client (a session, an association); the best of
    `repeats` (a shared machine's other load only slows a run down)."""
    return max(_timed(fn, items, connections, client_factory) for _ in range(repeats))


def _timed(fn, items, connections: int, client_factory) -> float:
    chunks = [items[i::connections] for i in range(connections)]

    def run(chunk):
        with client_factory() as client:
            for at, item in enumerate(chunk):
                fn(client, item, chunk[at + 1:at + 16])  # what follows, as a batch's reader passes it

    t = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(run, chunks))
    return len(items) / (time.perf_counter() - t)


class _Bare:
    """The leanest HTTP client (http.client, one kept-alive connection): what the archive itself can serve."""

    def __init__(self, port: int):
        import base64
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.conn.close()

    def get(self, path: str, accept: str = "*/*") -> int:
        self.conn.request("GET", path, headers={**self.headers, "Accept": accept})
        response = self.conn.getresponse()
        body = response.read()
        assert response.status == 200, response.status
        return len(body)


_WADO = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def retrieval_rates(orthanc: Orthanc, connections: int) -> dict[str, float]:
    web_url = orthanc.dicomweb.split("+", 1)[1]
    with DicomWebClient("bench", web_url, auth=f"{USER}:{PASSWORD}") as web:
        instances = [i for s in web.studies({}) for i in web.instances(s.uid)]
    ids = orthanc.instance_ids()
    bare = lambda: _Bare(orthanc.http_port)  # noqa: E731
    rates = {"Orthanc REST (limit)": timed(lambda c, i, _: c.get(f"/instances/{i}/file"), ids, connections, bare)}
    rates["WADO-RS, bare client"] = timed(lambda c, i, _: c.get(
        f"/dicom-web/studies/{i.study}/series/{i.series}/instances/{i.sop}", _WADO), instances, connections, bare)
    rates["DICOMweb (ours)"] = timed(lambda c, i, nxt: c.retrieve(i, nxt), instances, connections,
                                     lambda: DicomWebClient("bench", web_url, auth=f"{USER}:{PASSWORD}"))
    dimse = dict(host="127.0.0.1", port=orthanc.dicom_port, called_ae=AET, calling_ae=CALLING_AE)
    rates["DIMSE C-GET (ours)"] = timed(lambda c, i, nxt: c.retrieve(i, nxt), instances, connections,
                                        lambda: DimseClient("bench", **dimse))
    if connections == 1 and shutil.which("getscu"):  # the archive's DIMSE floor, with DCMTK's C++ client
        studies = sorted({i.study for i in instances})
        rates["DIMSE C-GET, getscu"] = len(instances) / min(_getscu(orthanc, studies) for _ in range(3))
    if connections == 1:  # C-MOVE sends to one port: one retrieval at a time
        rates["DIMSE C-MOVE (ours)"] = timed(lambda c, i, nxt: c.retrieve(i, nxt), instances, 1, lambda: DimseClient(
            "bench", **dimse, retrieve="move", move_port=orthanc.move_port))
    return rates


def _getscu(orthanc: Orthanc, studies: list[str], nodelay: bool = False) -> float:
    """Seconds for DCMTK's getscu to C-GET every study, one call (one association) per study (`nodelay`: with
    DCMTK's TCP_NODELAY=1 switch on its side too)."""
    env = {**os.environ, "TCP_NODELAY": "1"} if nodelay else None
    out = Path(tempfile.mkdtemp())
    t = time.perf_counter()
    for study in studies:
        subprocess.run(["getscu", "-aet", CALLING_AE, "-aec", AET, "127.0.0.1", str(orthanc.dicom_port), "-S",
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "-od", str(out)],
                       check=True, capture_output=True, env=env)
    seconds = time.perf_counter() - t
    shutil.rmtree(out)
    return seconds


def nodelay_archive(orthanc: Orthanc) -> None:
    """The same archive restarted with TCP_NODELAY=1 (DCMTK's switch), getscu too: C-GET without Nagle anywhere,
    the archive's DIMSE ceiling with a C++ client."""
    orthanc.stop()
    os.environ["TCP_NODELAY"] = "1"
    try:
        orthanc.start()
    finally:
        del os.environ["TCP_NODELAY"]
    with DimseClient("bench", "127.0.0.1", orthanc.dicom_port, AET, CALLING_AE) as client:
        instances = [i for s in client.studies({}) for i in client.instances(s.uid)]
    ours = timed(lambda c, i, nxt: c.retrieve(i, nxt), instances, 1,
                 lambda: DimseClient("bench", "127.0.0.1", orthanc.dicom_port, AET, CALLING_AE))
    theirs = len(instances) / min(_getscu(orthanc, sorted({i.study for i in instances}), True) for _ in range(3))
    print(f"\narchive started with TCP_NODELAY=1, 1 connection: getscu {theirs:.0f} inst/s, ours {ours:.0f} inst/s "
          f"(ratio {ours / theirs:.2f})")


def whole_pull(orthanc: Orthanc, folder: Path, n: int) -> dict[str, float]:
    from catalog.workspace import Workspace
    from ingest.run import ingest_source
    from ingest.sources import Source, add_source

    os.environ["ORTHO_BENCH_PACS"] = f"{USER}:{PASSWORD}"
    out = {}
    for name, location, pacs in (("folder", str(folder), {}),
                                 ("dicomweb", orthanc.dicomweb, {"credentials": "env:ORTHO_BENCH_PACS"}),
                                 ("dimse", orthanc.dimse, {"calling_ae": CALLING_AE})):
        ws = Workspace.open(Path(tempfile.mkdtemp()) / "ws")
        add_source(ws, Source(name, location, "internal", pacs=pacs))
        t = time.perf_counter()
        summary = ingest_source(ws, name, batch_size=32)
        assert summary.result.files == n, (name, summary.result.files)
        out[name] = n / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=240)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--connections", default="1,4")
    args = ap.parse_args()
    if orthanc_binary() is None:
        sys.exit("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
    tmp = Path(tempfile.mkdtemp())
    orthanc = Orthanc(tmp / "orthanc").start()
    try:
        folder = tmp / "files"
        folder.mkdir()
        load(orthanc, args.instances, args.size, folder)
        mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        print(f"{args.instances} instances of {args.size}x{args.size} 16-bit ({mb:.0f} MB) in a local Orthanc")
        print(f"{'connections':>11}  {'path':<22} {'inst/s':>8} {'MB/s':>7} {'ratio to limit':>15}")
        for k in (int(c) for c in args.connections.split(",")):
            rates = retrieval_rates(orthanc, k)
            limit = rates["Orthanc REST (limit)"]
            for path, rate in rates.items():
                print(f"{k:>11}  {path:<22} {rate:8.0f} {rate * mb / args.instances:7.1f} {rate / limit:15.2f}")
        if shutil.which("getscu"):
            nodelay_archive(orthanc)
        pulls = whole_pull(orthanc, folder, args.instances)
        print("\nwhole ingest, one process (retrieve or read, parse, de-identify, text screening, store, catalog)")
        for name, rate in pulls.items():
            print(f"  {name:<9} {rate:6.0f} inst/s   ratio to the local folder {rate / pulls['folder']:.2f}")
    finally:
        orthanc.stop()


if __name__ == "__main__":
    main()
