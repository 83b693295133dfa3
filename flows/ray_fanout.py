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
from dataclasses import replace
from typing import Any, Callable, Sequence

import ray

from pipelines.clips import ClipSpec
from pipelines.labeling import ClipOutcome, LabelConfig, build_backends, label_clips, plan
from storage import LabelStore

__all__ = ["RayConnectError", "batches", "gather_batches", "init_ray", "node_label", "run_on_ray"]

_AUTH_MODE = "RAY_AUTH_MODE"


class RayConnectError(RuntimeError):
    """The cluster at `--ray-address` cannot be used; one line saying why and what to do."""


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (`address`) or start a local Ray (default), once per process.

    The local Ray is always a new one (`address="local"`): Ray's own default would attach to
    the cluster last started on the machine with `ray start` (or RAY_ADDRESS), which a run
    must name with `address` instead (`--ray-address auto` for that one).

    Ray 2.60 clusters started with `ray start --head` use token authentication once a token
    exists, but `ray.init(address=...)` never turns it on by itself; the token is taken, as
    Ray does, from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=True)
        return
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)  # what ray.init does for a local cluster
    if not address.startswith("ray://") and address != "auto":
        _probe_gcs(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
    except (ConnectionError, ray.exceptions.RayError, RuntimeError) as e:
        raise RayConnectError(_connect_failure(address, e)) from None


def _probe_gcs(address: str) -> None:
    """One quick call to the cluster's GCS: `ray.init` retries a refused token for about 20 s."""
    from ray._raylet import GcsClient

    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the GCS client logs every refused attempt from C++, straight to fd 2
    try:
        GcsClient(address=address).cluster_id
    except Exception as e:  # noqa: BLE001 - classified into one line below
        raise RayConnectError(_connect_failure(address, e)) from None
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
        os.close(devnull)


def _connect_failure(address: str, error: BaseException) -> str:
    causes = [error]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    if any(isinstance(c, ray.exceptions.AuthenticationError) for c in causes):
        mode = os.environ.get(_AUTH_MODE, "unset")
        return (
            f"--ray-address {address}: authentication failed (RAY_AUTH_MODE={mode}): give this machine the cluster's "
            "token as RAY_AUTH_TOKEN or a file named by RAY_AUTH_TOKEN_PATH (on the head node: ray get-auth-token)"
        )
    first_line = str(causes[-1]).strip().splitlines()[0][:200] if str(causes[-1]).strip() else type(causes[-1]).__name__
    return f"--ray-address {address}: cannot connect to the Ray cluster ({first_line})"


def node_label() -> str:
    """The node running this process, as the run summary names it: its IP and short Ray node id."""
    context = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{context.get_node_id()[:8]}"


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
    node = node_label()
    return [replace(o, node=node) for o in label_clips(todo, cfg, store, backends)] + skipped


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
    return gather_batches(pending, on_outcomes)


def gather_batches(
    pending: dict[Any, list[Any]], on_outcomes: Callable[[list[ClipOutcome]], None] | None = None
) -> list[ClipOutcome]:
    """Collect the outcomes of batch tasks as they finish (`pending`: Ray ref -> the batch's items, each
    with a `clip_id`). A batch whose worker kept dying past Ray's retries is reported as failed clips:
    nothing was committed for them, so a re-run tries them again."""
    outcomes: list[ClipOutcome] = []
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        batch = pending.pop(ref)
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayError, OSError) as e:  # retries exhausted: a system failure
            message = f"worker failure after retries: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            result = [ClipOutcome(item.clip_id, "rejected", ["system: " + message], error=message) for item in batch]
        outcomes.extend(result)
        if on_outcomes is not None:
            on_outcomes(result)
    return outcomes
