"""Run `worldreel import`'s core over a fixture root, for the dataset-reader tests."""

from __future__ import annotations

from pathlib import Path


def import_run(
    root: Path, format: str, size: tuple[int, int], frames: int, stride: int, options: list[str] | None = None
) -> dict[str, list]:
    """Plan and import every sequence of `root` into a store beside it: sequence name ->
    [(status, reasons), ...] of its clips."""
    from pipelines.dataset_import import ImportConfig, import_tasks, plan_imports
    from storage import LabelStore

    cfg = ImportConfig(format=format, root=str(root), store=str(root.parent / f"{root.name}_labels.zarr"),
                       height=size[0], width=size[1], num_frames=frames, stride=stride, fps=None,
                       dataset_options=options)
    tasks = plan_imports(cfg)
    outcomes = import_tasks(tasks, cfg, LabelStore.create(cfg.store))
    sequence_of = {t.clip_id: t.sequence for t in tasks}
    result: dict[str, list] = {}
    for o in outcomes:
        assert o.error is None, o.error  # a DatasetError with its reason, never an importer bug
        result.setdefault(sequence_of[o.clip_id], []).append((o.status, o.reasons))
    return result
