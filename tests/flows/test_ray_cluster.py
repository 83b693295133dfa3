"""`worldreel label --ray-address` against a real two-node Ray cluster on loopback, with token auth,
into a label store on a real S3 server (SeaweedFS).

Both nodes are `ray start --block` processes, each with its own temporary directory and free
ports; they are stopped by PID (SIGTERM makes `ray start --block` stop what it started), never
with `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from synthetic_manifest import FRAMES, SIZE, write_manifest

from storage import LabelStore

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(env: dict, temp_dir: str, *args: str) -> subprocess.Popen:
    ports = [f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}"]
    return subprocess.Popen(
        [str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--num-cpus=1",
         "--disable-usage-stats", *ports, *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _alive_nodes(address: str, env: dict) -> int:
    probe = "import ray; ray.init(address=%r, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([sys.executable, "-c", probe % address], env=env, capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


def _stop(proc: subprocess.Popen, temp_dir: str) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)  # anything it left behind, by its own temp dir


@pytest.fixture(scope="module")
def two_node_cluster(s3_server):
    if not RAY.is_file():
        pytest.skip(f"no `ray` command next to {sys.executable}")
    # short paths: Ray's socket names must stay under the 107-byte limit of AF_UNIX
    head_dir, worker_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp"), tempfile.mkdtemp(prefix="rw", dir="/tmp")
    token = Path(head_dir) / "token"
    token.write_text(secrets.token_hex(32))
    # every node gets the object-store credentials from its own environment, as a real cluster's nodes do
    env = {**os.environ, **s3_server.env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _ray_start(env, head_dir, "--head", f"--port={port}", "--include-dashboard=false",
                      f"--ray-client-server-port={_free_port()}")
    worker = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and _alive_nodes(address, env) < 1:
            time.sleep(1)
        worker = _ray_start(env, worker_dir, f"--address={address}")
        while time.time() < deadline and _alive_nodes(address, env) < 2:
            time.sleep(1)
        if _alive_nodes(address, env) < 2:
            pytest.fail("the two-node cluster did not come up within 120 s")
        client_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}  # the CLI must turn token auth on itself
        yield address, client_env, token
    finally:
        if worker is not None:
            _stop(worker, worker_dir)
        _stop(head, head_dir)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(worker_dir, ignore_errors=True)


def _label(address: str, env: dict, manifest: Path, store: Path) -> subprocess.CompletedProcess:
    args = ["label", "--manifest", str(manifest), "--store", str(store), "--size", f"{SIZE[0]}x{SIZE[1]}",
            "--frames", str(FRAMES), "--batch-size", "1", "--ray-address", address, "--no-report"]
    return subprocess.run([sys.executable, "-m", "worldreel_cli", *args], env={**env, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=600)


def test_labels_across_two_nodes_into_s3_and_says_which_node_did_what(two_node_cluster, s3_server, tmp_path,
                                                                     monkeypatch):
    address, env, _ = two_node_cluster
    manifest, good, _ = write_manifest(tmp_path / "data", num_good=4, with_bad=False)
    bucket = f"wr-{secrets.token_hex(6)}"
    s3_server.create_bucket(bucket)
    store = f"s3://{bucket}/labels"
    run = _label(address, env, manifest, store)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    nodes = dict(re.findall(r"node (\S+): (\d+) clips labelled", run.stdout))
    assert len(nodes) == 2, run.stdout[-2000:]  # both machines labelled
    assert sum(map(int, nodes.values())) == len(good)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    labels = LabelStore.open(store)
    assert sorted(labels.index().column("clip_id").to_pylist()) == sorted(good)
    for clip_id in labels.clip_ids(status="accepted"):
        assert labels.read(clip_id)["depth"].shape[0] == FRAMES  # complete and readable


def test_a_wrong_token_is_one_line_and_fast(two_node_cluster, tmp_path):
    address, env, _ = two_node_cluster
    manifest, _, _ = write_manifest(tmp_path / "data", num_good=1, with_bad=False)
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    start = time.perf_counter()
    run = _label(address, {**env, "RAY_AUTH_TOKEN_PATH": str(wrong)}, manifest, tmp_path / "labels.zarr")
    seconds = time.perf_counter() - start
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("worldreel")]
    assert len(errors) == 1 and "authentication failed" in errors[0] and "RAY_AUTH_TOKEN" in errors[0], run.stderr
    assert seconds < 30, f"took {seconds:.0f} s"  # ray.init alone retries a refused token for ~20 s
    assert not (tmp_path / "labels.zarr").exists()


def test_a_run_without_an_address_starts_its_own_ray_beside_a_cluster(two_node_cluster):
    """Ray's default `ray.init()` attaches to RAY_ADDRESS or the cluster last started with `ray start`;
    a run without --ray-address starts its own local Ray (one node, not the cluster's two)."""
    address, env, _ = two_node_cluster
    probe = ("import ray; from flows.ray_fanout import init_ray; init_ray(None, 1); "
             "print(len(ray.nodes()), ray.get_runtime_context().gcs_address)")
    run = subprocess.run([sys.executable, "-c", probe], env={**env, "RAY_ADDRESS": address,
                         "PYTHONPATH": str(Path(__file__).parents[2])}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    nodes, gcs_address = run.stdout.split()[-2:]
    assert nodes == "1" and gcs_address != address
