"""`worldreel`: command line of the WorldReel data and training system.

Each subcommand is a thin wrapper: the work happens in `pipelines`, `storage`, `model`
and `flows`, which can be called and tested without this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser", "parse_size"]


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 240x360 (HxW), got {text!r}") from None
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (min 8x8)")
    return height, width


def _parse_gate(text: str) -> tuple[str, float | None]:
    """'min_depth_valid_fraction=0.2' -> ('min_depth_valid_fraction', 0.2); 'none' removes the gate."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"gate must look like NAME=VALUE, got {text!r}")
    if value.strip().lower() == "none":
        return name.strip(), None
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"gate value must be a number or 'none', got {value!r}") from None


def _cmd_synth(args: argparse.Namespace) -> int:
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    height, width = args.size
    configs = scene_configs(args.clips, height, width, args.seed, num_frames=args.frames, fps=args.fps)
    store = LabelStore.create(args.store, precision=args.precision) if args.store else None
    start = time.perf_counter()

    def progress(done: int, total: int, clip_id: str) -> None:
        print(f"[{done}/{total}] {clip_id}  ({time.perf_counter() - start:.1f} s)", flush=True)

    rows = write_synthetic_set(
        args.out, configs, store=store, progress=progress, with_intrinsics=not args.no_intrinsics
    )
    print(f"wrote {len(rows)} clips and {Path(args.out) / 'manifest.csv'}")
    if store is not None:
        store.compact_index()
        print(f"ground truth committed to {store.root}")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from flows.labeling import LabelRunParams, label_clips_flow, label_config

    height, width = args.size
    params = LabelRunParams(
        manifest=str(args.manifest),
        store=str(args.out),
        format=args.format,
        video_root=args.video_root,
        annotation_root=args.annotation_root,
        flow=args.flow,
        flow_weights=args.flow_weights,
        camera=args.camera,
        depth=args.depth,
        depth_weights=args.depth_weights,
        height=height,
        width=width,
        fps=None if args.fps == "native" else float(args.fps),
        frames=args.frames,
        stride=args.stride,
        limit=args.limit,
        batch_size=args.batch_size,
        workers=args.workers,
        ray_address=args.ray_address,
        gpu_fraction=args.gpu_fraction,
        device=args.device,
        redo_failed=args.redo_failed,
        store_rounding=args.store_rounding,
        gates=dict(args.gate),
        report_dir=args.report_dir,
        write_report=not args.no_report,
    )
    label_config(params)  # fail fast on inconsistent options, before Prefect and Ray start
    summary = label_clips_flow(params)
    _print_label_summary(summary)
    return 0


def _print_label_summary(summary: dict) -> None:
    print(
        f"labelled into {summary['store']}: {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{summary['skipped']} skipped (already committed), {summary['manifest_row_errors']} manifest row errors "
        f"in {summary['seconds']:.1f} s"
    )
    if "report" in summary:
        print(f"quality report: {summary['report']}")
    for reason, count in summary["rejected_by_reason"].items():
        print(f"  rejected {count:4d}  {reason}")


def _cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report import ReportOptions, build_report

    path = build_report(args.store, args.out, ReportOptions(max_gallery_clips=args.gallery))
    print(f"report written to {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: start a server first (make server does both), e.g.\n"
              "  prefect server start --host 127.0.0.1 --port 4200 &\n"
              "  export PREFECT_API_URL=http://127.0.0.1:4200/api", file=sys.stderr)
        return 2
    from flows.deployments import serve_deployments

    defaults = json.loads(args.label_defaults) if args.label_defaults else None
    serve_deployments(label_cron=args.label_cron, label_defaults=defaults)
    return 0


def _cmd_train(argv: list[str]) -> int:
    from model.train import main as train_main

    return train_main(argv)


def _cmd_info(args: argparse.Namespace) -> int:
    from storage import LabelStore

    store = LabelStore.open(args.store)
    index = store.index()
    rows = index.to_pylist()
    accepted = [r for r in rows if r["status"] == "accepted"]
    print(f"store {store.root}: {len(rows)} clips, {len(accepted)} accepted, {len(rows) - len(accepted)} rejected")
    if rows:
        print(f"  bytes per accepted clip: {sum(r['nbytes'] for r in accepted) / max(len(accepted), 1):,.0f}")
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.labeling import LabelRunParams, label_clips_flow
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    out = Path(args.out)
    height, width = args.size
    print(f"== 1. synthetic clips with exact ground truth ({args.clips} clips, {height}x{width}, T={args.frames})")
    truth = LabelStore.create(out / "synthetic_labels.zarr", precision="float32")
    configs = scene_configs(args.clips, height, width, seed=0, num_frames=args.frames)
    start = time.perf_counter()
    write_synthetic_set(out / "synthetic", configs, store=truth)
    truth.compact_index()
    print(f"   rendered and committed in {time.perf_counter() - start:.1f} s -> {truth.root}")
    _print_store_summary(truth)

    print("== 2. label the same clips with the weight-free labelers (Prefect flow, local Ray)")
    params = LabelRunParams(
        manifest=str(out / "synthetic" / "manifest.csv"), store=str(out / "labels.zarr"),
        height=height, width=width, frames=args.frames, batch_size=1, report_dir=str(out / "report"),
    )
    summary = label_clips_flow(params)
    _print_label_summary(summary)

    print("== 3. pseudo-labels against the exact labels of the same clips")
    _print_label_quality(LabelStore.open(params.store), truth)

    print(f"== 4. label-quality report (written by the flow): {summary['report']}")

    print(f"== 5. train the tiny model, stages 1a -> 1b -> 2 ({args.train_steps} steps each), on both stores")
    checkpoint = _demo_training(out, [str(truth.root), params.store], args.train_steps)
    print("== 6. sample a video and its 4D scene from the last checkpoint")
    return _demo_sample(out, checkpoint, truth)


def _demo_training(out: Path, stores: list[str], steps: int) -> str:
    from flows.training import TrainRunParams, train_flow

    init_from = None
    for stage in ("1a", "1b", "2"):
        params = TrainRunParams(stage=stage, stores=stores, output_dir=str(out / f"train_{stage}"), steps=steps,
                                save_every=steps, init_from=init_from, device="cpu", lr=1e-3, head_lr=1e-3)
        result = train_flow(params)
        metrics = {k: round(v, 4) for k, v in result["metrics"].items() if isinstance(v, float)}
        print(f"   stage {stage}: {metrics}")
        init_from = result["checkpoints"][-1]
    return init_from


def _demo_sample(out: Path, checkpoint: str, truth) -> int:
    import cv2

    from model.export import sample_main

    clip_id = truth.clip_ids(status="accepted")[0]
    attrs = truth.attrs(clip_id)
    first = _first_frame(attrs["source"]["uri"])
    image = out / "sample_input.png"
    cv2.imwrite(str(image), cv2.cvtColor(first, cv2.COLOR_RGB2BGR))
    return sample_main(["--checkpoint", checkpoint, "--image", str(image), "--prompt", attrs["source"]["caption"],
                        "--out", str(out / "sample"), "--steps", "10", "--device", "cpu"])


def _first_frame(video: str):
    import decord

    return decord.VideoReader(video, num_threads=1)[0].asnumpy()


def _print_label_quality(labels, truth) -> None:
    from pipelines.label_eval import compare_labels

    header = ("clip", "flow EPE px", "RRE deg", "ATE %path", "depth d<1.25", "depth cover", "sflow <5%", "mask IoU")
    print("   " + " ".join(f"{h:>12}" for h in header))
    for clip_id in labels.clip_ids(status="accepted"):
        m = compare_labels(labels.read(clip_id), truth.read(clip_id))
        values = (m["flow_epe_px"], m["rre_mean_deg"], m.get("ate_percent_of_path", float("nan")), m["depth_delta125"],
                  m["depth_coverage_static"], m["scene_flow_within_5pct"], m["dynamic_iou"])
        print(f"   {clip_id[:12]:>12} " + " ".join(f"{v:12.3f}" if v == v else f"{'-':>12}" for v in values))
    print("   (scene flow needs depth on moving objects: the weight-free multi-view depth leaves them invalid;"
          " use --depth neural or imported depth for scene-flow labels)")


def _print_store_summary(store) -> None:
    import numpy as np

    print(f"   {'clip':<34} {'status':<9} {'dyn %':>6} {'|flow| px':>9} {'flow ok %':>9} {'MB':>6}")
    for row in store.index().to_pylist():
        if row["status"] != "accepted":
            print(f"   {row['clip_id']:<34} {row['status']:<9} {'; '.join(row['reasons'])}")
            continue
        labels = store.read(row["clip_id"], fields=["flow", "flow_valid", "dynamic_mask"])
        flow_px = np.linalg.norm(labels["flow"].astype(np.float32), axis=-1)[labels["flow_valid"]].mean()
        print(
            f"   {row['clip_id']:<34} {row['status']:<9} {100 * labels['dynamic_mask'].mean():6.1f} "
            f"{flow_px:9.2f} {100 * labels['flow_valid'].mean():9.1f} {row['nbytes'] / 1e6:6.2f}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldreel",
        description="WorldReel: label video clips with depth, cameras, flow and scene flow; train the 4D video model.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = sub.add_parser(
        "synth",
        help="render synthetic 4D clips with exact ground truth",
        description="Render procedural textured scenes (videos + manifest CSV); with --store, commit their exact "
        "labels to a label store.",
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder for videos/ and manifest.csv")
    synth.add_argument("--clips", type=int, default=4, help="number of clips (default 4)")
    synth.add_argument("--size", type=parse_size, default=(240, 360), help="label resolution HxW (default 240x360)")
    synth.add_argument("--frames", type=int, default=49, help="frames per clip T (default 49)")
    synth.add_argument("--fps", type=float, default=8.0, help="frame rate (default 8)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the first clip (default 0)")
    synth.add_argument("--store", type=Path, help="label store to commit the ground truth into")
    synth.add_argument(
        "--no-intrinsics", action="store_true",
        help="leave fx,fy,cx,cy out of the manifest, so labeling must estimate the focal length",
    )
    synth.add_argument(
        "--precision", choices=("float16", "float32"), default="float32", help="float precision of a new store"
    )
    synth.set_defaults(func=_cmd_synth)

    demo = sub.add_parser(
        "demo",
        help="run the main job end to end on embedded defaults",
        description="Synthetic clips -> label store -> summary, on the CPU with no server (what `make demo` runs).",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    demo.add_argument("--clips", type=int, default=4, help="number of synthetic clips (default 4)")
    demo.add_argument("--size", type=parse_size, default=(128, 192), help="resolution HxW (default 128x192)")
    demo.add_argument("--frames", type=int, default=25, help="frames per clip (default 25)")
    demo.add_argument("--train-steps", type=int, default=3, help="training steps per stage (default 3)")
    demo.set_defaults(func=_cmd_demo)

    label = sub.add_parser(
        "label",
        help="label the clips of a manifest into a label store",
        description="Decode, label (flow, camera, depth, dynamic masks, scene flow), quality-gate and commit every "
        "clip of a manifest. Runs the Prefect labeling flow ephemerally (no server) over a local Ray, or an existing "
        "cluster with --ray-address. Re-running skips committed clips.",
    )
    label.add_argument("--manifest", required=True, type=Path, help="manifest CSV")
    label.add_argument("--out", required=True, type=Path, help="label store (created if missing)")
    label.add_argument("--format", choices=("auto", "plain", "spatialvid", "panda70m"), default="auto")
    label.add_argument("--video-root", help="folder that relative video paths resolve against")
    label.add_argument("--annotation-root", help="SpatialVID annotation folders, one per clip id")
    label.add_argument("--flow", choices=("dis", "sea-raft"), default="dis", help="optical-flow backend (default dis)")
    label.add_argument("--flow-weights", help="local SEA-RAFT checkpoint (.pth or .safetensors)")
    label.add_argument("--camera", choices=("sfm", "import"), default="sfm", help="camera backend (default sfm)")
    label.add_argument("--depth", choices=("mvs", "neural", "import"), default="mvs", help="depth backend (default mvs)")
    label.add_argument("--depth-weights", help="local folder of a transformers depth model")
    label.add_argument("--size", type=parse_size, default=(480, 720), help="label resolution HxW (default 480x720)")
    label.add_argument("--fps", default="8", help="label fps, or 'native' for the source rate (default 8)")
    label.add_argument("--frames", type=int, default=49, help="frames per clip (default 49)")
    label.add_argument("--stride", type=int, default=4, help="key-frame stride (default 4)")
    label.add_argument("--limit", type=int, help="label at most this many clips")
    label.add_argument("--batch-size", type=int, default=4, help="clips per Ray task (default 4)")
    label.add_argument("--workers", type=int, help="CPUs of the local Ray (default: all)")
    label.add_argument("--ray-address", help="address of an existing Ray cluster")
    label.add_argument("--gpu-fraction", type=float, default=0.25, help="GPU share per neural labeler actor")
    label.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of neural labelers")
    label.add_argument("--redo-failed", action="store_true", help="label clips rejected by earlier runs again")
    label.add_argument(
        "--store-rounding", choices=("none", "compact"), default="none",
        help="mantissa rounding of a new store: compact keeps 7 bits of flows and scene flow, 4 of flow uncertainty",
    )
    label.add_argument("--report-dir", help="quality report folder (default: <store>_report next to the store)")
    label.add_argument("--no-report", action="store_true", help="do not write the quality report at the end")
    label.add_argument(
        "--gate", type=_parse_gate, action="append", default=[], metavar="NAME=VALUE",
        help="override a quality gate, e.g. min_depth_valid_fraction=0.2 (VALUE 'none' removes it); repeatable",
    )
    label.set_defaults(func=_cmd_label)

    report = sub.add_parser(
        "report",
        help="write the label-quality report of a store",
        description="Write a self-contained HTML report (totals, reasons, metric distributions, clip table, galleries).",
    )
    report.add_argument("store", type=Path, help="label store")
    report.add_argument("--out", required=True, type=Path, help="output folder (index.html, summary.json)")
    report.add_argument("--gallery", type=int, default=40, help="clips with a picture gallery (default 40)")
    report.set_defaults(func=_cmd_report)

    serve = sub.add_parser(
        "serve",
        help="register the flows as deployments on a Prefect server and serve their runs",
        description="Register the labeling, report and training flows as deployments (typed parameter forms in the "
        "Prefect UI) on the server at PREFECT_API_URL, and run what the UI starts. Blocks until interrupted.",
    )
    serve.add_argument("--label-cron", help="cron schedule of the labeling deployment, e.g. '0 2 * * *'")
    serve.add_argument("--label-defaults", help="JSON of default labeling parameters, e.g. '{\"manifest\": ...}'")
    serve.set_defaults(func=_cmd_serve)

    sub.add_parser(
        "train",
        help="train the augmented DiT / DPT head on label stores (see `worldreel train --help`)",
        add_help=False,
    )
    sub.add_parser(
        "sample",
        help="text + image -> RGB video and 4D outputs (PLY, cameras JSON, npz) from a checkpoint",
        add_help=False,
    )
    sub.add_parser(
        "evaluate",
        help="4D geometry metrics of a checkpoint's predictions against label-store clips",
        add_help=False,
    )

    info = sub.add_parser("info", help="summarise a label store", description="Print what a label store holds.")
    info.add_argument("store", type=Path, help="label store path")
    info.add_argument("--json", action="store_true", help="also print every index row as JSON")
    info.set_defaults(func=_cmd_info)
    return parser


# Defaults the commands need from the environment; a value the user exported wins.
ENVIRONMENT_DEFAULTS = {
    # Offline by design: no telemetry calls to fail and slow down the ephemeral Prefect server.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Prefect gives its ephemeral server 20 s to start; on a node whose cores are busy (Ray
    # workers labelling, a test suite) it took longer, and the run failed before it began.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def prefect_defaults() -> contextlib.AbstractContextManager:
    """Apply `ENVIRONMENT_DEFAULTS`, also when Prefect was imported before (an in-process caller).

    Prefect reads its settings from the environment once, at import: the environment alone
    reaches a Prefect imported later and the subprocesses, and a settings context is needed
    for one imported already.
    """
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if "prefect" not in sys.modules:
        return contextlib.nullcontext()
    import prefect.settings

    prefect_names = [name for name in ENVIRONMENT_DEFAULTS if name.startswith("PREFECT_")]
    updates = {getattr(prefect.settings, name): os.environ[name] for name in prefect_names}
    return prefect.settings.temporary_settings(updates=updates)


def main(argv: list[str] | None = None) -> int:
    with prefect_defaults():
        return _run(sys.argv[1:] if argv is None else list(argv))


def _run(argv: list[str]) -> int:
    if argv[:1] == ["train"]:  # the model commands own their typed command lines (model/)
        return _cmd_train(argv[1:])
    if argv[:1] == ["sample"]:
        from model.export import sample_main

        return sample_main(argv[1:])
    if argv[:1] == ["evaluate"]:
        from model.evaluate import evaluate_main

        return evaluate_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
