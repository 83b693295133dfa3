"""Seconds per clip of each paper metric on CPU (model.video_metrics), at random weights.

Per generated clip: FVD (I3D features of the clip's first 16 frames at 224 x 224), FID
(Inception pool3 of every frame), dynamic degree and motion smoothness (DIS flow), subject
consistency (DINO ViT-B/16 on every frame) and background consistency (CLIP ViT-B/32). Per
evaluation, once: the Fréchet distance of 400-d (FVD) and 2048-d (FID) statistics.
Networks have random weights (timing does not depend on them); the full-size architectures
by default, tiny configurations of the same code with --quick. Clips are smooth random
textures translating 2 px per frame. FVD and FID counted on the generated side only; the
reference side costs the same per clip.

    python bench/bench_video_metrics.py --quick
    python bench/bench_video_metrics.py --frames 17 --size 240x360 --threads 2
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from common import image_size, timed
from labelers.dis_flow import DisFlow
from model.video_metrics.frechet import frechet_distance_of_features
from model.video_metrics.i3d import I3D_CONFIG, I3DConfig, InceptionI3d, i3d_features
from model.video_metrics.inception import FID_INCEPTION_CONFIG, FIDInceptionV3, InceptionConfig, inception_features
from model.video_metrics.vbench import (
    CLIP_B32,
    DINO_B16,
    ClipVisionSpec,
    DinoSpec,
    FeatureEncoder,
    dynamic_degree_video,
    motion_smoothness_video,
)

TINY = dict(
    inception=InceptionConfig(width_divisor=32),
    i3d=I3DConfig(width_divisor=16, final_pool=(1, 2, 2)),
    dino=DinoSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
    clip=ClipVisionSpec(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, projection_dim=16
    ),
)
FULL = dict(inception=FID_INCEPTION_CONFIG, i3d=I3D_CONFIG, dino=DINO_B16, clip=CLIP_B32)


def translating_clip(frames: int, height: int, width: int, step_px: float = 2.0) -> np.ndarray:
    noise = np.random.default_rng(0).uniform(0, 255, (height // 4 + 2, (width + int(step_px * frames)) // 4 + 2, 3))
    size = (noise.shape[1] * 4, noise.shape[0] * 4)
    canvas = cv2.resize(noise.astype(np.float32), size, interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    return np.stack([canvas[:height, int(step_px * t) : int(step_px * t) + width] for t in range(frames)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny networks and clips (smoke run)")
    parser.add_argument("--frames", type=int, default=17, help="frames per clip (>= 16 for FVD)")
    parser.add_argument("--size", type=image_size, default=(240, 360), help="clip size HxW")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size = 16, (48, 64)
    torch.set_num_threads(args.threads)
    configs = TINY if args.quick else FULL
    fvd_resolution = 64 if args.quick else 224
    video = translating_clip(args.frames, *args.size)
    flow = DisFlow()
    torch.manual_seed(0)
    inception = FIDInceptionV3(configs["inception"]).eval()
    i3d = InceptionI3d(configs["i3d"]).eval()
    dino = FeatureEncoder(configs["dino"].build().eval(), "dino")
    clip = FeatureEncoder(configs["clip"].build().eval(), "clip")

    per_clip = {
        "fvd (I3D features)": lambda: i3d_features(i3d, [video], resolution=fvd_resolution),
        "fid (Inception features)": lambda: inception_features(inception, video),
        "dynamic_degree": lambda: dynamic_degree_video(video, flow),
        "motion_smoothness": lambda: motion_smoothness_video(video, flow),
        "subject_consistency": lambda: dino.consistency(video),
        "background_consistency": lambda: clip.consistency(video),
    }
    mode = "tiny networks" if args.quick else "full-size networks"
    print(f"{mode}, random weights, clip {args.frames} x {args.size[0]} x {args.size[1]}, {args.threads} threads")
    total = 0.0
    for name, fn in per_clip.items():
        fn()  # warm-up
        seconds, _ = timed(fn, args.repeats)
        total += seconds
        print(f"  {name:<26} {seconds:8.3f} s/clip")
    print(f"  {'all six':<26} {total:8.3f} s/clip")
    rng = np.random.default_rng(0)
    # scipy's sqrtm dominates and grows with the dimension (2048-d: minutes on 2 cores); --quick skips it
    for dim, count in ((400, 500),) if args.quick else ((400, 500), (2048, 5000)):
        features = rng.normal(size=(count, dim))
        seconds, _ = timed(lambda: frechet_distance_of_features(features, features + 0.1), 1)
        print(f"  {f'frechet {dim}-d, {count} vs {count}':<26} {seconds:8.3f} s/evaluation")


if __name__ == "__main__":
    main()
