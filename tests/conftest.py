"""Make the repository's top-level packages and test helpers importable."""

import os
import sys
from pathlib import Path

# Prefect's ephemeral server logs its shutdown at interpreter exit, after pytest closed the
# captured streams; keep Prefect's own logging to warnings in tests.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "storage"))
sys.path.insert(0, str(ROOT / "tests" / "flows"))
sys.path.insert(0, str(ROOT / "tests" / "labelers"))
