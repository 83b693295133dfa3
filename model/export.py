"""4D export of WorldReel samples, and `worldreel sample`.

    worldreel sample --checkpoint RUN_OR_CKPT --image first.png --prompt "..." --out DIR \
        [--steps 50] [--seed 0] [--guidance 6.0] [--scheduler dpm] [--pretrained BASE_FOLDER]

One sample folder holds (conventions of LABELS.md: OpenCV axes, first-frame coordinates):

- `video.mp4`: the RGB video (H.264 via `pipelines.video_io.write_video`, decord-readable);
- `points/frame_KKK.ply`: the point map of key frame KKK (video frame KKK * stride) as a
  binary little-endian PLY, float32 x, y, z and uchar red, green, blue from that frame;
- `cameras.json`: image size, stride and per key frame c2w (4x4), K (3x3, pixels) and the
  predicted 9-d camera vector;
- `geometry.npz`: depth (S, H, W), scene_flow (S-1, H, W, 3), dynamic_prob (S, H, W),
  dynamic_mask (S, H, W) bool (prob > 0.5) and frame_index (S,) of the key frames;
- `sample.json`: prompt, seed, steps, guidance, scheduler, checkpoint and timing.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from model.pipeline import WorldReelOutput, WorldReelPipeline
from pipelines.video_io import write_video

__all__ = ["export_sample", "load_image", "read_cameras_json", "sample_main", "write_cameras_json", "write_ply"]

_PLY_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> Path:
    """Binary little-endian PLY of coloured points.

    Args:
        xyz: (N, 3) coordinates (written as float32).
        rgb: (N, 3) uint8 colours.
    """
    xyz, rgb = np.asarray(xyz), np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3), got {xyz.shape}")
    if rgb.shape != xyz.shape or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be ({xyz.shape[0]}, 3) uint8, got {rgb.shape} {rgb.dtype}")
    vertices = np.empty(len(xyz), _PLY_VERTEX)
    for i, axis in enumerate("xyz"):
        vertices[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = rgb[:, i]
    header = "\n".join(
        [
            "ply",
            "format binary_little_endian 1.0",
            f"element vertex {len(xyz)}",
            *(f"property float {axis}" for axis in "xyz"),
            *(f"property uchar {channel}" for channel in ("red", "green", "blue")),
            "end_header",
        ]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode("ascii") + b"\n" + vertices.tobytes())
    return path


def write_cameras_json(
    path: str | Path,
    c2w: np.ndarray,
    K: np.ndarray,
    height: int,
    width: int,
    frame_index: np.ndarray,
    camera: np.ndarray | None = None,
) -> Path:
    """Cameras of S key frames: c2w (S, 4, 4), K (S, 3, 3) in pixels of (height, width), frame_index (S,)
    video frame of each key frame, camera (S, 9) the optional predicted camera vectors."""
    c2w, K, frame_index = np.asarray(c2w, np.float64), np.asarray(K, np.float64), np.asarray(frame_index)
    S = len(frame_index)
    if c2w.shape != (S, 4, 4) or K.shape != (S, 3, 3):
        raise ValueError(f"need c2w ({S}, 4, 4) and K ({S}, 3, 3), got {c2w.shape} and {K.shape}")
    frames = []
    for k in range(S):
        entry: dict[str, Any] = {"key_frame": k, "frame_index": int(frame_index[k]), "c2w": c2w[k].tolist(), "K": K[k].tolist()}
        if camera is not None:
            entry["camera_vector"] = np.asarray(camera[k], np.float64).tolist()
        frames.append(entry)
    doc = {
        "convention": "OpenCV axes (x right, y down, z forward); c2w camera-to-world in first-frame coordinates; K in pixels",
        "height": int(height),
        "width": int(width),
        "frames": frames,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def read_cameras_json(path: str | Path) -> dict[str, Any]:
    """Inverse of `write_cameras_json`: height, width, c2w (S, 4, 4), K (S, 3, 3), frame_index (S,)."""
    doc = json.loads(Path(path).read_text())
    frames = doc["frames"]
    return {
        "height": doc["height"],
        "width": doc["width"],
        "c2w": np.array([f["c2w"] for f in frames], np.float64),
        "K": np.array([f["K"] for f in frames], np.float64),
        "frame_index": np.array([f["frame_index"] for f in frames], np.int64),
    }


def export_sample(output: WorldReelOutput, out_dir: str | Path, index: int = 0, fps: float = 8.0) -> dict[str, Path]:
    """Write sample `index` of `output` (which must hold the decoded video) into `out_dir`; returns the paths."""
    if output.video is None:
        raise ValueError("the output has no decoded video (sampled with decode_video=False)")
    out = Path(out_dir)
    frames = (output.video[index].permute(0, 2, 3, 1).float().cpu().numpy() * 255.0).round().astype(np.uint8)
    S = output.depth.shape[1]
    frame_index = np.arange(S) * output.stride
    _, H, W, _ = frames.shape
    paths = {"video": write_video(out / "video.mp4", frames, fps)}
    points = output.points[index].float().cpu().numpy()
    for k in range(S):
        xyz = points[k].reshape(-1, 3)
        keep = np.isfinite(xyz).all(axis=1)
        colours = frames[frame_index[k]].reshape(-1, 3)
        paths[f"points_{k}"] = write_ply(out / "points" / f"frame_{k:03d}.ply", xyz[keep], colours[keep])
    paths["cameras"] = write_cameras_json(
        out / "cameras.json",
        output.c2w[index].cpu().numpy(),
        output.K[index].cpu().numpy(),
        H,
        W,
        frame_index,
        output.camera[index].float().cpu().numpy(),
    )
    prob = torch.sigmoid(output.mask_logits[index].float()).cpu().numpy()
    np.savez_compressed(
        out / "geometry.npz",
        depth=output.depth[index].float().cpu().numpy(),
        scene_flow=output.scene_flow[index].float().cpu().numpy(),
        dynamic_prob=prob.astype(np.float32),
        dynamic_mask=prob > 0.5,
        frame_index=frame_index,
    )
    paths["geometry"] = out / "geometry.npz"
    return paths


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """An image file -> (3, height, width) in [-1, 1], resized to cover and centre-cropped (as clips are)."""
    import cv2

    from pipelines.decode import ResizeCrop

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb = ResizeCrop.from_sizes(rgb.shape[0], rgb.shape[1], height, width).apply_frames(rgb[None])[0]
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 127.5 - 1.0


# ============================================================================ CLI
@dataclass
class SampleConfig:
    """`worldreel sample`: one video and its 4D scene from a checkpoint, a prompt and a first frame."""

    checkpoint: str = field(metadata={"help": "training checkpoint folder, or a run folder (its latest checkpoint)"})
    image: str = field(metadata={"help": "first frame (any format OpenCV reads)"})
    prompt: str = field(metadata={"help": "text prompt"})
    out: str = field(metadata={"help": "output folder"})
    steps: int = field(default=50, metadata={"ge": 1, "help": "denoising steps"})
    seed: int = field(default=0, metadata={"help": "random seed of the sampler"})
    guidance: float = field(default=6.0, metadata={"help": "classifier-free guidance scale (<= 1: off)"})
    negative_prompt: str = field(default="", metadata={"help": "negative prompt of classifier-free guidance"})
    scheduler: Literal["dpm", "ddim"] = field(default="dpm", metadata={"help": "diffusion sampler"})
    pretrained: str | None = field(default=None, metadata={
        "name": "weights", "aliases": ("--pretrained",),
        "help": "local diffusers folder of the base model (default: the run's)"})
    fps: float = field(default=8.0, metadata={"gt": 0, "help": "frame rate written into the mp4"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    dtype: Literal["auto", "bf16", "fp32"] = field(default="auto", metadata={"help": "auto: bf16 on CUDA, fp32 on CPU"})


def _job():
    from pipelines.jobconfig import JobConfig

    return JobConfig(SampleConfig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worldreel sample", description="Sample a video and its 4D scene from text + one image.")
    _job().add_arguments(p)
    return p


def sample_main(argv: list[str] | None = None) -> int:
    """`worldreel sample`: load a checkpoint, sample one video, export it. Returns 0 on success, 2 on bad input."""
    job = _job()
    (args,) = job.build(job.from_args(_parser().parse_args(argv)))
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda")
    try:
        start = time.perf_counter()
        pipe = WorldReelPipeline.from_checkpoint(
            args.checkpoint, args.pretrained, device, torch.bfloat16 if bf16 else torch.float32, args.scheduler
        )
        loaded = time.perf_counter()
        T, H, W = pipe.video_size
        image = load_image(args.image, H, W)[None]
        generator = torch.Generator().manual_seed(args.seed)
        output = pipe(image, args.prompt, args.steps, args.guidance, negative_prompt=args.negative_prompt, generator=generator)
        sampled = time.perf_counter()
        paths = export_sample(output, args.out, fps=args.fps)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    info = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "image": str(args.image),
        "checkpoint": str(args.checkpoint),
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
        "scheduler": args.scheduler,
        "size": [T, H, W],
        "load_s": loaded - start,
        "sample_s": sampled - loaded,
    }
    (Path(args.out) / "sample.json").write_text(json.dumps(info, indent=2))
    print(json.dumps({**info, "out": str(args.out), "files": len(paths) + 1}))
    return 0
