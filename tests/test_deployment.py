"""The nightly deployment of prefect.yaml, for real: `prefect server start`, a process work pool, `prefect deploy`,
`prefect worker start`, `prefect deployment run`, until the flow run is Completed and the answers are in Parquet.

Every command runs in its own session (PREFECT_HOME in tmp, PREFECT_API_URL pointing at this test's server) and is
stopped by session id in a finally: the worker's session also holds the flow-run process and the local Ray it starts.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tasks.store import read_answers
from tests.conftest import REPO_ROOT, cli_env, free_port, wait_until

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "arfscore-process"
DEPLOYMENT = "score-corpus/nightly-stat"


def _api(url: str, method: str = "GET", body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _healthy(api_url: str) -> bool:
    try:
        return _api(f"{api_url}/health") is True
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return False


def _repo_files() -> set[Path]:
    return {path for path in REPO_ROOT.iterdir()}


def test_prefect_deploy_worker_and_deployment_run_score_the_corpus(small_corpus, tmp_path, sessions, record_property):
    started = time.perf_counter()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    out = tmp_path / "results"
    env = cli_env(
        tmp_path / "prefect-home",
        PREFECT_API_URL=api_url,
        PREFECT_WORKER_QUERY_SECONDS="1",  # poll often: the run starts within a second or two
        ARFSCORE_HOME=str(REPO_ROOT),
        ARFSCORE_CORPUS=str(small_corpus),
        ARFSCORE_OUT=str(out),
        ARFSCORE_CLUSTER_CORPUS="s3://arf-nightly/corpus",
        ARFSCORE_CLUSTER_OUT="s3://arf-nightly/results",
    )
    repo_before = _repo_files()

    server = sessions.start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, "server")
    wait_until(lambda: _healthy(api_url), 180, "prefect server healthy", server, poll_s=0.5)
    server_s = time.perf_counter() - started

    code, output, _ = sessions.run([PREFECT, "work-pool", "create", POOL, "--type", "process"], env, "pool", timeout_s=120)
    assert code == 0, output
    # The cluster deployment takes the Ray dashboard address from a Prefect variable.
    code, output, _ = sessions.run([PREFECT, "variable", "set", "arfscore_ray_dashboard", "http://10.1.2.3:8265"], env, "variable", timeout_s=60)
    assert code == 0, output
    code, output, deploy_s = sessions.run([PREFECT, "--no-prompt", "deploy", "--all"], env, "deploy", timeout_s=180)
    assert code == 0, output[-4000:]
    cluster = _api(f"{api_url}/deployments/name/submit-scoring-job/nightly-cluster")
    assert cluster["entrypoint"] == "flows/submit.py:submit_scoring_job" and cluster["work_pool_name"] == POOL
    assert cluster["parameters"]["dashboard_address"] == "http://10.1.2.3:8265"
    assert cluster["parameters"]["corpus"] == "s3://arf-nightly/corpus" and cluster["parameters"]["run_id"] == "nightly-cluster-{date}"

    deployment = _api(f"{api_url}/deployments/name/{DEPLOYMENT}")
    assert deployment["work_pool_name"] == POOL
    (schedule,) = deployment["schedules"]
    assert schedule["active"] and schedule["schedule"]["cron"] == "30 2 * * *"
    assert schedule["schedule"]["timezone"] == "Europe/Paris"
    parameters = deployment["parameters"]
    assert parameters["corpus"] == str(small_corpus) and parameters["out"] == str(out)
    assert parameters["answerer"] == "stat" and parameters["run_id"] == "nightly-stat-{date}"
    assert deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO_ROOT)

    worker = sessions.start([PREFECT, "worker", "start", "--pool", POOL, "--type", "process"], env, "worker")
    before = datetime.now(timezone.utc).strftime("%Y%m%d")
    code, output, _ = sessions.run([PREFECT, "deployment", "run", DEPLOYMENT], env, "run", timeout_s=120)
    assert code == 0, output
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", output).group(1)

    def final_state():
        state = _api(f"{api_url}/flow_runs/{flow_run_id}")["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    state = wait_until(final_state, 420, "the deployment's flow run finished", worker, poll_s=1.0)
    after = datetime.now(timezone.utc).strftime("%Y%m%d")
    assert state["type"] == "COMPLETED", f"{state}\n{sessions.output(worker)[-4000:]}"

    run_ids = {f"nightly-stat-{day}" for day in (before, after)}
    answers = [read_answers(str(out), run_id) for run_id in run_ids]
    answers = next(frame for frame in answers if not frame.empty)
    assert answers["question_id"].is_unique and sorted(answers["question_id"]) == list(range(24))
    assert (answers["status"] == "ok").all() and set(answers["answerer"]) == {"stat"}
    assert (out / "metrics" / f"run_id={answers['run_id'].iloc[0]}" / "metrics.parquet").exists()
    assert _repo_files() == repo_before, "prefect deploy wrote into the repository"

    total_s = time.perf_counter() - started
    record_property("deployment_test_s", round(total_s, 1))
    print(f"\nFIGURE deployment: server healthy after {server_s:.1f} s, deploy {deploy_s:.1f} s, whole test {total_s:.1f} s")
