"""Answer shards of questions with one Ray actor pool.

Each actor builds its answerer once, indexes the corpus itself and reads only its own questions' series
(the driver never holds series data), answers a shard and writes the shard file atomically, returning a
small summary. Per-question failures (bad series, answerer exception, timeout) become error rows and the
shard goes on. An actor that dies (e.g. a segfault or OOM on one question) is replaced; its shard is retried,
then answered question by question so the one poison question becomes an error row after `max_attempts`.
An actor that cannot even be built, or storage that stays unreachable after the I/O retries, fails the run
(shards already written stay: rerunning the run id resumes). Actors are spread over the cluster's nodes.
See docs/faults.md for the whole contract.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from model.answerers import AnswererSpec, create_answerer
from model.records import Question, SeriesGroup
from tasks.corpus import Corpus, CorpusError, Problem, load_corpus
from tasks.series import SeriesError
from tasks.shards import Shard
from tasks.store import write_shard

# Environment the actors need to reach the same storage as the driver (S3 endpoint and credentials).
FORWARDED_ENV_PREFIXES: tuple[str, ...] = ("AWS_", "ARFSCORE_")


@dataclass(frozen=True)
class PoolConfig:
    """Actor pool settings. GPUs per actor may exceed 1 (an actor spanning several GPUs for a large VLM)."""

    actors: int = 2
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    resources_per_actor: tuple[tuple[str, float], ...] = ()  # custom Ray resources, e.g. (("node_a", 1),)
    max_attempts: int = 3  # per shard, then per question after the shard is split
    question_timeout_s: float | None = 600.0
    # "SPREAD": actors go to different nodes where they fit (a multi-node cluster answers on every node);
    # "DEFAULT": Ray packs them (e.g. to keep them on the GPU node named by resources_per_actor).
    scheduling_strategy: str = "SPREAD"

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.num_gpus_per_actor < 0 or self.num_cpus_per_actor <= 0:
            raise ValueError("num_cpus_per_actor must be > 0 and num_gpus_per_actor >= 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.scheduling_strategy not in ("SPREAD", "DEFAULT"):
            raise ValueError(f"scheduling_strategy must be 'SPREAD' or 'DEFAULT', got {self.scheduling_strategy!r}")


@dataclass(frozen=True)
class ShardResult:
    index: int
    n_questions: int
    n_ok: int
    n_error: int
    seconds: float
    node_id: str | None
    path: str | None = None


class QuestionTimeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise QuestionTimeout after `seconds` (SIGALRM: only where the call runs on the main thread)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise QuestionTimeout(f"no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def base_row(question: Question, run_id: str, answerer: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "question_id": question.question_id,
        "query_group": ", ".join(question.query_groups),
        "category": question.category,
        "tier": question.tier,
        "answerer": answerer,
        "options": list(question.options),
        "correct_answer": question.correct_answer,
    }


def error_row(question: Question, run_id: str, answerer: str, message: str, *, node_id: str | None = None, attempts: int = 1) -> dict[str, Any]:
    """The row recorded for a question that could not be answered: counted as wrong, never dropped."""
    return {
        **base_row(question, run_id, answerer),
        "raw_response": None,
        "parsed_answer": None,
        "is_valid": False,
        "is_correct": False,
        "status": "error",
        "error": message,
        "latency_s": 0.0,
        "node_id": node_id,
        "attempts": attempts,
        "created_at": datetime.now(timezone.utc),
    }


class ShardWorker:
    """What each actor holds: the corpus index, the answerer (built once), a small cache of dense groups."""

    def __init__(self, corpus_location: str, spec: AnswererSpec, run_id: str, out: str, question_timeout_s: float | None, node_id: str | None = None) -> None:
        self.corpus: Corpus = load_corpus(corpus_location)
        self.questions = {question.question_id: question for question in self.corpus.questions}
        self.spec = spec
        self.answerer = create_answerer(spec)
        self.run_id = run_id
        self.out = out
        self.question_timeout_s = question_timeout_s
        self.node_id = node_id
        self._cache: dict[str, SeriesGroup] = {}

    def _group(self, group_id: str) -> SeriesGroup:
        if group_id not in self._cache:
            if len(self._cache) >= 2:  # pairs need two; more would hold several 365 MB arrays at full size
                self._cache.pop(next(iter(self._cache)))
            self._cache[group_id] = self.corpus.open_group(group_id)
        return self._cache[group_id]

    def _load(self, question_id: int, attempts: int) -> tuple[Question, list[SeriesGroup] | None, dict[str, Any] | None]:
        """The question and its series, or the error row when its input is bad."""
        question = self.questions[question_id]
        problems = self.corpus.problems_for(question_id)
        if problems:
            message = "; ".join(str(p) for p in problems)
            return question, None, error_row(question, self.run_id, self.spec.name, message, node_id=self.node_id, attempts=attempts)
        try:
            return question, [self._group(group_id) for group_id in question.query_groups], None
        except SeriesError as error:  # bad data: an error row naming the file and field, as `validate` prints it
            problem = Problem(error.file, question_id, error.field, error.message)
            return question, None, error_row(question, self.run_id, self.spec.name, str(problem), node_id=self.node_id, attempts=attempts)

    def _answered_row(self, question: Question, series: list[SeriesGroup], answer: Any, attempts: int, fallback_latency_s: float) -> dict[str, Any]:
        parsed = answer.parsed_answer
        seed = answer.notes.get("option_order_seed")
        return {
            **base_row(question, self.run_id, self.spec.name),
            "raw_response": answer.raw_response,
            "parsed_answer": parsed,
            "is_valid": parsed is not None,
            "is_correct": parsed is not None and parsed == question.correct_answer,
            "status": "ok",
            "error": None,
            "latency_s": answer.latency_s or fallback_latency_s,
            "n_variates": sum(group.n_variates for group in series),
            "n_steps": max(group.n_steps for group in series),
            "interval_s": series[0].interval_s,
            "option_order_seed": int(seed) if seed is not None else None,
            "node_id": self.node_id,
            "attempts": attempts,
            "created_at": datetime.now(timezone.utc),
        }

    def _failed_row(self, question: Question, error: Exception, attempts: int) -> dict[str, Any]:
        name = self.spec.name
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        return error_row(question, self.run_id, name, f"answerer {name} failed: {detail}", node_id=self.node_id, attempts=attempts)

    def answer_one(self, question_id: int, attempts: int = 1) -> dict[str, Any]:
        question, series, failed = self._load(question_id, attempts)
        if failed is not None:
            return failed
        started = time.perf_counter()
        try:
            with _time_limit(self.question_timeout_s):
                answer = self.answerer.answer(question, series)
        except CorpusError:
            raise  # storage outage: fail the shard (retried by the driver), never a wrong answer
        except Exception as error:  # any answerer bug becomes an error row; the run goes on
            return self._failed_row(question, error, attempts)
        return self._answered_row(question, series, answer, attempts, time.perf_counter() - started)

    def _answer_batch(self, question_ids: Sequence[int], attempts: int) -> list[dict[str, Any]]:
        """One batched generate call for the answerable questions (models with answer_batch); if the batch
        fails, each question is answered alone so only the faulty one becomes an error row."""
        rows: dict[int, dict[str, Any]] = {}
        ready: list[tuple[Question, list[SeriesGroup]]] = []
        for question_id in question_ids:
            question, series, failed = self._load(question_id, attempts)
            if failed is not None:
                rows[question_id] = failed
            else:
                ready.append((question, series))
        if ready:
            started = time.perf_counter()
            try:
                limit = self.question_timeout_s * len(ready) if self.question_timeout_s else None
                with _time_limit(limit):
                    answers = self.answerer.answer_batch([q for q, _ in ready], [s for _, s in ready])
            except CorpusError:
                raise
            except Exception:
                return [rows.get(question_id) or self.answer_one(question_id, attempts) for question_id in question_ids]
            share = (time.perf_counter() - started) / len(ready)
            for (question, series), answer in zip(ready, answers):
                rows[question.question_id] = self._answered_row(question, series, answer, attempts, share)
        return [rows[question_id] for question_id in question_ids]

    def answer_rows(self, question_ids: Sequence[int], attempts: int = 1) -> list[dict[str, Any]]:
        batch_size = int(getattr(self.answerer, "batch_size", 1) or 1)
        if not hasattr(self.answerer, "answer_batch") or batch_size < 2 or len(question_ids) < 2:
            return [self.answer_one(question_id, attempts) for question_id in question_ids]
        rows: list[dict[str, Any]] = []
        for start in range(0, len(question_ids), batch_size):  # bounded: at most batch_size questions' series held
            rows.extend(self._answer_batch(question_ids[start : start + batch_size], attempts))
        return rows

    def run_shard(self, shard: Shard, attempts: int = 1) -> ShardResult:
        started = time.perf_counter()
        rows = self.answer_rows(shard.question_ids, attempts)
        path = write_shard(rows, self.out, self.run_id, shard.index)
        n_error = sum(row["status"] == "error" for row in rows)
        return ShardResult(shard.index, len(rows), len(rows) - n_error, n_error, time.perf_counter() - started, self.node_id, path)


def _remote_worker_class():
    import ray

    @ray.remote
    class AnswerActor:
        def __init__(self, *args: Any) -> None:
            node_id = ray.get_runtime_context().get_node_id()
            self.worker = ShardWorker(*args, node_id=node_id)

        def run_shard(self, shard: Shard, attempts: int) -> ShardResult:
            return self.worker.run_shard(shard, attempts)

        def answer_rows(self, question_ids: list[int], attempts: int) -> list[dict[str, Any]]:
            return self.worker.answer_rows(question_ids, attempts)

    return AnswerActor


def _last_line(text: str) -> str:
    """The last non-empty line of a Ray error text (the original "Type: message"), without colour codes."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.strip()]
    return lines[-1] if lines else text


def _forwarded_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use a running Ray (tests' shared session), connect to `address`, or start a local one and stop it after."""
    import ray

    if ray.is_initialized():
        yield
        return
    # address=None would make ray.init join whatever cluster `ray start` last recorded on this machine
    # (/tmp/ray/ray_current_cluster); the default promised to users is a local Ray started for the run.
    # RAY_ADDRESS (set e.g. inside `ray job submit`) still selects a cluster.
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=target, include_dashboard=False, log_to_driver=True, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass
class _SplitShard:
    """A shard that kept killing its actor: answered question by question, written once all are known."""

    shard: Shard
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)


def answer_shards(
    corpus_location: str,
    spec: AnswererSpec,
    run_id: str,
    out: str,
    shards: Sequence[Shard],
    questions: Sequence[Question],
    pool: PoolConfig = PoolConfig(),
    on_shard: Callable[[ShardResult], None] | None = None,
) -> list[ShardResult]:
    """Answer `shards` with one pool of `pool.actors` actors (Ray must be initialised; see ray_session)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    if not shards:
        return []
    by_id = {question.question_id: question for question in questions}
    actor_class = _remote_worker_class().options(
        num_cpus=pool.num_cpus_per_actor,
        num_gpus=pool.num_gpus_per_actor,
        resources=dict(pool.resources_per_actor) or None,
        max_restarts=0,  # the driver replaces dead actors itself, so a retry may land on a fresh process
        scheduling_strategy=pool.scheduling_strategy,
        runtime_env={"env_vars": _forwarded_env()},
    )
    args = (corpus_location, spec, run_id, out, pool.question_timeout_s)
    n_actors = min(pool.actors, len(shards) if len(shards) > 0 else 1)
    actors = [actor_class.remote(*args) for _ in range(n_actors)]
    # Work items: ("shard", shard, attempts) or ("question", split, question_id, attempts).
    queue: deque[tuple] = deque(("shard", shard, 1) for shard in shards)
    idle = list(range(n_actors))
    in_flight: dict[Any, tuple[int, tuple]] = {}
    results: list[ShardResult] = []

    def finish(result: ShardResult) -> None:
        results.append(result)
        if on_shard is not None:
            on_shard(result)

    def finish_split(split: _SplitShard) -> None:
        if len(split.rows) == len(split.shard.question_ids):
            rows = [split.rows[qid] for qid in split.shard.question_ids]
            path = write_shard(rows, out, run_id, split.shard.index)
            n_error = sum(row["status"] == "error" for row in rows)
            finish(ShardResult(split.shard.index, len(rows), len(rows) - n_error, n_error, 0.0, None, path))

    try:
        while queue or in_flight:
            while queue and idle:
                slot = idle.pop()
                item = queue.popleft()
                if item[0] == "shard":
                    ref = actors[slot].run_shard.remote(item[1], item[2])
                else:
                    ref = actors[slot].answer_rows.remote([item[2]], item[3])
                in_flight[ref] = (slot, item)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            slot, item = in_flight.pop(ref)
            try:
                value = ray.get(ref)
            except RayTaskError as error:
                # The work raised (not a crash): storage unreachable after its I/O retries, or a bug. Fail the run;
                # shards already written stay, so a rerun with the same run id resumes.
                cause = getattr(error, "cause", None)
                if isinstance(cause, CorpusError):
                    raise CorpusError(str(cause)) from error
                raise
            except RayActorError as error:
                if error.actor_init_failed:
                    # The answerer cannot even be built (bad model path, corpus unreachable, ...): every
                    # replacement would fail the same way, so stop instead of churning through actors.
                    cause = _last_line(str(error))  # "ExceptionType: message" of the creation task
                    if "CorpusError" in cause:
                        raise CorpusError(f"answerer actor could not start: {cause}") from error
                    raise RuntimeError(f"answerer actor could not start: {cause}") from error
                # The actor process died: replace it, then retry the work (or give up on one question).
                ray.kill(actors[slot], no_restart=True)
                actors[slot] = actor_class.remote(*args)
                idle.append(slot)
                reason = f"actor died ({type(error).__name__})"
                if item[0] == "shard":
                    shard, attempts = item[1], item[2]
                    if attempts < pool.max_attempts:
                        queue.append(("shard", shard, attempts + 1))
                    else:
                        split = _SplitShard(shard)
                        queue.extend(("question", split, qid, 1) for qid in shard.question_ids)
                else:
                    split, question_id, attempts = item[1], item[2], item[3]
                    if attempts < pool.max_attempts:
                        queue.append(("question", split, question_id, attempts + 1))
                    else:
                        split.rows[question_id] = error_row(
                            by_id[question_id], run_id, spec.name, f"{reason} on each of {attempts} attempts", attempts=attempts
                        )
                        finish_split(split)
                continue
            idle.append(slot)
            if item[0] == "shard":
                finish(value)
            else:
                split = item[1]
                split.rows[item[2]] = value[0]
                finish_split(split)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    return results
