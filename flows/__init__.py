"""Prefect flows and deployments: thin orchestration over `pipelines` and `model`; Ray fan-out lives here."""
