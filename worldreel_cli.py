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


MIN_SIZE = 16  # the smallest label resolution the labelers accept (LabelConfig height/width bounds)


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W), each at least `MIN_SIZE`."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 240x360 (HxW), got {text!r}") from None
    if height < MIN_SIZE or width < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (min {MIN_SIZE}x{MIN_SIZE})")
    return height, width


def _add_store(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--store PATH, and the positional STORE that earlier versions took."""
    parser.add_argument("--store", help=help_text + ": a directory, or s3://bucket/prefix (gs://, az://)")
    parser.add_argument("store_positional", nargs="?", metavar="STORE", help="same as --store")


def _store(args: argparse.Namespace) -> str:
    given = {path for path in (args.store, args.store_positional) if path is not None}
    if len(given) != 1:
        args.parser.error("give the label store once: --store PATH" if given else "the label store is required: --store PATH")
    return given.pop()


def _cmd_synth(args: argparse.Namespace) -> int:
    from pipelines.synthetic_set import class_configs, scene_configs, write_synthetic_set
    from storage import LabelStore

    height, width = args.size
    configs = (
        class_configs(args.scene_class, args.clips, height, width, args.seed, num_frames=args.frames, fps=args.fps)
        if args.scene_class
        else scene_configs(args.clips, height, width, args.seed, num_frames=args.frames, fps=args.fps)
    )
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
        print(f"ground truth committed to {store.location}")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from flows.labeling import LABEL_JOB, LabelRunParams, label_clips_flow, label_job

    values = LABEL_JOB.from_args(args)
    try:
        run, cfg = label_job(values)  # inconsistent options fail here, in one line, before Prefect and Ray start
    except ValueError as e:
        args.parser.error(str(e))
    _check_label_inputs(run, cfg)
    summary = label_clips_flow(LabelRunParams(**values))
    _print_run_summary(summary)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from flows.importing import IMPORT_JOB, ImportRunParams, import_flow, import_job
    from pipelines.datasets import DatasetError, list_sequences

    values = IMPORT_JOB.from_args(args)
    try:
        cfg, run = import_job(values)  # inconsistent options fail here, in one line, before Prefect and Ray start
    except ValueError as e:
        args.parser.error(str(e))
    try:
        sequences = list_sequences(cfg.format, cfg.root, cfg.split, cfg.sequences, cfg.reader_options)
    except (DatasetError, ValueError) as e:
        raise UsageError(str(e)) from None
    if not sequences:
        raise UsageError(f"{cfg.root}: no {cfg.format} sequence found" + (f" in split {cfg.split!r}" if cfg.split else ""))
    if run.ray_address:
        _check_reachable(run.ray_address)
        _connect_ray(run.ray_address)
    summary = import_flow(ImportRunParams(**values))
    _print_run_summary(summary, "imported")
    return 0


class UsageError(Exception):
    """A bad input the user can fix: printed as one line, exit status 2 (`--debug` shows the traceback)."""


def _check_label_inputs(run, cfg) -> None:
    """Manifest, weights and cluster checked before Prefect and Ray start (seconds, not minutes)."""
    from pipelines.manifests import ManifestError, read_manifest

    for option, path, kind in (("--flow-weights", cfg.flow_weights, "file"), ("--depth-weights", cfg.depth_weights, "dir")):
        if path and not (Path(path).is_file() if kind == "file" else Path(path).is_dir()):
            what = "a checkpoint file" if kind == "file" else "a model folder"
            raise UsageError(f"{option} {path}: not {what} on this machine (weights are never downloaded)")
    try:
        manifest = read_manifest(run.manifest, run.format, fps_target=run.fps, video_root=run.video_root,
                                 annotation_root=run.annotation_root)
    except ManifestError as e:
        raise UsageError(str(e)) from e
    for error in manifest.errors:
        print(f"manifest row skipped: {error}", file=sys.stderr)
    if run.ray_address:
        _check_reachable(run.ray_address)
        _connect_ray(run.ray_address)


def _connect_ray(address: str) -> None:
    """Connect before Prefect starts, so a refused token is one line here (the flow reuses the connection)."""
    from flows.ray_fanout import RayConnectError, init_ray

    try:
        init_ray(address)
    except RayConnectError as e:
        raise UsageError(str(e)) from None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raise UsageError unless something listens at a Ray address ("host:port" or "ray://host:port")."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UsageError(f"--ray-address {address}: cluster unreachable ({e.strerror or e})") from None


def _print_run_summary(summary: dict, done: str = "labelled") -> None:
    """The closing lines of a labeling or import run: counts, report, reasons, provenance, nodes."""
    errors = f", {summary['manifest_row_errors']} manifest row errors" if done == "labelled" else ""
    print(
        f"{done} into {summary['store']}: {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{summary['skipped']} skipped (already committed){errors} in {summary['seconds']:.1f} s"
    )
    if "report" in summary:
        print(f"quality report: {summary['report']}")
    for reason, count in summary["rejected_by_reason"].items():
        print(f"  rejected {count:4d}  {reason}")
    for part, counts in summary.get("provenance", {}).items():
        print(f"  {part}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())))
    for node, count in summary.get("clips_by_node", {}).items():
        print(f"  node {node}: {count} clips {done}")


def _cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report import ReportOptions, build_report

    path = build_report(_store(args), args.out, ReportOptions(max_gallery_clips=args.gallery))
    print(f"report written to {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: start a server first (make server does both), e.g.\n"
              "  prefect server start --host 127.0.0.1 --port 4200 &\n"
              "  export PREFECT_API_URL=http://127.0.0.1:4200/api", file=sys.stderr)
        return 2
    from flows.deployments import serve_deployments
    from flows.labeling import LABEL_JOB

    defaults = json.loads(args.label_defaults) if args.label_defaults else None
    unknown = sorted(set(defaults or {}) - set(LABEL_JOB.by_name))
    if unknown:
        args.parser.error(f"--label-defaults: unknown labeling option(s) {unknown}")
    from flows.report import REPORT_URL_ENV, serve_reports

    try:
        serve_reports(args.report_root, args.report_host, 4210 if args.report_port is None else args.report_port)
    except OSError as e:
        if args.report_port is not None:
            raise UsageError(f"--report-port {args.report_port}: cannot serve reports on {args.report_host} "
                             f"({e.strerror or e})") from None
        serve_reports(args.report_root, args.report_host, 0)  # the default port is taken: any free one
    print(f"label-quality reports under {args.report_root.resolve()} served at {os.environ[REPORT_URL_ENV]}",
          file=sys.stderr)
    serve_deployments(label_cron=args.label_cron, label_defaults=defaults)
    return 0


def _cmd_train(argv: list[str]) -> int:
    from model.train import main as train_main

    return train_main(argv)


def _cmd_info(args: argparse.Namespace) -> int:
    from storage import LabelStore

    store = LabelStore.open(_store(args))
    index = store.index()
    rows = index.to_pylist()
    accepted = [r for r in rows if r["status"] == "accepted"]
    print(f"store {store.location}: {len(rows)} clips, {len(accepted)} accepted, {len(rows) - len(accepted)} rejected")
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
    demo_start = time.perf_counter()
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
    _print_run_summary(summary)

    print("== 3. pseudo-labels against the exact labels of the same clips")
    _print_label_quality(LabelStore.open(params.store), truth)

    print(f"== 4. label-quality report (written by the flow): {summary['report']}")

    print(f"== 5. train the tiny model, stages 1a -> 1b -> 2 ({args.train_steps} steps each), on both stores")
    checkpoint = _demo_training(out, [str(truth.root), params.store], args.train_steps)
    print("== 6. sample a video and its 4D scene from the last checkpoint")
    status = _demo_sample(out, checkpoint, truth)
    print(f"== done in {time.perf_counter() - demo_start:.0f} s; wrote under {out.resolve()}:")
    for path, what in (
        (out / "synthetic", "synthetic videos and manifest.csv"),
        (truth.root, "exact labels of those clips (label store)"),
        (Path(params.store), f"pseudo-labels: {summary['accepted']} accepted, {summary['rejected']} rejected"),
        (Path(summary["report"]), "label-quality report (open index.html in a browser)"),
        (out / "train_2", "training runs train_1a, train_1b, train_2 (checkpoints, metrics)"),
        (out / "sample", "sampled video, depth, point clouds and camera trajectory"),
    ):
        print(f"   {Path(path).resolve()}  {what}")
    return status


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


def _scene_class_names(command: str | None) -> list[str] | None:
    """The synthetic scene classes (imports the renderer: only when `synth` is parsed)."""
    if command not in (None, "synth"):
        return None
    from pipelines.synthetic_set import SCENE_CLASSES

    return sorted(SCENE_CLASSES)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `worldreel` parser. `command`: add only that subcommand's generated options (the labeling
    job's need its modules imported, seconds); None adds every subcommand's."""
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
        "--class", dest="scene_class", choices=_scene_class_names(command), default=None,
        help="render one scene class (open yards under a far sky, fixed cameras with large movers, pans, low or "
        "repeated texture, noise/blur/exposure); default: rooms with dolly, orbit, pan and static cameras in turn",
    )
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
        help="run the main job end to end on embedded defaults: render, label, report, train, sample",
        description="On the CPU, with no server (what `make demo` runs): render synthetic clips with exact labels, "
        "label them with the weight-free labelers (Prefect flow, local Ray), compare the labels with the truth, write "
        "the quality report, train the tiny model through stages 1a, 1b and 2 on both stores, and sample a video and "
        "its 4D scene from the last checkpoint.",
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
        "cluster with --ray-address. Re-running skips committed clips. The options are those of the Prefect form "
        "of the labeling deployment, by the same names.",
    )
    if command in (None, "label"):
        from flows.labeling import LABEL_JOB

        LABEL_JOB.add_arguments(label)
    label.set_defaults(func=_cmd_label, parser=label)

    imp = sub.add_parser(
        "import",
        help="import a data set with exact 4D labels (PointOdyssey, Dynamic Replica, OmniWorld-Game, BEDLAM, Kubric "
        "MOVi) into a label store",
        description="Read each sequence (or each window of --frames of it) of a synthetic data set, bring its depth, "
        "cameras, flow, dynamic masks and scene flow to the label contract, record each part's provenance (exact, "
        "derived, estimated) and commit one clip per window. Runs the Prefect import flow ephemerally over a local "
        "Ray, or a cluster with --ray-address; re-running skips committed clips. The options are those of the "
        "Prefect form of the import deployment.",
    )
    if command in (None, "import"):
        from flows.importing import IMPORT_JOB

        IMPORT_JOB.add_arguments(imp)
    imp.set_defaults(func=_cmd_import, parser=imp)

    report = sub.add_parser(
        "report",
        help="write the label-quality report of a store",
        description="Write a self-contained HTML report (totals, reasons, metric distributions, clip table, galleries).",
    )
    _add_store(report, "label store")
    report.add_argument("--out", required=True, type=Path, help="output folder (index.html, summary.json)")
    report.add_argument("--gallery", type=int, default=40, help="clips with a picture gallery (default 40)")
    report.set_defaults(func=_cmd_report, parser=report)

    serve = sub.add_parser(
        "serve",
        help="register the flows as deployments on a Prefect server and serve their runs",
        description="Register the labeling, report and training flows as deployments (typed parameter forms in the "
        "Prefect UI) on the server at PREFECT_API_URL, and run what the UI starts; serve the label-quality reports "
        "under --report-root over HTTP, so that the runs' report links open in the browser. Blocks until interrupted.",
    )
    serve.add_argument("--label-cron", help="cron schedule of the labeling deployment, e.g. '0 2 * * *'")
    serve.add_argument("--label-defaults", help="JSON of default labeling parameters (the names of `worldreel label`'s "
                       "options, with _ for -), e.g. '{\"manifest\": \"m.csv\", \"store\": \"labels.zarr\"}'")
    serve.add_argument("--report-root", type=Path, default=Path("."), help="folder whose label-quality reports "
                       "(at any depth) are served over HTTP, so the runs' report links open from the UI (default: .)")
    serve.add_argument("--report-host", default="127.0.0.1", help="interface the report server binds (default "
                       "127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    serve.add_argument("--report-port", type=int, default=None,
                       help="port of the report server (default 4210, or a free one if it is taken; 0: any free port)")
    serve.set_defaults(func=_cmd_serve, parser=serve)

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
    sub.add_parser(
        "evaluate-video",
        help="generate videos from held-out clips with a checkpoint (and a baseline): the paper's metrics, 4D "
        "consistency with our labelers, an HTML report (see `worldreel evaluate-video --help`)",
        add_help=False,
    )

    info = sub.add_parser("info", help="summarise a label store", description="Print what a label store holds.")
    _add_store(info, "label store")
    info.add_argument("--json", action="store_true", help="also print every index row as JSON")
    info.set_defaults(func=_cmd_info, parser=info)
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
    """Run a command. Bad inputs end in one `worldreel: error: ...` line and status 2; `--debug`
    (anywhere on the line) shows the traceback instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        with prefect_defaults():
            return _run(argv)
    except _door_errors() as e:
        if debug:
            raise
        command = argv[0] if argv else ""
        print(f"worldreel {command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _door_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a bad input, not a bug: reported in one line."""
    from pipelines.clips import ClipRejected
    from pipelines.manifests import ManifestError
    from storage import ClipNotFoundError, LabelValidationError, RejectedClipError, SchemaVersionError

    return (UsageError, ManifestError, ClipRejected, ClipNotFoundError, RejectedClipError, SchemaVersionError,
            LabelValidationError, FileNotFoundError, NotADirectoryError)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _run(argv: list[str]) -> int:
    if argv[:1] == ["train"]:  # the model commands own their typed command lines (model/)
        return _cmd_train(argv[1:])
    if argv[:1] == ["sample"]:
        from model.export import sample_main

        return sample_main(argv[1:])
    if argv[:1] == ["evaluate"]:
        from model.evaluate import evaluate_main

        return evaluate_main(argv[1:])
    if argv[:1] == ["evaluate-video"]:
        from model.video_eval import evaluate_video_main

        return evaluate_video_main(argv[1:])
    args = build_parser(argv[0] if argv else "").parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
