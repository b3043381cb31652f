"""Ray Jobs: the runtime_env that ships arfscore to a cluster, and a scoring run submitted and followed as a job.

``ray job submit`` runs the entrypoint on the head node inside a runtime_env: ``working_dir`` uploads this checkout
(the code, not the virtualenv) and puts it on every worker's ``sys.path``; ``pip`` installs the project's pinned
dependencies into an environment Ray derives from each node's Python (already-satisfied pins install nothing),
so nodes need not have arfscore installed. The entrypoint is ``python -m flows.cli score ...``: the shipped code
has no console script. Inside the job the CLI finds the cluster through ``RAY_ADDRESS``.

``toto-ts`` (the hybrid answerer's Toto backbone) is not in the pip list: it pins an old torch and transformers and
must be installed with ``--no-deps``, which a runtime_env cannot do per package; GPU nodes that run the hybrid
need it in their image (``pip install --no-deps toto-ts==0.2.0``).
"""

from __future__ import annotations

import os
import re
import shlex
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from model.errors import ArfscoreError

__all__ = [
    "CODE_ROOT",
    "JobFailedError",
    "pinned_requirements",
    "runtime_env",
    "score_entrypoint",
    "submit_job",
    "wait_for_job",
]

CODE_ROOT = Path(__file__).resolve().parents[1]
# Never uploaded: VCS data, virtualenvs, outputs and caches (Ray also honours .gitignore).
EXCLUDES: tuple[str, ...] = (".git", ".venv", "demo", "results", "*.duckdb", ".bench", ".pytest_cache", ".ruff_cache", "__pycache__")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")


class JobFailedError(ArfscoreError):
    """The Ray job ended FAILED or STOPPED, or did not end in time (the message holds the end of its logs)."""


def pinned_requirements(root: Path = CODE_ROOT) -> list[str]:
    """The project's dependencies (pyproject.toml), each pinned as constraints.txt pins it."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins: dict[str, str] = {}
    constraints = root / "constraints.txt"
    if constraints.is_file():
        for line in constraints.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[name.strip().lower()] = version.strip()
    requirements = []
    for spec in project["dependencies"]:
        match = _NAME.match(spec)
        name, extras = match.group(1), match.group(2) or ""
        rest = spec[match.end():].strip()
        version = pins.get(name.lower())
        requirements.append(f"{name}{extras}=={version}" if version and not rest else spec)
    return requirements


def runtime_env(*, pip: bool = True, env_vars: Mapping[str, str] | None = None, working_dir: str | Path = CODE_ROOT) -> dict[str, Any]:
    """The runtime_env for ``ray job submit --runtime-env-json``: the code, and (``pip``) its pinned dependencies."""
    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": list(EXCLUDES)}
    if pip:
        env["pip"] = {"packages": pinned_requirements(), "pip_check": False}
    if env_vars:
        env["env_vars"] = {str(key): str(value) for key, value in env_vars.items()}
    return env


def score_entrypoint(arguments: Sequence[str]) -> str:
    """``python -m flows.cli score ARGS`` quoted for the job's shell (corpus and --out must be absolute or s3://)."""
    return "python -m flows.cli score " + shlex.join(arguments)


def _client(dashboard_address: str) -> Any:
    """A job API client. With RAY_AUTH_TOKEN set (token-authenticated clusters), the token is read now and sent
    explicitly: Ray's own loader caches the first token a process sees, which would be wrong for a second cluster."""
    from ray.job_submission import JobSubmissionClient

    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    return JobSubmissionClient(dashboard_address, headers={"Authorization": f"Bearer {token}"} if token else None)


def submit_job(dashboard_address: str, entrypoint: str, env: Mapping[str, Any], submission_id: str | None = None) -> str:
    """Submit ``entrypoint`` to the cluster whose dashboard is at ``dashboard_address`` (http://HEAD:8265)."""
    return _client(dashboard_address).submit_job(entrypoint=entrypoint, runtime_env=dict(env), submission_id=submission_id)


def wait_for_job(
    dashboard_address: str, job_id: str, timeout_s: float, poll_s: float = 2.0, on_status: Callable[[str], None] | None = None
) -> str:
    """Poll the job until it ends; returns its logs when it SUCCEEDED. JobFailedError otherwise (with the logs' end)."""
    from ray.job_submission import JobStatus

    client = _client(dashboard_address)
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        status = client.get_job_status(job_id)
        if status != last and on_status is not None:
            on_status(str(status))
        last = status
        if status.is_terminal():
            break
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise JobFailedError(f"job {job_id} did not end within {timeout_s:g} s; stopped. Last logs:\n{_tail(client.get_job_logs(job_id))}")
        time.sleep(poll_s)
    logs = client.get_job_logs(job_id)
    if status != JobStatus.SUCCEEDED:
        message = client.get_job_info(job_id).message or ""
        raise JobFailedError(f"job {job_id} ended {status}: {message}\n{_tail(logs)}")
    return logs


def _tail(logs: str, lines: int = 40) -> str:
    return "\n".join(logs.splitlines()[-lines:])
