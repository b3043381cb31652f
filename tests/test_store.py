"""tasks/store.py + sql/: atomic Parquet shards, read-back, DuckDB views, SQL asserts, safe quoting, S3."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.store import (
    ANSWER_SCHEMA,
    METRICS_SCHEMA,
    RUN_SCHEMA,
    metrics_path,
    open_views,
    read_answers,
    read_metrics,
    run_record_path,
    run_sql_asserts,
    shard_path,
    sql_literal,
    write_metrics,
    write_run_record,
    write_shard,
    written_shards,
)

VIEWS = {"stg_answers", "stg_metrics", "stg_runs", "leaderboard", "category_tier", "confusion", "run_diff", "answer_pairs", "paired_diff"}
ASSERTS = {
    "assert_unique_answer_per_question",
    "assert_valid_status",
    "assert_correct_implies_valid",
    "assert_accuracy_in_range",
    "assert_accuracy_matches_metrics",
}
CATS = ["Anomaly Presence", "Anomaly Magnitude", "Anomaly Start"]
OPTIONS = {"Anomaly Presence": ["Yes", "No"], "Anomaly Magnitude": ["0", "0.1", "1"],
           "Anomaly Start": ["2024-01-01 10:00:00", "2024-01-01 11:00:00", "No anomaly"]}


def make_rows(run_id: str, qids: range | list[int], answerer: str = "stat", wrong: set[int] = frozenset(),
              invalid: set[int] = frozenset(), errors: set[int] = frozenset()) -> list[dict]:
    """Sound answer rows: correct unless the question id is in wrong / invalid / errors."""
    rows = []
    for q in qids:
        category = CATS[q % len(CATS)]
        options = OPTIONS[category]
        correct = options[q % len(options)]
        other = options[(q + 1) % len(options)]
        status, error, parsed = "ok", None, correct
        if q in wrong:
            parsed = other
        if q in invalid:
            parsed = None
        if q in errors:
            status, error, parsed = "error", f"arfbench-ts-data/{q}_0_60.parquet: question {q}: value: bad", None
        rows.append(dict(
            run_id=run_id, question_id=q, query_group=f"{q}_0", category=category, tier=f"Tier {q % 3 + 1}",
            answerer=answerer, options=options, correct_answer=correct,
            raw_response="" if status == "error" else json.dumps({"reasoning": "r", "answer": parsed}),
            parsed_answer=parsed, is_valid=parsed is not None, is_correct=parsed == correct,
            status=status, error=error, latency_s=0.01 * q, n_variates=3, n_steps=100 + q, interval_s=60,
            option_order_seed=q, node_id="node-1", attempts=1,
            created_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
        ))
    return rows


def python_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """What tasks/metrics.py would write (accuracy part; F1 filled with a fixed stand-in)."""
    out = []
    for (run_id, answerer), g in df.groupby(["run_id", "answerer"]):
        scopes = [("overall", "all", g)] + [("category", k, c) for k, c in g.groupby("category")] + [
            ("tier", k, t) for k, t in g.groupby("tier")]
        for scope, key, rows in scopes:
            out.append(dict(run_id=run_id, answerer=answerer, scope=scope, key=key, n=len(rows),
                            n_correct=int(rows.is_correct.sum()), accuracy=float(rows.is_correct.mean()),
                            macro_f1=0.5, invalid=int((~rows.is_valid).sum()), f1_invalid=0))
    return pd.DataFrame(out)


def write_run(out: Path | str, run_id: str, rows: list[dict], shard_size: int = 4, metrics: bool = True,
              **kw) -> None:
    for s in range(0, len(rows), shard_size):
        write_shard(rows[s : s + shard_size], out, run_id, s // shard_size, **kw)
    if metrics:
        df = pd.DataFrame(rows)
        write_metrics(python_metrics(df), out, run_id, **kw)
        write_run_record(dict(answerer=rows[0]["answerer"], corpus="/data/corpus", corpus_checksum="abc",
                              config={"answerer": rows[0]["answerer"], "seed": 0}, versions={"arfscore": "0.1"},
                              started_at=datetime(2025, 1, 1, 1), ended_at=datetime(2025, 1, 1, 2),
                              n_questions=len(rows), n_ok=sum(r["status"] == "ok" for r in rows),
                              n_error=sum(r["status"] == "error" for r in rows)), out, run_id, **kw)


@pytest.fixture()
def sound(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    write_run(out, "run-a", make_rows("run-a", range(12), wrong={1, 5}, invalid={7}, errors={10}))
    write_run(out, "run-b", make_rows("run-b", range(12), answerer="random", wrong={2, 5}, invalid={1}))
    return out


# --------------------------------------------------------------------------------------------------- paths, ids


def test_shard_path_layout() -> None:
    assert shard_path("results", "r1", 3) == "results/answers/run_id=r1/shard=00003.parquet"
    assert shard_path("s3://bucket/res/", "2025-01-01.nightly_v2", 123456) == (
        "s3://bucket/res/answers/run_id=2025-01-01.nightly_v2/shard=123456.parquet")
    assert metrics_path("o", "r") == "o/metrics/run_id=r/metrics.parquet"
    assert run_record_path("o", "r") == "o/runs/run_id=r/run.parquet"


@pytest.mark.parametrize("run_id", [
    "x'; drop view leaderboard; --", "", "a" * 129, "a/b", "../x", "..", ".", "run id", "r\n", "é", None, 5,
])
def test_bad_run_id_rejected(run_id, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run_id"):
        shard_path(tmp_path, run_id, 0)
    with pytest.raises(ValueError, match="run_id"):
        write_shard([], tmp_path, run_id, 0)
    assert not (tmp_path / "answers").exists()


def test_bad_shard_rejected(tmp_path: Path) -> None:
    for shard in (-1, 1.0, "1", True):
        with pytest.raises(ValueError, match="shard"):
            shard_path(tmp_path, "r", shard)


def test_sql_literal_escapes_quotes() -> None:
    assert sql_literal("it's") == "'it''s'"
    text = "x'; drop view leaderboard; --"
    assert duckdb.connect().execute(f"select {sql_literal(text)} as s").fetchone() == (text,)


# -------------------------------------------------------------------------------------------------- Parquet I/O


def test_write_shard_is_atomic_and_resumable(tmp_path: Path) -> None:
    out = tmp_path / "res"
    rows = make_rows("r1", range(10))
    p0 = write_shard(rows[:5], out, "r1", 0)
    p1 = write_shard(rows[5:], str(out), "r1", 1)
    assert p0 == shard_path(out, "r1", 0) and Path(p1).is_file()
    run_dir = out / "answers" / "run_id=r1"
    assert sorted(p.name for p in run_dir.iterdir()) == ["shard=00000.parquet", "shard=00001.parquet"]
    assert written_shards(out, "r1") == {0, 1}
    assert written_shards(out, "other") == set()
    # a temp file left by a killed writer is neither a written shard nor data
    (run_dir / ".shard=00002.parquet.0123abcd.tmp").write_bytes(b"partial")
    (run_dir / "notes.txt").write_text("x")
    assert written_shards(out, "r1") == {0, 1}
    assert len(read_answers(out)) == 10
    # rewriting a shard replaces it whole
    write_shard(rows[:3], out, "r1", 0)
    assert len(read_answers(out, "r1")) == 8
    assert pq.read_schema(p0).equals(ANSWER_SCHEMA, check_metadata=False)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    rows = make_rows("r1", range(3))
    bad = [dict(rows[0], is_correct=None)]
    with pytest.raises(ValueError, match="is_correct"):
        write_shard(bad, tmp_path, "r1", 0)
    with pytest.raises(ValueError, match="unknown column"):
        write_shard([dict(rows[0], parsed="Yes")], tmp_path, "r1", 0)
    with pytest.raises(ValueError, match="status"):
        write_shard([dict(rows[0], status="done")], tmp_path, "r1", 0)
    with pytest.raises(ValueError, match="does not match"):
        write_shard(rows, tmp_path, "r2", 0)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_shard([dict(rows[0], question_id="seven")], tmp_path, "r1", 0)
    assert written_shards(tmp_path, "r1") == set()
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_read_answers_round_trip(tmp_path: Path) -> None:
    rows = make_rows("r1", range(6), wrong={1}, invalid={2}, errors={3})
    del rows[0]["created_at"], rows[0]["attempts"], rows[0]["run_id"]  # defaults filled in
    write_shard(rows[3:], tmp_path, "r1", 1)
    write_shard(rows[:3], tmp_path, "r1", 0)
    write_shard(make_rows("r0", range(2)), tmp_path, "r0", 0)
    df = read_answers(tmp_path, "r1")
    assert list(df.columns) == ANSWER_SCHEMA.names
    assert df.question_id.tolist() == list(range(6))
    assert set(read_answers(tmp_path).run_id) == {"r0", "r1"}
    first = df.iloc[0]
    assert first.run_id == "r1" and first.attempts == 1 and first.created_at.tzinfo is not None
    assert list(df.iloc[4].options) == OPTIONS[CATS[4 % 3]]
    assert pd.isna(df.iloc[2].parsed_answer) and not df.iloc[2].is_valid
    assert df.iloc[3].status == "error" and "question 3" in df.iloc[3].error
    assert df.is_correct.tolist() == [True, False, False, False, True, True]
    some = read_answers(tmp_path, "r1", columns=["status"])
    assert list(some.columns) == ["run_id", "question_id", "status"] and some.status.tolist() == df.status.tolist()


def test_read_answers_empty(tmp_path: Path) -> None:
    df = read_answers(tmp_path / "nothing")
    assert df.empty and list(df.columns) == ANSWER_SCHEMA.names
    assert list(read_answers(tmp_path / "nothing", columns=["status"]).columns) == ["run_id", "question_id", "status"]
    assert read_metrics(tmp_path).empty


def test_metrics_and_run_record_round_trip(sound: Path) -> None:
    m = read_metrics(sound, "run-a")
    assert list(m.columns) == METRICS_SCHEMA.names
    assert set(m.scope) == {"overall", "category", "tier"}
    run = pq.read_table(run_record_path(sound, "run-a"))
    assert run.schema.equals(RUN_SCHEMA, check_metadata=False)
    rec = run.to_pylist()[0]
    assert rec["run_id"] == "run-a" and json.loads(rec["config_json"]) == {"answerer": "stat", "seed": 0}
    assert rec["started_at"] == datetime(2025, 1, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="other run"):
        write_metrics(m, sound, "run-b")
    with pytest.raises(ValueError, match="missing column"):
        write_metrics(m.drop(columns=["macro_f1"]), sound, "run-a")
    with pytest.raises(ValueError, match="unknown field"):
        write_run_record({"answerr": "x"}, sound, "run-a")


# ------------------------------------------------------------------------------------------------------- views


def view_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}


def test_open_views_builds_every_view(sound: Path) -> None:
    con = open_views(sound)
    assert VIEWS <= view_names(con)
    assert (sound / "arfscore.duckdb").is_file()
    n = con.execute("select count(*) from stg_answers").fetchone()[0]
    assert n == 24
    types = dict(con.execute("select column_name, data_type from information_schema.columns "
                             "where table_name = 'stg_answers'").fetchall())
    assert types["run_id"] == "VARCHAR" and types["options"] == "VARCHAR[]"
    assert types["created_at"] == "TIMESTAMP WITH TIME ZONE" and types["attempts"] == "INTEGER"
    assert con.execute("select count(*) from stg_runs").fetchone()[0] == 2
    con.close()
    # the views persist in the file and still work in a fresh connection
    con = duckdb.connect(str(sound / "arfscore.duckdb"))
    assert con.execute("select count(*) from leaderboard").fetchone()[0] == 2
    con.close()


def test_leaderboard_matches_pandas(sound: Path) -> None:
    df = read_answers(sound)
    con = open_views(sound)
    board = con.execute("select * from leaderboard order by run_id").df()
    expected = df.groupby(["answerer", "run_id"]).is_correct.mean()
    for row in board.itertuples():
        assert abs(row.accuracy - expected[(row.answerer, row.run_id)]) < 1e-9
    a = board.set_index("run_id").loc["run-a"]
    assert (a.n, a.n_correct, a.invalid, a.n_error) == (12, 8, 2, 1)  # error rows count as wrong
    assert a.macro_f1 == pytest.approx(0.5)
    cells = con.execute("select * from category_tier").df().set_index(["run_id", "category", "tier"])
    for (run_id, category, tier), g in df.groupby(["run_id", "category", "tier"]):
        cell = cells.loc[(run_id, category, tier)]
        assert cell.n == len(g) and abs(cell.accuracy - g.is_correct.mean()) < 1e-9
        assert cell.invalid == int((~g.is_valid).sum()) and cell.macro_f1 == pytest.approx(0.5)
    confusion = con.execute("select * from confusion").df()
    assert confusion.n.sum() == len(df)
    invalid_a = confusion[(confusion.run_id == "run-a") & (confusion.predicted == "<invalid>")].n.sum()
    assert invalid_a == 2


def test_run_diff_finds_changed_questions(sound: Path) -> None:
    con = open_views(sound)
    diff = con.execute("select * from run_diff where run_a = 'run-a' and run_b = 'run-b' "
                       "order by question_id").df()
    # run-a wrong on {1, 5, 7, 10}, run-b wrong on {1, 2, 5}: 2 regressed, 7 and 10 fixed
    assert diff.question_id.tolist() == [2, 7, 10]
    assert diff.change.tolist() == ["regressed", "fixed", "fixed"]
    assert diff.changed.all()
    assert (diff.correct_a != diff.correct_b).all()
    assert set(diff.answerer_a) == {"stat"} and set(diff.answerer_b) == {"random"}
    assert con.execute("select count(*) from run_diff where run_a >= run_b").fetchone()[0] == 0


def test_views_follow_new_shards_without_reopening(tmp_path: Path) -> None:
    write_shard(make_rows("r1", range(4)), tmp_path, "r1", 0)
    con = open_views(tmp_path)
    write_shard(make_rows("r1", range(4, 8), wrong={4}), tmp_path, "r1", 1)
    assert con.execute("select n, accuracy from leaderboard").fetchone() == (8, 7 / 8)


def test_views_work_with_missing_tables(tmp_path: Path) -> None:
    con = open_views(tmp_path / "empty")
    assert VIEWS <= view_names(con)
    for view in VIEWS:
        assert con.execute(f"select count(*) from {view}").fetchone() == (0,)
    assert run_sql_asserts(con) == dict.fromkeys(ASSERTS, 0)
    con.close()
    # answers but no metrics nor run records yet
    out = tmp_path / "no-metrics"
    write_shard(make_rows("r1", range(5), wrong={0}), out, "r1", 0)
    con = open_views(out)
    row = con.execute("select n, accuracy, macro_f1 from leaderboard").fetchone()
    assert row == (5, 0.8, None)
    types = dict(con.execute("select column_name, data_type from information_schema.columns "
                             "where table_name = 'stg_metrics'").fetchall())
    assert types["accuracy"] == "DOUBLE" and types["n"] == "BIGINT"
    con.close()
    # once metrics exist, reopening picks them up
    write_metrics(python_metrics(read_answers(out)), out, "r1")
    con = open_views(out)
    assert con.execute("select macro_f1 from leaderboard").fetchone() == (0.5,)


def test_asserts_pass_on_sound_data(sound: Path) -> None:
    con = open_views(sound)
    assert run_sql_asserts(con) == dict.fromkeys(ASSERTS, 0)


def _raw_shard(out: Path, run_id: str, shard: int, rows: list[dict]) -> None:
    """A shard written by a foreign writer that skips write_shard's checks."""
    path = Path(shard_path(out, run_id, shard))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ANSWER_SCHEMA), path)


@pytest.mark.parametrize("case", [
    "duplicate_question", "bad_status", "error_without_message", "correct_but_invalid", "correct_flag_wrong",
    "accuracy_out_of_range", "accuracy_mismatch",
])
def test_asserts_catch_bad_data(sound: Path, case: str) -> None:
    expected = {
        "duplicate_question": "assert_unique_answer_per_question",
        "bad_status": "assert_valid_status",
        "error_without_message": "assert_valid_status",
        "correct_but_invalid": "assert_correct_implies_valid",
        "correct_flag_wrong": "assert_correct_implies_valid",
        "accuracy_out_of_range": "assert_accuracy_in_range",
        "accuracy_mismatch": "assert_accuracy_matches_metrics",
    }[case]
    row = make_rows("run-a", [3])[0]
    if case == "duplicate_question":
        write_shard([row], sound, "run-a", 99)  # question 3 is already in shard 0
    elif case == "bad_status":
        _raw_shard(sound, "run-a", 99, [dict(row, question_id=100, status="done")])
    elif case == "error_without_message":
        _raw_shard(sound, "run-a", 99, [dict(row, question_id=100, status="error", error=None)])
    elif case == "correct_but_invalid":
        _raw_shard(sound, "run-a", 99, [dict(row, question_id=100, is_valid=False)])
    elif case == "correct_flag_wrong":
        other = next(o for o in row["options"] if o != row["correct_answer"])
        _raw_shard(sound, "run-a", 99, [dict(row, question_id=100, parsed_answer=other)])
    elif case == "accuracy_out_of_range":
        m = read_metrics(sound, "run-b")
        m.loc[m.scope == "category", "accuracy"] = 1.5
        write_metrics(m, sound, "run-b")
    elif case == "accuracy_mismatch":
        m = read_metrics(sound, "run-b")
        m.loc[m.scope == "overall", "accuracy"] += 0.01
        write_metrics(m, sound, "run-b")
    con = open_views(sound)
    counts = run_sql_asserts(con)
    assert counts[expected] > 0, counts
    # the bad row(s) trip their own assert; the other asserts are about other properties
    if case in ("duplicate_question", "accuracy_out_of_range"):
        assert all(v == 0 for k, v in counts.items() if k not in (expected, "assert_accuracy_matches_metrics"))


# ----------------------------------------------------------------------------------------------- safe quoting


def test_path_with_quote_is_quoted_safely(tmp_path: Path) -> None:
    out = tmp_path / "it's; drop view leaderboard; --"
    write_run(out, "r1", make_rows("r1", range(6), wrong={0}))
    con = open_views(out)
    assert VIEWS <= view_names(con)
    assert con.execute("select n, accuracy from leaderboard").fetchone() == (6, 5 / 6)
    assert run_sql_asserts(con) == dict.fromkeys(ASSERTS, 0)
    sql = con.execute("select sql from duckdb_views() where view_name = 'stg_answers'").fetchone()[0]
    assert "it''s; drop view leaderboard; --" in sql
    con.close()
    assert written_shards(out, "r1") == {0, 1}
    # an explicit db_path elsewhere, with a quote too
    db = tmp_path / "db'x.duckdb"
    con = open_views(out, db_path=db)
    assert "leaderboard" in view_names(con) and db.is_file()


def test_glob_characters_in_location_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="glob"):
        open_views(tmp_path / "results[1]")


# ---------------------------------------------------------------------------------------------------------- S3


@pytest.fixture()
def s3_filesystem():
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3 = pytest.importorskip("boto3")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="arfscore-test")
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint,
                               client_kwargs={"region_name": "us-east-1"}, skip_instance_cache=True)
        yield fs
    finally:
        server.stop()


def test_s3_round_trip_and_views(s3_filesystem) -> None:
    out = "s3://arfscore-test/results"
    rows = make_rows("r1", range(6), wrong={2})
    write_run(out, "r1", rows, shard_size=3, filesystem=s3_filesystem)
    assert written_shards(out, "r1", filesystem=s3_filesystem) == {0, 1}
    listed = s3_filesystem.ls("arfscore-test/results/answers/run_id=r1")
    assert not [p for p in listed if p.endswith(".tmp")]
    df = read_answers(out, filesystem=s3_filesystem)
    assert df.question_id.tolist() == list(range(6))
    con = open_views(out, filesystem=s3_filesystem)
    assert con.execute("select n, accuracy, macro_f1 from leaderboard").fetchone() == (6, 5 / 6, 0.5)
    assert run_sql_asserts(con) == dict.fromkeys(ASSERTS, 0)
