"""Deterministic shards of questions, which of them a run still has to answer (resume), and whether it is complete."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from model.answerers import AnswererSpec, default_shard_size
from model.errors import ArfscoreError
from model.records import Question
from tasks.store import read_answers, read_manifest, written_shards


@dataclass(frozen=True)
class Shard:
    """A fixed list of question ids; written as answers/run_id=R/shard=<index>.parquet when complete."""

    index: int
    question_ids: tuple[int, ...]


def choose_shard_size(out: str, run_id: str, spec: AnswererSpec) -> int:
    """The shard size when none is given: the one a started run recorded in its manifest (so a resume plans the
    same shards even if a default changed), else the answerer's default (model.answerers.default_shard_size)."""
    recorded = read_manifest(out, run_id)
    if recorded is not None and recorded.get("shard_size"):
        return int(recorded["shard_size"])
    return default_shard_size(spec)


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


class IncompleteRunError(ArfscoreError):
    """Some planned question has no answer row, or more than one: metrics would be computed over a partial set."""


def check_complete(shards: Sequence[Shard], out: str, run_id: str) -> int:
    """Every planned question has exactly one answer row under ``out`` (and no row answers an unplanned one);
    returns the number of rows. IncompleteRunError names the missing, duplicated or unexpected question ids."""
    planned = [question_id for shard in shards for question_id in shard.question_ids]
    answered = read_answers(out, run_id, columns=["question_id"])["question_id"].tolist()
    counts = Counter(answered)
    missing = sorted(set(planned) - set(counts))
    duplicated = sorted(question_id for question_id, count in counts.items() if count > 1)
    unexpected = sorted(set(counts) - set(planned))
    if missing or duplicated or unexpected:
        parts = [
            f"{len(missing)} of {len(planned)} planned questions have no answer row: {_ids(missing)}" if missing else "",
            f"{len(duplicated)} answered more than once: {_ids(duplicated)}" if duplicated else "",
            f"{len(unexpected)} answered but not planned: {_ids(unexpected)}" if unexpected else "",
        ]
        raise IncompleteRunError(
            f"run {run_id} is incomplete under {out}: {'; '.join(p for p in parts if p)}. No metrics were computed; "
            "rerun the same --run-id to answer what is missing (a shard file that holds wrong rows must be removed first)"
        )
    return len(answered)


def _ids(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}]"
