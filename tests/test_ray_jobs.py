"""Ray Jobs for real: a head started with `ray start --head` (dashboard on) whose Python has every dependency but
NOT arfscore, then `ray job submit --runtime-env-json "$(arfscore runtime-env)" -- python -m flows.cli score ...`
(the README's commands), and the Prefect flow that does the same through the job API.

The nodes' environment: a venv whose site-packages lists the project venv's site-packages in a .pth file: every
dependency imports, but arfscore's own editable install (a .pth inside that directory) is not processed, so only the
code the runtime_env ships can run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tasks.jobs import runtime_env
from tasks.store import read_answers, read_metrics
from tests.conftest import cli_env
from tests.ray_nodes import RAY, RayNodes

pytestmark = pytest.mark.slow


def _node_env(root: Path) -> Path:
    """A Python environment with the dependencies and without arfscore; returns its bin directory."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next((root / "lib").glob("python3*/site-packages"))
    (site / "arfscore-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    launcher = root / "bin" / "ray"
    launcher.write_text(f"#!{root / 'bin' / 'python'}\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = subprocess.run(
        [str(root / "bin" / "python"), "-c", "import ray, torch, prefect; import flows"], capture_output=True, text=True, cwd="/", env=clean
    )
    assert "No module named 'flows'" in probe.stderr, probe.stderr[-2000:]
    return root / "bin"


def test_ray_job_submit_ships_the_code_to_a_cluster_without_arfscore(small_corpus, tmp_path, sessions, prefect_harness, monkeypatch):
    node_bin = _node_env(tmp_path / "nodeenv")
    env = cli_env(tmp_path / "prefect-home")
    env.pop("PYTHONPATH")  # the cluster must not find the repository by any other way than the runtime_env
    env["PATH"] = f"{node_bin}{os.pathsep}{env['PATH']}"
    cluster = RayNodes(tmp_path / "logs", env, ray=str(node_bin / "ray"))
    started = time.perf_counter()
    try:
        cluster.start_head("127.0.0.2", num_cpus=2, dashboard=True)
        head_s = time.perf_counter() - started
        out = tmp_path / "out"
        runtime = subprocess.run([sys.executable, "-m", "flows.cli", "runtime-env"], capture_output=True, text=True, check=True).stdout
        assert json.loads(runtime) == runtime_env()
        submit = [RAY, "job", "submit", "--address", cluster.dashboard, "--runtime-env-json", runtime, "--",
                  "python", "-m", "flows.cli", "score", str(small_corpus), "--run-id", "job", "--out", str(out), "--actors", "2", "--shard-size", "8"]
        submitter = {**cluster.env, "PATH": os.environ["PATH"]}
        code, output, job_s = sessions.run(submit, submitter, "job-submit", timeout_s=420)
        assert code == 0 and "succeeded" in output, output[-4000:]
        answers = read_answers(str(out), "job")
        assert sorted(answers["question_id"]) == list(range(24)) and (answers["status"] == "ok").all()
        assert read_metrics(str(out), "job").query("scope == 'overall'")["n"].item() == 24

        # The Prefect flow behind the nightly-cluster deployment: submit through the job API and follow it.
        from flows.submit import submit_scoring_job

        monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.env["RAY_AUTH_TOKEN"])
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        flow_started = time.perf_counter()
        board = submit_scoring_job(dashboard_address=cluster.dashboard, corpus=str(small_corpus), out=str(out), run_id="prefect-job", actors=1)
        flow_s = time.perf_counter() - flow_started
        assert [row["run_id"] for row in board] == ["prefect-job"] and board[0]["n"] == 24
        print(f"\nFIGURE ray jobs: head up {head_s:.1f} s; `ray job submit` score of 24 questions {job_s:.1f} s; Prefect submit flow {flow_s:.1f} s")
    finally:
        cluster.stop()
