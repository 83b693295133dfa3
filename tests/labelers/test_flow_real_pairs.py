"""Flow validity on real image pairs with ground truth (OpenCV's sample data, Debian package
opencv-doc) and on a textureless wall, plus known answers for each check beyond forward-backward.

Real pairs are loaded at 320 px wide (area resampling) with their ground truth scaled alike:
* aloe: Middlebury stereo pair; aloeGT.png is the left view's disparity in full-size pixels
  (0 = unknown; DIS on the pair has a median error of 0.12 px against it at 320 px, so the
  scale is 1), flow L -> R = (-d, 0);
* graf1 -> graf3: a planar wall seen from another viewpoint, flow from the homography H1to3p;
  the car parked in front of the wall (bottom right of graf1) is off the plane and excluded.
"""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from labelers.dis_flow import DisFlow, DisFlowConfig, exposure_gain
from labelers.flow import (
    ValidityChecks,
    compute_pair_flows,
    consistent_across_stripes,
    consecutive_pairs,
    drop_small_regions,
    image_noise_sigma,
    patch_zncc,
    photometric_support,
    texture_isotropy,
    texture_snr,
)
from pipelines.synthetic import SceneConfig, render_clip

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
WIDTH = 320


def _load_rgb(name: str) -> np.ndarray:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (Debian package opencv-doc)")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _resize(image: np.ndarray) -> tuple[np.ndarray, float]:
    scale = WIDTH / image.shape[1]
    size = (WIDTH, int(round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def aloe_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (2, H, W, 3), GT flow L -> R (H, W, 2), GT known (H, W)."""
    left, scale = _resize(_load_rgb("aloeL.jpg"))
    right, _ = _resize(_load_rgb("aloeR.jpg"))
    disparity_full = cv2.imread(str(DATA / "aloeGT.png"), cv2.IMREAD_UNCHANGED).astype(np.float32)
    height, width = left.shape[:2]
    known_full = (disparity_full > 0).astype(np.float32)
    known = cv2.resize(known_full, (width, height), interpolation=cv2.INTER_AREA) > 0.999
    disparity = cv2.resize(disparity_full, (width, height), interpolation=cv2.INTER_AREA) * scale
    flow = np.zeros((height, width, 2), np.float32)
    flow[..., 0] = -disparity
    known &= np.arange(width)[None, :] - disparity >= 0  # the target is inside the right image
    return np.stack([left, right]), flow, known


def graf_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    first, scale = _resize(_load_rgb("graf1.png"))
    third, _ = _resize(_load_rgb("graf3.png"))
    # cv2.FileStorage of OpenCV 5.1 cannot read this file; the matrix is plain text.
    text = (DATA / "H1to3p.xml").read_text()
    homography_full = np.array(re.search(r"<data>(.*?)</data>", text, re.S).group(1).split(), float).reshape(3, 3)
    to_small = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5], [0, 0, 1]])
    homography = to_small @ homography_full @ np.linalg.inv(to_small)
    height, width = first.shape[:2]
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    mapped = np.stack([u, v, np.ones_like(u)], axis=-1) @ homography.T
    target = mapped[..., :2] / mapped[..., 2:]
    flow = (target - np.stack([u, v], axis=-1)).astype(np.float32)
    known = (target >= 0).all(axis=-1) & (target[..., 0] <= width - 1) & (target[..., 1] <= height - 1)
    known[int(0.7 * height) :, int(0.45 * width) :] = False  # the car in front of the wall
    return np.stack([first, third]), flow, known


def score(
    frames: np.ndarray, truth: np.ndarray, known: np.ndarray, checks: ValidityChecks | None
) -> tuple[float, float]:
    """Coverage of the known pixels and the share of valid ones more than 3 px off."""
    flows = compute_pair_flows(DisFlow(), frames, [(0, 1)], checks=checks)
    valid = flows.valid_fwd[0] & known
    error = np.linalg.norm(flows.flow_fwd_px[0] - truth, axis=-1)
    return float(valid.sum() / known.sum()), float(np.mean(error[valid] > 3.0))


def test_stereo_pair_valid_flow_is_rarely_more_than_3px_off():
    frames, truth, known = aloe_pair()
    coverage, wrong = score(frames, truth, known, ValidityChecks())
    # measured: 0.64 coverage, 4.2 % over 3 px (forward-backward alone: 0.69, 5.9 %), mostly
    # occluded bands beside the leaves that took a neighbour's disparity
    assert wrong <= 0.05, wrong
    assert coverage >= 0.55, coverage


def test_wide_viewpoint_change_valid_flow_is_rarely_more_than_3px_off():
    frames, truth, known = graf_pair()
    coverage, wrong = score(frames, truth, known, ValidityChecks())
    before_coverage, before_wrong = score(frames, truth, known, None)
    # measured: forward-backward alone 4.9 % coverage with 18 % over 3 px (scattered chance
    # matches in the repeated stripes); with the checks 3.2 % coverage, 0.6 % over 3 px.
    # DIS cannot follow most of this viewpoint change: low coverage is the honest outcome.
    assert before_wrong > 0.10
    assert wrong <= 0.05, wrong
    assert 0.01 <= coverage <= before_coverage


def test_exposure_gain_of_real_pairs():
    """Two real pairs under one exposure: the stereo pair's gain is within the change that is
    left alone; on the wide viewpoint change the small flow finds no correspondences, the two
    directions' gains are not reciprocal, and the gain is 1 (measured: 1.006 forward against
    1/1.023 backward)."""
    for pair in (aloe_pair, graf_pair):
        frames = pair()[0]
        gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
        assert abs(exposure_gain(*gray) - 1.0) <= DisFlowConfig().exposure_min_change
    assert exposure_gain(*[cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in graf_pair()[0]]) == 1.0


# ----------------------------------------------------------------------------- textureless wall
def _wave_texture(height: int, width: int, u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width))
    for _ in range(10):
        wavelength, angle, phase = rng.uniform(5, 20), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        image += np.sin(2 * np.pi * (u * np.cos(angle) + v * np.sin(angle)) / wavelength + phase)
    return 40 * image / 3


def wall_pair(noise: float, poster: bool, shift=(2.0, 1.0), height=120, width=160, seed=0) -> np.ndarray:
    """A white wall with faint shading, optionally with a textured poster, moved by `shift` px
    (every pixel's flow is exactly `shift`), with independent Gaussian noise per frame."""
    rng = np.random.default_rng(seed)
    frames = []
    for dx, dy in ((0.0, 0.0), shift):
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        u, v = u - dx, v - dy
        image = 215 + 6 * np.sin(u / 70.0) + 4 * np.cos(v / 55.0)
        if poster:
            inside = (np.abs(u - width / 2) < width / 5) & (np.abs(v - height / 2) < height / 5)
            image = np.where(inside, 120 + _wave_texture(height, width, u, v, seed + 1), image)
        image += rng.normal(0, noise, image.shape)
        frames.append(np.repeat(np.clip(np.round(image), 0, 255).astype(np.uint8)[..., None], 3, axis=-1))
    return np.stack(frames)


@pytest.mark.parametrize("noise", [1.0, 4.0])
def test_textureless_wall_is_never_valid_with_spurious_motion(noise):
    shift = np.array([2.0, 1.0])
    for poster in (False, True):
        frames = wall_pair(noise, poster)
        flows = compute_pair_flows(DisFlow(), frames, [(0, 1)])
        valid, error = flows.valid_fwd[0], np.linalg.norm(flows.flow_fwd_px[0] - shift, axis=-1)
        assert not (valid & (error > 1.0)).any()
        if poster:  # the textured poster keeps its flow; measured: all of its interior
            v, u = np.mgrid[0:120, 0:160]
            interior = (np.abs(u - 80) < 26) & (np.abs(v - 60) < 18)
            assert valid[interior].mean() > 0.95
            assert not valid[:, :25].any()  # bare wall far from the poster
        else:
            assert not valid.any()
    # forward-backward alone: measured 926 (noise 1) and 3806 (noise 4) valid pixels over 1 px off
    before = compute_pair_flows(DisFlow(), wall_pair(noise, False), [(0, 1)], checks=None)
    before_error = np.linalg.norm(before.flow_fwd_px[0] - shift, axis=-1)
    assert (before.valid_fwd[0] & (before_error > 1.0)).sum() > 300


NOISY_YARD_SHIFT = np.array([1.4, 0.6])


def noisy_yard_pair(contrast: float, wavelength_scale: float, texture_seed: int, noise_seed: int) -> np.ndarray:
    """(2, 120, 160, 3) uint8: low-contrast wave texture moved by `NOISY_YARD_SHIFT`, each frame
    under independent noise of 3 levels."""
    rng = np.random.default_rng(noise_seed)
    frames = []
    for dx, dy in ((0.0, 0.0), tuple(NOISY_YARD_SHIFT)):
        v, u = np.mgrid[0:120, 0:160].astype(np.float64)
        image = 120 + contrast * _wave_texture(120, 160, (u - dx) / wavelength_scale, (v - dy) / wavelength_scale,
                                               seed=texture_seed)
        image = image + rng.normal(0, 3.0, image.shape)
        frames.append(np.repeat(np.clip(np.round(image), 0, 255).astype(np.uint8)[..., None], 3, axis=-1))
    return np.stack(frames)


def coverage_and_error(frames: np.ndarray, checks: ValidityChecks) -> tuple[float, float, float]:
    """Coverage of the inner pixels, their mean error and the share over 1 px, for the yard pair."""
    inner = (slice(10, -10), slice(10, -10))
    flows = compute_pair_flows(DisFlow(), frames, [(0, 1)], checks=checks)
    valid = flows.valid_fwd[0][inner]
    error = np.linalg.norm(flows.flow_fwd_px[0] - NOISY_YARD_SHIFT, axis=-1)[inner]
    return valid.mean(), error[valid].mean(), (error[valid] > 1.0).mean()


def test_coarse_texture_under_noise_is_supported_at_half_resolution():
    """A yard seen through sensor noise: texture of long wavelength and low contrast (the scene
    classes' degraded open ground) under noise of 3 levels. The full-resolution test sees mostly
    noise; half resolution sees the texture, and DIS's pyramid follows it."""
    frames = noisy_yard_pair(0.3, 2.0, texture_seed=2, noise_seed=5)
    result = {half: coverage_and_error(frames, ValidityChecks(texture_half_resolution=half)) for half in (False, True)}
    # measured: coverage 0.36 -> 0.66, error 0.076 -> 0.082 px, none over 1 px
    assert result[True][0] > result[False][0] + 0.2, result
    assert result[True][1] < 0.15 and result[True][2] < 0.01, result


def test_faint_texture_under_noise_passes_the_noise_corrected_zncc():
    """Faint texture (a few levels) under noise of 3 levels in each frame: the flow is right, but
    5x5 patches of a correct match correlate at about s^2 / (s^2 + sigma^2), under `min_zncc`.
    Corrected for the pair's noise, and over larger patches where the 5x5 ones are faint, the
    photometric check keeps them, at the same error."""
    frames = noisy_yard_pair(0.16, 1.0, texture_seed=4, noise_seed=8)
    plain, corrected, wider = (
        coverage_and_error(frames, checks)
        for checks in (ValidityChecks(zncc_noise_correction=False, zncc_faint_ratio=0),
                       ValidityChecks(zncc_faint_ratio=0), ValidityChecks())
    )
    # measured: coverage 0.54 -> 0.62 -> 0.85, mean error 0.08 px throughout, none over 1 px
    assert corrected[0] > plain[0] + 0.05 and wider[0] > corrected[0] + 0.1, (plain, corrected, wider)
    assert wider[1] < 0.15 and wider[2] < 0.01, wider


def test_faint_patches_grow_past_7x7_while_faint():
    """Fainter texture under the same noise: 7x7 patches still correlate too little where the
    flow is right; up to 11x11 (`zncc_faint_radius_px` 5) more of it is kept at the same error."""
    frames = noisy_yard_pair(0.12, 1.0, texture_seed=4, noise_seed=8)
    up_to_7, up_to_11 = (coverage_and_error(frames, ValidityChecks(zncc_faint_radius_px=r)) for r in (3, 5))
    # measured: coverage 0.53 -> 0.65, mean error 0.100 -> 0.101 px, none over 1 px
    assert up_to_11[0] > up_to_7[0] + 0.08, (up_to_7, up_to_11)
    assert up_to_11[1] < up_to_7[1] + 0.01 and up_to_11[2] < 0.01, (up_to_7, up_to_11)


def test_faint_patches_stop_growing_at_strong_texture():
    """A faint wall beside a textured poster, both still, and a flow 2 px off everywhere. On the wall
    3-5 px from the poster an 11x11 patch reaches the poster, whose texture shifted by 2 px still
    correlates: such patches would pass most of that band. The rule keeps them at the size that
    stays on the wall, where the wrong flow fails."""
    frames = wall_pair(4.0, poster=True, shift=(0.0, 0.0))
    gray_src, gray_dst = (cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames)
    wrong_flow = np.zeros((*gray_src.shape, 2), np.float32)
    wrong_flow[..., 0] = 2.0
    v, u = np.mgrid[0:120, 0:160]
    poster = (np.abs(u - 80) < 32) & (np.abs(v - 60) < 24)
    distance = cv2.distanceTransform((~poster).astype(np.uint8), cv2.DIST_L2, 5)
    band = (distance > 3) & (distance <= 5)
    passed = photometric_support(gray_src, gray_dst, wrong_flow, 4.0, ValidityChecks())
    reaching = patch_zncc(gray_src, gray_dst, wrong_flow, 5, 4.0) >= ValidityChecks().min_zncc
    # measured: 11x11 patches everywhere 0.62, the rule 0.01 (as with patches up to 7x7)
    assert reaching[band].mean() > 0.5 and passed[band].mean() < 0.05, (reaching[band].mean(), passed[band].mean())


# ----------------------------------------------------------------------------- known answers
def test_noise_sigma_of_gaussian_noise_with_and_without_texture():
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:160, 0:240].astype(np.float64)
    textured = 100 + _wave_texture(160, 240, u, v, seed=3) * (u > 120)  # half flat, half textured
    for sigma in (1.0, 3.0):
        for base in (np.full((160, 240), 100.0), textured):
            estimate = image_noise_sigma((base + rng.normal(0, sigma, base.shape)).astype(np.float32))
            assert 0.75 * sigma < estimate < 1.0 * sigma, (sigma, estimate)  # documented bias: 0.8-0.9
    assert image_noise_sigma(np.full((40, 40), 7.0, np.float32)) == 0.0


def test_texture_snr_is_the_smaller_structure_tensor_eigenvalue():
    # I = A sin(k u) + A sin(k v), k = 2 pi / 9: Sobel / 8 gives gx = A sin(k) cos(k u), and a
    # 9-px window spans one period, so the tensor is diag(A^2 sin^2(k) / 2) exactly.
    amplitude, k = 10.0, 2 * np.pi / 9
    v, u = np.mgrid[0:40, 0:40].astype(np.float32)
    plaid = amplitude * (np.sin(k * u) + np.sin(k * v))
    snr = texture_snr(plaid, noise_sigma=2.0, window_px=9)
    expected = amplitude**2 * np.sin(k) ** 2 / 2 / 2.0**2
    np.testing.assert_allclose(snr[10:-10, 10:-10], expected, rtol=1e-3)
    # stripes: structure in one direction only, the flow along them is unobservable
    stripes = texture_snr(amplitude * np.sin(k * u), noise_sigma=2.0, window_px=9)
    assert np.abs(stripes[10:-10, 10:-10]).max() < 1e-3


def test_texture_isotropy_is_the_eigenvalue_ratio():
    # I = A sin(k u) + a sin(k v): the tensor is diag(A^2, a^2) sin^2(k) / 2 over a 9-px window
    # (one period), so the ratio is (a / A)^2; stripes and a flat image give 0.
    k = 2 * np.pi / 9
    v, u = np.mgrid[0:40, 0:40].astype(np.float32)
    interior = (slice(10, -10), slice(10, -10))
    for faint in (10.0, 3.0, 1.0):
        iso = texture_isotropy(10.0 * np.sin(k * u) + faint * np.sin(k * v), window_px=9)
        np.testing.assert_allclose(iso[interior], (faint / 10.0) ** 2, rtol=1e-3, atol=1e-6)
    assert np.abs(texture_isotropy(10.0 * np.sin(k * u), window_px=9)[interior]).max() < 1e-4
    assert (texture_isotropy(np.full((20, 20), 5.0, np.float32), window_px=9) == 0).all()


def test_patch_zncc_known_answers():
    noise = np.random.default_rng(5).normal(0, 30, (60, 80)).astype(np.float32)
    src = 120 + cv2.GaussianBlur(noise, (0, 0), 0.7)  # correlated over ~1 px only
    dst = np.roll(src, (-2, 3), axis=(0, 1))  # content moves by (dx, dy) = (3, -2)
    flow = np.zeros((60, 80, 2), np.float32)
    flow[...] = (3.0, -2.0)
    interior = (slice(5, -5), slice(6, -6))
    np.testing.assert_allclose(patch_zncc(src, dst, flow, 2)[interior], 1.0, atol=1e-4)
    # gain and offset (an exposure change) do not matter
    np.testing.assert_allclose(patch_zncc(src, 0.6 * dst + 30, flow, 2)[interior], 1.0, atol=1e-4)
    # a flow 5 px off compares unrelated patches
    wrong = patch_zncc(src, dst, flow + np.float32([5.0, 0.0]), 2)[interior]
    assert np.abs(wrong).mean() < 0.3 and (wrong < 0.6).mean() > 0.95
    # a flat patch has no correlation
    assert (patch_zncc(np.full((20, 20), 9.0, np.float32), src[:20, :20], flow[:20, :20], 2) == 0).all()


def test_patch_zncc_corrected_for_noise():
    """Faint texture (signal std 4 levels) under independent noise of 4 levels in each frame:
    a correct match correlates at about s^2 / (s^2 + sigma^2) = 0.5, below the checks' 0.6; with
    the noise given, the correlation is back near 1, and a wrong flow stays uncorrelated."""
    rng = np.random.default_rng(11)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (120, 160)).astype(np.float32), (0, 0), 0.7)
    texture *= 4.0 / texture.std()
    src = 120 + texture + rng.normal(0, 4, texture.shape).astype(np.float32)
    dst = 120 + np.roll(texture, (-2, 3), axis=(0, 1)) + rng.normal(0, 4, texture.shape).astype(np.float32)
    flow = np.zeros((120, 160, 2), np.float32)
    flow[...] = (3.0, -2.0)
    interior = (slice(8, -8), slice(8, -8))
    plain = patch_zncc(src, dst, flow, 3)[interior]
    corrected = patch_zncc(src, dst, flow, 3, noise_sigma=4.0)[interior]
    assert 0.35 < np.median(plain) < 0.6
    assert np.median(corrected) > 0.85 and (corrected >= ValidityChecks().min_zncc).mean() > 2 * (plain >= 0.6).mean()
    wrong = patch_zncc(src, dst, flow + np.float32([6.0, 0.0]), 3, noise_sigma=4.0)[interior]
    assert (wrong >= ValidityChecks().min_zncc).mean() < 0.1
    # computed at some pixels only: the same values there, 0 elsewhere
    some = rng.random(texture.shape) < 0.2
    at_some = patch_zncc(src, dst, flow, 3, noise_sigma=4.0, where=some)
    np.testing.assert_array_equal(at_some[some], patch_zncc(src, dst, flow, 3, noise_sigma=4.0)[some])
    assert (at_some[~some] == 0).all()
    # patches whose variance is below min_signal_ratio sigma^2 keep the plain value
    np.testing.assert_array_equal(patch_zncc(src, dst, flow, 3, noise_sigma=40.0), patch_zncc(src, dst, flow, 3))
    with pytest.raises(ValueError, match="zncc_min_signal_ratio"):
        ValidityChecks(zncc_min_signal_ratio=1.0)
    with pytest.raises(ValueError, match="zncc_faint_ratio"):
        ValidityChecks(zncc_faint_ratio=-1.0)
    with pytest.raises(ValueError, match="zncc_faint_radius_px must be >= zncc_radius_px"):
        ValidityChecks(zncc_radius_px=3, zncc_faint_radius_px=2)


def test_drop_small_regions_and_checks_config():
    valid = np.zeros((20, 30), bool)
    valid[2:12, 2:12] = True  # 100 px
    valid[15:17, 20:23] = True  # 6 px
    valid[5, 25] = valid[6, 26] = True  # 2 px, 8-connected diagonally
    kept = drop_small_regions(valid, 6)
    expected = valid.copy()
    expected[5, 25] = expected[6, 26] = False
    np.testing.assert_array_equal(kept, expected)
    np.testing.assert_array_equal(drop_small_regions(valid, 101), np.zeros_like(valid))
    params = json.loads(json.dumps(ValidityChecks().to_dict()))
    assert params["version"] and params["min_zncc"] == ValidityChecks().min_zncc
    with pytest.raises(ValueError, match="min_zncc"):
        ValidityChecks(min_zncc=1.5)
    with pytest.raises(ValueError, match="texture_window_px"):
        ValidityChecks(texture_window_px=1)


def test_stripes_are_checked_across_them_and_slide_little_along_them():
    """Vertical stripes (I = 40 sin(k u)): the flow is measured across them (x); along them (y)
    the two directions may slide apart by up to stripe_along_fb_px, for small displacements."""
    k = 2 * np.pi / 9
    v, u = np.mgrid[0:60, 0:80].astype(np.float32)
    stripes = 120 + 40 * np.sin(k * u)
    plaid = stripes + 40 * np.sin(k * v)
    checks = ValidityChecks()
    interior = (slice(12, -12), slice(12, -12))

    def flows(fwd, bwd):
        return (np.broadcast_to(np.float32(fwd), (60, 80, 2)).copy(),
                np.broadcast_to(np.float32(bwd), (60, 80, 2)).copy())

    # across consistent, 1.6 px apart along the stripes: the plain check fails, this one passes
    fwd, bwd = flows((1.0, 0.8), (-1.0, 0.8))
    assert consistent_across_stripes(fwd, bwd, stripes, checks)[interior].all()
    # ... but not on texture that determines both components, nor with the check disabled
    assert not consistent_across_stripes(fwd, bwd, plaid, checks)[interior].any()
    assert not consistent_across_stripes(fwd, bwd, stripes, ValidityChecks(stripe_max_isotropy=0))[interior].any()
    # sliding apart by more than stripe_along_fb_px (2.4 px), or inconsistent across (1 px)
    assert not consistent_across_stripes(*flows((1.0, 1.2), (-1.0, 1.2)), stripes, checks)[interior].any()
    assert not consistent_across_stripes(*flows((1.0, 0.0), (0.0, 0.0)), stripes, checks)[interior].any()
    # a displacement above stripe_max_flow_px (3.5 px) slides more than the backward flow shows
    assert not consistent_across_stripes(*flows((3.5, 0.8), (-3.5, 0.8)), stripes, checks)[interior].any()
    assert consistent_across_stripes(*flows((2.5, 0.8), (-2.5, 0.8)), stripes, checks)[interior].all()
    with pytest.raises(ValueError, match="stripe_window_px"):
        ValidityChecks(stripe_window_px=2)


def test_striped_ground_keeps_its_small_flows_marked_across_only():
    """A striped ground under a dolly (the `repeated` scene class): consecutive flows that the
    plain forward-backward check drops only along the stripes stay valid, marked `across_only`,
    and stay close to the truth; `without_across_only` drops them again (for depth)."""
    cfg = SceneConfig(seed=2, height=120, width=180, num_frames=9, stride=4, num_moving=1, camera="dolly",
                      scene="open", texture="repeated")
    clip = render_clip(cfg)
    pairs = consecutive_pairs(cfg.num_frames)
    flows = compute_pair_flows(DisFlow(), clip.frames, pairs)
    plain = compute_pair_flows(DisFlow(), clip.frames, pairs, checks=ValidityChecks(stripe_max_isotropy=0))
    truth, visible = clip.labels["flow"], clip.labels["flow_valid"]
    np.testing.assert_array_equal(flows.across_only_fwd, flows.valid_fwd & ~plain.valid_fwd)
    coverage = [(v & visible).sum() / visible.sum() for v in (plain.valid_fwd, flows.valid_fwd)]
    assert coverage[1] > coverage[0] + 0.05, coverage  # measured 0.833 -> 0.920
    error = np.linalg.norm(flows.flow_fwd_px - truth, axis=-1)[flows.across_only_fwd & visible]
    assert error.mean() < 0.35 and np.quantile(error, 0.95) < 0.8  # measured 0.21 and 0.43 px
    strict = flows.without_across_only()
    np.testing.assert_array_equal(strict.valid_fwd, plain.valid_fwd)
    assert not strict.across_only_fwd.any() and not strict.across_only_bwd.any()
