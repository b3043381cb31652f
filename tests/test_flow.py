"""The score_corpus flow end to end: Prefect (test harness) + one shared local Ray + Parquet + DuckDB."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks.metrics import compute_metrics
from tasks.store import open_views, read_answers, read_metrics, run_sql_asserts

pytestmark = pytest.mark.usefixtures("ray_cluster", "prefect_harness")


def score(corpus: Path, out: Path, run_id: str, answerer: str = "stat", **kwargs):
    from flows.score import score_corpus

    return score_corpus(corpus=str(corpus), answerer=answerer, run_id=run_id, out=str(out), shard_size=5, **kwargs)


def test_flow_scores_every_question_once_and_metrics_agree_with_sql(small_corpus, tmp_path):
    board = score(small_corpus, tmp_path, "e2e")
    answers = read_answers(str(tmp_path), "e2e")
    assert sorted(answers["question_id"]) == list(range(24))
    assert (answers["status"] == "ok").all()
    assert answers["node_id"].notna().all()
    assert answers["is_correct"].sum() > 0

    overall = compute_metrics(answers).query("scope == 'overall'").iloc[0]
    assert len(board) == 1 and board[0]["run_id"] == "e2e"
    assert board[0]["accuracy"] == pytest.approx(overall["accuracy"], abs=1e-9)
    stored = read_metrics(str(tmp_path), "e2e").query("scope == 'overall'").iloc[0]
    assert stored["macro_f1"] == pytest.approx(overall["macro_f1"], abs=1e-12)

    con = open_views(str(tmp_path))
    sql_accuracy = con.execute("select accuracy from leaderboard where run_id = ?", ["e2e"]).fetchone()[0]
    assert sql_accuracy == pytest.approx(overall["accuracy"], abs=1e-9)
    assert all(rows == 0 for rows in run_sql_asserts(con).values())
    categories = con.execute("select count(distinct category) from category_tier").fetchone()[0]
    assert categories == 8
    assert (tmp_path / "runs" / "run_id=e2e" / "run.parquet").exists()


def test_resume_after_a_lost_shard_gives_the_same_answers(small_corpus, tmp_path):
    score(small_corpus, tmp_path, "resume")
    first = read_answers(str(tmp_path), "resume").set_index("question_id")
    shard_files = sorted((tmp_path / "answers" / "run_id=resume").glob("shard=*.parquet"))
    assert len(shard_files) == 5  # 24 questions, shard_size 5
    kept_mtime = shard_files[0].stat().st_mtime_ns
    shard_files[2].unlink()
    score(small_corpus, tmp_path, "resume")
    second = read_answers(str(tmp_path), "resume").set_index("question_id")
    assert second.index.is_unique and sorted(second.index) == list(range(24))
    pd.testing.assert_series_equal(first["parsed_answer"].sort_index(), second["parsed_answer"].sort_index())
    assert shard_files[0].stat().st_mtime_ns == kept_mtime  # written shards are not redone


def test_corrupt_series_becomes_error_rows_while_others_succeed(small_corpus, tmp_path):
    corpus = Path(shutil.copytree(small_corpus, tmp_path / "corpus"))
    victim = sorted((corpus / "arfbench-ts-data").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    group_id = "_".join(victim.stem.split("_")[:2])
    score(corpus, tmp_path / "out", "corrupt")
    answers = read_answers(str(tmp_path / "out"), "corrupt")
    bad = answers[answers["query_group"].str.split(", ").apply(lambda groups: group_id in groups)]
    good = answers.drop(bad.index)
    assert len(bad) >= 1 and (bad["status"] == "error").all()
    assert bad["error"].str.contains(victim.name).all() and bad["error"].str.contains("file").all()
    assert (good["status"] == "ok").all() and len(answers) == 24
    assert not bad["is_correct"].any()


def test_answerer_exception_and_timeout_become_error_rows(small_corpus, tmp_path):
    score(small_corpus, tmp_path, "raises", answerer="tests.faulty_answerers:raises_on", answerer_settings={"fail_ids": "3,7"})
    answers = read_answers(str(tmp_path), "raises").set_index("question_id")
    assert set(answers.index[answers["status"] == "error"]) == {3, 7}
    assert answers.loc[3, "error"].startswith("answerer tests.faulty_answerers:raises_on failed: RuntimeError: deliberate failure")

    score(small_corpus, tmp_path, "slow", answerer="tests.faulty_answerers:sleeps_on", answerer_settings={"fail_ids": "4"}, question_timeout_s=1.0)
    answers = read_answers(str(tmp_path), "slow").set_index("question_id")
    assert set(answers.index[answers["status"] == "error"]) == {4}
    assert "no answer within 1 s" in answers.loc[4, "error"]


def test_repeats_are_separate_runs_with_their_own_metrics(small_corpus, tmp_path):
    board = score(small_corpus, tmp_path, "rep", answerer="random", repeats=2)
    assert sorted(row["run_id"] for row in board) == ["rep-r1", "rep-r2"]
    metrics = read_metrics(str(tmp_path))
    assert set(metrics["run_id"]) == {"rep-r1", "rep-r2"}


def test_answers_record_what_each_answerer_saw_and_the_coverage_mart_sums_it(small_corpus, tmp_path):
    from tasks.report import coverage_lines, read_coverage

    score(small_corpus, tmp_path, "cov-stat")
    score(small_corpus, tmp_path, "cov-random", answerer="random")
    answers = read_answers(str(tmp_path), "cov-stat")
    assert (answers["variates_used"] == answers["variates_total"]).all() and (answers["steps_used"] == answers["steps_total"]).all()
    assert (answers["variates_total"] == answers["n_variates"]).all() and set(answers["context_policy"]) == {"full"}
    assert set(read_answers(str(tmp_path), "cov-random")["context_policy"]) == {"none"}
    con = open_views(str(tmp_path))
    rows = con.execute("select run_id, sum(n), sum(n_full_input) from coverage group by run_id order by run_id").fetchall()
    con.close()
    assert rows == [("cov-random", 24, 0), ("cov-stat", 24, 24)]
    lines = coverage_lines(read_coverage(str(tmp_path), ["cov-stat", "cov-random"]))
    assert "coverage cov-stat (stat): 100% of 24 answers saw the full input (variates 100%, steps 100%, policy full)" in lines
    assert any(line.startswith("coverage cov-random (random): 0% of 24") for line in lines)
    # Policies pooled over categories are listed once each, sorted.
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tasks.store import write_shard

    table = pa.concat_tables(pq.read_table(path) for path in sorted((tmp_path / "answers" / "run_id=cov-stat").glob("*.parquet")))
    # Half of Presence reads "text": that category lists "full,text", the others "full".
    categories = table["category"].to_pylist()
    presence_rows = [i for i, category in enumerate(categories) if category == "Anomaly Presence"]
    assert len(presence_rows) >= 2 and len(presence_rows) < len(categories)
    presence = pa.array([i in presence_rows[::2] for i in range(len(categories))])
    for name, column in (("context_policy", pc.if_else(presence, "text", table["context_policy"])), ("run_id", pa.array(["cov-mixed"] * len(table)))):
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, column)
    write_shard(table, str(tmp_path), "cov-mixed", 0)
    assert read_coverage(str(tmp_path), ["cov-mixed"])["context_policies"].tolist() == ["full,text"]
