"""Key-frame masks replayed with other settings on inputs saved from the label pipeline.

A mask change judged by a full sweep costs a minute of labelling per T = 49 clip; the key-frame
masks themselves take seconds. `capture` renders synthetic clips, labels each once with
`pipelines.labeling.label_clip` (default `LabelConfig`) through a mask labeler that saves the
arguments of its `key_masks` call (flows, cameras, depth, frame masks, texture, frames) with the
true masks; `replay` recomputes the key-frame masks of every saved clip with `DynamicMaskConfig`
fields overridden (and the frames' texture with them; the frame masks and depth stay as
captured) and prints IoU and false alarms against the truth beside the labelled ones.

    python bench/bench_mask_replay.py capture --clips room:132 open_sky:130 --frames 49 --with-intrinsics --out DIR
    python bench/bench_mask_replay.py replay DIR --set longer_view_min_score=0.3 --set confirm_max_snr=8
    python bench/bench_mask_replay.py replay DIR --per-key  # also IoU, recall, false alarms per key frame
    python bench/bench_mask_replay.py [--quick]      # smoke run: capture one small clip, replay it unchanged

Replaying with no override reproduces the labelled masks exactly (`tests/test_bench_mask_replay.py`).
"""

from __future__ import annotations

import argparse
import inspect
import pickle
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelers.dynamic_mask import DynamicMaskConfig, FlowRigidityMasks, SourceTexture  # noqa: E402
from pipelines.clips import ClipRejected  # noqa: E402
from pipelines.labeling import LabelConfig, build_backends, label_clip  # noqa: E402
from pipelines.manifests import read_manifest  # noqa: E402
from pipelines.synthetic_set import SCENE_CLASSES, write_synthetic_set  # noqa: E402


class RecordingMasks(FlowRigidityMasks):
    """`FlowRigidityMasks` that keeps the arguments of its last `key_masks` call."""

    def key_masks(self, *args, **kwargs):
        self.last_call = (args, kwargs)
        return super().key_masks(*args, **kwargs)


def capture(clips: list[tuple[str, int]], frames: int, size: tuple[int, int], with_intrinsics: bool, out: Path,
            cfg_overrides: dict | None = None, mover_speed: float = 1.0) -> list[Path]:
    """Label each CLASS:SEED clip once and save its key masks' inputs to `out`/<class>_<seed>.pkl
    (with `mover_speed` != 1: <class>_<seed>_x<mover_speed>.pkl, the movers that much faster)."""
    out.mkdir(parents=True, exist_ok=True)
    height, width = size
    videos = Path(tempfile.mkdtemp(prefix="bench_mask_replay_"))
    truth = {}
    configs = [replace(SCENE_CLASSES[name](seed, height, width, frames), fps=8.0, mover_speed=mover_speed)
               for name, seed in clips]
    write_synthetic_set(videos, configs, with_intrinsics=with_intrinsics,
                        on_render=lambda row, clip: truth.__setitem__(row.clip_id, clip.labels["dynamic_mask"]))
    cfg = LabelConfig(height=height, width=width, num_frames=frames, **(cfg_overrides or {}))
    built = build_backends(cfg)
    masks = RecordingMasks(built.masks.config)
    backends = replace(built, masks=masks)
    saved = []
    for spec, (name, seed) in zip(read_manifest(videos / "manifest.csv", fps_target=None).specs, clips):
        masks.last_call = None
        try:
            arrays, _, reasons = label_clip(spec, cfg, backends, {})
        except ClipRejected as e:
            print(f"{name} {seed}: rejected before the masks ({e})")
            continue
        if masks.last_call is None:
            print(f"{name} {seed}: no key masks (imported or dense path)")
            continue
        path = out / (f"{name}_{seed}.pkl" if mover_speed == 1 else f"{name}_{seed}_x{mover_speed:g}.pkl")
        with open(path, "wb") as f:
            pickle.dump({"call": masks.last_call, "truth": truth[spec.clip_id], "label": np.asarray(arrays["dynamic_mask"]),
                         "config": masks.config, "reasons": reasons}, f, protocol=4)
        saved.append(path)
        print(f"{name} {seed}: saved {path} ({'accepted' if not reasons else 'rejected: ' + ', '.join(reasons)})")
    return saved


def scores(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """IoU with the true dynamic mask and false alarms (share of truly static pixels flagged)."""
    return float((mask & truth).sum() / max((mask | truth).sum(), 1)), float((mask & ~truth).sum() / max((~truth).sum(), 1))


def per_key_scores(mask: np.ndarray, truth: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Per key frame of (S, H, W) masks: (true moving share, IoU, recall, false alarms)."""
    rows = []
    for m, t in zip(mask, truth):
        rows.append((float(t.mean()), float((m & t).sum() / max((m | t).sum(), 1)),
                     float((m & t).sum() / max(t.sum(), 1)), float((m & ~t).sum() / max((~t).sum(), 1))))
    return rows


def replayed_masks(path: Path, overrides: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelled, replayed, true) key-frame masks (S, H, W) of a saved clip, replayed with `overrides`.

    The frames' texture (stripes, periods, weak texture) is measured again with the new settings,
    as the pipeline does; the frame masks and the depth stay as captured, so fields that act only
    through them (step 1 of `labelers.dynamic_mask`) do not take effect here."""
    with open(path, "rb") as f:
        saved = pickle.load(f)
    args, kwargs = saved["call"]
    config = replace(saved["config"], **overrides)
    call = inspect.signature(FlowRigidityMasks.key_masks).bind(None, *args, **kwargs).arguments
    call.pop("self")
    if call.get("frames") is not None:
        call["texture"] = SourceTexture.of(call["frames"], config, period_frames=call["key_frames"])
    return saved["label"], FlowRigidityMasks(config).key_masks(**call), saved["truth"]


def replay(path: Path, overrides: dict) -> tuple[tuple[float, float], tuple[float, float]]:
    """(IoU, false alarms) of the labelled masks and of the masks recomputed with `overrides`."""
    label, mask, truth = replayed_masks(path, overrides)
    return scores(label, truth), scores(mask, truth)


def config_override(text: str) -> tuple[str, object]:
    """FIELD=VALUE of `DynamicMaskConfig`, the value parsed as the field's default's type."""
    name, _, value = text.partition("=")
    defaults = {f.name: getattr(DynamicMaskConfig(), f.name) for f in fields(DynamicMaskConfig)}
    if name not in defaults or not value:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with FIELD a DynamicMaskConfig field, got {text!r}")
    kind = type(defaults[name])
    if kind is bool:
        return name, value.lower() in ("1", "true", "yes")
    if kind is tuple:
        return name, tuple(type(defaults[name][0])(v) for v in value.split(","))
    return name, kind(value)


def class_seed(text: str) -> tuple[str, int]:
    name, _, seed = text.partition(":")
    if name not in SCENE_CLASSES or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected CLASS:SEED with CLASS in {sorted(SCENE_CLASSES)}, got {text!r}")
    return name, int(seed)


def print_replays(paths: list[Path], overrides: dict, per_key: bool = False) -> None:
    print(f"overrides: {overrides or 'none'}")
    print("| clip | labelled IoU / false alarms | replayed IoU / false alarms |")
    print("| --- | --- | --- |")
    masks = {}
    for path in paths:
        masks[path.stem] = label, mask, truth = replayed_masks(path, overrides)
        (iou0, fa0), (iou1, fa1) = scores(label, truth), scores(mask, truth)
        print(f"| {path.stem} | {iou0:.3f} / {100 * fa0:.2f} % | {iou1:.3f} / {100 * fa1:.2f} % |")
    if not per_key:
        return
    for name, (label, mask, truth) in masks.items():
        print(f"\n{name}, per key frame (IoU / recall / false alarms):")
        print("| key frame | moving share | labelled | replayed |")
        print("| --- | --- | --- | --- |")
        for k, (before, after) in enumerate(zip(per_key_scores(label, truth), per_key_scores(mask, truth))):
            print(f"| {k} | {100 * before[0]:.1f} % | " + " | ".join(
                f"{iou:.3f} / {recall:.3f} / {100 * fa:.2f} %" for _, iou, recall, fa in (before, after)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: capture one 120x180 T = 9 clip, replay it")
    sub = parser.add_subparsers(dest="command")
    cap = sub.add_parser("capture", help="label clips once, saving the key masks' inputs")
    cap.add_argument("--clips", nargs="+", type=class_seed, required=True, help="CLASS:SEED ...")
    cap.add_argument("--frames", type=int, default=49)
    cap.add_argument("--size", type=lambda t: tuple(int(v) for v in t.split("x")), default=(240, 360))
    cap.add_argument("--with-intrinsics", action="store_true")
    cap.add_argument("--out", type=Path, required=True)
    cap.add_argument("--mover-speed", type=float, default=1.0, help="scale of the movers' speed (SceneConfig.mover_speed)")
    rep = sub.add_parser("replay", help="recompute the saved clips' key masks with other settings")
    rep.add_argument("dir", type=Path)
    rep.add_argument("--set", dest="overrides", action="append", type=config_override, default=[],
                     metavar="FIELD=VALUE", help="a DynamicMaskConfig field (repeatable)")
    rep.add_argument("--per-key", action="store_true", help="also a table per clip, key frame by key frame")
    args = parser.parse_args()
    if args.command == "capture":
        capture(args.clips, args.frames, args.size, args.with_intrinsics, args.out, mover_speed=args.mover_speed)
    elif args.command == "replay":
        print_replays(sorted(args.dir.glob("*.pkl")), dict(args.overrides), args.per_key)
    else:  # `make bench` and --quick: the round trip on one small clip
        out = Path(tempfile.mkdtemp(prefix="bench_mask_replay_quick_"))
        print_replays(capture([("room", 0)], 9, (120, 180), True, out), {})


if __name__ == "__main__":
    main()
