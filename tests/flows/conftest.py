"""Flow tests run Prefect ephemerally in an isolated PREFECT_HOME, and a local Ray."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_prefect(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_API_URL"] = ""  # ephemeral: no server
    os.environ.pop("PREFECT_API_URL")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # as `worldreel` does: the default 20 s start of the ephemeral server fails on a loaded machine
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
