"""A manifest of small synthetic clips plus broken rows, for end-to-end labeling tests."""

from __future__ import annotations

import csv
from pathlib import Path

from pipelines.synthetic import SceneConfig
from pipelines.synthetic_set import MANIFEST_COLUMNS, write_synthetic_set

SIZE = (96, 144)
FRAMES = 9


def good_configs(num: int, seed: int = 0) -> list[SceneConfig]:
    """Clips a weight-free labeler can label: the camera translates enough in few frames."""
    return [
        SceneConfig(seed=seed + i, height=SIZE[0], width=SIZE[1], num_frames=FRAMES, camera="orbit", camera_speed=3.0,
                    num_moving=1)
        for i in range(num)
    ]


def write_manifest(root: Path, num_good: int = 2, with_bad: bool = True) -> tuple[Path, list[str], dict[str, str]]:
    """Videos and manifest.csv under `root`; returns the path, good clip ids and bad clip ids -> reason code."""
    rows = write_synthetic_set(root, good_configs(num_good))
    good = [r.clip_id for r in rows]
    bad = {}
    table = [r.cells() for r in rows]
    if with_bad:
        no_k = ["", "", "", ""]
        table.append(["missing-video", "videos/nope.mp4", 0.0, 1.0, "missing", *no_k])
        bad["missing-video"] = "missing_file"
        (root / "videos" / "garbage.mp4").write_bytes(b"not a video at all" * 100)
        table.append(["garbage-video", "videos/garbage.mp4", 0.0, 1.0, "corrupt", *no_k])
        bad["garbage-video"] = "unreadable"
        table.append(["short-clip", rows[0].video_path, 0.0, 0.5, "too short for 9 frames at 8 fps", *no_k])
        bad["short-clip"] = "too_short"
        table.append(["bad-row", rows[0].video_path, "not-a-number", 1.0, "malformed", *no_k])
    path = root / "manifest.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(table)
    return path, good, bad
