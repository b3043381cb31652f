"""Result storage: Parquet answers / metrics / run records (hive-partitioned by run_id) and the DuckDB views.

Layout under ``out`` (a local directory or an ``s3://`` URL; DESIGN.md section 7)::

    answers/run_id=R/shard=00000.parquet   ANSWER_SCHEMA, one file per complete shard
    metrics/run_id=R/metrics.parquet       METRICS_SCHEMA
    runs/run_id=R/run.parquet              RUN_SCHEMA (a directory per run: hive partitioning needs one)
    runs/run_id=R/manifest.json            what defines the run (tasks/manifest.py), written at its first start
    arfscore.duckdb                        views from sql/ (local ``out`` only; in memory for remote ``out``)

Every file is written whole to a temporary name in its final directory (".<name>.<random>.tmp") and then renamed,
so a file exists only when complete and a killed run resumes by skipping the shards already there. On object
stores the final key is created by one PUT/COPY, which is atomic as well. Readers never read temp files;
remove_temp_files deletes those a killed run left (the flow calls it when a run starts or resumes).

Functions are plain, typed and small (verb_noun), so flows can wrap them as Prefect tasks and tests call them
directly. Each takes an optional fsspec ``filesystem``; without one, a ``scheme://`` URL is resolved with fsspec
(``s3://`` -> s3fs, credentials and endpoint from the usual AWS environment) and a plain path uses pathlib.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import duckdb
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tasks.storage import display_path, local_path, read_if_exists, result_filesystem, write_atomic

__all__ = [
    "ANSWER_SCHEMA",
    "METRICS_SCHEMA",
    "RUN_SCHEMA",
    "answers_table",
    "manifest_path",
    "metrics_path",
    "open_views",
    "read_answers",
    "read_manifest",
    "read_metrics",
    "remove_temp_files",
    "run_record_path",
    "run_sql_asserts",
    "shard_path",
    "sql_literal",
    "validate_run_id",
    "write_manifest",
    "write_metrics",
    "write_run_record",
    "write_shard",
    "written_shards",
]

ANSWER_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("question_id", pa.int64()),
        pa.field("query_group", pa.string()),
        pa.field("category", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("answerer", pa.string()),
        pa.field("options", pa.list_(pa.string())),
        pa.field("correct_answer", pa.string()),
        pa.field("raw_response", pa.string()),
        pa.field("parsed_answer", pa.string()),  # None when the reply matched no option
        pa.field("is_valid", pa.bool_()),
        pa.field("is_correct", pa.bool_()),
        pa.field("status", pa.string()),  # "ok" | "error"
        pa.field("error", pa.string()),  # None when status == "ok"
        pa.field("error_kind", pa.string()),  # "input" (bad or missing input) | "answerer" (it failed); None when ok
        pa.field("latency_s", pa.float64()),
        pa.field("n_variates", pa.int64()),
        pa.field("n_steps", pa.int64()),
        pa.field("interval_s", pa.int64()),
        pa.field("option_order_seed", pa.int64()),
        # What the answerer saw (model/records.InputUse; null where the answerer did not say), all groups summed:
        pa.field("variates_used", pa.int64()),
        pa.field("variates_total", pa.int64()),
        pa.field("steps_used", pa.int64()),
        pa.field("steps_total", pa.int64()),
        pa.field("context_policy", pa.string()),  # full | windows | recent | reference | none (did not look)
        pa.field("context_windows", pa.int64()),
        pa.field("channels_listed", pa.int64()),  # channel names given in the prompt
        pa.field("channels_total", pa.int64()),
        pa.field("images_given", pa.int64()),
        pa.field("parse_status", pa.string()),  # json | answer_line | before_period | raw | direct | unmatched | truncated
        pa.field("prompt_tokens", pa.int64()),  # None for answerers without tokens
        pa.field("completion_tokens", pa.int64()),
        pa.field("served_model", pa.string()),  # the model an API server says it used
        pa.field("cost_usd", pa.float64()),  # API cost of this answer (0 or null where nothing was paid)
        pa.field("cache_hit", pa.bool_()),  # answered from the response cache
        pa.field("node_id", pa.string()),  # Ray node that answered, None outside Ray
        pa.field("gpu_ids", pa.list_(pa.string())),  # GPU ids Ray assigned to the answering actor ([] on CPU)
        pa.field("attempts", pa.int32()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
# Columns that must never be null in an answer row (the rest may be, e.g. for an error row of a broken CSV row).
_ANSWER_REQUIRED = ("run_id", "question_id", "answerer", "is_valid", "is_correct", "status", "created_at")
_STATUSES = ("ok", "error")

METRICS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("answerer", pa.string()),
        pa.field("scope", pa.string()),  # "overall" | "category" | "tier"
        pa.field("key", pa.string()),  # category / tier name, or "all" for overall
        pa.field("n", pa.int64()),
        pa.field("n_correct", pa.int64()),
        pa.field("accuracy", pa.float64()),
        pa.field("macro_f1", pa.float64()),
        pa.field("invalid", pa.int64()),
        pa.field("f1_invalid", pa.int64()),
        # 95% cluster-bootstrap intervals (tasks/intervals.py) and the number of resamples (0: none computed)
        pa.field("accuracy_lo", pa.float64()),
        pa.field("accuracy_hi", pa.float64()),
        pa.field("macro_f1_lo", pa.float64()),
        pa.field("macro_f1_hi", pa.float64()),
        pa.field("bootstrap", pa.int64()),
    ]
)

_OPTIONAL_METRIC_COLUMNS = ("accuracy_lo", "accuracy_hi", "macro_f1_lo", "macro_f1_hi", "bootstrap")

RUN_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("answerer", pa.string()),
        pa.field("corpus", pa.string()),
        pa.field("corpus_checksum", pa.string()),
        pa.field("config_json", pa.string()),
        pa.field("versions_json", pa.string()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("ended_at", pa.timestamp("us", tz="UTC")),
        pa.field("n_questions", pa.int64()),
        pa.field("n_ok", pa.int64()),
        pa.field("n_error", pa.int64()),
        pa.field("manifest_json", pa.string()),  # the run manifest (tasks/manifest.py)
    ]
)

_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SHARD_FILE = re.compile(r"shard=(\d+)\.parquet")
# Temp names written by _write_table_atomic: ".<final name>.<32 hex>.tmp".
_TEMP_FILE = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")
_GLOB_CHARS = set("*?[]{}")

# Placeholders in sql/staging/*.sql -> (glob under out, schema of the files). See open_views.
_SOURCES: dict[str, tuple[str, pa.Schema]] = {
    "answers_glob": ("answers/run_id=*/shard=*.parquet", ANSWER_SCHEMA),
    "metrics_glob": ("metrics/run_id=*/metrics.parquet", METRICS_SCHEMA),
    "runs_glob": ("runs/run_id=*/run.parquet", RUN_SCHEMA),
}
# A whole `read_parquet({placeholder}, ...options...)` call in a staging file (options hold no parentheses).
_SOURCE_CALL = re.compile(r"read_parquet\(\s*\{(?P<name>\w+)\}[^()]*\)")
_PLACEHOLDER = re.compile(r"\{(\w+_glob)\}")
_VIEW_NAME = re.compile(r"[a-z_][a-z0-9_]*")


# ------------------------------------------------------------------------------------------------------ locations


def validate_run_id(run_id: str) -> str:
    """run_id must be 1-128 characters of [A-Za-z0-9._-] (it becomes a path segment and a partition value)."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
        raise ValueError(f"invalid run_id {run_id!r}: use 1-128 characters of A-Z a-z 0-9 . _ -")
    return run_id


def _root(out: str | os.PathLike[str]) -> str:
    text = os.fspath(out)
    return text.rstrip("/") if text.rstrip("/") else text


def shard_path(out: str | os.PathLike[str], run_id: str, shard: int) -> str:
    """``{out}/answers/run_id={run_id}/shard={shard:05d}.parquet``."""
    validate_run_id(run_id)
    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
        raise ValueError(f"invalid shard {shard!r}: must be an int >= 0")
    return f"{_root(out)}/answers/run_id={run_id}/shard={shard:05d}.parquet"


def metrics_path(out: str | os.PathLike[str], run_id: str) -> str:
    """``{out}/metrics/run_id={run_id}/metrics.parquet``."""
    return f"{_root(out)}/metrics/run_id={validate_run_id(run_id)}/metrics.parquet"


def run_record_path(out: str | os.PathLike[str], run_id: str) -> str:
    """``{out}/runs/run_id={run_id}/run.parquet``."""
    return f"{_root(out)}/runs/run_id={validate_run_id(run_id)}/run.parquet"


def manifest_path(out: str | os.PathLike[str], run_id: str) -> str:
    """``{out}/runs/run_id={run_id}/manifest.json``."""
    return f"{_root(out)}/runs/run_id={validate_run_id(run_id)}/manifest.json"


# ---------------------------------------------------------------------------------------------------- file writes


def _write_table_atomic(table: pa.Table, path: str, fs: fsspec.AbstractFileSystem | None) -> str:
    """Write ``table`` as Parquet whole (tasks/storage.write_atomic: temp name, then rename; retried remotely)."""
    return write_atomic(path, lambda handle: pq.write_table(table, handle), fs)


def _temp_files(directory: str, fs: fsspec.AbstractFileSystem | None) -> list[str]:
    if fs is None:
        local = local_path(directory)
        names = [p.name for p in local.iterdir() if p.is_file()] if local.is_dir() else []
    else:
        fs.invalidate_cache()  # listings are written by other processes: never trust a cached one
        try:
            listed = fs.ls(directory, detail=False)
        except FileNotFoundError:
            listed = []
        names = [p.rsplit("/", 1)[-1] for p in listed]
    return [f"{directory}/{name}" for name in sorted(names) if _TEMP_FILE.fullmatch(name)]


def remove_temp_files(
    out: str | os.PathLike[str], run_id: str, filesystem: fsspec.AbstractFileSystem | None = None
) -> list[str]:
    """Delete temp files a killed run left in ``run_id``'s answers, metrics and runs folders; returns their paths.

    Readers never see them (only final names are read), so this is housekeeping: call it when a run starts or
    resumes, never while another process writes the same run id.
    """
    root = _root(out)
    validate_run_id(run_id)
    fs = result_filesystem(out, filesystem)
    removed: list[str] = []
    for kind in ("answers", "metrics", "runs"):
        for path in _temp_files(f"{root}/{kind}/run_id={run_id}", fs):
            if fs is None:
                local_path(path).unlink(missing_ok=True)
            else:
                fs.rm(path)
            removed.append(path)
    return removed


def _check_required(table: pa.Table, columns: Sequence[str], what: str) -> None:
    for name in columns:
        if table.column(name).null_count:
            raise ValueError(f"{what}: column {name!r} has {table.column(name).null_count} null value(s)")


def answers_table(rows: Sequence[Mapping[str, Any]], run_id: str) -> pa.Table:
    """Answer rows (dicts keyed by ANSWER_SCHEMA names) as a validated Arrow table: what actors send the driver."""
    names = set(ANSWER_SCHEMA.names)
    now = datetime.now(timezone.utc)
    prepared: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - names)
        if unknown:
            raise ValueError(f"answer row {i} (question {row.get('question_id')}): unknown column(s) {unknown}")
        record = dict(row)
        if record.setdefault("run_id", run_id) != run_id:
            raise ValueError(f"answer row {i}: run_id {record['run_id']!r} does not match {run_id!r}")
        if record.get("created_at") is None:
            record["created_at"] = now
        if record.get("attempts") is None:
            record["attempts"] = 1
        if record.get("status") not in _STATUSES:
            raise ValueError(
                f"answer row {i} (question {record.get('question_id')}): status {record.get('status')!r} "
                f"is not one of {_STATUSES}"
            )
        if record.get("options") is not None:
            record["options"] = list(record["options"])
        if record.get("gpu_ids") is not None:
            record["gpu_ids"] = [str(gpu) for gpu in record["gpu_ids"]]
        prepared.append(record)
    table = pa.Table.from_pylist(prepared, schema=ANSWER_SCHEMA)
    _check_required(table, _ANSWER_REQUIRED, f"answers of run {run_id}")
    return table


def write_shard(
    rows: list[dict[str, Any]] | pa.Table,
    out: str | os.PathLike[str],
    run_id: str,
    shard: int,
    filesystem: fsspec.AbstractFileSystem | None = None,
) -> str:
    """Write one complete shard of answer rows (ANSWER_SCHEMA) atomically; returns its path.

    Rows are dicts keyed by ANSWER_SCHEMA column names (or a table made by :func:`answers_table`); missing
    nullable columns are null, a missing run_id is filled in, created_at defaults to now (UTC) and attempts to 1.
    Unknown columns, a different run_id, a status other than "ok"/"error" or a null required column raise
    ValueError.
    """
    path = shard_path(out, run_id, shard)
    if isinstance(rows, pa.Table):
        if not rows.schema.equals(ANSWER_SCHEMA):
            raise ValueError(f"shard {shard} of run {run_id}: the table does not have ANSWER_SCHEMA")
        if set(rows.column("run_id").to_pylist()) - {run_id}:
            raise ValueError(f"shard {shard}: rows of another run than {run_id!r}")
        table = rows
    else:
        table = answers_table(rows, run_id)
    return _write_table_atomic(table, path, result_filesystem(out, filesystem))


def written_shards(
    out: str | os.PathLike[str], run_id: str, filesystem: fsspec.AbstractFileSystem | None = None
) -> set[int]:
    """Shard numbers already written (complete) for ``run_id``; temp files are ignored."""
    directory = f"{_root(out)}/answers/run_id={validate_run_id(run_id)}"
    fs = result_filesystem(out, filesystem)
    if fs is None:
        local = local_path(directory)
        names = [p.name for p in local.iterdir() if p.is_file()] if local.is_dir() else []
    else:
        fs.invalidate_cache()  # listings are written by other processes: never trust a cached one
        names = [p.rsplit("/", 1)[-1] for p in fs.glob(f"{directory}/shard=*.parquet")]
    return {int(m.group(1)) for name in names if (m := _SHARD_FILE.fullmatch(name))}


def write_metrics(
    metrics_df: pd.DataFrame,
    out: str | os.PathLike[str],
    run_id: str,
    filesystem: fsspec.AbstractFileSystem | None = None,
) -> str:
    """Write the metrics of one run (METRICS_SCHEMA columns; run_id filled in when absent; without intervals the
    interval columns are null and bootstrap 0) atomically."""
    path = metrics_path(out, run_id)
    df = metrics_df.copy()
    if "run_id" not in df.columns:
        df["run_id"] = run_id
    for column in _OPTIONAL_METRIC_COLUMNS:
        if column not in df.columns:
            df[column] = 0 if column == "bootstrap" else float("nan")
    missing = [c for c in METRICS_SCHEMA.names if c not in df.columns]
    if missing:
        raise ValueError(f"metrics of run {run_id}: missing column(s) {missing}")
    wrong = sorted(set(df["run_id"].astype(str)) - {run_id})
    if wrong:
        raise ValueError(f"metrics of run {run_id}: rows of other run(s) {wrong}")
    table = pa.Table.from_pandas(df[METRICS_SCHEMA.names], schema=METRICS_SCHEMA, preserve_index=False)
    _check_required(table, ("run_id", "answerer", "scope", "key", "n"), f"metrics of run {run_id}")
    return _write_table_atomic(table, path, result_filesystem(out, filesystem))


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        raise ValueError(f"expected a datetime or ISO string, got {value!r}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def write_run_record(
    record: Mapping[str, Any],
    out: str | os.PathLike[str],
    run_id: str,
    filesystem: fsspec.AbstractFileSystem | None = None,
) -> str:
    """Write the one-row run record (RUN_SCHEMA) atomically; returns its path.

    ``config_json`` / ``versions_json`` may be given as strings or as dicts (or as ``config`` / ``versions``
    dicts), which are serialised with sorted keys. Times may be datetimes (naive = UTC) or ISO strings.
    """
    path = run_record_path(out, run_id)
    row = dict(record)
    for key in ("config", "versions"):
        if key in row:
            row.setdefault(f"{key}_json", row.pop(key))
    for key in ("config_json", "versions_json"):
        if row.get(key) is not None and not isinstance(row[key], str):
            row[key] = json.dumps(row[key], sort_keys=True, default=str)
    unknown = sorted(set(row) - set(RUN_SCHEMA.names))
    if unknown:
        raise ValueError(f"run record of {run_id}: unknown field(s) {unknown}")
    if row.setdefault("run_id", run_id) != run_id:
        raise ValueError(f"run record: run_id {row['run_id']!r} does not match {run_id!r}")
    row["started_at"] = _as_utc(row.get("started_at"))
    row["ended_at"] = _as_utc(row.get("ended_at"))
    table = pa.Table.from_pylist([row], schema=RUN_SCHEMA)
    return _write_table_atomic(table, path, result_filesystem(out, filesystem))


def write_manifest(
    manifest: Mapping[str, Any], out: str | os.PathLike[str], run_id: str, filesystem: fsspec.AbstractFileSystem | None = None
) -> str:
    """Write ``runs/run_id=R/manifest.json`` whole (sorted keys, UTF-8); returns its path."""
    payload = (json.dumps(manifest, sort_keys=True, indent=2, default=str) + "\n").encode("utf-8")
    return write_atomic(manifest_path(out, run_id), lambda handle: handle.write(payload), result_filesystem(out, filesystem))


def read_manifest(
    out: str | os.PathLike[str], run_id: str, filesystem: fsspec.AbstractFileSystem | None = None
) -> dict[str, Any] | None:
    """The run's manifest, or None when the run has none yet."""
    path = manifest_path(out, run_id)
    fs = result_filesystem(out, filesystem)

    payload = read_if_exists(path, fs)
    if payload is None:
        return None
    try:
        manifest = json.loads(payload)
    except json.JSONDecodeError as error:
        raise ValueError(f"{display_path(path, fs)}: not valid JSON ({error})") from error
    if not isinstance(manifest, dict):
        raise ValueError(f"{display_path(path, fs)}: expected a JSON object")
    return manifest


# ----------------------------------------------------------------------------------------------------- file reads


def _list_files(out: str | os.PathLike[str], pattern: str, fs: fsspec.AbstractFileSystem | None) -> list[str]:
    root = _root(out)
    if fs is None:
        base = local_path(root)
        found = sorted(str(p) for p in base.glob(pattern) if p.is_file()) if base.is_dir() else []
    else:
        fs.invalidate_cache()  # listings are written by other processes: never trust a cached one
        found = sorted(fs.glob(f"{root}/{pattern}"))
    return [p for p in found if not p.rsplit("/", 1)[-1].startswith(".")]


def _read_tables(
    paths: list[str], schema: pa.Schema, fs: fsspec.AbstractFileSystem | None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    if not paths:
        return schema.empty_table().select(list(columns) if columns else schema.names).to_pandas()
    # No hive partitioning here: run_id is stored in the files themselves. Files missing a (newer) column read
    # it as null thanks to the explicit schema.
    dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=fs)
    return dataset.to_table(columns=list(columns) if columns else None).to_pandas()


def read_answers(
    out: str | os.PathLike[str],
    run_id: str | None = None,
    filesystem: fsspec.AbstractFileSystem | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """All answer rows under ``out`` (or of one run), sorted by run_id, question_id; empty frame if none.
    ``columns``: only these (run_id and question_id are always read, for the order)."""
    fs = result_filesystem(out, filesystem)
    run_dir = "run_id=*" if run_id is None else f"run_id={validate_run_id(run_id)}"
    paths = [p for p in _list_files(out, f"answers/{run_dir}/shard=*.parquet", fs)
             if _SHARD_FILE.fullmatch(p.rsplit("/", 1)[-1])]
    wanted = list(dict.fromkeys(["run_id", "question_id", *columns])) if columns else None
    df = _read_tables(paths, ANSWER_SCHEMA, fs, wanted)
    return df.sort_values(["run_id", "question_id"], kind="stable").reset_index(drop=True)


def read_metrics(
    out: str | os.PathLike[str],
    run_id: str | None = None,
    filesystem: fsspec.AbstractFileSystem | None = None,
) -> pd.DataFrame:
    """All metrics rows under ``out`` (or of one run); empty frame if none."""
    fs = result_filesystem(out, filesystem)
    run_dir = "run_id=*" if run_id is None else f"run_id={validate_run_id(run_id)}"
    return _read_tables(_list_files(out, f"metrics/{run_dir}/metrics.parquet", fs), METRICS_SCHEMA, fs)


# --------------------------------------------------------------------------------------------------------- DuckDB


def sql_literal(text: str) -> str:
    """``text`` as a DuckDB string literal: wrapped in single quotes, inner single quotes doubled.

    DuckDB views cannot hold bound parameters (a view is stored as SQL text), so values that end up inside view
    SQL (the Parquet locations) are injected as quoted literals instead; never format raw text into SQL.
    """
    if "\x00" in text:
        raise ValueError("a NUL character cannot appear in a SQL string")
    return "'" + text.replace("'", "''") + "'"


_DUCKDB_TYPES: dict[pa.DataType, str] = {
    pa.string(): "varchar",
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.bool_(): "boolean",
    pa.float64(): "double",
    pa.list_(pa.string()): "varchar[]",
    pa.timestamp("us", tz="UTC"): "timestamptz",
}


def _empty_select(schema: pa.Schema) -> str:
    """A typed select with the schema's columns and no rows: stands in for Parquet files not written yet."""
    columns = ", ".join(f'cast(null as {_DUCKDB_TYPES[f.type]}) as "{f.name}"' for f in schema)
    return f"select {columns} where false"


def _sql_dir(kind: str) -> list[Traversable]:
    folder = files("sql") / kind
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


def _view_body(file: Traversable) -> str:
    return file.read_text(encoding="utf-8").strip().rstrip(";").strip()


def _render(sql: str, name: str, globs: Mapping[str, str | None]) -> str:
    """Fill the Parquet locations of a staging file: a quoted literal, or an empty typed select when none exist."""

    def source(m: re.Match[str]) -> str:
        key = m.group("name")
        if key not in _SOURCES:
            raise ValueError(f"sql file {name}: unknown placeholder {{{key}}}")
        glob = globs[key]
        if glob is None:
            return f"({_empty_select(_SOURCES[key][1])})"
        return m.group(0).replace("{" + key + "}", sql_literal(glob), 1)

    rendered = _SOURCE_CALL.sub(source, sql)
    left = _PLACEHOLDER.search(rendered)
    if left:
        raise ValueError(f"sql file {name}: placeholder {left.group(0)} must be the first argument of read_parquet")
    return rendered


def open_views(
    out: str | os.PathLike[str],
    db_path: str | os.PathLike[str] | None = None,
    filesystem: fsspec.AbstractFileSystem | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open (or create) the DuckDB database and (re)create every view of sql/staging then sql/marts.

    ``db_path`` defaults to ``{out}/arfscore.duckdb`` for a local ``out`` and to an in-memory database for a
    remote one (a DuckDB file cannot live on S3). For a remote ``out`` the fsspec filesystem is registered with
    DuckDB (httpfs is not needed). Views read the Parquet files at query time, so new shards of existing tables
    show up without reopening; a table with no files yet gets an empty typed view: call open_views again once
    it has files.
    """
    fs = result_filesystem(out, filesystem)
    root = _root(out)
    if fs is None:
        root = str(local_path(root).resolve())
        local_path(root).mkdir(parents=True, exist_ok=True)
    elif "://" not in root:
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        root = f"{protocol}://{root.lstrip('/')}"
    if _GLOB_CHARS & set(root):
        raise ValueError(f"output location {root!r} contains glob characters {''.join(sorted(_GLOB_CHARS))}")
    if db_path is None:
        db_path = f"{root}/arfscore.duckdb" if fs is None else ":memory:"

    globs: dict[str, str | None] = {}
    for key, (pattern, _schema) in _SOURCES.items():
        exists = bool(_list_files(root, pattern, fs))
        globs[key] = f"{root}/{pattern}" if exists else None

    con = duckdb.connect(os.fspath(db_path))
    try:
        if fs is not None:
            con.register_filesystem(fs)
        con.begin()
        for kind in ("staging", "marts"):
            for file in _sql_dir(kind):
                stem = file.name[: -len(".sql")]
                if not _VIEW_NAME.fullmatch(stem):
                    raise ValueError(f"sql/{kind}/{file.name}: view names are lower-case identifiers")
                body = _render(_view_body(file), f"{kind}/{file.name}", globs)
                con.execute(f'create or replace view "{stem}" as\n{body}')
        con.commit()
    except BaseException:
        con.close()
        raise
    return con


def run_sql_asserts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Run every sql/tests/assert_*.sql; returns {file stem: number of offending rows} (all 0 on sound data)."""
    results: dict[str, int] = {}
    for file in _sql_dir("tests"):
        if not file.name.startswith("assert_"):
            continue
        body = _view_body(file)
        (count,) = con.execute(f"select count(*) from (\n{body}\n) as offending").fetchone()
        results[file.name[: -len(".sql")]] = int(count)
    return results
