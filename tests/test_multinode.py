"""Two nodes, two disks: a head (127.0.0.2) and a worker (127.0.0.3) whose results path and Ray temp dir are its
own private filesystem (`unshare --mount` + tmpfs), scored through the real CLI with --ray-address.

Any node-local write would be caught: with a local --out every row must still arrive on the driver's disk (the
worker's view of --out stays empty); with --out s3:// (moto) both nodes' rows land; a corpus the worker cannot
read fails the run up front, naming the node and the path.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import s3fs

from tasks.store import read_answers, read_metrics
from tests.conftest import ARFSCORE, cli_env
from tests.ray_nodes import RayNodes, cluster_nodes

pytestmark = pytest.mark.slow

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def _score(sessions, env, corpus: str, out: str, run_id: str, address: str, name: str):
    args = [*ARFSCORE, "score", corpus, "--run-id", run_id, "--out", out, "--shard-size", "2", "--actors", "2", "--ray-address", address]
    return sessions.run(args, env, name, timeout_s=300)


def test_two_nodes_with_private_disks_land_every_row_through_the_driver(small_corpus, tmp_path, sessions, s3_server):
    out = tmp_path / "out"
    hidden = tmp_path / "hidden"  # exists on both nodes, but the worker sees its own empty tmpfs there
    out.mkdir()
    hidden.mkdir()
    hidden_corpus = Path(shutil.copytree(small_corpus, hidden / "corpus"))
    env = cli_env(tmp_path / "prefect-home", **{key: value for key, value in __import__("os").environ.items() if key.startswith("AWS_")})
    cluster = RayNodes(tmp_path / "logs", env)
    started = time.perf_counter()
    try:
        address = cluster.start_head(HEAD_IP, num_cpus=1, resources={"node_a": 1})
        worker = cluster.start_worker(WORKER_IP, num_cpus=1, resources={"node_b": 1}, private=(out, hidden))
        nodes = cluster_nodes(address, cluster.env)
        assert sorted(nodes.values()) == [HEAD_IP, WORKER_IP], nodes
        (raylet,) = cluster.node_processes(worker, "raylet")

        # 1. A local --out: both nodes answer, every row lands on the driver's disk, none on the worker's.
        code, output, local_s = _score(sessions, cluster.env, str(small_corpus), str(out), "two-disks", address, "local")
        assert code == 0, output[-4000:]
        answers = read_answers(str(out), "two-disks")
        assert answers["question_id"].is_unique and sorted(answers["question_id"]) == list(range(24))
        assert {nodes[node] for node in answers["node_id"].unique()} == {HEAD_IP, WORKER_IP}
        assert read_metrics(str(out), "two-disks").query("scope == 'overall'")["n"].item() == 24
        seen_by_worker = subprocess.run(["nsenter", "-t", str(raylet), "-m", "ls", "-A", str(out)], capture_output=True, text=True, check=True)
        assert seen_by_worker.stdout.split() == [], f"the worker node wrote into its private --out: {seen_by_worker.stdout}"

        # 2. --out on S3 (moto): both nodes' rows land, metrics count all of them.
        bucket = f"arf-two-disks-{uuid.uuid4().hex[:8]}"
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server.endpoint}).mkdir(bucket)
        s3_out = f"s3://{bucket}/out"
        code, output, s3_s = _score(sessions, cluster.env, str(small_corpus), s3_out, "two-disks-s3", address, "s3")
        assert code == 0, output[-4000:]
        answers = read_answers(s3_out, "two-disks-s3")
        assert sorted(answers["question_id"]) == list(range(24))
        assert {nodes[node] for node in answers["node_id"].unique()} == {HEAD_IP, WORKER_IP}
        assert read_metrics(s3_out, "two-disks-s3").query("scope == 'overall'")["n"].item() == 24

        # 3. A corpus only the driver's node can read: refused before any work, naming the node and the path.
        started_refusal = time.perf_counter()
        code, output, _ = _score(sessions, cluster.env, str(hidden_corpus), str(tmp_path / "refused"), "refused", address, "refused")
        refusal_s = time.perf_counter() - started_refusal
        text = " ".join(output.split())
        assert code == 1, output[-4000:]
        assert f"run refused failed: node {WORKER_IP} (node " in text and f"cannot read the corpus {hidden_corpus}" in text, text[-2000:]
        assert not (tmp_path / "refused" / "answers").exists()
        print(
            f"\nFIGURE two nodes, two disks: local --out 24/24 rows on the driver's disk, worker's private --out empty "
            f"({local_s:.1f} s); s3 --out 24/24 ({s3_s:.1f} s); unreadable corpus refused in {refusal_s:.1f} s; "
            f"whole test {time.perf_counter() - started:.1f} s"
        )
    finally:
        cluster.stop()
