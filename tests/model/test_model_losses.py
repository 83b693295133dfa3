import math

import torch

from model.camera import encode_camera, fov_to_intrinsics, quaternion_to_matrix
from model.dpt_head import DPTOutput
from model.losses import (
    DPTTargets,
    LossWeights,
    cogvideox_scheduler,
    depth_reprojection_loss,
    diffusion_loss,
    dpt_losses,
    flow_smoothness_loss,
    noisy_latents_and_target,
    stage2_regularisers,
)

H, W, S = 24, 32, 4


# ------------------------------------------------------------------ analytic planar scene
def _cameras(B: int = 2, S: int = S) -> torch.Tensor:
    c2w = torch.eye(4, dtype=torch.float64).repeat(B, S, 1, 1)
    for b in range(B):
        for k in range(1, S):
            angle = 0.03 * k * (b + 1)
            c2w[b, k, :3, :3] = quaternion_to_matrix(
                torch.tensor([0.3 * math.sin(angle), math.sin(angle), 0.0, math.cos(angle)], dtype=torch.float64)
            )
            c2w[b, k, :3, 3] = torch.tensor([0.1 * k, -0.05 * k, 0.08 * k * (b + 1)], dtype=torch.float64)
    return c2w


def _plane_scene(B: int = 2, plane_z: float = 5.0):
    """Every camera sees the world plane z = plane_z: exact z-depth and first-frame points."""
    c2w = _cameras(B)
    K = fov_to_intrinsics(torch.tensor([math.radians(50.0), math.radians(62.0)], dtype=torch.float64), H, W).expand(B, S, 3, 3)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rays = torch.einsum("bsij,hwj->bshwi", torch.linalg.inv(K), torch.stack([u, v, torch.ones_like(u)], -1))
    d_world = torch.einsum("bsij,bshwj->bshwi", c2w[..., :3, :3], rays)
    origin = c2w[..., None, None, :3, 3]
    depth = (plane_z - origin[..., 2]) / d_world[..., 2]  # ray has unit z in camera: lambda = z-depth
    points = origin + depth[..., None] * d_world
    return depth, points, c2w, K.clone()


def _targets(B: int = 2, metric=True):
    depth, points, c2w, K = _plane_scene(B)
    dyn = torch.zeros(B, S, H, W, dtype=torch.bool)
    dyn[:, :, 5:12, 8:20] = True
    scene_flow = torch.zeros(B, S - 1, H, W, 3)
    scene_flow[dyn[:, :-1]] = torch.tensor([0.2, -0.1, 0.05])
    return DPTTargets(
        depth=depth.float(),
        depth_valid=torch.ones(B, S, H, W, dtype=torch.bool),
        points=points.float(),
        c2w=c2w.float(),
        K=K.float(),
        dynamic_mask=dyn,
        scene_flow=scene_flow,
        scene_flow_valid=dyn[:, :-1].clone(),
        metric_scale=torch.full((B,), metric),
        has_depth=torch.ones(B, dtype=torch.bool),
        has_points=torch.ones(B, dtype=torch.bool),
        has_camera=torch.ones(B, dtype=torch.bool),
        has_mask=torch.ones(B, dtype=torch.bool),
        has_scene_flow=torch.ones(B, dtype=torch.bool),
    )


def _perfect(t: DPTTargets) -> DPTOutput:
    return DPTOutput(
        depth=t.depth.clone().requires_grad_(),
        points=t.points.clone().requires_grad_(),
        camera=encode_camera(t.c2w, t.K, H, W).clone().requires_grad_(),
        scene_flow=t.scene_flow.clone().requires_grad_(),
        mask_logits=(30.0 * (2 * t.dynamic_mask.float() - 1)).requires_grad_(),
    )


# ------------------------------------------------------------------ diffusion
def test_scheduler_is_cogvideox_v_prediction():
    sched = cogvideox_scheduler()
    assert sched.config.prediction_type == "v_prediction"
    assert sched.config.snr_shift_scale == 1.0
    assert float(sched.alphas_cumprod[-1]) < 1e-6  # zero terminal SNR
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 4, 3, 5, generator=g), torch.randn(3, 2, 4, 3, 5, generator=g)
    t = torch.tensor([0, 500, 999])
    noisy, v = noisy_latents_and_target(sched, x0, noise, t)
    a = sched.alphas_cumprod[t].float().view(3, 1, 1, 1, 1)
    torch.testing.assert_close(noisy, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    torch.testing.assert_close(v, a.sqrt() * noise - (1 - a).sqrt() * x0)
    torch.testing.assert_close(noisy[2], noise[2], atol=1e-3, rtol=0)  # t = 999 is pure noise


def test_diffusion_loss_known_values_and_cogvideox_form():
    sched = cogvideox_scheduler()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 2, 4, 3, 5, generator=g), torch.randn(4, 2, 4, 3, 5, generator=g)
    t = torch.tensor([3, 200, 600, 998])
    noisy, v = noisy_latents_and_target(sched, x0, noise, t)
    assert diffusion_loss(v, v) == 0
    torch.testing.assert_close(diffusion_loss(v + 0.5, v), torch.tensor(0.25))
    # diffusers' CogVideoX script: x0_hat = get_velocity(v_pred, noisy, t), weight 1 / (1 - abar)
    v_pred = v + 0.3 * torch.randn(v.shape, generator=g)
    x0_hat = sched.get_velocity(v_pred, noisy, t)
    w = (1 / (1 - sched.alphas_cumprod[t].float())).view(4, 1, 1, 1, 1)
    cog = (w * (x0_hat - x0) ** 2).flatten(1).mean(1).mean()
    torch.testing.assert_close(diffusion_loss(v_pred, v), cog, rtol=1e-4, atol=1e-5)


def test_diffusion_loss_skips_absent_samples():
    v = torch.zeros(3, 5)
    pred = torch.tensor([[1.0] * 5, [2.0] * 5, [float("nan")] * 5]).requires_grad_()
    keep = torch.tensor([True, True, False])
    loss = diffusion_loss(pred, v, keep)
    torch.testing.assert_close(loss, torch.tensor(2.5))
    loss.backward()
    assert torch.isfinite(pred.grad[:2]).all() and (pred.grad[2] == 0).all()
    assert diffusion_loss(pred, v, torch.zeros(3, dtype=torch.bool)) == 0


# ------------------------------------------------------------------ DPT
def test_dpt_losses_zero_for_ground_truth():
    t = _targets()
    losses = dpt_losses(_perfect(t), t)
    for name, value in losses.items():
        assert value.abs() < 1e-5, (name, value)


def test_depth_points_scale_handling():
    t = _targets()
    pred = _perfect(t)
    pred.depth = t.depth * 1.1
    pred.points = t.points * 1.1
    losses = dpt_losses(pred, t)
    torch.testing.assert_close(losses["depth"], torch.tensor(0.1), rtol=1e-4, atol=0)
    n = t.depth.flatten(1).mean(1)
    expected_pts = ((0.1 * t.points).abs().mean(-1).flatten(1).mean(1) / n).mean()
    torch.testing.assert_close(losses["points"], expected_pts, rtol=1e-4, atol=0)
    # unknown scale: a globally scaled prediction (depth, points, translation, flow) is perfect
    t_rel = _targets(metric=False)
    pred = _perfect(t_rel)
    pred.depth, pred.points, pred.scene_flow = 3 * t_rel.depth, 3 * t_rel.points, 3 * t_rel.scene_flow
    pred.camera = torch.cat([3 * pred.camera[..., :3], pred.camera[..., 3:]], -1)
    for name, value in dpt_losses(pred, t_rel).items():
        assert value.abs() < 1e-5, (name, value)
    # the same prediction on metric labels is 200% off
    torch.testing.assert_close(dpt_losses(pred, t)["depth"], torch.tensor(2.0), rtol=1e-4, atol=0)


def test_camera_huber_known_value_and_quaternion_sign():
    t = _targets()
    pred = _perfect(t)
    n = t.depth.flatten(1).mean(1)
    cam = pred.camera.detach().clone()
    cam[..., 0] += 0.05 * n[:, None]  # 0.05 in normalised units: quadratic zone of delta = 0.1
    cam[..., 3:7] = -cam[..., 3:7]  # the same rotations
    pred.camera = cam.requires_grad_()
    loss = dpt_losses(pred, t)["camera"]
    torch.testing.assert_close(loss, torch.tensor(0.5 * 0.05**2 / 0.1 / 9), rtol=1e-4, atol=0)
    loss.backward()
    assert pred.camera.grad[..., 0].abs().sum() > 0 and pred.camera.grad[..., 1:3].abs().max() < 1e-8


def test_flow_reweighting_and_mask():
    t = _targets()
    n = t.depth.flatten(1).mean(1)[:, None, None, None, None]
    pred = _perfect(t)
    pred.scene_flow = t.scene_flow + 0.3 * n  # 0.3 off everywhere (normalised units)
    losses = dpt_losses(pred, t)
    torch.testing.assert_close(losses["flow"], torch.tensor(0.3), rtol=1e-4, atol=0)
    torch.testing.assert_close(losses["dpt"], 5.0 * losses["flow"] + losses["mask"] + losses["depth"], rtol=1e-4, atol=1e-6)
    # error on static pixels only: down-weighted by flow_background_weight
    dyn = t.dynamic_mask[:, :-1]
    pred.scene_flow = torch.where(dyn[..., None], t.scene_flow, 0.3 * n)
    n_fg, n_bg = dyn[0].sum().item(), (~dyn[0]).sum().item()
    expected = 0.3 * 0.1 * n_bg / (n_fg + 0.1 * n_bg)
    torch.testing.assert_close(dpt_losses(pred, t)["flow"], torch.tensor(expected), rtol=1e-4, atol=0)
    # mask: logits 0 everywhere -> BCE = log 2
    pred = _perfect(t)
    pred.mask_logits = torch.zeros_like(pred.mask_logits)
    torch.testing.assert_close(dpt_losses(pred, t)["mask"], torch.tensor(math.log(2.0)))


def test_absent_labels_are_never_used():
    t = _targets()
    for name in ("depth", "points", "c2w", "K", "scene_flow"):
        getattr(t, name)[1] = float("nan")
    t.dynamic_mask = t.dynamic_mask.float()
    t.dynamic_mask[1] = float("nan")
    t.has_depth[1] = t.has_points[1] = t.has_camera[1] = t.has_mask[1] = t.has_scene_flow[1] = False
    g = torch.Generator().manual_seed(0)
    pred = _perfect(_targets())
    pred = DPTOutput(*(x.detach() + 0.1 * torch.rand(x.shape, generator=g) for x in pred.__dict__.values()))
    for x in pred.__dict__.values():
        x.requires_grad_()
    losses = dpt_losses(pred, t)
    losses["dpt"].backward()
    for name, value in losses.items():
        assert torch.isfinite(value), name
    for x in pred.__dict__.values():
        assert torch.isfinite(x.grad).all() and (x.grad[1] == 0).all()
    # equal to the loss of the labelled sample alone
    t0 = DPTTargets(**{k: v[:1] for k, v in t.__dict__.items()})
    p0 = DPTOutput(*(x[:1] for x in pred.__dict__.values()))
    torch.testing.assert_close(dpt_losses(p0, t0)["dpt"], losses["dpt"])
    # nothing labelled at all: every term is 0
    for flag in ("has_depth", "has_points", "has_camera", "has_mask", "has_scene_flow"):
        setattr(t, flag, torch.zeros(2, dtype=torch.bool))
    assert all(v == 0 for v in dpt_losses(pred, t).values())


def test_dpt_gradients_reach_their_outputs():
    t = _targets()
    pred = _perfect(t)
    pred.depth = (t.depth * 1.2).requires_grad_()
    losses = dpt_losses(pred, t)
    losses["depth"].backward()
    assert pred.depth.grad.abs().sum() > 0
    assert pred.points.grad is None and pred.camera.grad is None


# ------------------------------------------------------------------ stage-2 regularisers
def test_reprojection_zero_on_exact_planar_scene_and_grows():
    depth, _, c2w, K = _plane_scene()
    static = torch.ones_like(depth)
    base = depth_reprojection_loss(depth, c2w, K, static)
    assert base < 1e-4  # only bilinear interpolation of a plane's depth is inexact
    bumped = []
    for eps in (0.02, 0.04):
        d = depth.clone()
        d[:, 2] *= 1 + eps
        bumped.append(depth_reprojection_loss(d, c2w, K, static))
    assert bumped[0] > 30 * base
    torch.testing.assert_close(bumped[1] / bumped[0], torch.tensor(2.0), rtol=0.05, atol=0)
    # a corrupted (moving) region masked out of the static background is ignored
    d = depth.clone()
    d[:, :, 8:14, 10:20] *= 0.5
    static_bg = torch.ones_like(depth)
    static_bg[:, :, 8:14, 10:20] = 0
    assert depth_reprojection_loss(d, c2w, K, static_bg) < 1e-3
    assert depth_reprojection_loss(d, c2w, K, static) > 0.05


def test_reprojection_gradients_reach_depth_and_camera():
    t = _targets()
    pred = _perfect(t)
    with torch.no_grad():
        pred.depth[:, 1] *= 1.05
    t.dynamic_mask[:] = False
    regs = stage2_regularisers(pred, t, (H, W))
    assert regs["reg_depth"] > 1e-3
    regs["reg"].backward()
    assert pred.depth.grad.abs().sum() > 0
    assert pred.camera.grad[..., :7].abs().sum() > 0 and pred.camera.grad[..., 7:].abs().sum() > 0
    assert pred.mask_logits.grad is None  # masks are not taught by the regulariser


def test_stage2_zero_for_consistent_ground_truth():
    t = _targets()
    regs = stage2_regularisers(_perfect(t), t, (H, W), LossWeights(reprojection_max_gap=2))
    assert regs["reg_depth"] < 1e-4
    assert regs["reg_flow"] < 1e-6  # rigid foreground motion: constant scene flow inside the mask


def test_flow_smoothness_known_values():
    B, K_ = 1, 2
    u = torch.arange(W, dtype=torch.float32)
    flow = torch.zeros(B, K_, H, W, 3)
    flow[..., 0] = 0.5 * u  # ramp in x: |d/dx| = 0.5, d/dy = 0
    fg = torch.ones(B, K_, H, W)
    torch.testing.assert_close(flow_smoothness_loss(flow, fg), torch.tensor(0.5))
    torch.testing.assert_close(flow_smoothness_loss(flow, fg, scale=torch.tensor([2.0])), torch.tensor(0.25))
    # a jump at the mask boundary is not penalised; constant flow inside is smooth
    step = torch.zeros(B, K_, H, W, 3)
    step[:, :, :, W // 2 :, 1] = 3.0
    mask = torch.zeros(B, K_, H, W)
    mask[:, :, :, W // 2 :] = 1.0
    assert flow_smoothness_loss(step, mask) == 0
    assert flow_smoothness_loss(step, torch.ones_like(mask)) > 0
    pred = step.clone().requires_grad_()
    flow_smoothness_loss(pred + torch.randn_like(step) * 0.1, mask).backward()
    assert pred.grad[:, :, :, W // 2 :].abs().sum() > 0 and pred.grad[:, :, :, : W // 2 - 1].abs().sum() == 0
