"""Real Ray clusters for tests: `ray start` nodes on 127.0.0.x of this machine, each in its own session.

A cluster is the test's own: a short unique --temp-dir (so `ray.init()` elsewhere never finds it), free ports, its
own auth token, and every `ray start` in its own session, stopped by session id (never `ray stop`, which stops every
Ray of the user). A worker node can get a private filesystem over chosen paths (`unshare --mount` with a tmpfs on
each): what it writes there, no other node sees, as on a separate machine.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tests.conftest import cli_env, kill_session, session_processes

RAY = str(Path(sys.executable).with_name("ray"))


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class RayNodes:
    """Start a head and workers; ``stop()`` kills them all and checks nothing of the cluster survives."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None, ray: str = RAY) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths must stay short (< 108 bytes): a short temp dir under /tmp, not pytest's deep tmp_path.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="arfrn-", dir="/tmp"))
        self.env = env or cli_env(log_dir / "prefect-home")
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex + uuid.uuid4().hex)
        self.ray = ray
        self.sessions: list[int] = []
        self.address: str | None = None
        self.dashboard: str | None = None

    def _start(self, command: list[str], name: str) -> int:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            kill_session(process.pid)
            raise
        self.sessions.append(process.pid)
        if code != 0:
            raise AssertionError(f"{name} failed ({code}):\n{(self.log_dir / f'{name}.log').read_text()[-3000:]}")
        return process.pid

    def start_head(
        self, ip: str = "127.0.0.2", *, num_cpus: int = 1, num_gpus: int = 0, resources: dict | None = None, dashboard: bool = False
    ) -> str:
        port = free_port(ip)
        args = [self.ray, "start", "--head", f"--node-ip-address={ip}", f"--port={port}", f"--num-cpus={num_cpus}",
                f"--num-gpus={num_gpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                f"--ray-client-server-port={free_port(ip)}"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        if dashboard:
            dashboard_port = free_port(ip)
            args += ["--include-dashboard=true", f"--dashboard-host={ip}", f"--dashboard-port={dashboard_port}",
                     f"--dashboard-agent-listen-port={free_port(ip)}"]
            self.dashboard = f"http://{ip}:{dashboard_port}"
        else:
            args.append("--include-dashboard=false")
        self._start(args, "ray-head")
        self.address = f"{ip}:{port}"
        return self.address

    def start_worker(self, ip: str = "127.0.0.3", *, num_cpus: int = 1, resources: dict | None = None, private: tuple[Path, ...] = ()) -> int:
        """A worker node; ``private`` paths (and its Ray temp dir) are covered by tmpfs mounts only it sees."""
        args = [self.ray, "start", f"--address={self.address}", f"--node-ip-address={ip}", f"--num-cpus={num_cpus}",
                f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        if private:
            mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex_quote(path)}" for path in (*private, self.temp_dir))
            args = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{mounts} && exec {' '.join(shlex_quote(a) for a in args)}"]
        return self._start(args, f"ray-worker-{ip}")

    def node_processes(self, sid: int, name: str) -> list[int]:
        return [p.pid for p in session_processes(sid) if p.name() == name]

    def stop(self) -> None:
        for sid in reversed(self.sessions):
            kill_session(sid)
        leftovers = subprocess.run(["pgrep", "-f", str(self.temp_dir)], capture_output=True, text=True).stdout.split()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not leftovers, f"processes of the test cluster survived: {leftovers}"
        assert not any(session_processes(sid) for sid in self.sessions)


def shlex_quote(value: object) -> str:
    import shlex

    return shlex.quote(str(value))


def cluster_nodes(address: str, env: dict[str, str], python: str = sys.executable) -> dict[str, str]:
    """node id -> node IP address of the alive nodes, asked from a separate driver."""
    script = (
        "import json, ray; ray.init(address=%r, configure_logging=False, log_to_driver=False);"
        "print(json.dumps({n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']}))" % address
    )
    result = subprocess.run([python, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
