"""Run bookkeeping: a finished run's metrics and its run record (config, corpus, versions, times, counts, manifest)."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime
from importlib import metadata
from typing import Any

from tasks import __version__
from tasks.intervals import DEFAULT_BOOTSTRAP, INTERVAL_COLUMNS, bootstrap_intervals
from tasks.metrics import compute_metrics
from tasks.store import read_answers, write_metrics, write_run_record

__all__ = ["compute_run_metrics", "package_versions", "record_run"]

_VERSIONED = ("prefect", "ray", "pyarrow", "duckdb", "torch", "transformers", "numpy", "scikit-learn")


def compute_run_metrics(out: str, run_id: str, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> str:
    """Compute the ARFBench metrics of one run from its answer shards, with 95% cluster-bootstrap intervals of
    ``bootstrap`` resamples (0: none), and write them; returns the path."""
    answers = read_answers(out, run_id)
    if answers.empty:
        raise ValueError(f"run {run_id}: no answers under {out}")
    metrics = compute_metrics(answers)
    if bootstrap > 0:
        metrics = metrics.merge(bootstrap_intervals(answers, bootstrap, seed), on=["run_id", "answerer", "scope", "key"], how="left")
    else:
        metrics = metrics.assign(**{column: float("nan") for column in INTERVAL_COLUMNS})
    return write_metrics(metrics.assign(bootstrap=int(bootstrap)), out, run_id)


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
    answers = read_answers(out, run_id, columns=["status"])  # counts only: not the responses
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
