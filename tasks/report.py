"""Leaderboards for people: read from the DuckDB views, rendered as markdown, published as Prefect artifacts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from tasks.store import open_views

LEADERBOARD_COLUMNS: tuple[str, ...] = ("answerer", "run_id", "n", "accuracy", "macro_f1", "invalid", "n_error")


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
