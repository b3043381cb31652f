"""Actors hand answerers with answer_batch (the hybrid model) several questions at once."""

from __future__ import annotations

from model.answerers import AnswererSpec
from tasks.answering import ShardWorker


def worker(corpus, tmp_path, fail_ids: str = "") -> ShardWorker:
    spec = AnswererSpec(name="tests.faulty_answerers:batches_with_poison", params={"fail_ids": fail_ids})
    return ShardWorker(str(corpus), spec, "batch", question_timeout_s=None)


def test_questions_are_answered_in_batches_with_the_same_answers(small_corpus, tmp_path):
    ids = list(range(10))
    batched = worker(small_corpus, tmp_path)
    rows = batched.answer_rows(ids)
    assert batched.answerer.batch_calls == [4, 4, 2]
    alone = worker(small_corpus, tmp_path)
    assert [row["parsed_answer"] for row in rows] == [alone.answer_one(i)["parsed_answer"] for i in ids]
    assert [row["question_id"] for row in rows] == ids and all(row["status"] == "ok" for row in rows)


def test_a_failing_batch_falls_back_to_one_by_one_so_only_the_faulty_question_errors(small_corpus, tmp_path):
    rows = worker(small_corpus, tmp_path, fail_ids="5").answer_rows(list(range(8)))
    errors = {row["question_id"] for row in rows if row["status"] == "error"}
    assert errors == {5}
    assert "deliberate failure on question 5" in rows[5]["error"]
