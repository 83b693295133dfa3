"""Write Depth Anything checkpoint folders with random weights (for the neural depth tests and benchmark).

A folder holds what a real checkpoint holds (`config.json`, weights, `preprocessor_config.json`),
so `labelers.neural_depth.NeuralDepth` loads it through the same `transformers` path. Weights do
not change the work, so timings with random weights hold for the released model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

# (layers, hidden size, heads, MLP size, backbone out_indices, neck sizes, reassemble factors, fusion, head)
_ARCHITECTURES = {
    "tiny": (2, 32, 2, 64, [1, 2], [16, 32], [2, 1], 16, 8),
    # Depth-Anything-V2-Small: ViT-S/14 backbone, 24.8 M parameters
    "small": (12, 384, 6, 1536, [3, 6, 9, 12], [48, 96, 192, 384], [4, 2, 1, 0.5], 64, 32),
}


def save_depth_anything(
    folder: Path,
    architecture: str = "tiny",
    depth_estimation_type: str = "relative",
    processor_size: tuple[int, int] = (56, 84),
) -> Path:
    """A random Depth Anything of `architecture` ("tiny" or "small") and its processor, saved to `folder`.

    Args:
        processor_size: (height, width) the processor resizes to, keeping the aspect ratio and a
            multiple of 14 (Depth-Anything-V2 uses 518x518).
    """
    layers, hidden, heads, mlp, out_indices, neck, factors, fusion, head = _ARCHITECTURES[architecture]
    backbone = Dinov2Config(
        image_size=518 if architecture == "small" else 28,
        patch_size=14,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        out_indices=out_indices,
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden,
        neck_hidden_sizes=neck,
        reassemble_factors=factors,
        fusion_hidden_size=fusion,
        head_hidden_size=head,
        depth_estimation_type=depth_estimation_type,
        max_depth=10,
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    height, width = processor_size
    DPTImageProcessor(
        size={"height": height, "width": width}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3
    ).save_pretrained(folder)
    return folder
