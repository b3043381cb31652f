"""Pre-flight and GPU placement on real Ray: a pool the cluster can never place fails fast naming the resource;
fewer actors than asked run and say so; actors on a cluster with declared GPUs (`ray start --head --num-gpus 4`)
get disjoint GPU ids, recorded in every answer row."""

from __future__ import annotations

import time

import pytest

from tasks.cluster import ClusterError, NodeInfo, placeable_per_node, size_pool
from tasks.store import read_answers
from tests.conftest import ARFSCORE, cli_env
from tests.ray_nodes import RayNodes


def _node(node_id: str, **resources: float) -> NodeInfo:
    return NodeInfo(node_id, f"10.0.0.{len(node_id)}", resources)


def test_size_pool_counts_what_each_node_can_hold_and_names_the_missing_resource():
    nodes = [_node("a", CPU=16, GPU=8), _node("bb", CPU=4, GPU=2), _node("ccc", CPU=32)]
    demand = {"CPU": 1, "GPU": 4}
    assert placeable_per_node(nodes, demand) == {"a": 2, "bb": 0, "ccc": 0}
    assert size_pool(2, nodes, demand) == (2, None)
    count, note = size_pool(5, nodes, demand)
    assert count == 2 and "can hold 2 of the 5 requested actors (1 CPU, 4 GPU each); running with 2" in note
    with pytest.raises(ClusterError, match="needs 9 GPU per actor, the cluster has 10 but its largest node 8 \\(3 node\\(s\\)\\)"):
        size_pool(1, nodes, {"CPU": 1, "GPU": 9})
    with pytest.raises(ClusterError, match="needs 8 GPU per actor, the cluster has 0"):
        size_pool(1, [_node("x", CPU=2)], {"CPU": 1, "GPU": 8})
    with pytest.raises(ClusterError, match="no node has 17 CPU, 8 GPU together"):
        size_pool(1, nodes, {"CPU": 17, "GPU": 8})
    assert size_pool(3, [_node("x", CPU=2)], {"CPU": 1, "GPU": 0}) == (2, size_pool(3, [_node("x", CPU=2)], {"CPU": 1, "GPU": 0})[1])


@pytest.mark.slow
def test_a_pool_a_gpu_less_host_can_never_place_fails_within_60_s(small_corpus, tmp_path, sessions):
    started = time.perf_counter()
    code, output, seconds = sessions.run(
        [*ARFSCORE, "score", str(small_corpus), "--run-id", "gpus", "--out", str(tmp_path / "out"), "--actors", "1", "--num-gpus-per-actor", "8"],
        cli_env(tmp_path / "prefect-home"), "preflight", timeout_s=120,
    )
    text = " ".join(output.split())
    assert code == 1, output[-3000:]
    assert "run gpus failed: cannot place one answerer actor: it needs 8 GPU per actor, the cluster has 0 (1 node(s))" in text
    assert seconds < 60 and not (tmp_path / "out" / "answers").exists()
    print(f"\nFIGURE pre-flight: --actors 1 --num-gpus-per-actor 8 on a GPU-less host exits 1 in {time.perf_counter() - started:.1f} s")


@pytest.mark.slow
def test_actors_on_declared_gpus_get_disjoint_ids_recorded_in_the_answers(small_corpus, tmp_path, sessions):
    cluster = RayNodes(tmp_path / "logs")
    try:
        address = cluster.start_head("127.0.0.2", num_cpus=3, num_gpus=4)
        base = [*ARFSCORE, "score", str(small_corpus), "--shard-size", "3", "--ray-address", address]

        code, output, _ = sessions.run([*base, "--run-id", "gpus", "--out", str(tmp_path / "out"), "--actors", "2", "--num-gpus-per-actor", "2"],
                                       cluster.env, "two-by-two", timeout_s=300)
        assert code == 0, output[-4000:]
        answers = read_answers(str(tmp_path / "out"), "gpus")
        assert sorted(answers["question_id"]) == list(range(24))
        per_actor = {tuple(sorted(ids)) for ids in answers["gpu_ids"]}
        assert len(per_actor) == 2 and all(len(ids) == 2 for ids in per_actor), per_actor
        first, second = per_actor
        assert not set(first) & set(second) and set(first) | set(second) == {"0", "1", "2", "3"}

        # Three actors of 2 GPUs on 4 GPUs: two run, and the run says so.
        code, output, _ = sessions.run([*base, "--run-id", "fewer", "--out", str(tmp_path / "out"), "--actors", "3", "--num-gpus-per-actor", "2"],
                                       cluster.env, "fewer", timeout_s=300)
        assert code == 0, output[-4000:]
        assert "the cluster can hold 2 of the 3 requested actors (1 CPU, 2 GPU each); running with 2" in " ".join(output.split())
        assert len({tuple(ids) for ids in read_answers(str(tmp_path / "out"), "fewer")["gpu_ids"]}) == 2

        started = time.perf_counter()
        code, output, _ = sessions.run([*base, "--run-id", "big", "--out", str(tmp_path / "out"), "--actors", "1", "--num-gpus-per-actor", "8"],
                                       cluster.env, "too-big", timeout_s=120)
        assert code == 1 and "needs 8 GPU per actor, the cluster has 4 (1 node(s))" in " ".join(output.split()), output[-3000:]
        print(f"\nFIGURE fake GPUs: gpu_ids per actor {sorted(per_actor)}; 8-GPU actor on 4 GPUs refused in {time.perf_counter() - started:.1f} s")
    finally:
        cluster.stop()
