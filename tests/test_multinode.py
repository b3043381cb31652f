"""Multi-node Ray: a head (127.0.0.2) and a second node (127.0.0.3) on this machine, scored with --ray-address.

The cluster is this test's own: a unique --temp-dir (so `ray.init()` elsewhere never finds it), its own auth
token, and both `ray start` commands in their own sessions, stopped by session id in a finally (never
`ray stop`, which stops every Ray of the user). The flow runs in a subprocess through the real CLI: the pytest
process may hold the session-wide local Ray of other tests.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tasks.store import read_answers
from tests.conftest import ARFSCORE, cli_env, kill_session, session_processes

pytestmark = pytest.mark.slow

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
RAY = str(Path(__import__("sys").executable).with_name("ray"))


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> int:
    """`ray start ...` in a new session; returns the session id (its daemons keep it after the command exits)."""
    with open(log, "ab") as handle:
        process = subprocess.Popen([RAY, "start", *args], env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        kill_session(process.pid)
        raise
    if code != 0:
        kill_session(process.pid)
        raise AssertionError(f"ray start failed ({code}):\n{log.read_text()[-3000:]}")
    return process.pid


def _cluster_nodes(address: str, env: dict[str, str]) -> dict[str, str]:
    """node id -> node IP address of the alive nodes, asked from a separate driver."""
    script = (
        "import json, ray; ray.init(address=%r, configure_logging=False, log_to_driver=False);"
        "print(json.dumps({n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']}))" % address
    )
    result = subprocess.run([str(Path(RAY).with_name("python")), "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_flow_answers_on_both_nodes_of_a_two_node_cluster(small_corpus, tmp_path, sessions, record_property):
    # Unix socket paths must stay short (< 108 bytes): a short temp dir under /tmp, not pytest's deep tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="arfmn-", dir="/tmp"))
    port = _free_port(HEAD_IP)
    env = cli_env(
        tmp_path / "prefect-home",
        RAY_AUTH_MODE="token",  # a token of this test's own: nothing from ~/.ray is needed or touched
        RAY_AUTH_TOKEN=uuid.uuid4().hex + uuid.uuid4().hex,
    )
    started_sessions: list[int] = []
    started = time.perf_counter()
    try:
        started_sessions.append(_ray_start(
            ["--head", f"--node-ip-address={HEAD_IP}", f"--port={port}", '--resources={"node_a": 1}', "--num-cpus=1",
             f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats"],
            env, tmp_path / "ray-head.log",
        ))
        started_sessions.append(_ray_start(
            [f"--address={HEAD_IP}:{port}", f"--node-ip-address={WORKER_IP}", '--resources={"node_b": 1}', "--num-cpus=1",
             f"--temp-dir={temp_dir}", "--disable-usage-stats"],
            env, tmp_path / "ray-worker.log",
        ))
        assert all(session_processes(sid) for sid in started_sessions), "a ray start left no daemons"
        address = f"{HEAD_IP}:{port}"
        nodes = _cluster_nodes(address, env)
        assert sorted(nodes.values()) == [HEAD_IP, WORKER_IP], nodes

        out = tmp_path / "out"
        code, output, score_s = sessions.run(
            [*ARFSCORE, "score", str(small_corpus), "--run-id", "two-nodes", "--out", str(out), "--shard-size", "2",
             "--actors", "2", "--ray-address", address],
            env, "score", timeout_s=300,
        )
        assert code == 0, output[-4000:]
        answers = read_answers(str(out), "two-nodes")
        assert answers["question_id"].is_unique and sorted(answers["question_id"]) == list(range(24))
        assert (answers["status"] == "ok").all()
        answered_on = answers["node_id"].value_counts().to_dict()
        assert set(answered_on) == set(nodes), f"answers per node {answered_on}, cluster nodes {nodes}"
        assert {nodes[node] for node in answered_on} == {HEAD_IP, WORKER_IP}
        record_property("multinode_score_s", round(score_s, 1))
        print(f"\nFIGURE multi-node: per node {{{', '.join(f'{nodes[k]}: {v}' for k, v in answered_on.items())}}}; "
              f"score via --ray-address {score_s:.1f} s; cluster up + score {time.perf_counter() - started:.1f} s")
    finally:
        for sid in reversed(started_sessions):
            kill_session(sid)
        leftovers = subprocess.run(["pgrep", "-f", str(temp_dir)], capture_output=True, text=True).stdout.split()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, f"processes of the test cluster survived: {leftovers}"
    assert not any(session_processes(sid) for sid in started_sessions)
