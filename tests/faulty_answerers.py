"""Answerers that misbehave on purpose, importable by Ray actors as "tests.faulty_answerers:<factory>"."""

from __future__ import annotations

import os
import time

from model.answerers import AnswererSpec, create_answerer
from model.records import Answer, Question, SeriesGroup


def _params(spec: AnswererSpec) -> dict[str, str]:
    return dict(spec.params)


class RaisesOn:
    """Answers like `stat` but raises on the question ids listed in params["fail_ids"]."""

    def __init__(self, spec: AnswererSpec) -> None:
        self.name = spec.name
        self.inner = create_answerer(AnswererSpec(name="stat", seed=spec.seed))
        self.fail_ids = {int(x) for x in _params(spec).get("fail_ids", "").split(",") if x}

    def answer(self, question: Question, series: list[SeriesGroup]) -> Answer:
        if question.question_id in self.fail_ids:
            raise RuntimeError(f"deliberate failure on question {question.question_id}")
        return self.inner.answer(question, series)


class SleepsOn(RaisesOn):
    def answer(self, question: Question, series: list[SeriesGroup]) -> Answer:
        if question.question_id in self.fail_ids:
            time.sleep(60)
        return self.inner.answer(question, series)


class KillsProcessOn(RaisesOn):
    """Kills its own actor process (like a segfault) on the listed questions."""

    def answer(self, question: Question, series: list[SeriesGroup]) -> Answer:
        if question.question_id in self.fail_ids:
            os._exit(1)
        return self.inner.answer(question, series)


def raises_on(spec: AnswererSpec) -> RaisesOn:
    return RaisesOn(spec)


def sleeps_on(spec: AnswererSpec) -> SleepsOn:
    return SleepsOn(spec)


def kills_process_on(spec: AnswererSpec) -> KillsProcessOn:
    return KillsProcessOn(spec)


class BatchesWithPoison(RaisesOn):
    """Has answer_batch (like the hybrid model); a batch holding a listed question raises, and so does
    answering that question alone. Counts its batch calls so tests can see batching happened."""

    batch_size = 4

    def __init__(self, spec: AnswererSpec) -> None:
        super().__init__(spec)
        self.batch_calls: list[int] = []

    def answer_batch(self, questions: list[Question], series_list: list[list[SeriesGroup]]) -> list[Answer]:
        self.batch_calls.append(len(questions))
        return [self.answer(question, series) for question, series in zip(questions, series_list)]


def batches_with_poison(spec: AnswererSpec) -> BatchesWithPoison:
    return BatchesWithPoison(spec)


class BlocksOn(RaisesOn):
    """Hangs on the listed questions where SIGALRM cannot reach it (the signal is blocked, as in native or CUDA
    code): only the driver's deadline can end it."""

    def answer(self, question: Question, series: list[SeriesGroup]) -> Answer:
        if question.question_id in self.fail_ids:
            import signal

            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(3600)
        return self.inner.answer(question, series)


def blocks_on(spec: AnswererSpec) -> BlocksOn:
    return BlocksOn(spec)
