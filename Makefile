# WorldReel: `make demo` runs the main job end to end on embedded defaults; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench server clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch 2.13.0 first: pinned, it takes the local CPU build instead of a multi-GB CUDA one.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/worldreel demo --out demo_out

# Three pytest workers, one test file each at a time (module fixtures stay in one process): part of
# the suite's time is spent waiting on Prefect, Ray, SeaweedFS and torch subprocesses, which a third
# worker fills on a 2-core machine (docs/benchmarks.md, "Session 41"). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(PY) bench/run_all.py

# A local Prefect server on 127.0.0.1 plus the deployments (labeling, report, training) it offers in the UI.
PREFECT_PORT ?= 4200
server: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
	  $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) & \
	server=$$!; trap "kill $$server" EXIT INT TERM; \
	until curl -sf http://127.0.0.1:$(PREFECT_PORT)/api/health >/dev/null; do sleep 1; done; \
	echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)"; \
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(VENV)/bin/worldreel serve

clean:
	rm -rf demo_out bench_out
