"""The Ray cluster a run uses: connecting, what it can place, and what every node can read.

Before any work starts the driver:

1. connects (:func:`ray_session`: a given address, ``RAY_ADDRESS`` inside ``ray job submit``, or a local Ray);
2. compares the pool's demand (CPUs, GPUs, custom resources per actor) with each alive node's totals
   (:func:`size_pool`): a pool the cluster can never place fails at once naming the resource ("needs 8 GPU per
   actor, the cluster has 0"); when fewer actors fit than asked, the run goes on with those and says so;
3. runs one small task on every node that can host an actor (:func:`check_nodes`): it indexes the corpus and
   fingerprints it and each model directory there. A node that cannot read them, or sees other bytes than the
   driver, fails the run naming the node and the path (a relative path, a missing mount, a stale copy).

Results never depend on a node's disk: actors send their answer rows to the driver, the one writer
(tasks/answering.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from model.errors import ArfscoreError

__all__ = [
    "FORWARDED_ENV_PREFIXES",
    "ClusterError",
    "ClusterReady",
    "NodeCheck",
    "NodeInfo",
    "actor_runtime_env",
    "alive_nodes",
    "check_nodes",
    "placeable_per_node",
    "prepare_cluster",
    "ray_session",
    "size_pool",
    "verify_node_checks",
]

# Environment the actors need to reach the same storage as the driver (S3 endpoint and credentials).
FORWARDED_ENV_PREFIXES: tuple[str, ...] = ("AWS_", "ARFSCORE_")


class ClusterError(ArfscoreError):
    """The cluster cannot run this pool: nothing can be placed, or a node cannot read the corpus or model."""


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    resources: Mapping[str, float]  # totals, e.g. {"CPU": 16, "GPU": 8, "memory": ...}

    def label(self) -> str:
        return f"{self.address} (node {self.node_id[:12]})"


def actor_runtime_env() -> dict[str, Any]:
    """The per-actor runtime_env: storage credentials and arfscore settings from the driver's environment.
    Ray merges it with a job's runtime_env (working_dir, pip), whose env_vars it extends."""
    return {"env_vars": {key: value for key, value in os.environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}}


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use a running Ray (tests' shared session), connect to ``address``, or start a local one and stop it after."""
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


def alive_nodes() -> list[NodeInfo]:
    """The cluster's alive nodes with their total resources (Ray must be initialised)."""
    import ray

    return [
        NodeInfo(node["NodeID"], node.get("NodeManagerAddress", "?"), dict(node.get("Resources", {})))
        for node in ray.nodes()
        if node.get("Alive")
    ]


def placeable_per_node(nodes: Sequence[NodeInfo], demand: Mapping[str, float]) -> dict[str, int]:
    """How many actors of ``demand`` each node could hold at most (by totals: what it can ever place)."""
    counts: dict[str, int] = {}
    for node in nodes:
        fits = [math.floor(node.resources.get(name, 0.0) / need + 1e-9) for name, need in demand.items() if need > 0]
        counts[node.node_id] = min(fits) if fits else 0
    return counts


def _fmt(amount: float) -> str:
    return f"{amount:g}"


def size_pool(requested: int, nodes: Sequence[NodeInfo], demand: Mapping[str, float]) -> tuple[int, str | None]:
    """(actors to start, a note when fewer than requested fit). ClusterError when not even one can be placed."""
    per_node = placeable_per_node(nodes, demand)
    capacity = sum(per_node.values())
    if capacity >= requested:
        return requested, None
    if capacity > 0:
        return capacity, f"the cluster can hold {capacity} of the {requested} requested actors ({_demand_text(demand)} each); running with {capacity}"
    for name, need in sorted(demand.items(), key=lambda item: (item[0] != "GPU", item[0])):
        if need <= 0:
            continue
        largest = max((node.resources.get(name, 0.0) for node in nodes), default=0.0)
        total = sum(node.resources.get(name, 0.0) for node in nodes)
        if largest < need:
            where = f"the cluster has {_fmt(total)}" if total < need else f"the cluster has {_fmt(total)} but its largest node {_fmt(largest)}"
            raise ClusterError(f"cannot place one answerer actor: it needs {_fmt(need)} {name} per actor, {where} ({len(nodes)} node(s))")
    raise ClusterError(f"cannot place one answerer actor: no node has {_demand_text(demand)} together ({len(nodes)} node(s))")


def _demand_text(demand: Mapping[str, float]) -> str:
    return ", ".join(f"{_fmt(need)} {name}" for name, need in sorted(demand.items()) if need > 0)


# ----------------------------------------------------------------------------------------------- node checks


@dataclass(frozen=True)
class NodeCheck:
    """What one node sees: the corpus fingerprint and each model directory's, or the error reading them."""

    node: NodeInfo
    corpus: Mapping[str, Any] | None
    models: Mapping[str, Mapping[str, Any]]
    error: str | None


def _check_this_node(corpus_location: str, artifact_dirs: Mapping[str, str]) -> tuple[dict | None, dict, str | None]:
    """Runs on a node: fingerprint the corpus and the artifact directories as this node sees them."""
    from tasks.corpus import load_corpus
    from tasks.manifest import corpus_fingerprint, model_fingerprint

    try:
        corpus = corpus_fingerprint(load_corpus(corpus_location))
    except Exception as error:  # reported by the driver with the node's name
        return None, {}, f"cannot read the corpus {corpus_location}: {type(error).__name__}: {error}"
    models: dict[str, dict] = {}
    for key, directory in artifact_dirs.items():
        try:
            models[key] = model_fingerprint(directory)
        except Exception as error:
            return corpus, models, f"cannot read {key} directory {directory}: {type(error).__name__}: {error}"
    return corpus, models, None


def check_nodes(
    corpus_location: str, artifact_dirs: Mapping[str, str], nodes: Sequence[NodeInfo], timeout_s: float
) -> list[NodeCheck]:
    """Run the corpus / model check on each of ``nodes`` (pinned there); a node silent past ``timeout_s`` fails."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0, max_retries=0)(_check_this_node)
    refs = {
        check.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False), runtime_env=actor_runtime_env()
        ).remote(corpus_location, dict(artifact_dirs)): node
        for node in nodes
    }
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    if pending:
        late = ", ".join(refs[ref].label() for ref in pending)
        for ref in pending:
            ray.cancel(ref, force=True)
        raise ClusterError(f"node(s) {late} did not run the corpus check within {timeout_s:g} s (placement timeout)")
    results = []
    for ref in ready:
        corpus, models, error = ray.get(ref)
        results.append(NodeCheck(refs[ref], corpus, models, error))
    return sorted(results, key=lambda check: check.node.address)


def verify_node_checks(checks: Sequence[NodeCheck], driver_corpus: Mapping[str, Any], corpus_location: str) -> dict[str, dict]:
    """Every node read the corpus the driver indexed and the same model bytes; returns the model fingerprints.

    ClusterError names the node and the path otherwise.
    """
    for check in checks:
        if check.error is not None:
            raise ClusterError(f"node {check.node.label()} {check.error}")
        if check.corpus["sha256"] != driver_corpus["sha256"]:
            changed = sorted(
                name for name in set(check.corpus["files"]) | set(driver_corpus["files"])
                if check.corpus["files"].get(name) != driver_corpus["files"].get(name)
            )
            what = "the csv differs" if check.corpus["csv_sha256"] != driver_corpus["csv_sha256"] else ""
            files = f"{len(changed)} Parquet file(s) differ, e.g. {changed[:3]}" if changed else ""
            raise ClusterError(
                f"node {check.node.label()} sees another corpus at {corpus_location} than the driver: "
                f"{'; '.join(part for part in (what, files) if part)}"
            )
    models: dict[str, dict] = {}
    for check in checks:
        for key, fingerprint in check.models.items():
            first = models.setdefault(key, dict(fingerprint))
            if first["sha256"] != fingerprint["sha256"]:
                raise ClusterError(f"node {check.node.label()} has other {key} files than {checks[0].node.label()}")
    return models


@dataclass(frozen=True)
class ClusterReady:
    """The outcome of the pre-flight: how many actors to start, which nodes were checked, the models' fingerprints."""

    n_actors: int
    note: str | None  # set when fewer actors fit than were requested
    checked_nodes: tuple[str, ...]
    models: dict[str, dict]


def prepare_cluster(
    corpus_location: str, corpus_fingerprint: Mapping[str, Any], artifact_dirs: Mapping[str, str], requested_actors: int,
    demand: Mapping[str, float], timeout_s: float,
) -> ClusterReady:
    """Size the pool against the cluster and check every node that can host an actor (see the module docstring)."""
    nodes = alive_nodes()
    n_actors, note = size_pool(requested_actors, nodes, demand)
    per_node = placeable_per_node(nodes, demand)
    hosts = [node for node in nodes if per_node[node.node_id] > 0]
    checks = check_nodes(corpus_location, artifact_dirs, hosts, timeout_s)
    models = verify_node_checks(checks, corpus_fingerprint, corpus_location)
    return ClusterReady(n_actors, note, tuple(node.label() for node in hosts), models)
