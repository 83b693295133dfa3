"""WorldReel losses: diffusion (RGB + geometry-motion), DPT multi-task, stage-2 regularisers.

Total objective (paper): L = L_diff + lambda_dpt * L_dpt + lambda_reg * L_reg, with
L_diff = L_diff^rgb + L_diff^gm, L_dpt = L_depth + L_points + L_cam + L_mask + lambda_flow * L_flow
and L_reg = L_reg^depth (static background) + L_reg^flow (foreground smoothness).

Diffusion: v-prediction exactly as CogVideoX: `CogVideoXDDIMScheduler` (zero-terminal-SNR,
snr_shift_scale 1.0 for 5B) adds noise, the target is `get_velocity(x0, noise, t)` and the
loss is the per-sample MSE to it. diffusers' CogVideoX script writes the same thing as
(1 / (1 - abar_t)) * |x0_hat - x0|^2 (a test shows they agree).

Scale. Depth, point maps, camera translation and scene flow are compared after dividing by
n = the sample's mean valid ground-truth depth (detached), so every clip contributes at the
same relative scale. Clips whose labels have an unknown scale (`metric_scale` False) first
have the prediction aligned by s = median(gt_depth / pred_depth) over valid pixels
(detached): the network is never penalised for a scale the labels do not fix; metric clips
use s = 1 and so teach absolute scale. Those four terms need ground-truth depth to set n.

Supervision flags. Every sample carries `has_*` flags; a term is averaged over the samples
whose flag is set (and the valid pixels inside them) and is exactly 0, with no gradient, when
none are. Absent labels may hold anything (NaN included): they are never read into a loss.

Provenance. A sample may also carry each label part's provenance (`DPTTargets.provenance`;
exact, derived, estimated or absent, `storage.schema`). `ProvenanceWeights` turns it into a
per-sample weight of each term, from the parts the term reads (`TERM_PARTS`; a term reading
several parts takes the smallest weight). Weight 0 (always for absent parts) drops the sample
from the term exactly like an unset flag; a positive weight multiplies the sample's
contribution, so it acts at batch size 1 too. Weights of 1 leave every term bit-identical.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import CogVideoXDDIMScheduler

from model.camera import decode_camera, encode_camera
from model.dpt_head import DPTOutput
from storage.schema import PROVENANCE_PARTS, PROVENANCES

__all__ = [
    "DPTTargets",
    "GM_PARTS",
    "LossWeights",
    "ProvenanceWeights",
    "TERM_PARTS",
    "cogvideox_scheduler",
    "depth_reprojection_loss",
    "diffusion_loss",
    "dpt_losses",
    "flow_smoothness_loss",
    "load_scheduler",
    "noisy_latents_and_target",
    "provenance_codes",
    "sample_timesteps",
    "stage2_regularisers",
]


# the label parts (`storage.schema.PROVENANCE_PARTS`) each DPT term reads: points are
# depth lifted by the cameras; scene flow splits pixels into moving (target the label) and
# static (target 0) by the dynamic mask
TERM_PARTS: dict[str, tuple[str, ...]] = {
    "depth": ("depth",),
    "points": ("depth", "camera"),
    "camera": ("camera",),
    "mask": ("dynamic_mask",),
    "flow": ("scene_flow", "dynamic_mask"),
}
GM_PARTS = ("depth", "flow")  # the geometry-motion video is built from these (`model.gm_video`)


@dataclass
class ProvenanceWeights:
    """Supervision weight of a label part by its provenance; absent parts always weigh 0.

    Each weight lies in [0, 1]: the share of full supervision a label of that provenance gets.
    """

    exact: float = 1.0
    derived: float = 1.0
    estimated: float = 1.0

    def __post_init__(self) -> None:
        for name in ("exact", "derived", "estimated"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"provenance weight {name} must be a number in [0, 1], got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"provenance weight {name} must be in [0, 1], got {value:g}")

    def table(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(len(PROVENANCES),) float32 weight of each provenance code, absent 0."""
        by_name = {"exact": self.exact, "derived": self.derived, "estimated": self.estimated, "absent": 0.0}
        return torch.tensor([float(by_name[p]) for p in PROVENANCES], dtype=torch.float32, device=device)

    def sample_weights(self, codes: torch.Tensor, parts: Sequence[str]) -> torch.Tensor:
        """(B,) float32: the smallest weight over `parts` of each sample.

        Args:
            codes: (B, len(PROVENANCE_PARTS)) integer provenance codes (`provenance_codes`).
        """
        if codes.ndim != 2 or codes.shape[1] != len(PROVENANCE_PARTS):
            raise ValueError(f"provenance codes must be (B, {len(PROVENANCE_PARTS)}), got {tuple(codes.shape)}")
        columns = [PROVENANCE_PARTS.index(part) for part in parts]
        per_part = self.table(codes.device)[codes[:, columns].long()]
        return per_part.min(dim=1).values


def provenance_codes(provenances: Sequence[Mapping[str, str]]) -> torch.Tensor:
    """(B, len(PROVENANCE_PARTS)) int64 index into PROVENANCES of each sample's part, in PROVENANCE_PARTS order."""
    rows = []
    for i, provenance in enumerate(provenances):
        missing = [part for part in PROVENANCE_PARTS if part not in provenance]
        if missing:
            raise ValueError(f"sample {i}: provenance lacks part(s) {missing}")
        bad = {part: provenance[part] for part in PROVENANCE_PARTS if provenance[part] not in PROVENANCES}
        if bad:
            raise ValueError(f"sample {i}: provenance {bad} is not one of {PROVENANCES}")
        rows.append([PROVENANCES.index(provenance[part]) for part in PROVENANCE_PARTS])
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), len(PROVENANCE_PARTS))


@dataclass
class LossWeights:
    """Loss weights of the paper plus the knobs it leaves open (documented defaults)."""

    lambda_flow: float = 5.0
    lambda_dpt: float = 0.1
    lambda_reg: float = 0.5
    flow_background_weight: float = 0.1  # static pixels' weight in L_flow (target 0); dynamic = 1
    camera_huber_delta: float = 0.1
    reprojection_max_gap: int | None = None  # frame pairs (i, j) with |i - j| <= gap; None: all
    provenance: ProvenanceWeights = field(default_factory=ProvenanceWeights)  # per label part, see TERM_PARTS

    def to_dict(self) -> dict:
        return asdict(self)


# ============================================================================ diffusion
def cogvideox_scheduler(snr_shift_scale: float = 1.0) -> CogVideoXDDIMScheduler:
    """The training scheduler of CogVideoX-5B(-I2V): v-prediction, zero terminal SNR, trailing spacing."""
    return CogVideoXDDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=snr_shift_scale,
    )


def load_scheduler(local_path: str | os.PathLike, subfolder: str | None = "scheduler") -> CogVideoXDDIMScheduler:
    """The base model's own scheduler config from a local diffusers folder (never the hub)."""
    folder = Path(local_path) / subfolder if subfolder else Path(local_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a local directory")
    scheduler = CogVideoXDDIMScheduler.from_pretrained(folder, local_files_only=True)
    if scheduler.config.prediction_type != "v_prediction":
        raise ValueError(f"expected a v-prediction scheduler, got {scheduler.config.prediction_type}")
    return scheduler


def sample_timesteps(
    scheduler: CogVideoXDDIMScheduler, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform integer timesteps in [0, num_train_timesteps), as CogVideoX trains."""
    n = scheduler.config.num_train_timesteps
    return torch.randint(0, n, (batch,), generator=generator, device="cpu").to(device)


def noisy_latents_and_target(
    scheduler: CogVideoXDDIMScheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and the v target sqrt(abar) eps - sqrt(1 - abar) x0."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} differ")
    return scheduler.add_noise(x0, noise, timesteps), scheduler.get_velocity(x0, noise, timesteps)


def diffusion_loss(
    v_pred: torch.Tensor,
    v_target: torch.Tensor,
    keep: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE between predicted and target v, per sample over all other dims, averaged over kept samples.

    Args:
        v_pred, v_target: (B, ...) e.g. (B, F, C, h, w).
        keep: optional (B,) bool, e.g. `has_gm` for the geometry-motion latents.
        sample_weight: optional (B,) >= 0 factor per sample (e.g. a provenance weight); samples of
            weight 0 are dropped like unkept ones, the others' MSE is multiplied by it.
    """
    if v_pred.shape != v_target.shape:
        raise ValueError(f"v_pred {tuple(v_pred.shape)} and v_target {tuple(v_target.shape)} differ")
    if sample_weight is not None:
        sample_weight = sample_weight.to(v_pred.device).float()
        positive = sample_weight > 0
        keep = positive if keep is None else keep.to(v_pred.device).bool() & positive
    if keep is not None:  # select first: dropped samples (e.g. no gm latents) may hold anything
        keep = keep.to(v_pred.device).bool()
        if not keep.any():
            return v_pred.new_zeros((), dtype=torch.float32)
        v_pred, v_target = v_pred[keep], v_target[keep]
    mse = (v_pred.float() - v_target.float()).square().flatten(1).mean(dim=1)
    return mse.mean() if sample_weight is None else (mse * sample_weight[keep]).mean()


# ============================================================================ DPT
@dataclass
class DPTTargets:
    """Labels on the S key frames (LABELS.md names), batched, plus per-sample flags.

    depth, depth_valid: (B, S, H, W); points: (B, S, H, W, 3); c2w: (B, S, 4, 4);
    K: (B, S, 3, 3); dynamic_mask: (B, S, H, W); scene_flow: (B, S-1, H, W, 3);
    scene_flow_valid: (B, S-1, H, W). Flags: (B,) bool each. provenance:
    (B, len(PROVENANCE_PARTS)) integer codes (`provenance_codes`); not given, every part is exact.
    """

    depth: torch.Tensor
    depth_valid: torch.Tensor
    points: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    dynamic_mask: torch.Tensor
    scene_flow: torch.Tensor
    scene_flow_valid: torch.Tensor
    metric_scale: torch.Tensor
    has_depth: torch.Tensor
    has_points: torch.Tensor
    has_camera: torch.Tensor
    has_mask: torch.Tensor
    has_scene_flow: torch.Tensor
    provenance: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.provenance is None:
            shape = (self.has_depth.shape[0], len(PROVENANCE_PARTS))
            exact = PROVENANCES.index("exact")
            self.provenance = torch.full(shape, exact, dtype=torch.int64, device=self.has_depth.device)

    def to(self, device: torch.device | str) -> DPTTargets:
        return DPTTargets(**{k: v.to(device) for k, v in self.__dict__.items()})

    def term_weights(self, weights: ProvenanceWeights) -> dict[str, torch.Tensor]:
        """(B,) float32 provenance weight of each DPT term (`TERM_PARTS`)."""
        return {term: weights.sample_weights(self.provenance, parts) for term, parts in TERM_PARTS.items()}


def _sanitize(targets: DPTTargets) -> DPTTargets:
    """Replace absent or non-finite labels by harmless finite values.

    Losses never select them, but a NaN on an unselected branch still turns its zero
    gradient into NaN (0 * NaN), so they must not even enter the arithmetic.
    """
    flags = {"depth": targets.has_depth, "points": targets.has_points, "camera": targets.has_camera}
    flags.update(mask=targets.has_mask, flow=targets.has_scene_flow)
    per = {k: v.bool()[:, None] for k, v in flags.items()}  # (B, 1) for broadcasting over S
    depth_valid = targets.depth_valid.bool() & torch.isfinite(targets.depth) & (targets.depth > 0)
    depth_valid = depth_valid & per["depth"][..., None, None]
    camera_ok = per["camera"] & torch.isfinite(targets.c2w).flatten(2).all(-1) & torch.isfinite(targets.K).flatten(2).all(-1)
    camera_ok = camera_ok & (targets.K[..., 0, 0] > 0) & (targets.K[..., 1, 1] > 0)
    eye4 = torch.eye(4, dtype=targets.c2w.dtype, device=targets.c2w.device).expand_as(targets.c2w)
    eye3 = torch.eye(3, dtype=targets.K.dtype, device=targets.K.device).expand_as(targets.K)
    flow_valid = targets.scene_flow_valid.bool() & torch.isfinite(targets.scene_flow).all(-1) & per["flow"][..., None, None]
    return DPTTargets(
        depth=torch.where(depth_valid, targets.depth, torch.ones_like(targets.depth)),
        depth_valid=depth_valid,
        points=torch.where(
            per["points"][..., None, None, None], torch.nan_to_num(targets.points), torch.zeros_like(targets.points)
        ),
        c2w=torch.where(camera_ok[..., None, None], targets.c2w, eye4),
        K=torch.where(camera_ok[..., None, None], targets.K, eye3),
        dynamic_mask=torch.where(per["mask"][..., None, None], torch.nan_to_num(targets.dynamic_mask.float()).clamp(0, 1), 0.0),
        scene_flow=torch.where(flow_valid[..., None], targets.scene_flow, torch.zeros_like(targets.scene_flow)),
        scene_flow_valid=flow_valid,
        metric_scale=targets.metric_scale.bool(),
        has_depth=targets.has_depth.bool(),
        has_points=targets.has_points.bool(),
        has_camera=targets.has_camera.bool(),
        has_mask=targets.has_mask.bool(),
        has_scene_flow=targets.has_scene_flow.bool(),
        provenance=targets.provenance,
    )


def _weighted_mean(err: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample sum(w * err) / sum(w) over all non-batch dims; 0 where the weights are all 0."""
    err = torch.where(weight > 0, err, torch.zeros_like(err))  # absent labels may be NaN
    num = (err * weight).flatten(1).sum(dim=1)
    den = weight.flatten(1).sum(dim=1)
    return num / den.clamp_min(1e-12)


def _depth_scale(pred_depth: torch.Tensor, targets: DPTTargets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (normaliser n, alignment s, depth-ok flag), all detached, shapes (B,)."""
    valid = targets.depth_valid.bool() & targets.has_depth.bool()[:, None, None, None]
    gt = torch.where(valid, targets.depth.float(), torch.ones_like(targets.depth, dtype=torch.float32))
    ok = valid.flatten(1).any(dim=1)
    n = _weighted_mean(gt, valid.float()).detach()
    ratio = (gt / pred_depth.detach().float().clamp_min(1e-6)).flatten(1)
    ratio = torch.where(valid.flatten(1), ratio, torch.full_like(ratio, float("nan")))
    s = torch.nan_to_num(ratio.nanmedian(dim=1).values, nan=1.0)
    s = torch.where(targets.metric_scale.bool(), torch.ones_like(s), s)
    return torch.where(ok, n, torch.ones_like(n)), s, ok


def dpt_losses(
    pred: DPTOutput,
    targets: DPTTargets,
    weights: LossWeights | None = None,
    sample_weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """L1 depth and points on valid pixels, Huber camera, BCE mask, dynamic-reweighted scene flow.

    Args:
        sample_weight: optional (B,) factor per sample (e.g. to down-weight very noisy timesteps).

    Each term's samples are further weighted by the provenance of the label parts it reads
    (`targets.provenance`, `weights.provenance`, `TERM_PARTS`): weight 0 drops a sample from
    the term like an unset flag; the term is sum(w_prov * sample_weight * loss) over the kept
    samples divided by their number.

    Returns:
        dict with "depth", "points", "camera", "mask", "flow" and "dpt" (their weighted sum).
    """
    weights = weights or LossWeights()
    B, _, H, W = pred.depth.shape
    targets = _sanitize(targets)
    sw = torch.ones(B, device=pred.depth.device) if sample_weight is None else sample_weight.float()
    n, s, depth_ok = _depth_scale(pred.depth, targets)
    scale = (s / n)[:, None, None, None]
    gt_scale = (1.0 / n)[:, None, None, None]
    valid = targets.depth_valid.bool().float()
    term_w = {k: v.to(pred.depth.device) for k, v in targets.term_weights(weights.provenance).items()}

    def reduce(per_sample: torch.Tensor, keep: torch.Tensor, term: str) -> torch.Tensor:
        # a weight of exactly 1 leaves the product, hence the term, bit-identical
        keep = keep.bool() & (term_w[term] > 0)
        if not keep.any():
            return per_sample.new_zeros(())
        return (per_sample * sw * term_w[term])[keep].sum() / keep.float().sum()

    depth_err = (pred.depth.float() * scale - targets.depth.float() * gt_scale).abs()
    losses = {"depth": reduce(_weighted_mean(depth_err, valid), targets.has_depth & depth_ok, "depth")}

    pts_err = (pred.points.float() * scale[..., None] - targets.points.float() * gt_scale[..., None]).abs().mean(-1)
    losses["points"] = reduce(_weighted_mean(pts_err, valid), targets.has_points & depth_ok, "points")

    gt_cam = encode_camera(targets.c2w.float(), targets.K.float(), H, W)
    cam_pred = pred.camera.float()

    def huber(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(a, b, reduction="none", beta=weights.camera_huber_delta)

    t_err = huber(cam_pred[..., :3] * (s / n)[:, None, None], gt_cam[..., :3] / n[:, None, None]).sum(-1)
    t_err = torch.where(depth_ok[:, None], t_err, torch.zeros_like(t_err))  # translation scale needs depth
    q_err = torch.minimum(
        huber(cam_pred[..., 3:7], gt_cam[..., 3:7]).sum(-1), huber(cam_pred[..., 3:7], -gt_cam[..., 3:7]).sum(-1)
    )
    fov_err = huber(cam_pred[..., 7:], gt_cam[..., 7:]).sum(-1)
    losses["camera"] = reduce(((t_err + q_err + fov_err) / 9.0).mean(dim=1), targets.has_camera, "camera")

    bce = F.binary_cross_entropy_with_logits(pred.mask_logits.float(), targets.dynamic_mask.float(), reduction="none")
    losses["mask"] = reduce(bce.flatten(1).mean(dim=1), targets.has_mask, "mask")

    dyn = targets.dynamic_mask[:, :-1].bool()
    fg = (dyn & targets.scene_flow_valid.bool()).float()
    bg = (~dyn & targets.depth_valid[:, :-1].bool()).float()
    flow_w = fg + weights.flow_background_weight * bg
    gt_flow = targets.scene_flow.float() * fg[..., None]
    flow_err = (pred.scene_flow.float() * scale[..., None] - gt_flow * gt_scale[..., None]).abs().mean(-1)
    flow_keep = targets.has_scene_flow & targets.has_mask & depth_ok
    losses["flow"] = reduce(_weighted_mean(flow_err, flow_w), flow_keep, "flow")

    losses["dpt"] = losses["depth"] + losses["points"] + losses["camera"] + losses["mask"] + weights.lambda_flow * losses["flow"]
    return losses


# ============================================================================ stage-2 regularisers
def _pixel_rays(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """K (..., 3, 3) -> rays K^-1 (u, v, 1) of every pixel centre, (..., H, W, 3)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=K.dtype, device=K.device), torch.arange(width, dtype=K.dtype, device=K.device), indexing="ij"
    )
    uv1 = torch.stack([u, v, torch.ones_like(u)], dim=-1)
    return torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(K), uv1)


def _reprojection_pairs(S: int, max_gap: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gaps = range(1, S if max_gap is None else min(max_gap, S - 1) + 1)
    pairs = []
    for g in gaps:
        i = torch.arange(0, S - g)
        pairs += [(i, i + g), (i + g, i)]
    return pairs


def depth_reprojection_loss(
    depth: torch.Tensor,
    c2w: torch.Tensor,
    K: torch.Tensor,
    static_weight: torch.Tensor,
    max_gap: int | None = None,
) -> torch.Tensor:
    """Static-background depth consistency: sum_{i != j} |M_bg ⊙ (D_j - Proj(D_i, T_{i->j}))|.

    Every pixel u of frame i is lifted with D_i and K_i, moved by T_{i->j} = c2w_j^-1 c2w_i
    and projected with K_j to q with depth z; the residual z - D_j(q) is weighted by
    M_bg_i(u) * M_bg_j(q), the second factor removing background points hidden behind a
    moving object in frame j. D_j(q) is a bilinear sample (pixel centres at integer
    coordinates) normalised by the static weights, so moving pixels never blend into it. Points behind camera j or
    projecting outside it are dropped. Residuals are divided by the sample's mean depth
    (detached) so the term is scale-free.

    Args:
        depth: (B, S, H, W) > 0 (predicted). c2w: (B, S, 4, 4); K: (B, S, 3, 3).
        static_weight: (B, S, H, W) in [0, 1], 1 on static background.
        max_gap: only pairs with |i - j| <= max_gap (None: all pairs).

    Returns:
        scalar: weighted mean residual over all pairs and samples.
    """
    B, S, H, W = depth.shape
    if c2w.shape != (B, S, 4, 4) or K.shape != (B, S, 3, 3) or static_weight.shape != depth.shape:
        raise ValueError("depth (B,S,H,W), c2w (B,S,4,4), K (B,S,3,3), static_weight (B,S,H,W) must agree")
    depth = depth.float()
    c2w, K, static_weight = c2w.float(), K.float(), static_weight.float()
    scale = depth.detach().flatten(1).mean(dim=1).clamp_min(1e-6)[:, None, None, None]
    points_cam = _pixel_rays(K, H, W) * depth[..., None]  # (B, S, H, W, 3)
    num = depth.new_zeros(())
    den = depth.new_zeros(())
    for i, j in _reprojection_pairs(S, max_gap):
        rel = torch.linalg.inv(c2w[:, j]) @ c2w[:, i]  # (B, n, 4, 4): camera i -> camera j
        p = torch.einsum("bnij,bnhwj->bnhwi", rel[..., :3, :3], points_cam[:, i]) + rel[..., None, None, :3, 3]
        z = p[..., 2]
        proj = torch.einsum("bnij,bnhwj->bnhwi", K[:, j], p)
        uv = proj[..., :2] / z.clamp_min(1e-6)[..., None]
        front = z > 1e-6
        grid = torch.stack([2 * uv[..., 0] / (W - 1) - 1, 2 * uv[..., 1] / (H - 1) - 1], dim=-1)
        inside = front & (grid.abs() <= 1).all(dim=-1)
        grid = torch.where(inside[..., None], grid, torch.zeros_like(grid))
        n = i.numel()
        # normalised bilinear sampling: only static neighbours contribute to D_j(q)
        target = torch.stack([depth[:, j] * static_weight[:, j], static_weight[:, j]], dim=2).flatten(0, 1)
        sampled = F.grid_sample(target, grid.flatten(0, 1), mode="bilinear", align_corners=True).reshape(B, n, 2, H, W)
        w = static_weight[:, i] * sampled[:, :, 1] * inside.float()
        err = (z - sampled[:, :, 0] / sampled[:, :, 1].clamp_min(1e-6)).abs() / scale
        num = num + (torch.where(w > 0, err, torch.zeros_like(err)) * w).sum()
        den = den + w.sum()
    return num / den.clamp_min(1e-12) if den > 0 else num * 0.0


def flow_smoothness_loss(
    scene_flow: torch.Tensor, foreground_weight: torch.Tensor, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Foreground scene-flow smoothness: mean ||∇x F3d|| + mean ||∇y F3d|| over foreground pixel pairs.

    A finite difference between neighbours u, u' counts with weight M_fg(u) * M_fg(u'), so flow
    jumps at object boundaries are not penalised. Norms are Euclidean per pixel.

    Args:
        scene_flow: (B, K, H, W, 3). foreground_weight: (B, K, H, W) in [0, 1].
        scale: optional (B,) divisor (the sample's depth scale) to make the term scale-free.
    """
    if scene_flow.shape[:-1] != foreground_weight.shape or scene_flow.shape[-1] != 3:
        raise ValueError(f"scene_flow {tuple(scene_flow.shape)} and weight {tuple(foreground_weight.shape)} disagree")
    flow = scene_flow.float()
    if scale is not None:
        flow = flow / scale.float().clamp_min(1e-6)[:, None, None, None, None]
    w = foreground_weight.float()
    total = flow.new_zeros(())
    for dim in (3, 2):  # x then y
        grad = flow.diff(dim=dim)
        pair_w = w.narrow(dim, 0, w.shape[dim] - 1) * w.narrow(dim, 1, w.shape[dim] - 1)
        norm = torch.sqrt(grad.square().sum(-1) + 1e-12) - 1e-6  # finite gradient at 0, exactly 0 there
        if pair_w.sum() > 0:
            total = total + (norm * pair_w).sum() / pair_w.sum()
    return total


def stage2_regularisers(
    pred: DPTOutput, targets: DPTTargets | None, image_size: tuple[int, int], weights: LossWeights | None = None
) -> dict[str, torch.Tensor]:
    """Stage-2 terms on the head's own predictions (depth, decoded cameras, scene flow).

    Masks: the ground-truth dynamic mask where a sample has one of positive provenance weight
    (an absent mask is stored as zeros, not as "all static"), else the predicted mask
    (sigmoid of the logits, detached: the regularisers must not teach the mask to shrink).

    Returns:
        dict with "reg_depth", "reg_flow" and "reg" (their sum).
    """
    weights = weights or LossWeights()
    H, W = image_size
    dyn = torch.sigmoid(pred.mask_logits.detach().float())
    if targets is not None:
        gt = torch.nan_to_num(targets.dynamic_mask.float()).clamp(0, 1)
        use_gt = targets.has_mask.bool() & (targets.term_weights(weights.provenance)["mask"].to(gt.device) > 0)
        dyn = torch.where(use_gt[:, None, None, None], gt, dyn)
    c2w, K = decode_camera(pred.camera.float(), H, W)
    reg_depth = depth_reprojection_loss(pred.depth, c2w, K, 1.0 - dyn, max_gap=weights.reprojection_max_gap)
    scale = pred.depth.detach().float().flatten(1).mean(dim=1)
    reg_flow = flow_smoothness_loss(pred.scene_flow, dyn[:, :-1], scale=scale)
    return {"reg_depth": reg_depth, "reg_flow": reg_flow, "reg": reg_depth + reg_flow}
