"""Actor crashes: a question that kills its actor process is retried on fresh actors, then becomes an error row."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from model.answerers import AnswererSpec
from tasks.store import read_answers

pytestmark = pytest.mark.usefixtures("ray_cluster", "prefect_harness")


def score(corpus: Path, out: Path, run_id: str, answerer: str = "stat", **kwargs):
    from flows.score import score_corpus

    return score_corpus(corpus=str(corpus), answerer=answerer, run_id=run_id, out=str(out), shard_size=5, **kwargs)


def fails_to_build(spec: AnswererSpec):
    """An answerer factory that raises while the actor builds it (e.g. a missing model directory)."""
    raise RuntimeError("deliberately unbuildable answerer")


def test_actor_killed_by_a_question_is_replaced_and_the_question_becomes_an_error_row(small_corpus, tmp_path):
    board = score(small_corpus, tmp_path, "clean")
    started = time.perf_counter()
    crash_board = score(
        small_corpus, tmp_path, "crash", answerer="tests.faulty_answerers:kills_process_on", answerer_settings={"fail_ids": "3"}
    )
    seconds = time.perf_counter() - started
    answers = read_answers(str(tmp_path), "crash").set_index("question_id")
    clean = read_answers(str(tmp_path), "clean").set_index("question_id")

    assert answers.index.is_unique and sorted(answers.index) == list(range(24))
    poison = answers.loc[3]
    assert poison["status"] == "error" and not poison["is_correct"] and poison["parsed_answer"] is None
    assert poison["attempts"] == 3  # PoolConfig.max_attempts, after the shard itself was tried 3 times
    assert "actor died" in poison["error"] and "3 attempts" in poison["error"]

    others = answers.drop(index=3)
    assert (others["status"] == "ok").all()
    # Every other question is answered exactly as a run without the poison question answers it.
    pd.testing.assert_series_equal(others["parsed_answer"], clean.drop(index=3)["parsed_answer"])
    assert crash_board[0]["n_error"] == 1 and crash_board[0]["n"] == 24
    assert board[0]["n_error"] == 0
    print(f"\nFIGURE actor crash: run with 6 actor deaths (3 per shard, 3 per question) {seconds:.1f} s")


def test_an_answerer_that_cannot_be_built_fails_the_run_at_once(small_corpus, tmp_path):
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="answerer actor could not start.*deliberately unbuildable answerer"):
        score(small_corpus, tmp_path, "unbuildable", answerer="tests.test_faults_actor:fails_to_build")
    assert time.perf_counter() - started < 120  # no churn through 3 + 3 x 24 replacement actors
    assert read_answers(str(tmp_path), "unbuildable").empty


def test_an_actor_stuck_where_sigalrm_cannot_reach_is_killed_at_the_driver_deadline(small_corpus, tmp_path):
    from tasks.answering import PoolConfig, answer_shards
    from tasks.corpus import load_corpus
    from tasks.shards import plan_shards

    questions = load_corpus(str(small_corpus)).questions
    shards = plan_shards(questions, 2)[:3]
    poison = shards[0].question_ids[0]
    spec = AnswererSpec("tests.faulty_answerers:blocks_on", params={"fail_ids": str(poison)})
    pool = PoolConfig(actors=2, question_timeout_s=1.0, deadline_grace_s=2.0, max_attempts=2)
    events: list[str] = []
    started = time.perf_counter()
    results = answer_shards(str(small_corpus), spec, "stuck", str(tmp_path), shards, questions, pool, on_event=events.append)
    seconds = time.perf_counter() - started
    answers = read_answers(str(tmp_path), "stuck").set_index("question_id")
    assert sorted(answers.index) == sorted(q for shard in shards for q in shard.question_ids) and len(results) == 3
    stuck = answers.loc[poison]
    assert stuck["status"] == "error" and stuck["attempts"] == 2
    assert stuck["error"] == "actor stuck: no answer within the driver's deadline of 3 s, killed on each of 2 attempts"
    assert (answers.drop(index=poison)["status"] == "ok").all()
    # The shard was tried twice whole (deadline 2 x 1 s + 2 s), then question by question.
    assert sum("driver's deadline of 4 s" in event for event in events) == 2
    assert sum("driver's deadline of 3 s" in event for event in events) == 2
    print(f"\nFIGURE stuck actor: 4 driver-side kills and replacements, 6 questions answered in {seconds:.1f} s")


def test_actors_the_cluster_cannot_place_fail_after_the_placement_timeout(small_corpus, tmp_path):
    from tasks.answering import PoolConfig, answer_shards
    from tasks.cluster import ClusterError
    from tasks.corpus import load_corpus
    from tasks.shards import plan_shards

    questions = load_corpus(str(small_corpus)).questions
    pool = PoolConfig(actors=1, resources_per_actor=(("no_such_node", 1.0),), placement_timeout_s=2.0)
    started = time.perf_counter()
    with pytest.raises(ClusterError, match=r"no answerer actor was placed within 2 s \(each needs 1 CPU, 1 no_such_node"):
        answer_shards(str(small_corpus), AnswererSpec("stat"), "unplaced", str(tmp_path), plan_shards(questions, 8), questions, pool)
    assert time.perf_counter() - started < 30
    assert read_answers(str(tmp_path), "unplaced").empty
