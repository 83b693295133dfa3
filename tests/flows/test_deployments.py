"""A real local Prefect server: deployments register, a labeling run started through the API completes,
and a cron schedule creates runs (the check that catches the SQLAlchemy 2.1 scheduler breakage)."""

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from synthetic_manifest import FRAMES, SIZE, write_manifest

from storage import LabelStore

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_server_home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PYTHONUNBUFFERED": "1"}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"{api}/health", 120)
        yield api, env
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


async def _deployment_names(api: str) -> list[str]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:
        deployments = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
        return sorted(f"{flows[d.flow_id]}/{d.name}" for d in deployments)


async def _scheduled_runs(api: str, name: str) -> int:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with PrefectClient(api) as client:
        deployment = await client.read_deployment_by_name(name)
        runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
        return sum(r.state.is_scheduled() for r in runs)


def test_deployments_serve_a_labeling_run_started_through_the_api(server, tmp_path):
    api, env = server
    manifest, good, bad = write_manifest(tmp_path / "data", num_good=1)
    store = tmp_path / "labels.zarr"
    serve = subprocess.Popen([sys.executable, "-m", "worldreel_cli", "serve", "--label-cron", "*/5 * * * *"],
                             env=env, cwd=ROOT, stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.time() + 120
        names = []
        while time.time() < deadline and len(names) < 7:
            names = asyncio.run(_deployment_names(api))
            time.sleep(1)
        expected = ["evaluate-video/evaluate", "import-dataset/import", "label-clips/label", "label-report/report",
                    "train-then-evaluate-video/train-evaluate", "train-worldreel/train", "worldreel-pipeline/pipeline"]
        assert names == expected, (tmp_path / "serve.log").read_text()[-3000:]

        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}):
            params = {"manifest": str(manifest), "store": str(store), "height": SIZE[0], "width": SIZE[1],
                      "frames": FRAMES, "workers": 2, "batch_size": 1}
            run = run_deployment("label-clips/label", parameters={"params": params}, timeout=600)
            assert run.state.is_completed(), (run.state, (tmp_path / "serve.log").read_text()[-3000:])
            report = run_deployment("label-report/report", parameters={"params": {"store": str(store),
                                                                                  "out": str(tmp_path / "report")}},
                                    timeout=300)
            assert report.state.is_completed()
        rows = {r["clip_id"]: r["status"] for r in LabelStore.open(store).index().to_pylist()}
        assert rows == {**{c: "accepted" for c in good}, **{c: "rejected" for c in bad}}
        assert (tmp_path / "report" / "index.html").exists()
        assert asyncio.run(_scheduled_runs(api, "label-clips/label")) >= 1  # the scheduler service works
    finally:
        serve.terminate()
        serve.wait(timeout=60)
