"""Answer shards of questions with one Ray actor pool; the driver is the one writer of results.

Each actor is placed first (a cheap constructor: Ray has found it a node and its GPUs), then loads: it builds its
answerer once and indexes the corpus itself. It reads only its own questions' series (the driver never holds series
data), answers a shard and sends the shard's rows back as one Arrow table; the driver writes the shard file
atomically. No node's local disk ever holds results, so a cluster run with a local ``--out`` lands every row on the
driver's disk, and ``s3://`` works the same way.

Per-question failures (bad series, answerer exception, SIGALRM timeout) become error rows and the shard goes on.
An actor that dies (a segfault or OOM on one question), or that the driver finds stuck past its deadline (code
SIGALRM cannot interrupt: native or CUDA calls, a blocked signal), is killed and replaced; its shard is retried,
then answered question by question so the one poison question becomes an error row after ``max_attempts``.
An actor that cannot be placed within ``placement_timeout_s``, or cannot build its answerer, or storage that
stays unreachable after the I/O retries, fails the run (shards already written stay: rerunning the run id
resumes). Actors are spread over the cluster's nodes. See docs/faults.md for the whole contract.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import pyarrow as pa

import tasks.api_answerer  # noqa: F401  (registers the "openai" answerer in drivers and actors)
from model.answerers import AnswererSpec, create_answerer, settings_fields, settings_roles, validate_answerer_params
from model.errors import ArfscoreError
from model.records import InputUse, Question, SeriesGroup
from tasks.cluster import ClusterError, actor_runtime_env
from tasks.corpus import Corpus, Problem, load_corpus
from tasks.series import SeriesError
from tasks.shards import Shard
from tasks.storage import StorageError, absolute_location
from tasks.store import answers_table, write_shard

__all__ = ["PoolConfig", "ShardResult", "ShardWorker", "answer_shards", "answerer_params", "base_row", "error_row"]


def answerer_params(
    answerer: str, settings: Mapping[str, Any] | None, cpus_per_actor: float = 1.0, cache_dir: str | None = None
) -> tuple[tuple[str, str], ...]:
    """The answerer's settings as actors get them: local paths absolute, ``threads`` = the actor's CPUs unless set,
    ``cache_dir`` = the given response cache for answerers that have one (unless set), validated against the
    answerer's settings class (SettingsError naming a bad key or value)."""
    merged = dict(settings or {})
    fields = settings_fields(answerer)
    if cache_dir is not None and fields is not None and "cache_dir" in fields and "cache_dir" not in merged:
        merged["cache_dir"] = cache_dir
    paths, _ = settings_roles(answerer)  # actors run in other working directories: local paths made absolute
    for key in paths:
        if isinstance(merged.get(key), str) and merged[key] and merged[key].lower() != "none":
            merged[key] = absolute_location(merged[key])
    if "threads" not in merged and (fields is None or "threads" in fields):
        merged["threads"] = max(1, int(cpus_per_actor))  # one thread per actor CPU: no oversubscription
    return validate_answerer_params(answerer, merged)


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
    placement_timeout_s: float = 600.0  # an actor Ray cannot place (no free GPU) by then is given up
    load_timeout_s: float = 3600.0  # building the answerer (a 32B model from network storage takes minutes)
    # Driver-side deadline of a shard: question_timeout_s per question plus this; past it the actor is killed.
    deadline_grace_s: float = 60.0

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.num_gpus_per_actor < 0 or self.num_cpus_per_actor <= 0:
            raise ValueError("num_cpus_per_actor must be > 0 and num_gpus_per_actor >= 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.scheduling_strategy not in ("SPREAD", "DEFAULT"):
            raise ValueError(f"scheduling_strategy must be 'SPREAD' or 'DEFAULT', got {self.scheduling_strategy!r}")
        if self.question_timeout_s is not None and self.question_timeout_s <= 0:
            raise ValueError(f"question_timeout_s must be > 0 or None, got {self.question_timeout_s}")
        for name in ("placement_timeout_s", "load_timeout_s", "deadline_grace_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def demand(self) -> dict[str, float]:
        """Ray resources one actor asks for."""
        return {"CPU": self.num_cpus_per_actor, "GPU": self.num_gpus_per_actor, **dict(self.resources_per_actor)}

    def deadline_s(self, n_questions: int) -> float | None:
        """How long the driver waits for ``n_questions`` before it kills the actor (None: no timeout set)."""
        if self.question_timeout_s is None:
            return None
        return self.question_timeout_s * n_questions + self.deadline_grace_s


@dataclass(frozen=True)
class ShardResult:
    index: int
    n_questions: int
    n_ok: int
    n_error: int
    seconds: float
    node_id: str | None
    path: str | None = None

    @classmethod
    def of_table(cls, index: int, table: pa.Table, seconds: float, node_id: str | None, path: str | None = None) -> ShardResult:
        """A shard's counts from its answer rows."""
        n_error = sum(status == "error" for status in table.column("status").to_pylist())
        return cls(index, table.num_rows, table.num_rows - n_error, n_error, seconds, node_id, path)


class QuestionTimeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise QuestionTimeout after ``seconds`` (SIGALRM: only where the call runs on the main thread; the driver's
    deadline covers what a signal cannot interrupt)."""
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


def error_row(
    question: Question, run_id: str, answerer: str, message: str, *, kind: str, node_id: str | None = None,
    gpu_ids: Sequence[str] = (), attempts: int = 1,
) -> dict[str, Any]:
    """The row recorded for a question that could not be answered: counted as wrong, never dropped. ``kind``:
    "input" (its csv row or series is bad) or "answerer" (the answerer raised, timed out, died or hung)."""
    if kind not in ("input", "answerer"):
        raise ValueError(f"error kind must be 'input' or 'answerer', got {kind!r}")
    return {
        **base_row(question, run_id, answerer),
        "raw_response": None,
        "parsed_answer": None,
        "is_valid": False,
        "is_correct": False,
        "status": "error",
        "error": message,
        "error_kind": kind,
        "latency_s": 0.0,
        "node_id": node_id,
        "gpu_ids": list(gpu_ids),
        "attempts": attempts,
        "created_at": datetime.now(timezone.utc),
    }


def _input_columns(use: InputUse | None, series: Sequence[SeriesGroup]) -> dict[str, Any]:
    """The typed columns of what the answerer saw; the totals alone when it did not say."""
    if use is None:
        return {"variates_total": sum(g.n_variates for g in series), "steps_total": sum(g.n_steps for g in series)}
    return {
        "variates_used": use.variates_used, "variates_total": use.variates_total, "steps_used": use.steps_used,
        "steps_total": use.steps_total, "context_policy": use.context_policy, "context_windows": use.context_windows,
        "channels_listed": use.channels_listed, "channels_total": use.channels_total, "images_given": use.images_given,
    }


class ShardWorker:
    """What each actor holds: the corpus index, the answerer (built once), a small cache of dense groups."""

    def __init__(
        self, corpus_location: str, spec: AnswererSpec, run_id: str, question_timeout_s: float | None,
        node_id: str | None = None, gpu_ids: Sequence[str] = (),
    ) -> None:
        self.corpus: Corpus = load_corpus(corpus_location)
        self.questions = {question.question_id: question for question in self.corpus.questions}
        self.spec = spec
        self.answerer = create_answerer(spec)
        self.run_id = run_id
        self.question_timeout_s = question_timeout_s
        self.node_id = node_id
        self.gpu_ids = list(gpu_ids)
        self._cache: dict[str, SeriesGroup] = {}

    def _group(self, group_id: str) -> SeriesGroup:
        if group_id not in self._cache:
            if len(self._cache) >= 2:  # pairs need two; more would hold several 365 MB arrays at full size
                self._cache.pop(next(iter(self._cache)))
            group = self.corpus.open_group(group_id)
            if getattr(self.answerer, "reads_plots", False):  # the corpus' plot, or one rendered here in memory
                from tasks.images import group_plot  # matplotlib loads only in actors that read plots

                group = dataclasses.replace(group, image_png=group_plot(self.corpus, group))
            self._cache[group_id] = group
        return self._cache[group_id]

    def _error(self, question: Question, message: str, attempts: int, kind: str = "input") -> dict[str, Any]:
        return error_row(question, self.run_id, self.spec.name, message, kind=kind, node_id=self.node_id, gpu_ids=self.gpu_ids, attempts=attempts)

    def _load(self, question_id: int, attempts: int) -> tuple[Question, list[SeriesGroup] | None, dict[str, Any] | None]:
        """The question and its series, or the error row when its input is bad."""
        question = self.questions[question_id]
        problems = self.corpus.problems_for(question_id)
        if problems:
            return question, None, self._error(question, "; ".join(str(p) for p in problems), attempts)
        try:
            return question, [self._group(group_id) for group_id in question.query_groups], None
        except SeriesError as error:  # bad data: an error row naming the file and field, as `validate` prints it
            return question, None, self._error(question, str(Problem(error.file, question_id, error.field, error.message)), attempts)

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
            **_input_columns(answer.inputs, series),
            "parse_status": answer.parse_status,
            "prompt_tokens": answer.tokens_in,
            "completion_tokens": answer.tokens_out,
            "served_model": answer.served_model,
            "cost_usd": answer.cost_usd,
            "cache_hit": answer.cache_hit,
            "node_id": self.node_id,
            "gpu_ids": self.gpu_ids,
            "attempts": attempts,
            "created_at": datetime.now(timezone.utc),
        }

    def _failed_row(self, question: Question, error: Exception, attempts: int) -> dict[str, Any]:
        name = self.spec.name
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        return self._error(question, f"answerer {name} failed: {detail}", attempts, kind="answerer")

    def answer_one(self, question_id: int, attempts: int = 1) -> dict[str, Any]:
        question, series, failed = self._load(question_id, attempts)
        if failed is not None:
            return failed
        started = time.perf_counter()
        try:
            with _time_limit(self.question_timeout_s):
                answer = self.answerer.answer(question, series)
        except StorageError:
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
            except StorageError:
                raise
            except Exception:
                return [rows.get(question_id) or self.answer_one(question_id, attempts) for question_id in question_ids]
            share = (time.perf_counter() - started) / len(ready)
            for (question, series), answer in zip(ready, answers):
                if isinstance(answer, StorageError):
                    raise answer
                if isinstance(answer, Exception):  # that question failed for good (answerers that report per question)
                    rows[question.question_id] = self._failed_row(question, answer, attempts)
                else:
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

    def answer_table(self, question_ids: Sequence[int], attempts: int = 1) -> pa.Table:
        """The rows of ``question_ids`` as one validated Arrow table (what the actor sends the driver)."""
        return answers_table(self.answer_rows(question_ids, attempts), self.run_id)

    def run_shard(self, shard: Shard, attempts: int = 1) -> tuple[ShardResult, pa.Table]:
        started = time.perf_counter()
        table = self.answer_table(shard.question_ids, attempts)
        return ShardResult.of_table(shard.index, table, time.perf_counter() - started, self.node_id), table


def _remote_actor_class():
    import ray

    @ray.remote
    class AnswerActor:
        """Placed by a trivial constructor (so the driver can time placement apart from loading), then loaded."""

        def __init__(self) -> None:
            context = ray.get_runtime_context()
            self.node_id = context.get_node_id()
            self.gpu_ids = [str(gpu) for gpu in context.get_accelerator_ids().get("GPU", [])]
            self.worker: ShardWorker | None = None

        def placement(self) -> tuple[str, list[str]]:
            return self.node_id, self.gpu_ids

        def load(self, corpus_location: str, spec: AnswererSpec, run_id: str, question_timeout_s: float | None) -> None:
            self.worker = ShardWorker(corpus_location, spec, run_id, question_timeout_s, node_id=self.node_id, gpu_ids=self.gpu_ids)

        def run_shard(self, shard: Shard, attempts: int) -> tuple[ShardResult, pa.Table]:
            return self.worker.run_shard(shard, attempts)

        def answer_table(self, question_ids: list[int], attempts: int) -> pa.Table:
            return self.worker.answer_table(question_ids, attempts)

    return AnswerActor


def _last_line(text: str) -> str:
    """The last non-empty line of a Ray error text (the original "Type: message"), without colour codes."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.strip()]
    return lines[-1] if lines else text


def _reraise_work_error(error: Exception) -> None:
    """An exception raised by actor code (not a crash): a user-facing error travels as itself; anything else is
    a bug and fails the run as raised."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, ArfscoreError):
        raise type(cause)(str(cause)) from error
    raise error


# ---------------------------------------------------------------------------------------------- the scheduler


@dataclass
class _SplitShard:
    """A shard that kept killing its actor: answered question by question, written once all are known."""

    shard: Shard
    tables: dict[int, pa.Table] = field(default_factory=dict)


@dataclass
class _Work:
    kind: str  # "load" | "shard" | "question"
    attempts: int = 1
    shard: Shard | None = None
    split: _SplitShard | None = None
    question_id: int | None = None
    deadline: float | None = None  # time.monotonic() past which the actor is killed


@dataclass
class _Slot:
    actor: Any
    node_id: str | None = None
    gpu_ids: list[str] = field(default_factory=list)


class _ShardScheduler:
    """One pool: dispatch work to idle actors, write finished shards, replace dead or stuck actors."""

    def __init__(
        self, corpus_location: str, spec: AnswererSpec, run_id: str, out: str, questions: Sequence[Question],
        pool: PoolConfig, on_shard: Callable[[ShardResult], None] | None, on_event: Callable[[str], None],
    ) -> None:
        import ray

        self.ray = ray
        self.load_args = (corpus_location, spec, run_id, pool.question_timeout_s)
        self.spec, self.run_id, self.out, self.pool = spec, run_id, out, pool
        self.by_id = {question.question_id: question for question in questions}
        self.on_shard, self.on_event = on_shard, on_event
        self.actor_class = _remote_actor_class().options(
            num_cpus=pool.num_cpus_per_actor,
            num_gpus=pool.num_gpus_per_actor,
            resources=dict(pool.resources_per_actor) or None,
            max_restarts=0,  # the driver replaces dead actors itself, so a retry may land on a fresh process
            scheduling_strategy=pool.scheduling_strategy,
            runtime_env=actor_runtime_env(),
        )
        self.slots: list[_Slot] = []
        self.queue: deque[_Work] = deque()
        self.idle: list[int] = []
        self.in_flight: dict[Any, tuple[int, _Work]] = {}
        self.results: list[ShardResult] = []

    # ------------------------------------------------------------------------------------------ actor lifecycle

    def start(self, n_actors: int) -> None:
        """Place ``n_actors`` (waiting at most placement_timeout_s), then load them all (load_timeout_s)."""
        actors = [self.actor_class.remote() for _ in range(n_actors)]
        placements = {actor.placement.remote(): actor for actor in actors}
        ready, pending = self.ray.wait(list(placements), num_returns=len(placements), timeout=self.pool.placement_timeout_s)
        for ref in pending:
            self.ray.kill(placements[ref], no_restart=True)
        if not ready:
            raise ClusterError(
                f"no answerer actor was placed within {self.pool.placement_timeout_s:g} s (each needs "
                f"{', '.join(f'{v:g} {k}' for k, v in sorted(self.pool.demand.items()) if v > 0)}; busy or too small cluster)"
            )
        if pending:
            self.on_event(f"{len(pending)} of {n_actors} actors not placed within {self.pool.placement_timeout_s:g} s: running with {len(ready)}")
        for ref in ready:
            node_id, gpu_ids = self.ray.get(ref)
            self.slots.append(_Slot(placements[ref], node_id, gpu_ids))
        loads = {self.slots[i].actor.load.remote(*self.load_args): i for i in range(len(self.slots))}
        done, pending = self.ray.wait(list(loads), num_returns=len(loads), timeout=self.pool.load_timeout_s)
        if pending:
            raise ClusterError(f"answerer actor(s) still loading after {self.pool.load_timeout_s:g} s")
        for ref in done:
            self._get_load(ref)
        self.idle = list(range(len(self.slots)))
        placed = ", ".join(f"{(s.node_id or '-')[:12]} gpus {s.gpu_ids or '[]'}" for s in self.slots)
        self.on_event(f"{len(self.slots)} actor(s) ready: {placed}")

    def _get_load(self, ref: Any) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            self.ray.get(ref)
        except RayTaskError as error:  # the answerer cannot be built: every replacement would fail the same way
            cause = getattr(error, "cause", None)
            if isinstance(cause, ArfscoreError):
                raise type(cause)(f"answerer actor could not start: {cause}") from error
            raise RuntimeError(f"answerer actor could not start: {_last_line(str(error))}") from error
        except RayActorError as error:
            raise RuntimeError(f"answerer actor died while loading: {_last_line(str(error))}") from error

    def _replace(self, slot: int) -> None:
        """Kill the actor in ``slot`` and start a fresh one there; its load is tracked like any work."""
        self.ray.kill(self.slots[slot].actor, no_restart=True)
        actor = self.actor_class.remote()
        self.slots[slot] = _Slot(actor)
        deadline = time.monotonic() + self.pool.placement_timeout_s + self.pool.load_timeout_s
        self.in_flight[actor.load.remote(*self.load_args)] = (slot, _Work("load", deadline=deadline))

    def close(self) -> None:
        for slot in self.slots:
            self.ray.kill(slot.actor, no_restart=True)

    # ---------------------------------------------------------------------------------------------- the loop

    def run(self, shards: Sequence[Shard]) -> list[ShardResult]:
        self.queue.extend(_Work("shard", shard=shard) for shard in shards)
        while self.queue or self.in_flight:
            self._dispatch()
            deadlines = [work.deadline for _, work in self.in_flight.values() if work.deadline is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
            if ready:
                self._collect(ready[0])
            else:
                self._expire()
        return self.results

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            slot = self.idle.pop()
            work = self.queue.popleft()
            actor = self.slots[slot].actor
            if work.kind == "shard":
                ref = actor.run_shard.remote(work.shard, work.attempts)
                limit = self.pool.deadline_s(len(work.shard.question_ids))
            else:
                ref = actor.answer_table.remote([work.question_id], work.attempts)
                limit = self.pool.deadline_s(1)
            work.deadline = time.monotonic() + limit if limit is not None else None
            self.in_flight[ref] = (slot, work)

    def _collect(self, ref: Any) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        slot, work = self.in_flight.pop(ref)
        if work.kind == "load":
            self._get_load(ref)
            node_id, gpu_ids = self.ray.get(self.slots[slot].actor.placement.remote())
            self.slots[slot].node_id, self.slots[slot].gpu_ids = node_id, gpu_ids
            self.idle.append(slot)
            return
        try:
            value = self.ray.get(ref)
        except RayTaskError as error:
            # The work raised (not a crash): storage unreachable after its I/O retries, or a bug. Fail the run;
            # shards already written stay, so a rerun with the same run id resumes.
            _reraise_work_error(error)
        except RayActorError as error:
            self._lost(slot, work, f"actor died ({type(error).__name__})")
            return
        self.idle.append(slot)
        if work.kind == "shard":
            result, table = value
            path = write_shard(table, self.out, self.run_id, work.shard.index)
            self._finish(dataclasses.replace(result, path=path))
        else:
            work.split.tables[work.question_id] = value
            self._finish_split(work.split)

    def _expire(self) -> None:
        """Kill every actor whose work is past its deadline (stuck where SIGALRM cannot reach) and retry the work."""
        now = time.monotonic()
        for ref, (slot, work) in list(self.in_flight.items()):
            if work.deadline is not None and now >= work.deadline:
                del self.in_flight[ref]
                if work.kind == "load":
                    raise ClusterError(f"a replacement answerer actor was not placed and loaded within "
                                       f"{self.pool.placement_timeout_s + self.pool.load_timeout_s:g} s")
                n = len(work.shard.question_ids) if work.kind == "shard" else 1
                self._lost(slot, work, f"actor stuck: no answer within the driver's deadline of {self.pool.deadline_s(n):g} s, killed")

    def _lost(self, slot: int, work: _Work, reason: str) -> None:
        """The actor in ``slot`` died or was stuck on ``work``: replace it, then retry, split or give up."""
        node_id, gpu_ids = self.slots[slot].node_id, self.slots[slot].gpu_ids
        self.on_event(f"{reason} on node {(node_id or '-')[:12]}: replacing it")
        self._replace(slot)
        if work.kind == "shard":
            if work.attempts < self.pool.max_attempts:
                self.queue.append(_Work("shard", work.attempts + 1, shard=work.shard))
            else:
                split = _SplitShard(work.shard)
                self.queue.extend(_Work("question", 1, split=split, question_id=qid) for qid in work.shard.question_ids)
            return
        if work.attempts < self.pool.max_attempts:
            self.queue.append(_Work("question", work.attempts + 1, split=work.split, question_id=work.question_id))
            return
        row = error_row(
            self.by_id[work.question_id], self.run_id, self.spec.name, f"{reason} on each of {work.attempts} attempts",
            kind="answerer", node_id=node_id, gpu_ids=gpu_ids, attempts=work.attempts,
        )
        work.split.tables[work.question_id] = answers_table([row], self.run_id)
        self._finish_split(work.split)

    def _finish(self, result: ShardResult) -> None:
        self.results.append(result)
        if self.on_shard is not None:
            self.on_shard(result)

    def _finish_split(self, split: _SplitShard) -> None:
        if len(split.tables) == len(split.shard.question_ids):
            table = pa.concat_tables([split.tables[qid] for qid in split.shard.question_ids])
            path = write_shard(table, self.out, self.run_id, split.shard.index)
            self._finish(ShardResult.of_table(split.shard.index, table, 0.0, None, path))


def answer_shards(
    corpus_location: str,
    spec: AnswererSpec,
    run_id: str,
    out: str,
    shards: Sequence[Shard],
    questions: Sequence[Question],
    pool: PoolConfig = PoolConfig(),
    on_shard: Callable[[ShardResult], None] | None = None,
    on_event: Callable[[str], None] = lambda message: None,
    n_actors: int | None = None,
) -> list[ShardResult]:
    """Answer ``shards`` with one pool of actors (Ray must be initialised: tasks/cluster.ray_session); the driver
    writes each shard as its rows arrive. ``n_actors`` (default ``pool.actors``) is the pool size the pre-flight
    found placeable; ``on_event`` receives one line per pool event (placement, replaced actors)."""
    if not shards:
        return []
    scheduler = _ShardScheduler(corpus_location, spec, run_id, out, questions, pool, on_shard, on_event)
    try:
        scheduler.start(min(n_actors or pool.actors, len(shards)))
        return scheduler.run(shards)
    finally:
        scheduler.close()

