"""Metrics and leaderboards for people: compute + store metrics, render tables and markdown, a run record."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from importlib import metadata
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tasks import __version__
from tasks.metrics import compute_metrics
from tasks.store import open_views, read_answers, write_metrics, write_run_record

LEADERBOARD_COLUMNS: tuple[str, ...] = ("answerer", "run_id", "n", "accuracy", "macro_f1", "invalid", "n_error")
_VERSIONED = ("prefect", "ray", "pyarrow", "duckdb", "torch", "transformers", "numpy", "scikit-learn")


def progress_bar(console: Any = None) -> Progress:
    """The bar long jobs show: done / total, a rate field the caller fills, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def compute_run_metrics(out: str, run_id: str) -> str:
    """Compute the ARFBench metrics of one run from its answer shards and write them; returns the path."""
    answers = read_answers(out, run_id)
    if answers.empty:
        raise ValueError(f"run {run_id}: no answers under {out}")
    return write_metrics(compute_metrics(answers), out, run_id)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "arfscore": __version__}  # the code running, installed or shipped
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def record_run(
    out: str, run_id: str, *, answerer: str, corpus: str, corpus_checksum: str, config: Any, started_at: datetime, ended_at: datetime,
    manifest: Mapping[str, Any] | None = None,
) -> str:
    """Write results/runs/run_id=R/run.parquet: config, corpus + checksum, versions, times, counts, manifest."""
    answers = read_answers(out, run_id)
    n_error = int((answers["status"] == "error").sum()) if not answers.empty else 0
    config_dict = asdict(config) if is_dataclass(config) else dict(config)
    return write_run_record(
        {
            "run_id": run_id,
            "answerer": answerer,
            "corpus": corpus,
            "corpus_checksum": corpus_checksum,
            "config_json": json.dumps(config_dict, default=str, sort_keys=True),
            "versions_json": json.dumps(package_versions(), sort_keys=True),
            "started_at": started_at,
            "ended_at": ended_at,
            "n_questions": len(answers),
            "n_ok": len(answers) - n_error,
            "n_error": n_error,
            "manifest_json": json.dumps(manifest, sort_keys=True, default=str) if manifest is not None else None,
        },
        out,
        run_id,
    )


def read_leaderboard(out: str, run_ids: Sequence[str] | None = None, db_path: str | None = None) -> pd.DataFrame:
    """The `leaderboard` view (answerer x run), optionally only some runs; run ids are bound parameters."""
    con = open_views(out, db_path)
    try:
        columns = ", ".join(LEADERBOARD_COLUMNS)
        if run_ids:
            placeholders = ", ".join("?" for _ in run_ids)
            sql = f"select {columns} from leaderboard where run_id in ({placeholders}) order by accuracy desc, run_id"
            return con.execute(sql, list(run_ids)).df()
        return con.execute(f"select {columns} from leaderboard order by accuracy desc, run_id").df()
    finally:
        con.close()


def leaderboard_markdown(board: pd.DataFrame) -> str:
    header = "| answerer | run | n | accuracy | macro F1 | invalid | errors |\n|---|---|---:|---:|---:|---:|---:|\n"
    lines = [
        f"| {row.answerer} | {row.run_id} | {row.n} | {row.accuracy:.3f} | {_fmt(row.macro_f1)} | {row.invalid} | {row.n_error} |"
        for row in board.itertuples()
    ]
    return "# arfscore leaderboard\n\n" + header + "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.3f}"


def artifact_key(run_id: str) -> str:
    """The Prefect artifact key of a run's leaderboard (lower-case letters, digits and dashes only)."""
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in run_id.lower()).strip("-")
    return f"leaderboard-{cleaned or 'run'}"
