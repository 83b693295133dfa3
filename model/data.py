"""Training samples from one or more label stores, mixed by weight.

A sample is one accepted clip: its RGB frames (decoded from the clip's source video at the
exact `frame_index` the labels were made on, resized and cropped like the labelling
decode), its geometry-motion video (`model.gm_video`), and its DPT targets on the S key
frames (every `stride`-th frame; LABELS.md). Which supervision exists is said by flags:

- has_gm: the clip has valid depth (the gm video needs a depth range);
- has_depth / has_points: some depth is valid;
- has_camera: K and c2w are finite with positive focal lengths;
- has_mask / has_scene_flow: the arrays are present and finite;
- metric_scale: the clip attribute of the same name;
- provenance: each label part's provenance, exact, derived, estimated or absent (`provenance`),
  so training can weight supervision by it (`model.losses.ProvenanceWeights`). A sample holds
  a dict; `collate_samples` turns the batch's into (B, len(PROVENANCE_PARTS)) integer codes
  (`model.losses.provenance_codes`), which `targets_from_batch` hands to the DPT losses.

RGB comes from the clip's source: its video, or, for clips imported from a data set, the set's
image files (`source.frames`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from model.gm_video import encode_gm_video
from model.losses import DPTTargets, provenance_codes
from storage import LabelStore
from storage.schema import PROVENANCE_PARTS

__all__ = [
    "FramesLoader",
    "LabelClipDataset",
    "MixtureSampler",
    "collate_samples",
    "provenance",
    "source_frames",
    "targets_from_batch",
]

FramesLoader = Callable[[str, Mapping[str, Any], np.ndarray, tuple[int, int]], np.ndarray]
_FLAGS = ("metric_scale", "has_gm", "has_depth", "has_points", "has_camera", "has_mask", "has_scene_flow")
_TARGET_FIELDS = ("depth", "depth_valid", "points", "c2w", "K", "dynamic_mask", "scene_flow", "scene_flow_valid")
# what a sample reads from the store: every other field (key flow, uncertainty, timestamps) costs
# a read per array and is never used; the flow only builds the gm video
_READ_FIELDS = ("frame_index", *_TARGET_FIELDS)
_GM_FIELDS = ("flow", "flow_valid")


def source_frames(clip_id: str, attrs: Mapping[str, Any], frame_index: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 source frames at `frame_index`, resize-cropped to `size`.

    Labelled clips read their source video (`source.uri`); imported clips (`worldreel import`)
    read the set's image files, `source.frames[i]` being the image of set frame
    `source.frame_numbers[i]`.
    """
    from pipelines.decode import ResizeCrop

    source = attrs["source"]
    if source.get("frames"):
        frames = _image_frames(clip_id, source, frame_index)
    else:
        import decord

        reader = decord.VideoReader(str(source["uri"]), num_threads=1)
        frames = reader.get_batch([int(i) for i in frame_index]).asnumpy()
    transform = ResizeCrop.from_sizes(frames.shape[1], frames.shape[2], *size)
    return transform.apply_frames(frames)


def _image_frames(clip_id: str, source: Mapping[str, Any], frame_index: np.ndarray) -> np.ndarray:
    import cv2

    paths = dict(zip((int(n) for n in source["frame_numbers"]), source["frames"], strict=True))
    images = []
    for number in (int(i) for i in frame_index):
        if number not in paths:
            raise ValueError(f"clip {clip_id}: no image of set frame {number} in its source frames")
        image = cv2.imread(str(paths[number]), cv2.IMREAD_COLOR)  # drops alpha; 8-bit BGR
        if image is None:
            raise ValueError(f"clip {clip_id}: cannot read image {paths[number]}")
        images.append(image[..., ::-1])
    if len({im.shape for im in images}) > 1:
        raise ValueError(f"clip {clip_id}: source images differ in size")
    return np.ascontiguousarray(np.stack(images))


def provenance(attrs: Mapping[str, Any]) -> dict[str, str]:
    """Each label part's provenance (`storage.schema.PROVENANCE_PARTS`): the clip's `provenance`
    attribute (imported clips); exact for synthetic ground truth; estimated for labelled clips.
    A part the attribute leaves out (the schema allows it) takes the rule for clips without one."""
    exact = attrs.get("labelers", {}).get("camera", {}).get("name") == "synthetic-ground-truth"
    parts = {part: "exact" if exact else "estimated" for part in PROVENANCE_PARTS}
    parts.update({str(k): str(v) for k, v in (attrs.get("provenance") or {}).items()})
    return parts


@dataclass(frozen=True)
class _Entry:
    store: int
    clip_id: str


class LabelClipDataset(Dataset):
    """Accepted clips of several stores. Index i addresses the i-th clip of the concatenation.

    Args:
        stores: paths of label stores (`storage.LabelStore`).
        frames_loader: returns a clip's RGB frames; default `source_frames`.
        num_frames: use only the first `num_frames` label frames (must be 1 + k * stride).
        load_videos: False when the RGB and gm latents come from a latent cache: then `rgb`
            holds only frame 0 (1, 3, H, W) for the image condition and `gm` is not built
            (zeros (1, 3, H, W)); labels and flags are unchanged.
    """

    def __init__(
        self,
        stores: Sequence[str | Path],
        frames_loader: FramesLoader | None = None,
        num_frames: int | None = None,
        load_videos: bool = True,
    ) -> None:
        if not stores:
            raise ValueError("need at least one label store")
        self.stores = [LabelStore.open(p) for p in stores]
        self.frames_loader = frames_loader or source_frames
        self.num_frames = num_frames
        self.load_videos = load_videos
        self.entries = [_Entry(i, c) for i, s in enumerate(self.stores) for c in s.clip_ids(status="accepted")]
        self.store_sizes = [sum(e.store == i for e in self.entries) for i in range(len(self.stores))]
        if not self.entries:
            raise ValueError(f"no accepted clips in {list(map(str, stores))}")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        fields = _READ_FIELDS + _GM_FIELDS if self.load_videos else _READ_FIELDS
        labels = self.stores[entry.store].read(entry.clip_id, fields)
        attrs = labels.attrs
        stride = int(attrs["stride"])
        T = labels["depth"].shape[0] if self.num_frames is None else self.num_frames
        if (T - 1) % stride or T > labels["depth"].shape[0]:
            raise ValueError(f"num_frames {T} must be 1 + k * {stride} and at most {labels['depth'].shape[0]}")
        S = (T - 1) // stride + 1
        H, W = labels["depth"].shape[1:]

        def arr(name: str, n: int) -> torch.Tensor:
            return torch.from_numpy(np.asarray(labels[name][:n]))

        depth = arr("depth", T).float()
        depth_valid = arr("depth_valid", T).bool()

        n_rgb = T if self.load_videos else 1
        frames = self.frames_loader(entry.clip_id, attrs, np.asarray(labels["frame_index"][:n_rgb]), (H, W))
        if frames.shape != (n_rgb, H, W, 3):
            raise ValueError(f"frames loader gave {frames.shape}, expected {(n_rgb, H, W, 3)}")
        rgb = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)

        has_gm = bool(depth_valid.any())
        if has_gm and self.load_videos:
            gm, norm = encode_gm_video(depth, depth_valid, arr("flow", T - 1).float(), arr("flow_valid", T - 1).bool())
            gm_norm = torch.tensor([norm.depth_min, norm.depth_max, norm.flow_max])
        else:
            gm, gm_norm = torch.zeros(n_rgb, 3, H, W), torch.zeros(3)

        key = slice(0, T, stride)
        K, c2w = arr("K", T)[key].float(), arr("c2w", T)[key].float()
        scene_flow = arr("scene_flow", S - 1).float()
        dynamic = arr("dynamic_mask", S).bool()
        sample = {
            "clip_id": entry.clip_id,
            "caption": str(attrs["source"].get("caption", "")),
            "rgb": rgb,
            "gm": gm,
            "gm_norm": gm_norm,
            "depth": depth[key],
            "depth_valid": depth_valid[key],
            "points": arr("points", S).float(),
            "c2w": c2w,
            "K": K,
            "dynamic_mask": dynamic,
            "scene_flow": scene_flow,
            "scene_flow_valid": arr("scene_flow_valid", S - 1).bool(),
            "metric_scale": bool(attrs.get("metric_scale", False)),
            "has_gm": has_gm,
            "has_depth": bool(depth_valid[key].any()),
            "has_points": bool(depth_valid[key].any()),
            "has_camera": bool(
                torch.isfinite(K).all() and torch.isfinite(c2w).all() and (K[:, 0, 0] > 0).all() and (K[:, 1, 1] > 0).all()
            ),
            "has_mask": True,
            "has_scene_flow": bool(torch.isfinite(scene_flow).all()),
            "provenance": provenance(attrs),
        }
        return sample


class MixtureSampler(Sampler[int]):
    """Endless sampling: pick a store with probability proportional to its weight, then a clip
    uniformly within it. Deterministic given the seed; see `fast_forward` for resuming."""

    def __init__(self, dataset: LabelClipDataset, weights: Sequence[float] | None = None, seed: int = 0) -> None:
        n = len(dataset.stores)
        weights = [1.0] * n if weights is None else [float(w) for w in weights]
        if len(weights) != n or any(w < 0 or not math.isfinite(w) for w in weights):
            raise ValueError(f"need {n} finite non-negative weights, got {weights}")
        usable = [w if size else 0.0 for w, size in zip(weights, dataset.store_sizes, strict=True)]
        if sum(usable) <= 0:
            raise ValueError("no store with clips has a positive weight")
        self.probs = [w / sum(usable) for w in usable]
        self.offsets = np.cumsum([0, *dataset.store_sizes[:-1]]).tolist()
        self.sizes = dataset.store_sizes
        self.seed = seed
        self.rng = random.Random(seed)
        self.drawn = 0

    def _draw(self) -> int:
        store = self.rng.choices(range(len(self.probs)), weights=self.probs)[0]
        self.drawn += 1
        return self.offsets[store] + self.rng.randrange(self.sizes[store])

    def __iter__(self) -> Iterator[int]:
        while True:
            yield self._draw()

    def __len__(self) -> int:
        return 2**62

    def fast_forward(self, consumed: int) -> None:
        """Restart from the seed and skip `consumed` draws: resumes exactly where a run that
        consumed that many samples stopped, whatever its data loader had prefetched."""
        self.rng = random.Random(self.seed)
        self.drawn = 0
        for _ in range(consumed):
            self._draw()


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack tensors, turn flags into (B,) bool tensors and provenance dicts into (B, P) int64
    codes (`model.losses.provenance_codes`), keep strings as lists."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "provenance":
            out[key] = provenance_codes(values)
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], bool):
            out[key] = torch.tensor(values, dtype=torch.bool)
        else:
            out[key] = list(values)
    return out


def targets_from_batch(batch: Mapping[str, Any], device: torch.device | str = "cpu") -> DPTTargets:
    """The DPT targets, flags and provenance codes (all exact when the batch has none) of a collated batch."""
    fields = {k: batch[k] for k in _TARGET_FIELDS}
    flags = {k: batch[k] for k in _FLAGS if k != "has_gm"}
    return DPTTargets(**fields, **flags, provenance=batch.get("provenance")).to(device)
