"""Fan clips out over Ray: batches of clips per task, neural labelers in GPU actors.

Each Ray task labels a batch of clips with `pipelines.labeling.label_clips` and returns
small `ClipOutcome`s (never arrays): the arrays go straight from the worker into the label
store. Deterministic failures are already rejected clips inside the batch (recorded, not
retried); a system failure (a killed worker, lost node) makes Ray re-run the batch, up to
`max_retries`, and the re-run skips the clips the lost attempt had already committed.

Neural labelers (SEA-RAFT flow, neural depth) live in `NeuralLabeler` actors that load
their weights once and ask for a GPU fraction; CPU stages run in the tasks, which call the
actors through proxies that satisfy the labeler protocols.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import ray

from pipelines.clips import ClipSpec
from pipelines.labeling import ClipOutcome, LabelConfig, build_backends, label_clips, plan
from storage import LabelStore

__all__ = ["init_ray", "run_on_ray", "batches"]


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (`address`) or start a local Ray (default), once per process."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=True)


def batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@ray.remote
class NeuralLabeler:
    """Holds the neural backends of a run (loaded once per actor) and runs their inference."""

    def __init__(self, cfg: LabelConfig) -> None:
        self.backends = build_backends(cfg)

    def describe(self, family: str) -> dict[str, Any]:
        backend = getattr(self.backends, family)
        return {"name": backend.name, "version": backend.version, "params": backend.params,
                "weights_sha256": getattr(backend, "weights_sha256", None)}

    def call(self, family: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(getattr(self.backends, family), method)(*args, **kwargs)


class _ActorProxy:
    """A labeler whose model lives in a `NeuralLabeler` actor; same protocol, remote calls."""

    def __init__(self, actor: Any, family: str) -> None:
        self._actor, self._family = actor, family
        info = ray.get(actor.describe.remote(family))
        self.name, self.version, self.params = info["name"], info["version"], info["params"]
        self.weights_sha256 = info["weights_sha256"]

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def remote_call(*args: Any, **kwargs: Any) -> Any:
            return ray.get(self._actor.call.remote(self._family, method, *args, **kwargs))

        return remote_call


def _neural_families(cfg: LabelConfig) -> list[str]:
    return [f for f, neural in (("flow", cfg.flow == "sea-raft"), ("depth", cfg.depth == "neural")) if neural]


@ray.remote(max_retries=3)
def _label_batch(
    specs: list[ClipSpec], cfg: LabelConfig, store_path: str, actor: Any | None, redo_failed: bool
) -> list[ClipOutcome]:
    import cv2

    cv2.setNumThreads(1)  # one CPU per task, as requested from Ray: OpenCV's own pool would oversubscribe
    store = LabelStore.open(store_path)
    # A retried batch (its worker died) skips what the lost attempt already committed.
    todo, skipped = plan(specs, store, redo_failed)
    neural = _neural_families(cfg) if actor is not None else []
    backends = build_backends(cfg, skip=neural)
    for family in neural:
        setattr(backends, family, _ActorProxy(actor, family))
    return label_clips(todo, cfg, store, backends) + skipped


def run_on_ray(
    specs: Sequence[ClipSpec],
    cfg: LabelConfig,
    store_path: str,
    batch_size: int = 4,
    gpu_fraction: float = 0.25,
    num_actors: int = 1,
    redo_failed: bool = False,
    on_outcomes: Callable[[list[ClipOutcome]], None] | None = None,
) -> list[ClipOutcome]:
    """Label `specs` with Ray tasks over batches; returns every clip's outcome.

    Call `init_ray` first. A batch whose worker keeps dying past Ray's retries is reported
    as failed clips (status "rejected" in the outcome only: nothing is committed, so a re-run
    tries them again).
    """
    actors = []
    if _neural_families(cfg):
        gpus = ray.cluster_resources().get("GPU", 0)
        options = {"num_gpus": gpu_fraction} if gpus > 0 else {}
        actors = [NeuralLabeler.options(**options).remote(cfg) for _ in range(max(num_actors, 1))]
    pending: dict[Any, list[ClipSpec]] = {}
    for n, batch in enumerate(batches(list(specs), batch_size)):
        actor = actors[n % len(actors)] if actors else None
        pending[_label_batch.remote(batch, cfg, store_path, actor, redo_failed)] = batch
    outcomes: list[ClipOutcome] = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        ref = done[0]
        batch = pending.pop(ref)
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayError, OSError) as e:  # retries exhausted: a system failure
            message = f"worker failure after retries: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            result = [ClipOutcome(s.clip_id, "rejected", ["system: " + message], error=message) for s in batch]
        outcomes.extend(result)
        if on_outcomes is not None:
            on_outcomes(result)
    return outcomes
