"""Arrow schemas of the catalog's Parquet parts. docs/catalog.md describes every column.

Every string column that is not a key holds a value from a closed vocabulary (see
catalog/vocab.py): free text from a source never reaches a part.
"""

from __future__ import annotations

import functools

import pyarrow as pa

SCHEMA_VERSION = 1

# One row per processed version of an input file. The `files` view keeps the newest version.
FILE_ROW = pa.schema(
    [
        ("source", pa.string()),
        ("source_seq", pa.int32()),
        ("file_id", pa.string()),
        ("file_version", pa.string()),
        ("generation", pa.int32()),
        ("run_id", pa.string()),
        ("part_id", pa.string()),
        ("format", pa.string()),
        ("outcome", pa.string()),  # ok | quarantined; the view derives ingested/duplicate
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("n_images", pa.int32()),
        ("bytes", pa.int64()),
        ("committed_at", pa.timestamp("us", tz="UTC")),
        ("schema_version", pa.int16()),
    ]
)

# One row per 2D image a file produced. The `images` view keeps the first occurrence per image_id.
OCCURRENCE = pa.schema(
    [
        ("image_id", pa.string()),
        ("source", pa.string()),
        ("source_seq", pa.int32()),
        ("file_id", pa.string()),
        ("file_version", pa.string()),
        ("generation", pa.int32()),
        ("part_id", pa.string()),
        ("frame_index", pa.int32()),
        ("format", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("laterality", pa.string()),
        ("view", pa.string()),
        ("plane", pa.string()),
        ("sequence_family", pa.string()),
        ("fat_suppressed", pa.bool_()),
        ("manufacturer", pa.string()),
        ("model_family", pa.string()),
        ("sop_class", pa.string()),
        ("image_kind", pa.string()),
        ("photometric", pa.string()),
        ("patient_key", pa.string()),
        ("patient_key_basis", pa.string()),
        ("study_key", pa.string()),
        ("series_key", pa.string()),
        ("source_split", pa.string()),
        ("volume_index", pa.int32()),
        ("slice_position", pa.float64()),
        ("instance_number", pa.int32()),
        ("rows", pa.int32()),
        ("cols", pa.int32()),
        ("bits", pa.int16()),
        ("bits_stored", pa.int16()),
        ("pixel_spacing_row", pa.float64()),
        ("pixel_spacing_col", pa.float64()),
        ("slice_thickness", pa.float64()),
        ("orientation", pa.string()),
        ("intensity_scale", pa.float64()),
        ("intensity_offset", pa.float64()),
        ("window_center", pa.float64()),
        ("window_width", pa.float64()),
        ("echo_time", pa.float64()),
        ("repetition_time", pa.float64()),
        ("field_strength", pa.float64()),
        ("study_date", pa.date32()),
        ("patient_age_days", pa.int32()),
        ("store_path", pa.string()),
        # burned-in text screening (ingest/text/): the detector's version when screened, else null
        ("text_detector", pa.string()),
        ("pixels_cleaned", pa.bool_()),  # text regions were masked before the pixels were stored
        ("text_regions", pa.int16()),
        ("text_regions_unread", pa.int16()),  # of those, masked unread: the detector was sure, OCR read nothing
    ]
)

LABEL = pa.schema(
    [
        ("image_id", pa.string()),
        ("task", pa.string()),
        ("value", pa.string()),
        ("source", pa.string()),
        ("file_id", pa.string()),
        ("part_id", pa.string()),
    ]
)

# Private: the only place a source path is kept. Never exported, never printed.
LINEAGE = pa.schema(
    [
        ("source", pa.string()),
        ("file_id", pa.string()),
        ("file_version", pa.string()),
        ("location", pa.string()),
        ("path", pa.string()),  # readable: bytes that are not UTF-8 shown as \xNN escapes
        ("path_bytes", pa.binary()),  # the path exactly as the file system has it (os.fsencode)
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("run_id", pa.string()),
    ]
)

RUN = pa.schema(
    [
        ("run_id", pa.string()),
        ("kind", pa.string()),
        ("source", pa.string()),
        ("phase", pa.string()),  # started | finished
        ("status", pa.string()),  # running | completed | failed
        ("generation", pa.int32()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
        ("files_seen", pa.int64()),
        ("files_processed", pa.int64()),
        ("files_skipped", pa.int64()),
        ("images", pa.int64()),
        ("quarantined", pa.int64()),
        ("params", pa.string()),
    ]
)

TABLES = {"files": FILE_ROW, "occurrences": OCCURRENCE, "labels": LABEL}

# Curation (curation/run.py): signatures, keypoints and splits are appended once per image / patient; dups,
# quality and leakage are recomputed by every run into catalog/curation/<run_id>/.
SIGNATURE = pa.schema([
    ("image_id", pa.string()), ("emb", pa.binary()), ("emb_flip", pa.binary()),
    ("mean", pa.float32()), ("std", pa.float32()), ("min", pa.float32()), ("max", pa.float32()),
    ("p01", pa.float32()), ("p99", pa.float32()), ("frac_at_min", pa.float32()), ("frac_at_max", pa.float32()),
    ("frac_at_full", pa.float32()),
])
KEYPOINTS = pa.schema([("image_id", pa.string()), ("n", pa.int16()), ("kp", pa.binary()), ("desc", pa.binary())])
SPLIT = pa.schema([("patient_key", pa.string()), ("split", pa.string()), ("basis", pa.string()), ("run_id", pa.string())])
DUPS = pa.schema([("image_id", pa.string()), ("dup_group", pa.string()), ("representative", pa.bool_()),
                  ("group_size", pa.int32()), ("matched_image_id", pa.string()), ("method", pa.string()),
                  ("similarity", pa.float32())])
QUALITY = pa.schema([("image_id", pa.string()), ("reason", pa.string()), ("excluding", pa.bool_())])
LEAKAGE = pa.schema([("image_id", pa.string()), ("reason", pa.string())])
# Stored images a stage could not open (catalog/unreadable.py), appended by each run that met one.
UNREADABLE = pa.schema([("image_id", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
                        ("run_id", pa.string()), ("recorded_at", pa.timestamp("us", tz="UTC"))])

# Embeddings (catalog/embeddings.py): one vector per (image, model), appended in parts; clusters: the hierarchical
# k-means of one model's vectors, level 1 the finest, recomputed as a whole.
EMBEDDING = pa.schema([("image_id", pa.string()), ("model", pa.string()), ("dims", pa.int32()),
                       ("vector", pa.list_(pa.float32())), ("model_sha256", pa.string())])
CLUSTER = pa.schema([("image_id", pa.string()), ("model", pa.string()), ("level", pa.int16()),
                     ("cluster", pa.int32()), ("distance", pa.float32())])


# One row per evaluation result: a (task, model, protocol, label fraction, seed) scored on the
# task's test part. Metric columns a task kind does not use are null; *_lo/*_hi bound the 95% CI
# from a bootstrap over patients.
EVAL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "auroc", "auprc")
EVAL = pa.schema(
    [
        ("eval_id", pa.string()),
        ("task", pa.string()),
        ("model", pa.string()),  # pretrained | random | supervised | pixels | majority | a checkpoint name
        ("protocol", pa.string()),  # linear | knn | finetune | majority
        ("fraction", pa.float64()),
        ("seed", pa.int32()),
        ("checkpoint", pa.string()),
        ("checkpoint_sha256", pa.string()),
        ("architecture", pa.string()),
        ("pretrained_on", pa.string()),  # body parts / modalities of the run's shard set, e.g. knee/DX
        ("task_domain", pa.string()),
        ("transfer", pa.string()),  # in-domain | cross-anatomy | cross-modality | cross-anatomy+modality | unknown
        ("n_fit", pa.int64()),
        ("n_test", pa.int64()),
        ("test_patients", pa.int64()),
        *[(f"{m}{suffix}", pa.float64()) for m in EVAL_METRICS for suffix in ("", "_lo", "_hi")],
        ("chosen", pa.string()),  # JSON: hyper-parameters picked on the selection split
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


@functools.lru_cache(maxsize=None)
def empty_select(schema: pa.Schema) -> str:
    """A typed, empty SELECT for a view whose parts do not exist yet."""
    import duckdb

    con = duckdb.connect()
    con.register("_empty", schema.empty_table())
    cols = con.execute("DESCRIBE _empty").fetchall()
    con.close()
    body = ", ".join(f'CAST(NULL AS {typ}) AS "{name}"' for name, typ, *_ in cols)
    return f"SELECT {body} WHERE false"
