"""Shared fixtures: a real S3-compatible server (moto) on 127.0.0.1, small synthetic corpora."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """A moto S3 server in its own process on 127.0.0.1 that tests can stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def s3_server():
    server = MotoServer()
    server.start()
    saved = {key: os.environ.get(key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",  # region via env: region_name in client_kwargs breaks moto
        AWS_ENDPOINT_URL_S3=server.endpoint,
    )
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A 24-question synthetic corpus shared read-only by tests (copy it before changing it)."""
    from tasks.synthetic import SynthConfig, synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(str(out), SynthConfig(n_questions=24, max_variates=8, max_steps=256, seed=7))
    return out


REPO_ROOT = Path(__file__).resolve().parent.parent
# tests/hooks/sitecustomize.py: test-only fault injection in child processes (PAUSE_BEFORE_COMMIT_ENV).
HOOKS_DIR = REPO_ROOT / "tests" / "hooks"
PAUSE_BEFORE_COMMIT_ENV = "ARFSCORE_TEST_PAUSE_BEFORE_COMMIT"
# Ray workers inherit this, so answerers defined under tests/ (e.g. tests.faulty_answerers) import in actors.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session (ray.init takes seconds)."""
    import ray

    # "local": never join a cluster that `ray start` recorded on this machine (tests/test_multinode.py starts one).
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect API for the whole test session."""
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ------------------------------------------------------------------------------- processes started by tests
# Tests that run the real CLI, `ray start` or `prefect server start` put each command in its own session
# (start_new_session=True) and stop it by that session id: SIGKILL to its process group, then to every other
# process still in the session (Ray workers call setpgid, so they leave the group but keep the session).
# Nothing else is ever signalled: never `ray stop`, never pkill by name.


def session_processes(sid: int) -> list:
    """psutil.Process objects (alive, not zombies) whose session id is `sid`."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "name", "status"]):
        try:
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def kill_session(sid: int, timeout_s: float = 20.0) -> list[tuple[int, str]]:
    """SIGKILL session `sid` (its process group, then any member left); returns (pid, name) of what was there.

    Raises AssertionError if any member is still alive after `timeout_s`.
    """
    import signal

    import psutil

    seen: dict[int, str] = {}
    deadline = time.time() + timeout_s
    try:
        os.killpg(sid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    while True:
        members = session_processes(sid)
        for process in members:
            try:
                seen.setdefault(process.pid, process.name())
                process.kill()
            except psutil.Error:
                pass
        if not members:
            return sorted(seen.items())
        if time.time() > deadline:
            raise AssertionError(f"session {sid}: still alive after SIGKILL: {[(p.pid, p.info['name']) for p in members]}")
        time.sleep(0.2)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a child `arfscore`/`prefect`/`ray` process: own PREFECT_HOME, no inherited API/cluster;
    tests/hooks on PYTHONPATH (its fault injection acts only when PAUSE_BEFORE_COMMIT_ENV is set)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "RAY_ADDRESS", "ARFSCORE_"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), str(HOOKS_DIR), os.environ.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


class Sessions:
    """Commands started in their own sessions, with logs; everything still running is killed at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], name: str, cwd: Path = REPO_ROOT) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen(
            args, env=env, cwd=str(cwd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        process.log_path = self.log_dir / f"{name}.log"  # type: ignore[attr-defined]
        self.started.append(process)
        return process

    def run(self, args: list[str], env: dict[str, str], name: str, timeout_s: float, cwd: Path = REPO_ROOT) -> tuple[int, str, float]:
        """Run to completion (killing the session on timeout); returns (exit code, output, seconds)."""
        started = time.perf_counter()
        process = self.start(args, env, name, cwd)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill(process)
            raise AssertionError(f"{name}: no exit within {timeout_s} s; output:\n{self.output(process)[-4000:]}") from None
        seconds = time.perf_counter() - started
        self.kill(process)  # whatever it left behind in its session (normally nothing)
        return code, self.output(process), seconds

    @staticmethod
    def output(process: subprocess.Popen) -> str:
        return process.log_path.read_text(errors="replace")  # type: ignore[attr-defined]

    def kill(self, process: subprocess.Popen) -> list[tuple[int, str]]:
        """SIGKILL the command's whole session (see kill_session) and reap it."""
        killed = kill_session(process.pid)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        return killed

    def close(self) -> None:
        for process in reversed(self.started):  # e.g. a worker before the server it talks to
            try:
                self.kill(process)
            except AssertionError:
                pass


@pytest.fixture
def sessions(tmp_path):
    """Start commands in their own sessions (tests/conftest.py: Sessions); all are killed at teardown."""
    started = Sessions(tmp_path / "logs")
    try:
        yield started
    finally:
        started.close()


ARFSCORE = [sys.executable, "-m", "flows.cli"]


def wait_until(condition, timeout_s: float, what: str, process: subprocess.Popen | None = None, poll_s: float = 0.1):
    """Poll `condition` until truthy (returned); fail early if `process` exits, or after `timeout_s`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode} first:\n{Sessions.output(process)[-4000:]}")
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s} s")
