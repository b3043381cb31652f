"""Deterministic shards of questions, and which of them a run still has to answer (resume)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from model.records import Question
from tasks.store import written_shards


@dataclass(frozen=True)
class Shard:
    """A fixed list of question ids; written as answers/run_id=R/shard=<index>.parquet when complete."""

    index: int
    question_ids: tuple[int, ...]


def plan_shards(questions: Sequence[Question], shard_size: int) -> list[Shard]:
    """Chunk questions in a stable order: by query group, then id, so questions sharing a group share a shard
    (an actor reads that group once). The same corpus and shard_size always give the same shards."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ordered = sorted(questions, key=lambda question: (question.query_groups, question.question_id))
    ids = [question.question_id for question in ordered]
    return [Shard(number, tuple(ids[start : start + shard_size])) for number, start in enumerate(range(0, len(ids), shard_size))]


def pending_shards(shards: Sequence[Shard], out: str, run_id: str) -> list[Shard]:
    """Shards not yet written for this run: a killed or failed run resumes with exactly these."""
    done = written_shards(out, run_id)
    return [shard for shard in shards if shard.index not in done]
