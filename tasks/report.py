"""Leaderboards for people: read from the DuckDB views, rendered as markdown, published as Prefect artifacts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from tasks.store import open_views

LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "answerer", "run_id", "n", "accuracy", "accuracy_lo", "accuracy_hi", "macro_f1", "macro_f1_lo", "macro_f1_hi", "invalid", "n_error",
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


def with_interval(value: Any, low: Any, high: Any) -> str:
    """ "0.812 [0.781, 0.840]" (the 95% interval when there is one), "-" for a missing value."""
    if value is None or pd.isna(value):
        return "-"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def leaderboard_markdown(board: pd.DataFrame) -> str:
    """The leaderboard with 95% cluster-bootstrap intervals, as the Prefect artifact shows it."""
    header = "| answerer | run | n | accuracy [95% CI] | macro F1 [95% CI] | invalid | errors |\n|---|---|---:|---:|---:|---:|---:|\n"
    lines = [
        f"| {row.answerer} | {row.run_id} | {row.n} | {with_interval(row.accuracy, row.accuracy_lo, row.accuracy_hi)} | "
        f"{with_interval(row.macro_f1, row.macro_f1_lo, row.macro_f1_hi)} | {row.invalid} | {row.n_error} |"
        for row in board.itertuples()
    ]
    note = "\nIntervals: 95% cluster bootstrap over query groups (questions about one incident move together).\n"
    return "# arfscore leaderboard\n\n" + header + "\n".join(lines) + "\n" + note


def artifact_key(run_id: str) -> str:
    """The Prefect artifact key of a run's leaderboard (lower-case letters, digits and dashes only)."""
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in run_id.lower()).strip("-")
    return f"leaderboard-{cleaned or 'run'}"


def read_coverage(out: str, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Per answerer and run: answers, share made with the full input, mean share of variates and steps seen
    (from the `coverage` mart, pooled over categories)."""
    con = open_views(out)
    try:
        where = f"where run_id in ({', '.join('?' for _ in run_ids)})" if run_ids else ""
        sql = f"""
            select answerer, run_id, sum(n) as n, sum(n_full_input) as n_full_input, sum(n_unknown) as n_unknown,
                   sum(mean_variate_share * (n - n_unknown)) / nullif(sum(n - n_unknown), 0) as variate_share,
                   sum(mean_step_share * (n - n_unknown)) / nullif(sum(n - n_unknown), 0) as step_share,
                   -- each category's policies are already a sorted list: split, merge, dedupe
                   nullif(array_to_string(list_sort(list_distinct(flatten(list(string_split(context_policies, ','))))), ','), '')
                       as context_policies
            from coverage {where} group by answerer, run_id order by answerer, run_id"""
        return con.execute(sql, list(run_ids or [])).df()
    finally:
        con.close()


def coverage_lines(coverage: pd.DataFrame) -> list[str]:
    """One line per run: "coverage R (answerer): 92% of 750 answers saw the full input (variates 100%, steps 92%)"."""
    lines = []
    for row in coverage.itertuples():
        share = row.n_full_input / row.n if row.n else float("nan")
        detail = f"variates {_pct(row.variate_share)}, steps {_pct(row.step_share)}, policy {row.context_policies or '-'}"
        unknown = f"; {int(row.n_unknown)} not recorded" if row.n_unknown else ""
        lines.append(f"coverage {row.run_id} ({row.answerer}): {_pct(share)} of {int(row.n)} answers saw the full input ({detail}{unknown})")
    return lines


def _pct(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{100 * value:.0f}%"


def compare_report(out: str, run_a: str, run_b: str, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`arfscore compare`: the paired comparison table (tasks/intervals.compare_runs) and the questions that
    flipped between the runs (the `run_diff` view). ValueError when a run has no answers."""
    from tasks.intervals import compare_runs
    from tasks.store import read_answers

    answers = {run: read_answers(out, run) for run in (run_a, run_b)}
    for run, frame in answers.items():
        if frame.empty:
            raise ValueError(f"no answers for run {run!r} under {out}")
    table = compare_runs(answers[run_a], answers[run_b], resamples, seed)
    first, second = sorted((run_a, run_b))
    con = open_views(out)
    try:
        flipped = con.execute(
            "select question_id, category, tier, correct_answer, answer_a, answer_b, correct_a, correct_b from run_diff "
            "where run_a = ? and run_b = ? order by question_id",
            [first, second],
        ).df()
    finally:
        con.close()
    if first != run_a:  # the view orders the pair by name; report it as asked
        flipped = flipped.rename(columns={"answer_a": "answer_b", "answer_b": "answer_a", "correct_a": "correct_b", "correct_b": "correct_a"})
    return {"run_a": run_a, "run_b": run_b, "resamples": resamples, "table": table, "flipped": flipped}
