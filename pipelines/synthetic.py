"""Procedural synthetic 4D scenes with exact ground truth for every LABELS.md array.

A scene is a textured box-shaped room, or an open yard (a ground plane under a textured
sky sphere `sky_distance_m` away), as static background, holding rigid spheres and boxes,
some of which translate and rotate (optionally one large mover close to the camera), seen
by a moving pinhole camera (dolly, orbit, pan = rotation in place, or a tripod with
sub-millimetre jitter). Background surfaces can be richly textured, nearly uniform
("low") or carry one periodic pattern ("repeated"). Sensor noise, motion blur and a
drifting exposure degrade the frames only, never the labels. Everything is ray cast analytically, so depth, cameras,
occlusion-aware optical flow, dynamic masks and scene flow are exact up to float
precision. Textures are solid (3D) functions of each object's local coordinates, so
they move rigidly with the object and brightness is constant over time (no lighting),
which makes flow well defined; they are band-limited to the render resolution and the
colour image is 2x2 supersampled against aliasing.

Scenes are deterministic by seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from labelers.geometry import inside_image, pixel_grid, project_points, transform_points

__all__ = [
    "SceneConfig",
    "GROUND_ID",
    "SKY_ID",
    "SyntheticClip",
    "render_clip",
    "scene_caption",
    "scene_intrinsics",
    "burn_captions",
    "blend_captions",
    "CAPTIONS",
    "CAMERA_MOTIONS",
    "GENERATOR_VERSION",
]

GENERATOR_VERSION = "1"
CAMERA_MOTIONS = ("dolly", "orbit", "pan", "static")
CameraMotion = Literal["dolly", "orbit", "pan", "static"]
SCENES = ("room", "open")
TEXTURES = ("rich", "low", "repeated")
GROUND_ID = 0  # object id of the ground plane of open scenes (room scenes: ids 0-5 are the walls)
SKY_ID = 1  # object id of the sky sphere of open scenes

_EPS = 1e-9
_ROOM_HALF = np.array([4.0, 2.0, 6.0])  # room spans x in [-4, 4], y in [-2, 2] (y down), z in [-6, 6]
_NUM_FACES = 6
_GROUND_Y = 1.6  # open scenes: the ground plane lies 1.6 m below the world origin (y down)
_LOW_TEXTURE_GAIN = 0.1  # texture "low": background amplitudes relative to "rich"
_BLUR_SAMPLES = 12  # motion blur: sub-frame times, each with one of the 2x2 supersampling offsets
_SUPERSAMPLE = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))


@dataclass(frozen=True)
class SceneConfig:
    """Everything that defines one synthetic clip.

    Attributes:
        seed: random seed; the same config renders the same clip.
        height, width: label resolution in pixels.
        num_frames: T; (T - 1) must be a multiple of `stride`.
        stride: key-frame stride (4 = the video VAE's temporal compression).
        fps: frame rate of the rendered video.
        camera: camera trajectory type.
        num_static: rigid objects that never move.
        num_moving: rigid objects that translate and rotate.
        fov_x_deg: horizontal field of view.
        camera_speed: scale of the camera motion per frame (1 = default magnitudes).
        mover_speed: scale of the moving objects' velocity and spin, the large mover's excepted
            (1 = default magnitudes).
        scene: "room" (a closed textured box) or "open" (a ground plane 1.6 m below the
            world origin and a sky sphere of radius `sky_distance_m` centred on it; object id
            `GROUND_ID` is the ground and `SKY_ID` the sky, whose depth is its true distance).
        sky_distance_m: radius of the sky sphere of open scenes.
        texture: background surfaces "rich", "low" (amplitude 1/10 of rich: textureless for
            flow; objects keep their texture) or "repeated" (one periodic plaid of a single
            wavelength, 8-12 px where a surface faces the camera, over a faint rich texture).
        large_mover: the first moving object (object id 6 + num_static) is large and close
            (about 20-40 % of the frame) and crosses the view at a few pixels per frame.
        noise_std: Gaussian sensor noise, in 8-bit levels, independent per frame (seeded).
        motion_blur: shutter fraction of the frame interval (0..1) the frames integrate over;
            labels stay those of the frame time.
        exposure_drift: largest relative change of a global gain that varies smoothly over the clip.
    """

    seed: int = 0
    height: int = 240
    width: int = 360
    num_frames: int = 49
    stride: int = 4
    fps: float = 8.0
    camera: CameraMotion = "dolly"
    num_static: int = 3
    num_moving: int = 2
    fov_x_deg: float = 70.0
    camera_speed: float = 1.0
    mover_speed: float = 1.0
    scene: Literal["room", "open"] = "room"
    sky_distance_m: float = 80.0
    texture: Literal["rich", "low", "repeated"] = "rich"
    large_mover: bool = False
    noise_std: float = 0.0
    motion_blur: float = 0.0
    exposure_drift: float = 0.0

    def __post_init__(self) -> None:
        if self.camera not in CAMERA_MOTIONS:
            raise ValueError(f"camera must be one of {CAMERA_MOTIONS}, got {self.camera!r}")
        if self.scene not in SCENES:
            raise ValueError(f"scene must be one of {SCENES}, got {self.scene!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {TEXTURES}, got {self.texture!r}")
        if not self.sky_distance_m >= 20.0:
            raise ValueError(f"sky_distance_m must be >= 20 m (beyond the objects), got {self.sky_distance_m}")
        if self.large_mover and self.num_moving < 1:
            raise ValueError("large_mover needs num_moving >= 1 (the large mover is one of the moving objects)")
        if not (self.noise_std >= 0 and 0 <= self.motion_blur <= 1 and 0 <= self.exposure_drift < 1):
            raise ValueError(
                f"need noise_std >= 0, 0 <= motion_blur <= 1 and 0 <= exposure_drift < 1, got "
                f"{self.noise_std}, {self.motion_blur}, {self.exposure_drift}"
            )
        if self.height < 8 or self.width < 8:
            raise ValueError(f"resolution {self.height}x{self.width} is too small (min 8x8)")
        if self.num_frames < 2 or (self.num_frames - 1) % self.stride:
            raise ValueError(f"num_frames - 1 ({self.num_frames - 1}) must be a positive multiple of stride {self.stride}")
        if self.num_static < 0 or self.num_moving < 0:
            raise ValueError("object counts must be >= 0")
        if not self.mover_speed >= 0:
            raise ValueError(f"mover_speed must be >= 0, got {self.mover_speed}")


@dataclass
class SyntheticClip:
    """A rendered clip: RGB frames and ground-truth labels in LABELS.md names and conventions."""

    config: SceneConfig
    frames: np.ndarray  # (T, H, W, 3) uint8
    labels: dict[str, np.ndarray]
    object_ids: np.ndarray  # (T, H, W) int32 id of the surface seen at each pixel
    caption: str
    metadata: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- scene
@dataclass
class _Texture:
    base: np.ndarray  # (3,)
    freqs: np.ndarray  # (K, 3) cycles per metre
    phases: np.ndarray  # (K,)
    amps: np.ndarray  # (K, 3)
    fade: _PlaneFade | None = None  # per-component attenuation where a plane recedes (anti-aliasing)

    def __call__(self, p_local: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * (p_local @ self.freqs.T) + self.phases
        waves = np.sin(arg)
        if self.fade is not None:
            waves = waves * self.fade(p_local, self.freqs)
        return np.clip(self.base + waves @ self.amps, 0.0, 1.0)


@dataclass
class _PlaneFade:
    """Fades texture components of a plane whose period, seen from `viewpoint`, drops below a few pixels.

    A point at distance r on a plane at perpendicular distance h is seen at angle cos = h / r
    from the normal: one pixel spans r / f metres across the line of sight and r^2 / (f h)
    along the direction the plane recedes in. The fade depends on the surface point only (one
    viewpoint per clip), so brightness stays constant over time; it stands in for the blur a
    real lens gives far, grazing surfaces.
    """

    viewpoint: np.ndarray  # (3,) world
    axis: int  # the plane's normal axis
    plane_distance: float  # h, metres
    focal_px: float

    def __call__(self, p_world: np.ndarray, freqs: np.ndarray) -> np.ndarray:
        d = p_world - self.viewpoint
        r = np.linalg.norm(d, axis=1, keepdims=True)
        d[:, self.axis] = 0.0
        radial = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), _EPS)
        k = freqs.copy()
        k[:, self.axis] = 0.0
        k_radial = radial @ k.T  # (N, K) cycles per metre along the receding direction
        k_across = np.sqrt(np.maximum(np.sum(k * k, axis=1)[None, :] - k_radial**2, 0.0))
        h = max(self.plane_distance, 0.05)
        cycles_px = np.hypot(k_across * r, k_radial * r * r / h) / self.focal_px
        period_px = 1.0 / np.maximum(cycles_px, _EPS)
        return np.clip((period_px - 2.5) / 2.5, 0.0, 1.0)


@dataclass
class _Object:
    kind: Literal["sphere", "box"]
    size: np.ndarray  # radius (1,) or half extents (3,)
    center0: np.ndarray
    rotvec0: np.ndarray
    velocity: np.ndarray  # m per frame
    spin: np.ndarray  # rotation vector per frame (rad)
    texture: _Texture

    @property
    def moving(self) -> bool:
        return bool(np.any(self.velocity) or np.any(self.spin))

    def pose(self, t: float) -> np.ndarray:
        """Object-to-world (4, 4) at (fractional) frame time t."""
        T = np.eye(4)
        T[:3, :3] = (Rotation.from_rotvec(self.spin * t) * Rotation.from_rotvec(self.rotvec0)).as_matrix()
        T[:3, 3] = self.center0 + self.velocity * t
        return T


@dataclass
class _Scene:
    faces: list[_Texture | None]  # surface ids 0-5: room walls, or ground and sky (2-5 unused)
    objects: list[_Object]
    c2w_world: np.ndarray  # (T, 4, 4)
    K: np.ndarray  # (3, 3)
    kind: str = "room"
    sky_distance: float = 80.0

    def camera_at(self, t: float) -> np.ndarray:
        """Camera-to-world (4, 4) at fractional frame time t (exact at integers; linear in translation
        and geodesic in rotation between frames, extrapolated past the ends)."""
        i = int(np.clip(np.floor(t), 0, len(self.c2w_world) - 2))
        a = t - i
        if a == 0.0:
            return self.c2w_world[i]
        A, B = self.c2w_world[i], self.c2w_world[i + 1]
        c2w = np.eye(4)
        step = Rotation.from_matrix(A[:3, :3].T @ B[:3, :3]).as_rotvec()
        c2w[:3, :3] = A[:3, :3] @ Rotation.from_rotvec(a * step).as_matrix()
        c2w[:3, 3] = A[:3, 3] + a * (B[:3, 3] - A[:3, 3])
        return c2w


def _make_texture(rng: np.random.Generator, min_wavelength: float) -> _Texture:
    n = 10
    wavelengths = np.exp(rng.uniform(np.log(min_wavelength), np.log(min_wavelength * 8), n))
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    # Mostly luminance detail with a little colour, like real surfaces: survives the 4:2:0
    # chroma subsampling of ordinary video codecs.
    luma = rng.uniform(0.04, 0.12, (n, 1)) * rng.choice([-1, 1], (n, 1))
    amps = luma * rng.uniform(0.8, 1.2, (n, 3))
    return _Texture(rng.uniform(0.25, 0.75, 3), dirs / wavelengths[:, None], rng.uniform(0, 2 * np.pi, n), amps)


def scene_intrinsics(cfg: SceneConfig) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of the clip's camera in pixels (LABELS.md: pixel centres at integers)."""
    f = float((cfg.width / 2) / np.tan(np.radians(cfg.fov_x_deg) / 2))
    return f, f, (cfg.width - 1) / 2, (cfg.height - 1) / 2


def _build_scene(cfg: SceneConfig) -> _Scene:
    rng = np.random.default_rng(cfg.seed)
    fx, fy, cx, cy = scene_intrinsics(cfg)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    # Texture detail stays above ~5 pixels per period even on the far wall (~8 m), whatever
    # the resolution, so the supersampled image does not alias.
    min_wavelength = 5.0 * 8.0 / fx
    faces: list[_Texture | None] = [_make_texture(rng, min_wavelength) for _ in range(_NUM_FACES)]
    c2w_world = _camera_trajectory(cfg, rng)
    _check_camera_inside(cfg, c2w_world)
    # New scene options draw from their own streams, so the room clips of earlier versions
    # stay bit-identical and a seed keeps its objects and camera across scene and texture.
    faces = _background(cfg, faces, c2w_world, fx, min_wavelength, np.random.default_rng((cfg.seed, 2)))
    objects: list[_Object] = []
    if not cfg.large_mover:
        for moving in [False] * cfg.num_static + [True] * cfg.num_moving:
            objects.append(_place_object(rng, min_wavelength, moving, objects, cfg.num_frames,
                                         speed=cfg.mover_speed))
        return _Scene(faces, objects, c2w_world, K, cfg.scene, cfg.sky_distance_m)
    large = _large_mover(cfg, c2w_world, min_wavelength, np.random.default_rng((cfg.seed, 1)))
    times = np.linspace(0.0, cfg.num_frames - 1.0, 5)  # the large mover sweeps the view: check all along
    for moving in [False] * cfg.num_static + [True] * (cfg.num_moving - 1):
        objects.append(_place_object(rng, min_wavelength, moving, [large, *objects], cfg.num_frames, times,
                                     speed=cfg.mover_speed))
    objects.insert(cfg.num_static, large)  # static objects first, then the movers (ids follow)
    return _Scene(faces, objects, c2w_world, K, cfg.scene, cfg.sky_distance_m)


def _check_camera_inside(cfg: SceneConfig, c2w_world: np.ndarray) -> None:
    position = c2w_world[:, :3, 3]
    if cfg.scene == "room":
        outside = np.any(np.abs(position) > _ROOM_HALF - 0.3, axis=1)
        where = "leaves the room"
    else:
        outside = (position[:, 1] > _GROUND_Y - 0.3) | (np.linalg.norm(position, axis=1) > cfg.sky_distance_m - 5.0)
        where = "goes below the ground or near the sky"
    if outside.any():
        frame = int(np.argmax(outside))
        raise ValueError(
            f"the {cfg.camera} camera {where} at frame {frame} (camera_speed {cfg.camera_speed}, "
            f"{cfg.num_frames} frames): lower camera_speed or num_frames"
        )


def _background(
    cfg: SceneConfig,
    room_faces: list[_Texture | None],
    c2w_world: np.ndarray,
    focal_px: float,
    min_wavelength: float,
    rng: np.random.Generator,
) -> list[_Texture | None]:
    """Textures of the background surfaces (ids 0-5) for the scene kind and texture class."""
    if cfg.scene == "room" and cfg.texture == "rich":
        return room_faces
    viewpoint = c2w_world[:, :3, 3].mean(axis=0)
    # planes as (id, normal axis, perpendicular distance from the clip's mean viewpoint)
    if cfg.scene == "room":
        faces = list(room_faces)
        planes = [
            (2 * a + side, a, abs((2 * side - 1) * _ROOM_HALF[a] - viewpoint[a])) for a in range(3) for side in (0, 1)
        ]
    else:
        ground = _make_texture(rng, 2.0 * min_wavelength)
        ground.fade = _PlaneFade(viewpoint, 1, _GROUND_Y - viewpoint[1], focal_px)
        faces = [ground, _make_sky_texture(rng, cfg.sky_distance_m, focal_px), None, None, None, None]
        planes = [(GROUND_ID, 1, _GROUND_Y - viewpoint[1])]
    if cfg.texture == "low":
        for tex in faces:
            if tex is not None:
                tex.amps = tex.amps * _LOW_TEXTURE_GAIN
    elif cfg.texture == "repeated":
        period_px = rng.uniform(8.0, 12.0)  # one wavelength for the whole clip
        for face_id, axis, distance in planes:
            faces[face_id] = _with_plaid(faces[face_id], axis, distance, period_px, focal_px, viewpoint, cfg.scene, rng)
    return faces


def _make_sky_texture(rng: np.random.Generator, distance: float, focal_px: float) -> _Texture:
    """Low-contrast luminance detail like clouds on a bluish base; periods of 8-64 px at any distance."""
    n = 10
    wavelengths = np.exp(rng.uniform(np.log(8.0), np.log(64.0), n)) * distance / focal_px
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    luma = rng.uniform(0.015, 0.05, (n, 1)) * rng.choice([-1, 1], (n, 1))
    amps = luma * rng.uniform(0.9, 1.1, (n, 3))
    base = np.array([0.55, 0.66, 0.84]) + rng.uniform(-0.05, 0.05, 3)
    return _Texture(base, dirs / wavelengths[:, None], rng.uniform(0, 2 * np.pi, n), amps)


def _with_plaid(
    tex: _Texture,
    axis: int,
    distance: float,
    period_px: float,
    focal_px: float,
    viewpoint: np.ndarray,
    scene: str,
    rng: np.random.Generator,
) -> _Texture:
    """`tex` faint (15 %) under a dominant plaid of one wavelength along the plane's two in-plane axes.

    The wavelength gives `period_px` where the plane faces the camera at `distance`; the
    ground of open scenes is seen at grazing angles, so it gets stripes across x (lines that
    recede to the horizon keep their period along image rows) sized for ~4 m away.
    """
    in_plane = [a for a in range(3) if a != axis]
    fade = _PlaneFade(viewpoint, axis, distance, focal_px)
    if scene == "open":
        in_plane, distance = [0], 4.0
    wavelength = period_px * distance / focal_px
    freqs = np.zeros((len(in_plane), 3))
    freqs[np.arange(len(in_plane)), in_plane] = 1.0 / wavelength
    luma = 0.16 * rng.choice([-1, 1], (len(in_plane), 1)) * np.ones((1, 3))
    return _Texture(
        tex.base,
        np.concatenate([tex.freqs, freqs]),
        np.concatenate([tex.phases, rng.uniform(0, 2 * np.pi, len(in_plane))]),
        np.concatenate([tex.amps * 0.15, luma]),
        fade,
    )


def _large_mover(cfg: SceneConfig, c2w_world: np.ndarray, min_wavelength: float, rng: np.random.Generator) -> _Object:
    """A large object ~2.6 m ahead of the camera's middle frame, crossing the view sideways.

    Its size covers roughly 20-40 % of the frame; it travels along with the camera's mean
    velocity plus a sideways sweep of up to 2 % of the frame width per frame (at most 40 % of
    the width over the clip), so it stays in view and keeps its size.
    """
    mid = c2w_world[(cfg.num_frames - 1) // 2]
    depth = 2.6
    half_width_m = depth * np.tan(np.radians(cfg.fov_x_deg) / 2)
    kind = "sphere" if rng.random() < 0.5 else "box"
    if kind == "sphere":
        size = np.array([rng.uniform(0.42, 0.5) * half_width_m])
    else:
        size = rng.uniform(0.3, 0.36, 3) * half_width_m
    sweep = min(0.04 * half_width_m, 0.8 * half_width_m / max(cfg.num_frames - 1, 1))  # m per frame
    side = rng.choice([-1.0, 1.0])
    lateral = np.array([side * sweep, rng.uniform(-0.1, 0.1) * sweep, rng.uniform(-0.2, 0.2) * sweep])
    camera_velocity = (c2w_world[-1, :3, 3] - c2w_world[0, :3, 3]) / max(cfg.num_frames - 1, 1)
    velocity = mid[:3, :3] @ lateral + camera_velocity
    t_mid = (cfg.num_frames - 1) // 2
    center_mid = mid[:3, :3] @ np.array([0.0, 0.12 * depth, depth]) + mid[:3, 3]
    axis = rng.normal(size=3)
    spin = axis / np.linalg.norm(axis) * np.radians(rng.uniform(1.0, 2.5))
    return _Object(kind, size, center_mid - velocity * t_mid, rng.normal(size=3), velocity, spin,
                   _make_texture(rng, min_wavelength))


def _bounding_radius(ob: _Object) -> float:
    return float(ob.size[0] if ob.kind == "sphere" else np.linalg.norm(ob.size))


def _place_object(
    rng: np.random.Generator,
    min_wavelength: float,
    moving: bool,
    others: list[_Object],
    num_frames: int,
    times: np.ndarray | None = None,
    speed: float = 1.0,
) -> _Object:
    """A new object whose bounding sphere, at `times` (default the clip's start and end), keeps clear of the others.

    Overlapping objects would hide each other (a moving object inside a still one shows no motion).
    """
    times = (0.0, num_frames - 1.0) if times is None else times
    candidate = _make_object(rng, min_wavelength, moving, speed)
    for _ in range(200):
        clear = all(
            np.linalg.norm(candidate.pose(t)[:3, 3] - other.pose(t)[:3, 3])
            > _bounding_radius(candidate) + _bounding_radius(other) + 0.05
            for other in others
            for t in times
        )
        if clear:
            return candidate
        candidate = _make_object(rng, min_wavelength, moving, speed)
    return candidate  # a crowded scene: accept an overlap rather than fail


def _make_object(rng: np.random.Generator, min_wavelength: float, moving: bool, speed: float = 1.0) -> _Object:
    kind = "sphere" if rng.random() < 0.5 else "box"
    size = np.array([rng.uniform(0.35, 0.7)]) if kind == "sphere" else rng.uniform(0.25, 0.6, 3)
    center = np.array([rng.uniform(-1.4, 1.4), rng.uniform(-0.5, 0.8), rng.uniform(1.2, 3.2)])
    velocity = np.zeros(3)
    spin = np.zeros(3)
    if moving:
        direction = rng.normal(size=3) * np.array([1.0, 0.3, 0.6])
        velocity = direction / np.linalg.norm(direction) * rng.uniform(0.015, 0.03) * speed
        axis = rng.normal(size=3)
        spin = axis / np.linalg.norm(axis) * np.radians(rng.uniform(0.8, 2.0)) * speed
    return _Object(kind, size, center, rng.normal(size=3), velocity, spin, _make_texture(rng, min_wavelength))


def _look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = target - position
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)  # y is down, so x = down x forward points right
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = position
    return c2w


def _camera_trajectory(cfg: SceneConfig, rng: np.random.Generator) -> np.ndarray:
    """Camera-to-world poses in the room's frame for each frame."""
    t = np.arange(cfg.num_frames, dtype=np.float64)
    speed = cfg.camera_speed
    poses = []
    for ti in t:
        if cfg.camera == "dolly":
            position = np.array([0.004 * ti, -0.002 * ti, 0.0]) * speed + np.array([0, 0, -2.0])
            position[2] += 0.05 * speed * ti
            c2w = _look_at(position, position + np.array([0.05 * np.sin(0.05 * ti), 0.0, 1.0]))
        elif cfg.camera == "orbit":
            angle = np.radians(-15 + 0.8 * speed * ti)
            target = np.array([0.0, 0.2, 4.0])
            position = target + 5.0 * np.array([np.sin(angle), -0.08, -np.cos(angle)])
            c2w = _look_at(position, target)
        elif cfg.camera == "pan":
            yaw = np.radians(-12 + 0.5 * speed * ti)
            position = np.array([0.0, 0.0, -1.5])
            c2w = _look_at(position, position + np.array([np.sin(yaw), 0.0, np.cos(yaw)]))
        else:  # static: sub-millimetre jitter, a camera on a tripod
            jitter = rng.normal(0, 2e-4, 3)
            position = np.array([0.0, 0.0, -1.5]) + jitter
            c2w = _look_at(position, np.array([0.0, 0.0, 4.0]) + rng.normal(0, 2e-4, 3))
        poses.append(c2w)
    return np.stack(poses)


# --------------------------------------------------------------------------- ray casting
@dataclass
class _Hits:
    s: np.ndarray  # (N,) ray parameter; equals z-depth when dirs have camera-z component 1
    obj: np.ndarray  # (N,) int32: 0..5 room faces, 6 + i objects
    local: np.ndarray  # (N, 3) hit point in the hit surface's local frame


def _cast(scene: _Scene, origin: np.ndarray, dirs: np.ndarray, t: float) -> _Hits:
    """Nearest surface along each ray origin + s * dirs (s > 0) at frame time t."""
    n = dirs.shape[0]
    best = np.full(n, np.inf)
    obj = np.full(n, -1, np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        if scene.kind == "room":
            # Room interior: the ray leaves the box through the nearest face ahead of it.
            for axis in range(3):
                for side, face in ((-1.0, 2 * axis), (1.0, 2 * axis + 1)):
                    s = (side * _ROOM_HALF[axis] - origin[axis]) / dirs[:, axis]
                    closer = (s > _EPS) & (s < best)
                    best = np.where(closer, s, best)
                    obj = np.where(closer, face, obj)
        else:
            s = (_GROUND_Y - origin[1]) / dirs[:, 1]
            ground = s > _EPS
            best = np.where(ground, s, best)
            obj = np.where(ground, GROUND_ID, obj)
            s = _sphere_exit(origin, dirs, scene.sky_distance)
            closer = s < best
            best = np.where(closer, s, best)
            obj = np.where(closer, SKY_ID, obj).astype(np.int32)
    obj = obj.astype(np.int32, copy=False)
    dirs_sq = np.einsum("ij,ij->i", dirs, dirs)
    for i, ob in enumerate(scene.objects):
        pose = ob.pose(t)
        # only the rays that pass the object's bounding sphere can hit it (most miss every object)
        near = np.flatnonzero(_may_hit_sphere(pose[:3, 3], _bounding_radius(ob), origin, dirs, dirs_sq))
        s = _intersect(ob, pose, origin, dirs[near])
        closer = s < best[near]
        best[near[closer]] = s[closer]
        obj[near[closer]] = _NUM_FACES + i
    points = origin + best[:, None] * dirs
    local = points.copy()
    for i, ob in enumerate(scene.objects):
        sel = obj == _NUM_FACES + i
        if sel.any():
            local[sel] = transform_points(np.linalg.inv(ob.pose(t)), points[sel])
    return _Hits(best, obj, local)


def _may_hit_sphere(centre: np.ndarray, radius: float, origin: np.ndarray, dirs: np.ndarray,
                    dirs_sq: np.ndarray) -> np.ndarray:
    """(N,) bool: rays origin + s * dirs (s > 0) that may meet a sphere (with a 1 % margin: a
    superset of the rays that do)."""
    to_centre = centre - origin
    clearance = to_centre @ to_centre - (1.01 * radius + 1e-6) ** 2
    if clearance <= 0:  # the origin is inside it
        return np.ones(len(dirs), bool)
    along = dirs @ to_centre
    return (along > 0) & (along * along >= clearance * dirs_sq)


def _sphere_exit(origin: np.ndarray, dirs: np.ndarray, radius: float) -> np.ndarray:
    """Ray parameter where rays from inside a sphere about the world origin leave it (stable roots)."""
    a = np.einsum("ij,ij->i", dirs, dirs)
    b = 2 * dirs @ origin
    c = origin @ origin - radius**2  # < 0: the origin is inside
    q = -0.5 * (b + np.where(b >= 0, 1.0, -1.0) * np.sqrt(b * b - 4 * a * c))
    return np.maximum(q / a, c / q)


def _intersect(ob: _Object, pose: np.ndarray, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit with one object (inf where missed)."""
    R, c = pose[:3, :3], pose[:3, 3]
    o = R.T @ (origin - c)
    d = dirs @ R
    if ob.kind == "sphere":
        a = np.einsum("ij,ij->i", d, d)
        b = 2 * d @ o
        cc = o @ o - ob.size[0] ** 2
        disc = b * b - 4 * a * cc
        with np.errstate(invalid="ignore"):
            s = (-b - np.sqrt(disc)) / (2 * a)
        return np.where((disc >= 0) & (s > _EPS), s, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-ob.size - o) / d
        t2 = (ob.size - o) / d
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    return np.where((t_far >= t_near) & (t_near > _EPS), t_near, np.inf)


def _shade(scene: _Scene, hits: _Hits) -> np.ndarray:
    rgb = np.zeros((hits.obj.shape[0], 3))
    textures = scene.faces + [ob.texture for ob in scene.objects]
    for i, tex in enumerate(textures):
        sel = hits.obj == i
        if tex is not None and sel.any():
            rgb[sel] = tex(hits.local[sel])
    return rgb


def _rays(scene: _Scene, c2w: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-frame ray origin and directions (camera z component 1) through pixel positions (N, 2)."""
    uv1 = np.concatenate([uv, np.ones((uv.shape[0], 1))], axis=1)
    dirs_cam = uv1 @ np.linalg.inv(scene.K).T
    return c2w[:3, 3], dirs_cam @ c2w[:3, :3].T


# --------------------------------------------------------------------------- ground truth
def _render_frame(scene: _Scene, cfg: SceneConfig, i: int) -> tuple[np.ndarray, _Hits]:
    """Linear RGB in [0, 1] (H, W, 3), 2x2 supersampled (and integrated over the shutter), and the centre rays' hits."""
    H, W = cfg.height, cfg.width
    uv = pixel_grid(H, W).reshape(-1, 2)
    origin, dirs = _rays(scene, scene.c2w_world[i], uv)
    centre = _cast(scene, origin, dirs, float(i))
    rgb = np.zeros((uv.shape[0], 3))
    if cfg.motion_blur == 0:
        for du, dv in _SUPERSAMPLE:
            o, d = _rays(scene, scene.c2w_world[i], uv + np.array([du, dv]))
            rgb += _shade(scene, _cast(scene, o, d, float(i))) / 4
        return rgb.reshape(H, W, 3), centre
    # The shutter is open over `motion_blur` of the frame interval, centred on the frame time;
    # each sub-frame time takes one supersampling offset in turn.
    for j in range(_BLUR_SAMPLES):
        t = i + cfg.motion_blur * ((j + 0.5) / _BLUR_SAMPLES - 0.5)
        o, d = _rays(scene, scene.camera_at(t), uv + np.array(_SUPERSAMPLE[j % len(_SUPERSAMPLE)]))
        rgb += _shade(scene, _cast(scene, o, d, t)) / _BLUR_SAMPLES
    return rgb.reshape(H, W, 3), centre


def _to_frames(cfg: SceneConfig, rgb: list[np.ndarray]) -> np.ndarray:
    """8-bit frames from linear RGB, with the config's exposure drift and sensor noise (seeded)."""
    rng = np.random.default_rng((cfg.seed, 3))
    direction = rng.choice([-1.0, 1.0])
    frames = []
    for i, image in enumerate(rgb):
        levels = image * 255
        if cfg.exposure_drift:
            progress = i / max(cfg.num_frames - 1, 1)
            levels = levels * (1.0 + direction * cfg.exposure_drift * (1 - np.cos(np.pi * progress)) / 2)
        if cfg.noise_std:
            levels = levels + rng.normal(0.0, cfg.noise_std, levels.shape)
        frames.append(np.clip(np.round(levels), 0, 255).astype(np.uint8))
    return np.stack(frames)


def _world_point_at(scene: _Scene, hits: _Hits, t: float) -> np.ndarray:
    """Where the surface points hit at some frame lie (world frame) at frame time t."""
    out = hits.local.copy()
    for i, ob in enumerate(scene.objects):
        sel = hits.obj == _NUM_FACES + i
        if sel.any():
            out[sel] = transform_points(ob.pose(t), hits.local[sel])
    return out


def _flow_between(scene: _Scene, cfg: SceneConfig, hits_i: _Hits, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact flow i -> j and its validity (visible in j and inside the image)."""
    H, W = cfg.height, cfg.width
    X_j = _world_point_at(scene, hits_i, float(j))
    cam_j = transform_points(np.linalg.inv(scene.c2w_world[j]), X_j)
    q, z_j = project_points(cam_j, scene.K)
    flow = q - pixel_grid(H, W).reshape(-1, 2)
    inside = inside_image(q, H, W) & (z_j > 0) & np.isfinite(hits_i.s)
    visible = np.zeros_like(inside)
    if inside.any():
        origin, dirs = _rays(scene, scene.c2w_world[j], q[inside])
        hits_j = _cast(scene, origin, dirs, float(j))
        # Visible iff the first surface along the ray through q is the point itself; depth
        # alone decides, since room faces meet at edges where object ids flip but depth agrees.
        visible[inside] = np.abs(hits_j.s - z_j[inside]) <= 1e-6 + 1e-5 * z_j[inside]
    # The true flow is kept also where the target is hidden or outside the image (it is
    # well defined there); validity says where it can be observed.
    flow = np.where(np.isfinite(flow), flow, 0.0)
    return flow.reshape(H, W, 2), (inside & visible).reshape(H, W)


def _moving_between(scene: _Scene, obj: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Whether the surface with each id moves in the world between frame times t0 and t1."""
    moving_ids = [
        _NUM_FACES + i for i, ob in enumerate(scene.objects) if not np.allclose(ob.pose(t0), ob.pose(t1), atol=1e-9)
    ]
    return np.isin(obj, moving_ids)


def render_clip(cfg: SceneConfig) -> SyntheticClip:
    """Render a synthetic clip and its exact labels.

    Returns:
        SyntheticClip with frames (T, H, W, 3) uint8 and `labels` holding every stored field
        of LABELS.md plus `points` (S, H, W, 3), in first-frame coordinates and metres.
    """
    scene = _build_scene(cfg)
    T, H, W, stride = cfg.num_frames, cfg.height, cfg.width, cfg.stride
    key = list(range(0, T, stride))
    rgb, hits = [], []
    for i in range(T):
        image, h = _render_frame(scene, cfg, i)
        rgb.append(image)
        hits.append(h)
    world_to_first = np.linalg.inv(scene.c2w_world[0])
    c2w = np.einsum("ij,tjk->tik", world_to_first, scene.c2w_world)

    flow, flow_valid = zip(*(_flow_between(scene, cfg, hits[i], i, i + 1) for i in range(T - 1)))
    key_flow, key_flow_valid = zip(*(_flow_between(scene, cfg, hits[a], a, b) for a, b in zip(key[:-1], key[1:])))

    dynamic = [_moving_between(scene, hits[a].obj, a, b).reshape(H, W) for a, b in zip(key[:-1], key[1:])]
    dynamic.append(_moving_between(scene, hits[key[-1]].obj, key[-2], key[-1]).reshape(H, W))
    points, scene_flow, scene_flow_valid = [], [], []
    for n, k in enumerate(key):
        X_k = transform_points(world_to_first, _world_point_at(scene, hits[k], float(k)))
        points.append(X_k.reshape(H, W, 3))
        if n + 1 < len(key):
            X_next = transform_points(world_to_first, _world_point_at(scene, hits[k], float(key[n + 1])))
            motion = (X_next - X_k).reshape(H, W, 3)
            valid = dynamic[n] & key_flow_valid[n]
            scene_flow.append(np.where(dynamic[n][..., None], motion, 0.0))
            scene_flow_valid.append(valid)

    depth = np.stack([h.s.reshape(H, W) for h in hits])
    depth_valid = np.isfinite(depth)
    labels = {
        "frame_index": np.arange(T, dtype=np.int64),
        "timestamps": np.arange(T, dtype=np.float64) / cfg.fps,
        "K": np.tile(scene.K, (T, 1, 1)).astype(np.float32),
        "c2w": c2w.astype(np.float32),
        "depth": np.where(depth_valid, depth, 0.0).astype(np.float32),
        "depth_valid": depth_valid,
        "flow": np.stack(flow).astype(np.float32),
        "flow_valid": np.stack(flow_valid),
        "flow_uncertainty": np.zeros((T - 1, H, W), np.float32),
        "key_flow": np.stack(key_flow).astype(np.float32),
        "key_flow_valid": np.stack(key_flow_valid),
        "dynamic_mask": np.stack(dynamic),
        "points": np.stack(points).astype(np.float32),
        "scene_flow": np.stack(scene_flow).astype(np.float32),
        "scene_flow_valid": np.stack(scene_flow_valid),
    }
    labels["c2w"][0] = np.eye(4, dtype=np.float32)  # exact identity, not inv(A) @ A
    object_ids = np.stack([h.obj.reshape(H, W) for h in hits])
    metadata = {"config": asdict(cfg), "first_c2w_world": scene.c2w_world[0].tolist()}
    return SyntheticClip(cfg, _to_frames(cfg, rgb), labels, object_ids, scene_caption(cfg), metadata)


def scene_caption(cfg: SceneConfig) -> str:
    shot = {"dolly": "a dolly shot", "orbit": "an orbiting shot", "pan": "a panning shot", "static": "a static shot"}
    place = {
        ("room", "rich"): "a textured room",
        ("room", "low"): "a room with plain, nearly textureless walls",
        ("room", "repeated"): "a room with walls in one repeating pattern",
        ("open", "rich"): "an open yard under a cloudy sky",
        ("open", "low"): "an open yard with plain ground under a hazy sky",
        ("open", "repeated"): "an open yard with striped ground under a cloudy sky",
    }[(cfg.scene, cfg.texture)]
    movers = f"{cfg.num_moving} moving object{'s' if cfg.num_moving != 1 else ''}"
    if cfg.large_mover:
        movers += ", one of them large and close"
    options = (("sensor noise", cfg.noise_std), ("motion blur", cfg.motion_blur), ("changing exposure", cfg.exposure_drift))
    degradations = [name for name, on in options if on]
    caption = f"{shot[cfg.camera]} of {place} with {cfg.num_static} still and {movers}"
    return caption + (f", with {', '.join(degradations)}" if degradations else "")


# a broadcaster's caption bottom right and a logo top left: x, y (share of the frame), text, scale
CAPTIONS = ((0.58, 0.94, "WorldNews 24", 0.55), (0.02, 0.09, "LOGO", 0.8))


def burn_captions(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 frames with `CAPTIONS` burned in, opaque white outlined in black, and the
    (H, W) bool pixels they change."""
    out = frames.copy()
    height, width = frames.shape[1:3]
    for frame in out:
        for x, y, text, scale in CAPTIONS:
            origin = (int(x * width), int(y * height))
            cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out, np.any(out != frames, axis=(0, 3))


def blend_captions(frames: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 frames with `CAPTIONS` blended in white at `alpha` in (0, 1] (a translucent
    mark: the scene shows through), and the (H, W) bool pixels they cover."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    height, width = frames.shape[1:3]
    layer = np.zeros((height, width), np.uint8)
    for x, y, text, scale in CAPTIONS:
        cv2.putText(layer, text, (int(x * width), int(y * height)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 2, cv2.LINE_AA)
    weight = (layer.astype(np.float32) / 255 * alpha)[None, :, :, None]
    blended = frames.astype(np.float32) * (1 - weight) + 255 * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8), layer > 0
