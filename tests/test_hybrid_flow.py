"""`arfscore score --answerer hybrid --model DIR`: the tiny Toto-1.0-QA through Prefect + Ray on CPU."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.store import read_answers

pytestmark = pytest.mark.usefixtures("ray_cluster", "prefect_harness")


def test_cli_scores_with_the_tiny_hybrid_model(small_corpus, tmp_path):
    runner = CliRunner()
    made = runner.invoke(app, ["make-tiny-model", str(tmp_path / "tiny")])
    assert made.exit_code == 0, made.output
    assert {"config.json", "ts_modules.pt", "vlm", "toto"} <= {p.name for p in (tmp_path / "tiny").iterdir()}

    result = runner.invoke(
        app,
        ["score", str(small_corpus), "--answerer", "hybrid", "--model", str(tmp_path / "tiny"),
         "--run-id", "hybrid-tiny", "--out", str(tmp_path / "out"), "--shard-size", "8"],
    )
    assert result.exit_code == 0, result.output
    assert "hybrid-tiny" in result.output

    answers = read_answers(str(tmp_path / "out"), "hybrid-tiny")
    assert sorted(answers["question_id"]) == list(range(24))
    assert (answers["status"] == "ok").all(), answers.loc[answers["status"] != "ok", "error"].tolist()
    assert answers["raw_response"].str.len().gt(0).all()  # the random model writes text; parsing may not match
    assert set(answers["answerer"]) == {"hybrid"}
