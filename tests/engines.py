"""Real Dask and Ray clusters on loopback for the cluster tests and bench/cluster.py: a `dask scheduler` and `dask worker`
processes (no nanny: a killed worker stays dead, as a lost machine would), or a Ray head from `ray start --head`.
Every process runs this checkout (PYTHONPATH), as a cluster's machines must have the package installed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.orthanc import free_port

REPO = Path(__file__).resolve().parents[1]


def engine_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), ORTHO_FSYNC=os.environ.get("ORTHO_FSYNC", "0"),
                RAY_USAGE_STATS_ENABLED="0", DASK_DISTRIBUTED__WORKER__DAEMON="False")


def tool(name: str) -> str | None:
    """A command installed beside the running interpreter (a wheel's script), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


class DaskCluster:
    """`dask scheduler` and `workers` single-threaded `dask worker` processes on 127.0.0.1."""

    def __init__(self, root: Path, workers: int = 2):
        self.root, self.n = Path(root), workers
        self.root.mkdir(parents=True, exist_ok=True)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        return subprocess.Popen([tool("dask"), *args], env=engine_env(), cwd=self.root, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout_s: float = 60.0) -> "DaskCluster":
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", port,
                                                   "--no-dashboard", "--no-show"])
        for i in range(self.n):
            self.add_worker(f"w{i}")
        self.wait_for_workers(self.n, timeout_s)
        return self

    def add_worker(self, name: str) -> None:
        self.workers[name] = self._spawn(name, ["worker", self.address, "--name", name, "--nthreads", "1",
                                                "--nworkers", "1", "--no-nanny", "--no-dashboard",
                                                "--local-directory", str(self.root / name)])

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30)

    def wait_for_workers(self, n: int, timeout_s: float = 60.0) -> None:
        with self.client() as c:
            c.wait_for_workers(n, timeout=timeout_s)

    def kill(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class RayHead:
    """`ray start --head` on 127.0.0.1 with `cpus` CPUs; `ray stop` ends it."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root, self.cpus = Path(root), cpus
        self.address = f"127.0.0.1:{free_port()}"
        self.temp = Path("/tmp") / f"ray-{os.getpid()}-{self.address.rsplit(':', 1)[1]}"  # sockets: a short path

    def start(self) -> "RayHead":
        port = self.address.rsplit(":", 1)[1]
        subprocess.run([tool("ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                        f"--num-cpus={self.cpus}", "--include-dashboard=false", "--disable-usage-stats",
                        f"--ray-client-server-port={free_port()}",
                        f"--temp-dir={self.temp}"], env=engine_env(), check=True, capture_output=True, timeout=120)
        return self

    def stop(self) -> None:
        """SIGTERM to this head's own processes (their command lines name its temp dir; `ray stop` would end every
        Ray on the machine), then SIGKILL to any left after a few seconds."""
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            wait_until(lambda: not self.pids(), grace, 0.1)
        shutil.rmtree(self.temp, ignore_errors=True)

    def pids(self) -> list[int]:
        # its daemons name the temp dir; the client server names only the head's address
        mine, temp = [], str(self.temp).encode()
        at_head = re.compile(rb"address=[^\0]*:%d\0" % int(self.address.rsplit(":", 1)[1]))
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                    if (temp in cmdline or at_head.search(cmdline)) and int(proc.name) != os.getpid():
                        mine.append(int(proc.name))
                except OSError:
                    continue
        return mine


def wait_until(predicate, timeout_s: float, every_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return False
