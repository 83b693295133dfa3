"""Procedural synthetic 4D scenes with exact ground truth for every LABELS.md array.

A scene is a textured box-shaped room (static background) holding rigid spheres and
boxes, some of which translate and rotate, seen by a moving pinhole camera (dolly,
orbit, pan or nearly static). Everything is ray cast analytically, so depth, cameras,
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

import numpy as np
from scipy.spatial.transform import Rotation

from labelers.geometry import inside_image, pixel_grid, project_points, transform_points

__all__ = [
    "SceneConfig",
    "SyntheticClip",
    "render_clip",
    "scene_caption",
    "scene_intrinsics",
    "CAMERA_MOTIONS",
    "GENERATOR_VERSION",
]

GENERATOR_VERSION = "1"
CAMERA_MOTIONS = ("dolly", "orbit", "pan", "static")
CameraMotion = Literal["dolly", "orbit", "pan", "static"]

_EPS = 1e-9
_ROOM_HALF = np.array([4.0, 2.0, 6.0])  # room spans x in [-4, 4], y in [-2, 2] (y down), z in [-6, 6]
_NUM_FACES = 6


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

    def __post_init__(self) -> None:
        if self.camera not in CAMERA_MOTIONS:
            raise ValueError(f"camera must be one of {CAMERA_MOTIONS}, got {self.camera!r}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"resolution {self.height}x{self.width} is too small (min 8x8)")
        if self.num_frames < 2 or (self.num_frames - 1) % self.stride:
            raise ValueError(f"num_frames - 1 ({self.num_frames - 1}) must be a positive multiple of stride {self.stride}")
        if self.num_static < 0 or self.num_moving < 0:
            raise ValueError("object counts must be >= 0")

    @property
    def num_key_frames(self) -> int:
        return (self.num_frames - 1) // self.stride + 1


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

    def __call__(self, p_local: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * (p_local @ self.freqs.T) + self.phases
        return np.clip(self.base + np.sin(arg) @ self.amps, 0.0, 1.0)


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
    faces: list[_Texture]
    objects: list[_Object]
    c2w_world: np.ndarray  # (T, 4, 4)
    K: np.ndarray  # (3, 3)


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
    faces = [_make_texture(rng, min_wavelength) for _ in range(_NUM_FACES)]
    c2w_world = _camera_trajectory(cfg, rng)
    outside = np.abs(c2w_world[:, :3, 3]) > _ROOM_HALF - 0.3
    if outside.any():
        frame = int(np.argmax(outside.any(axis=1)))
        raise ValueError(
            f"the {cfg.camera} camera leaves the room at frame {frame} (camera_speed {cfg.camera_speed}, "
            f"{cfg.num_frames} frames): lower camera_speed or num_frames"
        )
    objects: list[_Object] = []
    for moving in [False] * cfg.num_static + [True] * cfg.num_moving:
        objects.append(_place_object(rng, min_wavelength, moving, objects, cfg.num_frames))
    return _Scene(faces, objects, c2w_world, K)


def _bounding_radius(ob: _Object) -> float:
    return float(ob.size[0] if ob.kind == "sphere" else np.linalg.norm(ob.size))


def _place_object(
    rng: np.random.Generator, min_wavelength: float, moving: bool, others: list[_Object], num_frames: int
) -> _Object:
    """A new object whose bounding sphere, at the start and end of the clip, keeps clear of the others.

    Overlapping objects would hide each other (a moving object inside a still one shows no motion).
    """
    candidate = _make_object(rng, min_wavelength, moving)
    for _ in range(200):
        clear = all(
            np.linalg.norm(candidate.pose(t)[:3, 3] - other.pose(t)[:3, 3])
            > _bounding_radius(candidate) + _bounding_radius(other) + 0.05
            for other in others
            for t in (0.0, num_frames - 1.0)
        )
        if clear:
            return candidate
        candidate = _make_object(rng, min_wavelength, moving)
    return candidate  # a crowded scene: accept an overlap rather than fail


def _make_object(rng: np.random.Generator, min_wavelength: float, moving: bool) -> _Object:
    kind = "sphere" if rng.random() < 0.5 else "box"
    size = np.array([rng.uniform(0.35, 0.7)]) if kind == "sphere" else rng.uniform(0.25, 0.6, 3)
    center = np.array([rng.uniform(-1.4, 1.4), rng.uniform(-0.5, 0.8), rng.uniform(1.2, 3.2)])
    velocity = np.zeros(3)
    spin = np.zeros(3)
    if moving:
        direction = rng.normal(size=3) * np.array([1.0, 0.3, 0.6])
        velocity = direction / np.linalg.norm(direction) * rng.uniform(0.015, 0.03)
        axis = rng.normal(size=3)
        spin = axis / np.linalg.norm(axis) * np.radians(rng.uniform(0.8, 2.0))
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
    # Room interior: the ray leaves the box through the nearest face ahead of it.
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            for side, face in ((-1.0, 2 * axis), (1.0, 2 * axis + 1)):
                s = (side * _ROOM_HALF[axis] - origin[axis]) / dirs[:, axis]
                closer = (s > _EPS) & (s < best)
                best = np.where(closer, s, best)
                obj = np.where(closer, face, obj)
    for i, ob in enumerate(scene.objects):
        s = _intersect(ob, ob.pose(t), origin, dirs)
        closer = s < best
        best = np.where(closer, s, best)
        obj = np.where(closer, _NUM_FACES + i, obj).astype(np.int32)
    points = origin + best[:, None] * dirs
    local = points.copy()
    for i, ob in enumerate(scene.objects):
        sel = obj == _NUM_FACES + i
        if sel.any():
            local[sel] = transform_points(np.linalg.inv(ob.pose(t)), points[sel])
    return _Hits(best, obj, local)


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
        if sel.any():
            rgb[sel] = tex(hits.local[sel])
    return rgb


def _rays(scene: _Scene, c2w: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-frame ray origin and directions (camera z component 1) through pixel positions (N, 2)."""
    uv1 = np.concatenate([uv, np.ones((uv.shape[0], 1))], axis=1)
    dirs_cam = uv1 @ np.linalg.inv(scene.K).T
    return c2w[:3, 3], dirs_cam @ c2w[:3, :3].T


# --------------------------------------------------------------------------- ground truth
def _render_frame(scene: _Scene, cfg: SceneConfig, i: int) -> tuple[np.ndarray, _Hits]:
    H, W = cfg.height, cfg.width
    uv = pixel_grid(H, W).reshape(-1, 2)
    origin, dirs = _rays(scene, scene.c2w_world[i], uv)
    centre = _cast(scene, origin, dirs, float(i))
    rgb = np.zeros((uv.shape[0], 3))
    for du, dv in ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)):
        o, d = _rays(scene, scene.c2w_world[i], uv + np.array([du, dv]))
        rgb += _shade(scene, _cast(scene, o, d, float(i))) / 4
    frame = np.round(rgb.reshape(H, W, 3) * 255).astype(np.uint8)
    return frame, centre


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
    frames, hits = [], []
    for i in range(T):
        frame, h = _render_frame(scene, cfg, i)
        frames.append(frame)
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
    return SyntheticClip(cfg, np.stack(frames), labels, object_ids, scene_caption(cfg), {"config": asdict(cfg)})


def scene_caption(cfg: SceneConfig) -> str:
    shot = {"dolly": "a dolly shot", "orbit": "an orbiting shot", "pan": "a panning shot", "static": "a static shot"}
    movers = f"{cfg.num_moving} moving object{'s' if cfg.num_moving != 1 else ''}"
    return f"{shot[cfg.camera]} of a textured room with {cfg.num_static} still and {movers}"
