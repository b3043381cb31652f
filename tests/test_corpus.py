"""Corpus reading and validation: round trip, every bad input, the CLI, and S3 against a real server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app
from model.records import CATEGORIES, TIERS
from tasks.corpus import CorpusError, load_corpus, validate_corpus
from tasks.series import SeriesError
from tasks.synthetic import SynthConfig, plan_corpus, synthesize_corpus


def copy_corpus(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_csv(corpus: Path, edit) -> None:
    path = corpus / "arfbench-qa.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(path, index=False)


def series_file(corpus: Path, group_id: str) -> Path:
    return next((corpus / "arfbench-ts-data").glob(f"{group_id}_*.parquet"))


def test_round_trip_synth_validate_read(small_corpus):
    report = validate_corpus(str(small_corpus))
    assert report.ok, [str(p) for p in report.problems]
    assert report.n_questions == 24
    assert {category for category, _ in report.by_category_tier} == set(CATEGORIES)
    assert {tier for _, tier in report.by_category_tier} == set(TIERS)

    corpus = load_corpus(str(small_corpus))
    plan = plan_corpus(SynthConfig(n_questions=24, max_variates=8, max_steps=256, seed=7))
    for question, planned in zip(corpus.questions, plan.questions):
        assert question.correct_answer == planned.correct_answer
        assert question.options == planned.options
        assert question.correct_answer in question.options
    pairs = [question for question in corpus.questions if question.is_pair]
    assert pairs and all(question.category == "Anomaly Correlation" for question in pairs)
    first, second = (corpus.open_group(group_id) for group_id in pairs[0].query_groups)
    assert first.n_steps == second.n_steps and first.start_ns == second.start_ns
    for group_plan in plan.groups[:4]:
        group = corpus.open_group(group_plan.group_id)
        assert group.values.shape == (group_plan.n_variates, group_plan.n_steps)
        assert group.variate_names == group_plan.variate_names
        assert 0 < np.isnan(group.values).mean() < 0.05  # gaps and nulls are present, but few


def test_synthesis_is_deterministic(tmp_path):
    config = SynthConfig(n_questions=10, max_variates=4, max_steps=64, seed=3)
    synthesize_corpus(str(tmp_path / "a"), config)
    synthesize_corpus(str(tmp_path / "b"), config)
    assert (tmp_path / "a/arfbench-qa.csv").read_bytes() == (tmp_path / "b/arfbench-qa.csv").read_bytes()
    for path in (tmp_path / "a/arfbench-ts-data").iterdir():
        assert pq.read_table(path).equals(pq.read_table(tmp_path / "b/arfbench-ts-data" / path.name))


def test_synthetic_answers_follow_the_injected_anomaly():
    plan = plan_corpus(SynthConfig(n_questions=80, max_variates=6, max_steps=128, seed=11))
    groups = {group.group_id: group for group in plan.groups}
    for question in plan.questions:
        group = groups[question.query_groups[0]]
        if question.category == "Anomaly Presence":
            assert question.correct_answer.startswith("Yes") == (group.anomaly is not None)
        if question.category == "Anomaly Categorization":
            assert question.correct_answer == (group.anomaly.kind if group.anomaly else "No Anomaly")
        if question.category == "Anomaly Start" and group.anomaly and group.anomaly.start > 0:
            assert question.correct_answer == group.timestamp(group.anomaly.start)
    answers = {q.correct_answer for q in plan.questions}
    assert "No Anomaly" in answers or "No anomaly among the listed channels" in answers


BAD_INPUTS = {
    "options_not_json_list": (lambda t: t.loc.__setitem__((0, "options_str"), "not json"), "options_str"),
    "correct_not_in_options": (lambda t: t.loc.__setitem__((1, "correct_answer"), "Something else"), "correct_answer"),
    "unknown_difficulty": (lambda t: t.loc.__setitem__((2, "difficulty"), "Tier 9"), "difficulty"),
    "unknown_category": (lambda t: t.loc.__setitem__((3, "task_category"), "Weather Forecast"), "task_category"),
    "group_without_file": (lambda t: t.loc.__setitem__((4, "query_group"), "99999_0"), "query_group"),
    "duplicate_options": (
        lambda t: t.loc.__setitem__((5, ["options_str", "correct_answer"]), [json.dumps(["Level Shift", "Level Shift", "No Anomaly"]), "No Anomaly"]),
        "options_str",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_question_rows_name_file_question_and_field(small_corpus, tmp_path, case):
    corpus = copy_corpus(small_corpus, tmp_path / "corpus")
    edit, field = BAD_INPUTS[case]
    edit_csv(corpus, edit)
    report = validate_corpus(str(corpus), read_series=False)
    assert len(report.problems) == 1, [str(p) for p in report.problems]
    problem = report.problems[0]
    assert problem.field == field
    assert problem.file == "arfbench-qa.csv"
    assert f"question {problem.question_id}:" in str(problem)
    assert report.n_questions == 24  # the bad row is kept, so the run can write an error row for it


def test_missing_csv_column_is_a_corpus_error(small_corpus, tmp_path):
    corpus = copy_corpus(small_corpus, tmp_path / "corpus")
    edit_csv(corpus, lambda t: t.drop(columns=["correct_answer"], inplace=True))
    with pytest.raises(CorpusError, match=r"missing column\(s\) \['correct_answer'\]"):
        load_corpus(str(corpus))


def _break_parquet(path: Path, how: str) -> None:
    table = pq.read_table(path)
    if how == "truncated":
        payload = path.read_bytes()
        path.write_bytes(payload[: len(payload) // 3])
    elif how == "missing_value_column":
        pq.write_table(table.drop(["value"]), path)
    elif how == "duplicate_rows":
        pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), path)
    elif how == "irregular":
        stamps = table.column("timestamp").cast(pa.int64()).to_numpy().copy()
        stamps[len(stamps) // 2] += 7_000_000_000  # 7 s off the grid
        pq.write_table(table.set_column(0, "timestamp", pa.array(stamps).cast(pa.timestamp("ns"))), path)
    elif how == "all_nan_variate":
        first = table.column("group")[0].as_py()
        mask = pa.compute.equal(table.column("group"), first)
        values = pa.compute.if_else(mask, pa.scalar(None, pa.float64()), table.column("value"))
        pq.write_table(table.set_column(2, "value", values), path)


@pytest.mark.parametrize(
    "how,field",
    [
        ("truncated", "file"),
        ("missing_value_column", "value"),
        ("duplicate_rows", "timestamp,group"),
        ("irregular", "timestamp"),
        ("all_nan_variate", "value"),
    ],
)
def test_bad_series_files_are_reported_per_question(small_corpus, tmp_path, how, field):
    corpus = copy_corpus(small_corpus, tmp_path / "corpus")
    questions = load_corpus(str(corpus)).questions
    target = questions[0].query_groups[0]
    _break_parquet(series_file(corpus, target), how)
    report = validate_corpus(str(corpus))
    affected = {q.question_id for q in questions if target in q.query_groups}
    assert {p.question_id for p in report.problems} == affected
    assert all(p.field == field and p.file.startswith(f"arfbench-ts-data/{target}_") for p in report.problems)
    with pytest.raises(SeriesError):
        load_corpus(str(corpus)).open_group(target)


def test_csv_with_bom_and_quoted_newlines(small_corpus, tmp_path):
    corpus = copy_corpus(small_corpus, tmp_path / "corpus")
    edit_csv(corpus, lambda t: t.loc.__setitem__((0, "question"), "Line one,\nline \"two\"\nWhat happened?"))
    path = corpus / "arfbench-qa.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    corpus_index = load_corpus(str(corpus))
    assert corpus_index.questions[0].question == "Line one,\nline \"two\"\nWhat happened?"
    assert not corpus_index.problems


def test_cli_validate_prints_summary_and_problems(small_corpus, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(small_corpus)])
    assert ok.exit_code == 0, ok.output
    assert "24 questions" in ok.output and "valid" in ok.output and "Anomaly Correlation" in ok.output

    corpus = copy_corpus(small_corpus, tmp_path / "corpus")
    edit_csv(corpus, lambda t: t.loc.__setitem__((1, "correct_answer"), "Something else"))
    bad = runner.invoke(app, ["validate", str(corpus)])
    assert bad.exit_code == 1
    assert "arfbench-qa.csv: question 1: correct_answer" in bad.output


def test_cli_synth_writes_a_valid_corpus(tmp_path):
    result = CliRunner().invoke(
        app, ["synth", str(tmp_path / "c"), "--questions", "9", "--max-variates", "3", "--max-steps", "32", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert validate_corpus(str(tmp_path / "c")).ok


def test_s3_read_equals_local_read(small_corpus, s3_server):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server.endpoint})
    fs.mkdir("arfscore-corpus")
    fs.put(str(small_corpus), "arfscore-corpus/small", recursive=True)
    remote = load_corpus("s3://arfscore-corpus/small")
    local = load_corpus(str(small_corpus))
    assert remote.questions == local.questions
    assert remote.checksum == local.checksum
    assert validate_corpus("s3://arfscore-corpus/small").ok
    for group_id in sorted(local.group_files)[:3]:
        a, b = remote.open_group(group_id), local.open_group(group_id)
        np.testing.assert_array_equal(a.values, b.values)
        assert a.variate_names == b.variate_names and a.start_ns == b.start_ns


def test_realistic_noise_groups_are_valid_and_opt_in(tmp_path):
    clean = plan_corpus(SynthConfig(n_questions=16, max_variates=4, max_steps=128, seed=5))
    assert all(group.noise_ar == 0 for group in clean.groups)
    config = SynthConfig(n_questions=16, max_variates=4, max_steps=128, seed=5, realism=1.0)
    plan = synthesize_corpus(str(tmp_path / "real"), config)
    assert all(0.5 <= group.noise_ar <= 0.9 for group in plan.groups)
    assert validate_corpus(str(tmp_path / "real")).ok
    with pytest.raises(ValueError, match="realism"):
        SynthConfig(realism=1.5)
