"""The submit_scoring_job Prefect flow: score a corpus as a Ray job on a cluster (``ray job submit`` from Prefect).

Wiring only: build the runtime_env that ships this checkout and its pinned dependencies, submit
``python -m flows.cli score ...`` to the cluster's job API, follow it to the end, then read the leaderboard from
``out`` (shared storage: s3:// or a path this worker sees) and publish it as a Prefect artifact. The
``nightly-cluster`` deployment in prefect.yaml runs it with the dashboard address from a Prefect variable.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.score import expand_run_id
from tasks import jobs, report
from tasks.storage import absolute_location

runtime_env_task = task(jobs.runtime_env, name="runtime_env")
submit_job_task = task(jobs.submit_job, name="submit_job")
read_leaderboard_task = task(report.read_leaderboard, name="read_leaderboard")


@task(name="wait_for_job")
def wait_for_job_task(dashboard_address: str, job_id: str, timeout_s: float) -> str:
    logger = get_run_logger()
    return jobs.wait_for_job(dashboard_address, job_id, timeout_s, on_status=lambda status: logger.info("job %s: %s", job_id, status))


@flow(name="submit-scoring-job", log_prints=True)
def submit_scoring_job(
    dashboard_address: str,
    corpus: str,
    out: str,
    run_id: str = "cluster-{date}",
    answerer: str = "stat",
    actors: int = 2,
    num_gpus_per_actor: float = 0.0,
    shard_size: int | None = None,
    answerer_settings: dict[str, Any] | None = None,
    env_vars: dict[str, str] | None = None,
    install_dependencies: bool = True,
    timeout_s: float = 24 * 3600.0,
) -> list[dict]:
    """Submit one scoring run to the Ray cluster at ``dashboard_address`` (http://HEAD:8265); returns its leaderboard."""
    logger = get_run_logger()
    run_id = expand_run_id(run_id)
    corpus, out = absolute_location(corpus), absolute_location(out)
    arguments = [corpus, "--run-id", run_id, "--out", out, "--answerer", answerer, "--actors", str(actors),
                 "--num-gpus-per-actor", str(num_gpus_per_actor)]
    if shard_size is not None:  # else the job picks: the recorded size on a resume, the answerer's default otherwise
        arguments += ["--shard-size", str(shard_size)]
    for key, value in sorted((answerer_settings or {}).items()):
        arguments += ["--answerer-opt", f"{key}={value}"]
    env = runtime_env_task(pip=install_dependencies, env_vars=env_vars)
    submission = f"arfscore-{run_id}-{datetime.now(timezone.utc).strftime('%H%M%S')}"
    job_id = submit_job_task(dashboard_address, jobs.score_entrypoint(arguments), env, submission)
    logger.info("submitted %s to %s", job_id, dashboard_address)
    wait_for_job_task(dashboard_address, job_id, timeout_s)
    board = read_leaderboard_task(out, [run_id])
    create_markdown_artifact(
        report.leaderboard_markdown(board), key=report.artifact_key(run_id), description=f"arfscore leaderboard for {run_id} (Ray job {job_id})"
    )
    return board.to_dict("records")
