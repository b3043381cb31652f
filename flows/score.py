"""The score_corpus Prefect flow: index corpus -> pre-flight the cluster -> per run: manifest, plan shards (resume),
Ray actor pool (the driver writes every shard), completeness check, metrics, run record -> leaderboard.

Wiring only: every step is a plain function in tasks/, wrapped here as a Prefect task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from model.answerers import AnswererSpec, answer_priors, resolved_settings, settings_roles
from tasks import answering, cluster, manifest, progress, report, runs, shards, store
from tasks.corpus import load_corpus
from tasks.storage import absolute_location, is_remote
from tasks.store import validate_run_id


@dataclass(frozen=True)
class ScoreConfig:
    """Everything the run was started with (stored in the run record; the manifest holds what defines it)."""

    corpus: str
    answerer: str
    run_id: str
    out: str
    ray_address: str | None
    actors: int
    num_gpus_per_actor: float
    shard_size: int
    repeats: int
    seed: int
    question_timeout_s: float | None
    placement_timeout_s: float
    params: tuple[tuple[str, str], ...]


# No Prefect retries: storage I/O is retried with backoff inside the tasks; data errors must not be retried.
load_corpus_task = task(load_corpus, name="load_corpus")
corpus_fingerprint_task = task(manifest.corpus_fingerprint, name="corpus_fingerprint")
prepare_cluster_task = task(cluster.prepare_cluster, name="prepare_cluster")
ensure_manifest_task = task(manifest.ensure_manifest, name="ensure_manifest")
choose_shard_size_task = task(shards.choose_shard_size, name="choose_shard_size")
plan_shards_task = task(shards.plan_shards, name="plan_shards")
pending_shards_task = task(shards.pending_shards, name="pending_shards")
check_complete_task = task(shards.check_complete, name="check_complete")
compute_metrics_task = task(runs.compute_run_metrics, name="compute_metrics")
record_run_task = task(runs.record_run, name="record_run")
read_leaderboard_task = task(report.read_leaderboard, name="read_leaderboard")
remove_temp_files_task = task(store.remove_temp_files, name="remove_temp_files")


@task(name="answer_shards")
def answer_shards_task(
    config: ScoreConfig, spec: AnswererSpec, run_id: str, pending: list[shards.Shard], questions: list, total: int,
    pool: answering.PoolConfig, n_actors: int,
) -> list[answering.ShardResult]:
    """One task drives the whole actor pool (prefect-ray runs stateless tasks, not actors)."""
    logger = get_run_logger()
    if not pending:  # a rerun of a complete run: nothing to answer
        logger.info("run %s: every shard is already written", run_id)
        return []
    done_before = total - sum(len(shard.question_ids) for shard in pending)
    with progress.progress_bar() as bar_display:
        bar = bar_display.add_task(f"{run_id}", total=total, completed=done_before, rate="- q/s")
        started = datetime.now(timezone.utc)
        answered = 0

        def on_shard(result: answering.ShardResult) -> None:
            nonlocal answered
            answered += result.n_questions
            elapsed = (datetime.now(timezone.utc) - started).total_seconds()
            bar_display.update(bar, advance=result.n_questions, rate=f"{answered / max(elapsed, 1e-9):.2f} q/s")
            logger.info(
                "shard %05d: %d questions (%d ok, %d error) in %.1f s on node %s",
                result.index, result.n_questions, result.n_ok, result.n_error, result.seconds, (result.node_id or "-")[:12],
            )

        return answering.answer_shards(
            config.corpus, spec, run_id, config.out, pending, questions, pool, on_shard, on_event=logger.info, n_actors=n_actors
        )


def expand_run_id(run_id: str, now: datetime | None = None) -> str:
    """"{date}" in a run id becomes the UTC date (YYYYMMDD), so a scheduled deployment gets a new run each night."""
    return validate_run_id(run_id.replace("{date}", (now or datetime.now(timezone.utc)).strftime("%Y%m%d")))


def run_ids_for(run_id: str, repeats: int) -> list[str]:
    """One run id per repeat: R itself for a single run, R-r1..R-rN for repeats (metrics per run, never pooled)."""
    validate_run_id(run_id)
    return [run_id] if repeats == 1 else [f"{run_id}-r{k}" for k in range(1, repeats + 1)]


@flow(name="score-corpus", log_prints=True)
def score_corpus(
    corpus: str,
    answerer: str = "stat",
    run_id: str = "run",
    out: str = "results",
    ray_address: str | None = None,
    actors: int = 2,
    num_gpus_per_actor: float = 0.0,
    shard_size: int | None = None,
    repeats: int = 1,
    seed: int = 0,
    model: str | None = None,
    question_timeout_s: float | None = 600.0,
    answerer_settings: dict[str, Any] | None = None,
    placement_timeout_s: float = 600.0,
    bootstrap: int = 1000,
    cache: str | None = None,
) -> list[dict]:
    """Score ``corpus`` with ``answerer``; answers, metrics and run records land under ``out``. Returns the
    leaderboard rows of this flow's runs. Re-running with the same run_id (and the same manifest) answers only the
    shards not yet written; a run ends complete (every planned question exactly once) or fails. ``cache``: the
    response cache of API answerers (default ``{out}/cache``; "none" turns it off). ``shard_size`` None: a resume
    keeps the recorded one, a new run takes the answerer's default (16; the openai answerer 4 x max_concurrency)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    logger = get_run_logger()
    corpus, out = absolute_location(corpus), absolute_location(out)  # actors run in other directories and hosts
    pool = answering.PoolConfig(
        actors=actors, num_gpus_per_actor=num_gpus_per_actor, question_timeout_s=question_timeout_s,
        placement_timeout_s=placement_timeout_s,
    )
    params = answering.answerer_params(
        answerer, {**(answerer_settings or {}), **({"model": model} if model else {})}, pool.num_cpus_per_actor,
        cache_dir=cache or f"{out.rstrip('/')}/cache",
    )
    run_id = expand_run_id(run_id)  # an invalid run id fails before any work
    run_ids = run_ids_for(run_id, repeats)
    if shard_size is None:
        shard_size = choose_shard_size_task(out, run_ids[0], AnswererSpec(name=answerer, params=params))
    config = ScoreConfig(
        corpus, answerer, run_id, out, ray_address, actors, num_gpus_per_actor, shard_size, repeats, seed,
        question_timeout_s, placement_timeout_s, params,
    )
    index = load_corpus_task(corpus)
    logger.info("corpus %s: %d questions, %d with problems", corpus, len(index.questions), len({p.question_id for p in index.problems}))
    fingerprint = corpus_fingerprint_task(index)
    priors = answer_priors(index.questions)
    planned = plan_shards_task(index.questions, shard_size)
    artifact_keys = settings_roles(answerer)[1]
    artifacts = {key: value for key, value in params if key in artifact_keys and not is_remote(value)}
    with cluster.ray_session(ray_address):
        ready = prepare_cluster_task(corpus, fingerprint, artifacts, actors, pool.demand, placement_timeout_s)
        if ready.note:
            logger.warning("%s", ready.note)
        logger.info("nodes checked (corpus and models readable, same bytes): %s", ", ".join(ready.checked_nodes))
        for repeat, this_run in enumerate(run_ids):
            started = datetime.now(timezone.utc)
            spec = AnswererSpec(name=answerer, seed=seed + repeat, answer_priors=priors, params=params)
            run_manifest = manifest.build_manifest(
                run_id=this_run, answerer=answerer, settings=resolved_settings(spec), seed=spec.seed, shard_size=shard_size,
                corpus_location=corpus, corpus=fingerprint, models=ready.models,
            )
            state = ensure_manifest_task(out, this_run, run_manifest)  # a differing resume stops here, nothing written
            leftovers = remove_temp_files_task(out, this_run)  # a shard killed mid-write: never read, removed here
            pending = pending_shards_task(planned, out, this_run)
            logger.info(
                "run %s (manifest %s): %d of %d shards to answer, %d already written, %d temp file(s) removed",
                this_run, state, len(pending), len(planned), len(planned) - len(pending), len(leftovers),
            )
            answer_shards_task(config, spec, this_run, pending, index.questions, len(index.questions), pool, ready.n_actors)
            check_complete_task(planned, out, this_run)  # metrics are never computed over a partial set
            compute_metrics_task(out, this_run, bootstrap)
            record_run_task(
                out, this_run, answerer=answerer, corpus=corpus, corpus_checksum=index.checksum, config=config,
                started_at=started, ended_at=datetime.now(timezone.utc), manifest=run_manifest,
            )
    board = read_leaderboard_task(out, run_ids)
    create_markdown_artifact(report.leaderboard_markdown(board), key=report.artifact_key(run_id), description=f"arfscore leaderboard for {run_id}")
    return board.to_dict("records")
