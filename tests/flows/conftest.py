"""Flow tests run Prefect ephemerally in an isolated PREFECT_HOME, and a local Ray."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_prefect(tmp_path_factory):
    # Prefect read the environment when the test modules imported it: a settings context is
    # what reaches it now, the environment what reaches its subprocesses and Ray's workers.
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from worldreel_cli import prefect_defaults

    home = tmp_path_factory.mktemp("prefect_home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)  # ephemeral: no server
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with prefect_defaults(), temporary_settings(updates={PREFECT_HOME: home}, restore_defaults={PREFECT_API_URL}):
        yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
