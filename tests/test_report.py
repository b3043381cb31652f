"""The analysts' report: intervals in the metrics and views, `arfscore compare` and the paired_diff mart agree."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import flows.score  # noqa: F401  (Prefect sets up its log handlers on the real streams, not CliRunner's)
from flows.cli import app
from tasks.report import compare_report, read_leaderboard
from tasks.store import open_views, read_metrics

pytestmark = pytest.mark.usefixtures("ray_cluster", "prefect_harness")


@pytest.fixture(scope="module")
def two_runs(small_corpus, tmp_path_factory):
    from flows.score import score_corpus

    out = tmp_path_factory.mktemp("report")
    for answerer in ("stat", "random"):
        score_corpus(corpus=str(small_corpus), answerer=answerer, run_id=f"rep-{answerer}", out=str(out), shard_size=8, bootstrap=300)
    return out


def test_metrics_and_views_carry_intervals_that_hold_the_estimates(two_runs):
    metrics = read_metrics(str(two_runs))
    assert (metrics["bootstrap"] == 300).all()
    assert (metrics["accuracy_lo"] <= metrics["accuracy"]).all() and (metrics["accuracy"] <= metrics["accuracy_hi"]).all()
    f1 = metrics.dropna(subset=["macro_f1"])
    assert (f1["macro_f1_lo"] <= f1["macro_f1"] + 1e-12).all() and (f1["macro_f1"] <= f1["macro_f1_hi"] + 1e-12).all()
    board = read_leaderboard(str(two_runs))
    overall = metrics[metrics["scope"] == "overall"].set_index("run_id")
    for row in board.itertuples():
        assert row.accuracy_lo == pytest.approx(overall.loc[row.run_id, "accuracy_lo"])
    con = open_views(str(two_runs))
    cells = con.execute("select count(*) from category_tier where accuracy_lo <= accuracy and accuracy <= accuracy_hi").fetchone()[0]
    total = con.execute("select count(*) from category_tier").fetchone()[0]
    con.close()
    assert cells == total == 16


def test_compare_and_the_paired_diff_mart_agree(two_runs):
    result = compare_report(str(two_runs), "rep-random", "rep-stat", 300)
    table = result["table"].set_index(["scope", "key"])
    con = open_views(str(two_runs))
    mart = con.execute("select * from paired_diff where run_a = 'rep-random' and run_b = 'rep-stat'").df().set_index("category")
    con.close()
    for category, row in mart.iterrows():
        expected = table.loc[("overall", "all")] if category == "all" else table.loc[("category", category)]
        assert row["n"] == expected["n"]
        assert row["accuracy_diff"] == pytest.approx(expected["accuracy_diff"])
        assert (row["right_only_a"], row["right_only_b"]) == (expected["right_only_a"], expected["right_only_b"])
        assert row["mcnemar_p"] == pytest.approx(expected["mcnemar_p"], rel=1e-9)
        assert row["macro_f1_diff"] == pytest.approx(expected["macro_f1_diff"])
    flipped = result["flipped"]
    assert len(flipped) == table.loc[("overall", "all"), "right_only_a"] + table.loc[("overall", "all"), "right_only_b"]


def test_compare_cli_prints_a_table_and_json(two_runs):
    runner = CliRunner()
    result = runner.invoke(app, ["compare", "rep-random", "rep-stat", "--out", str(two_runs), "--bootstrap", "200", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["run_a"] == "rep-random" and {row["scope"] for row in data["rows"]} == {"category", "tier", "overall"}
    text = runner.invoke(app, ["compare", "rep-random", "rep-stat", "--out", str(two_runs), "--bootstrap", "200"])
    assert text.exit_code == 0 and "McNemar" in text.output and "flipped" in text.output
    missing = runner.invoke(app, ["compare", "rep-random", "nope", "--out", str(two_runs)])
    assert missing.exit_code == 1 and "no answers for run 'nope'" in missing.output
