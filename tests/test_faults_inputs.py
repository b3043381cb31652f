"""Bad-input matrix: one corpus mixing the 24 good questions with every kind of bad input, scored end to end.

The run completes; each bad question gets an error row naming the file, the question and the field; the good
questions are answered exactly as in the clean corpus. docs/faults.md holds the user-facing table of these cases:
test_the_doc_table_lists_every_case keeps the two in step.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tasks.corpus import CorpusError
from tasks.store import read_answers

REPO_ROOT = Path(__file__).resolve().parent.parent
QA = "arfbench-qa.csv"
TS = "arfbench-ts-data"

# case -> (expected status, file named in the error, field named in the error). "{file}" is the case's own
# Parquet file. Ok cases name nothing. The corpus-level case (a missing csv column) is tested separately below.
CASES: dict[str, tuple[str, str | None, str | None]] = {
    "options_not_json": ("error", QA, "options_str"),
    "options_duplicates": ("error", QA, "options_str"),
    "correct_answer_not_in_options": ("error", QA, "correct_answer"),
    "unknown_difficulty": ("error", QA, "difficulty"),
    "unknown_category": ("error", QA, "task_category"),
    "query_group_without_parquet": ("error", QA, "query_group"),
    "two_files_for_one_group": ("error", QA, "query_group"),
    "group_at_two_intervals": ("ok", None, None),
    "parquet_truncated": ("error", "{file}", "file"),
    "parquet_not_parquet": ("error", "{file}", "file"),
    "parquet_missing_timestamp": ("error", "{file}", "timestamp"),
    "parquet_missing_group": ("error", "{file}", "group"),
    "parquet_missing_value": ("error", "{file}", "value"),
    "duplicate_timestamp_group": ("error", "{file}", "timestamp,group"),
    "irregular_timestamps": ("error", "{file}", "timestamp"),
    "all_nan_variate": ("error", "{file}", "value"),
    "parquet_zero_rows": ("error", "{file}", "timestamp"),
    "value_1e308": ("error", "{file}", "value"),
    "value_inf": ("error", "{file}", "value"),
    "pair_with_one_bad_group": ("error", "{file}", "file"),
    "one_step_group": ("ok", None, None),
    "csv_bom_quoted_newlines": ("ok", None, None),
}
CORPUS_LEVEL_CASES = ("missing_csv_column", "missing_csv", "unreadable_csv", "missing_series_directory")


def _broken_table(case: str, table: pa.Table) -> pa.Table | bytes:
    """The content of the case's Parquet file, made from a good group's table."""
    if case == "parquet_missing_timestamp":
        return table.drop(["timestamp"])
    if case == "parquet_missing_group":
        return table.drop(["group"])
    if case == "parquet_missing_value":
        return table.drop(["value"])
    if case == "duplicate_timestamp_group":
        return pa.concat_tables([table, table.slice(5, 1)])
    if case == "irregular_timestamps":
        stamps = table.column("timestamp").cast(pa.int64()).to_numpy().copy()
        stamps[len(stamps) // 2] += 7_000_000_000  # 7 s off the grid
        return table.set_column(0, "timestamp", pa.array(stamps).cast(pa.timestamp("ns")))
    if case == "all_nan_variate":
        first = table.column("group")[0].as_py()
        values = pc.if_else(pc.equal(table.column("group"), first), pa.scalar(None, pa.float64()), table.column("value"))
        return table.set_column(2, "value", values)
    if case == "parquet_zero_rows":
        return table.slice(0, 0)
    if case in ("value_1e308", "value_inf"):
        values = table.column("value").to_numpy(zero_copy_only=False).copy()
        values[3] = 1e308 if case == "value_1e308" else np.inf
        return table.set_column(2, "value", pa.array(values))
    if case == "one_step_group":
        first = pc.min(table.column("timestamp"))
        step = table.filter(pc.equal(table.column("timestamp"), first))
        return step.set_column(2, "value", pc.fill_null(step.column("value"), 0.0))
    raise KeyError(case)


def build_mixed_corpus(clean: Path, target: Path) -> dict[str, tuple[int, str | None, int]]:
    """Copy `clean` and append one question per case (ids 24, 25, ...).

    Returns case -> (question id, its Parquet file or None, id of the good question it was copied from).
    """
    shutil.copytree(clean, target)
    table = pd.read_csv(target / QA, dtype=str, keep_default_na=False)
    n_good = len(table)
    single = table[~table["query_group"].str.contains(",")].iloc[0]  # a good single-group question
    pair = table[table["query_group"].str.contains(",")].iloc[0]
    source_group = single["query_group"]
    source_file = next((target / TS).glob(f"{source_group}_*.parquet"))
    interval = source_file.stem.rsplit("_", 1)[1]
    good_table = pq.read_table(source_file)

    rows, where = [], {}
    for number, case in enumerate(CASES):
        question_id = n_good + number
        row = (pair if case == "pair_with_one_bad_group" else single).copy()
        file = None
        if case == "options_not_json":
            row["options_str"] = "['Yes', 'No'"  # Python-ish, not JSON, and unterminated
        elif case == "options_duplicates":
            options = json.loads(row["options_str"])
            row["options_str"] = json.dumps(options + [options[0]])
        elif case == "correct_answer_not_in_options":
            row["correct_answer"] = "Something that is not an option"
        elif case == "unknown_difficulty":
            row["difficulty"] = "Tier 9"
        elif case == "unknown_category":
            row["task_category"] = "Weather Forecast"
        elif case == "query_group_without_parquet":
            row["query_group"] = "99999_0"
        elif case == "two_files_for_one_group":
            group_id = f"{90000 + number}_0"
            pq.write_table(good_table, target / TS / f"{group_id}_{interval}.parquet")
            pq.write_table(good_table, target / TS / f"{group_id}_{int(interval):07d}.parquet")  # same interval, other name
            row["query_group"] = group_id
        elif case == "group_at_two_intervals":
            group_id = f"{90000 + number}_0"
            pq.write_table(good_table, target / TS / f"{group_id}_{interval}.parquet")
            coarse = good_table.slice(0, 0)  # a coarser rollup (here empty: it fails if it is ever read)
            pq.write_table(coarse, target / TS / f"{group_id}_{int(interval) * 10}.parquet")
            row["query_group"] = group_id
        elif case == "csv_bom_quoted_newlines":
            row["question"] = row["question"] + '\nA second line, with "quotes", commas\nand a third line.'
        else:
            group_id = f"{90000 + number}_0"
            file = f"{TS}/{group_id}_{interval}.parquet"
            path = target / file
            if case == "parquet_truncated":
                payload = source_file.read_bytes()
                path.write_bytes(payload[: len(payload) // 3])
            elif case == "parquet_not_parquet":
                path.write_text("timestamp,group,value\n2024-01-01,a,1\n")
            elif case == "pair_with_one_bad_group":
                first, second = (part.strip() for part in row["query_group"].split(","))
                second_file = next((target / TS).glob(f"{second}_*.parquet"))
                file = f"{TS}/{group_id}_{second_file.stem.rsplit('_', 1)[1]}.parquet"
                payload = second_file.read_bytes()
                (target / file).write_bytes(payload[: len(payload) // 2])
                row["query_group"] = f"{first}, {group_id}"
            else:
                pq.write_table(_broken_table(case, good_table), path)
            if case != "pair_with_one_bad_group":
                row["query_group"] = group_id
        rows.append(row)
        where[case] = (question_id, file, int(row.name))
    mixed = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
    mixed.to_csv(target / QA, index=False, encoding="utf-8-sig")  # with a BOM
    assert (target / QA).read_bytes().startswith(b"\xef\xbb\xbf")
    return where


@pytest.mark.usefixtures("ray_cluster", "prefect_harness")
def test_bad_inputs_become_error_rows_and_good_questions_score_as_in_a_clean_corpus(small_corpus, tmp_path):
    from flows.score import score_corpus

    where = build_mixed_corpus(small_corpus, tmp_path / "mixed")
    score_corpus(corpus=str(small_corpus), run_id="clean", out=str(tmp_path / "out"), shard_size=5)
    board = score_corpus(corpus=str(tmp_path / "mixed"), run_id="mixed", out=str(tmp_path / "out"), shard_size=5)

    answers = read_answers(str(tmp_path / "out"), "mixed").set_index("question_id")
    clean = read_answers(str(tmp_path / "out"), "clean").set_index("question_id")
    assert answers.index.is_unique and len(answers) == 24 + len(CASES)
    assert set(answers.loc[answers["status"] == "error", "error_kind"]) == {"input"}

    # validate and score agree: a question validate reports a problem for is exactly a question with an error row.
    from tasks.corpus import load_corpus, validate_corpus

    report = validate_corpus(load_corpus(str(tmp_path / "mixed")))
    reported = {problem.question_id for problem in report.problems if problem.question_id is not None}
    assert reported == set(answers.index[answers["status"] == "error"])
    assert all(problem.question_id is not None for problem in report.problems), report.problems

    outcomes = {}
    for case, (question_id, file, _) in where.items():
        status, named_file, field = CASES[case]
        row = answers.loc[question_id]
        outcomes[case] = (row["status"], row["error"])
        assert row["status"] == status, (case, row["error"])
        if status == "error":
            named = named_file.format(file=file)
            assert not row["is_correct"] and row["parsed_answer"] is None
            assert f"{named}: question {question_id}: {field}:" in row["error"], (case, row["error"])
        else:
            assert row["error"] is None and row["parsed_answer"] in row["options"], case

    one_step = answers.loc[where["one_step_group"][0]]
    assert one_step["n_steps"] == 1 and one_step["n_variates"] >= 1
    # Quoted newlines are read as text: the question is the good one it was copied from plus two lines.
    question_id, _, source_id = where["csv_bom_quoted_newlines"]
    assert answers.loc[question_id, "parsed_answer"] == clean.loc[source_id, "parsed_answer"]

    good = answers.loc[list(range(24))]
    for column in ("status", "parsed_answer", "is_valid", "is_correct", "n_variates", "n_steps"):
        pd.testing.assert_series_equal(good[column], clean[column], check_names=False, check_dtype=False)
    assert board[0]["n_error"] == sum(status == "error" for status, _, _ in CASES.values())
    print("\nFIGURE bad-input matrix:")
    for case, (status, error) in outcomes.items():
        print(f"  {case:32s} {status:5s} {error or ''}"[:220])


@pytest.mark.usefixtures("prefect_harness")
def test_missing_csv_column_fails_the_whole_corpus_with_a_clear_message(small_corpus, tmp_path):
    from flows.cli import app

    corpus = Path(shutil.copytree(small_corpus, tmp_path / "corpus"))
    table = pd.read_csv(corpus / QA, dtype=str, keep_default_na=False)
    table.drop(columns=["options_str"]).to_csv(corpus / QA, index=False)
    result = CliRunner().invoke(app, ["score", str(corpus), "--run-id", "nocol", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "arfbench-qa.csv: missing column(s) ['options_str']" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "answers").exists()
    with pytest.raises(CorpusError, match="missing column"):
        from tasks.corpus import load_corpus

        load_corpus(str(corpus))


def _doc_table_cases() -> list[str]:
    """Case ids (first column, in backticks) of the bad-input table in docs/faults.md."""
    text = (REPO_ROOT / "docs" / "faults.md").read_text(encoding="utf-8")
    section = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\|\s*`([a-z0-9_]+)`\s*\|", section, flags=re.MULTILINE)


def test_the_doc_table_lists_every_case():
    listed = _doc_table_cases()
    assert len(listed) == len(set(listed)), "a case is listed twice"
    assert set(listed) == set(CASES) | set(CORPUS_LEVEL_CASES)


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing_csv", "arfbench-qa.csv: not found under"),
        ("unreadable_csv", "arfbench-qa.csv: not a readable csv"),
        ("missing_series_directory", "arfbench-ts-data/: directory not found under"),
    ],
)
def test_a_corpus_unusable_as_a_whole_exits_1_with_one_line_and_no_traceback(small_corpus, tmp_path, sessions, case, message):
    from tests.conftest import ARFSCORE, cli_env

    corpus = Path(shutil.copytree(small_corpus, tmp_path / "corpus"))
    if case == "missing_csv":
        (corpus / QA).unlink()
    elif case == "unreadable_csv":
        (corpus / QA).write_bytes(b"\xff\xfe\x00 not utf-8 \x81\x82")
    else:
        shutil.rmtree(corpus / TS)
    code, output, seconds = sessions.run(
        [*ARFSCORE, "score", str(corpus), "--run-id", case, "--out", str(tmp_path / "out")], cli_env(tmp_path / "home"), case, timeout_s=120
    )
    assert code == 1, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines == [f"run {case} failed: {lines[0].split(': ', 1)[1]}"] and message in lines[0], output
    assert "Traceback" not in output and not (tmp_path / "out").exists()
