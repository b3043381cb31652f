"""SQL safety: user input reaches DuckDB only as bound parameters (run ids) or safely quoted literals (paths).

Audit (tasks/report.py, tasks/store.py, flows/cli.py): read_leaderboard binds run ids with `?`; view SQL comes from
the packaged sql/ files with the Parquet locations quoted by store.sql_literal (views cannot hold parameters);
view names are checked identifiers; the other statements are constant. `arfscore sql -q` runs the analyst's own
query by design (it is their database).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.score import expand_run_id
from tasks.corpus import load_corpus
from tasks.report import read_leaderboard
from tasks.runs import compute_run_metrics
from tasks.store import shard_path, write_shard

HOSTILE_RUN_ID = "x'; drop view leaderboard; --"
VIEWS = {"stg_answers", "stg_metrics", "stg_runs", "leaderboard", "category_tier", "confusion", "run_diff"}


def _write_run(corpus: Path, out: Path, run_id: str) -> None:
    """Answers for every question (right on even ids, the first option on odd ones) and their metrics."""
    rows = []
    for question in load_corpus(str(corpus)).questions:
        parsed = question.correct_answer if question.question_id % 2 == 0 else question.options[0]
        rows.append({
            "question_id": question.question_id, "query_group": ", ".join(question.query_groups),
            "category": question.category, "tier": question.tier, "answerer": "stat", "options": list(question.options),
            "correct_answer": question.correct_answer, "raw_response": parsed, "parsed_answer": parsed, "is_valid": True,
            "is_correct": parsed == question.correct_answer, "status": "ok", "latency_s": 0.0,
        })
    write_shard(rows, str(out), run_id, 0)
    compute_run_metrics(str(out), run_id)


def _views(db_file: Path) -> set[str]:
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        return {row[0] for row in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    finally:
        con.close()


def test_a_hostile_run_id_is_rejected_before_any_work(small_corpus, tmp_path):
    result = CliRunner().invoke(app, ["score", str(small_corpus), "--run-id", HOSTILE_RUN_ID, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output  # a usage error, before Prefect or Ray start
    text = " ".join(result.output.split())
    assert "invalid run_id" in text and "--run-id" in text and "A-Z a-z 0-9 . _ -" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    for bad in (HOSTILE_RUN_ID, "../escape", "a/b", "", "{date}/x"):
        with pytest.raises(ValueError, match="invalid run_id"):
            expand_run_id(bad)
        with pytest.raises(ValueError, match="invalid run_id"):
            shard_path(str(tmp_path), bad, 0)


def test_report_binds_the_run_id_and_the_views_survive(small_corpus, tmp_path):
    # A results folder whose own name tries an injection: it reaches the views only as a quoted literal.
    out = tmp_path / "o'brien'); drop view leaderboard; --"
    _write_run(small_corpus, out, "good")
    runner = CliRunner()

    hostile = runner.invoke(app, ["report", "--out", str(out), "--run-id", HOSTILE_RUN_ID])
    assert hostile.exit_code == 1 and "no runs" in hostile.output, hostile.output
    # A tautology would list every run if it were pasted into the SQL; bound, it matches no run id.
    tautology = runner.invoke(app, ["report", "--out", str(out), "--run-id", "' or ''='"])
    assert tautology.exit_code == 1 and "no runs" in tautology.output, tautology.output
    assert read_leaderboard(str(out), [HOSTILE_RUN_ID, "' or 1=1 --"]).empty

    assert VIEWS <= _views(out / "arfscore.duckdb")  # nothing was dropped
    con = duckdb.connect(str(out / "arfscore.duckdb"), read_only=True)
    assert con.execute("select run_id, n from leaderboard").fetchall() == [("good", 24)]
    con.close()

    good = runner.invoke(app, ["report", "--out", str(out), "--run-id", "good", "--by-category"])
    assert good.exit_code == 0, good.output
    assert "good" in good.output and "Anomaly Presence" in good.output
    assert VIEWS <= _views(out / "arfscore.duckdb")
