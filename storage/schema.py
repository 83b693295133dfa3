"""The label contract of LABELS.md as data: field specs and validation on write.

Each array of a clip is described by a `FieldSpec` (symbolic shape, dtype family, the
validity mask that governs it). `validate_clip` checks a clip's arrays and attributes
against the contract and raises `LabelValidationError` naming the clip and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA_VERSION",
    "FieldSpec",
    "FIELDS",
    "STORED_FIELDS",
    "DERIVED_FIELDS",
    "LabelValidationError",
    "ClipDims",
    "validate_clip",
    "validate_attrs",
    "validate_provenance",
    "PROVENANCES",
    "PROVENANCE_PARTS",
]


class LabelValidationError(ValueError):
    """A clip's labels violate the contract; names the clip and the offending field."""

    def __init__(self, clip_id: str, field: str, message: str) -> None:
        self.clip_id = clip_id
        self.field = field
        super().__init__(f"clip {clip_id!r}: field {field!r}: {message}")


@dataclass(frozen=True)
class FieldSpec:
    """One array of the contract.

    `dims` uses the symbols T, T-1, S, S-1, H, W or integers; `kind` is one of
    "int", "float64", "float32", "half" (float16 allowed by the contract) or "bool";
    `valid` names the boolean mask outside which values carry no meaning (stored as 0).
    """

    name: str
    dims: tuple[str | int, ...]
    kind: str
    valid: str | None = None


FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in [
        FieldSpec("frame_index", ("T",), "int"),
        FieldSpec("timestamps", ("T",), "float64"),
        FieldSpec("K", ("T", 3, 3), "float32"),
        FieldSpec("c2w", ("T", 4, 4), "float32"),
        FieldSpec("depth", ("T", "H", "W"), "half", valid="depth_valid"),
        FieldSpec("depth_valid", ("T", "H", "W"), "bool"),
        FieldSpec("flow", ("T-1", "H", "W", 2), "half", valid="flow_valid"),
        FieldSpec("flow_valid", ("T-1", "H", "W"), "bool"),
        FieldSpec("flow_uncertainty", ("T-1", "H", "W"), "half"),
        FieldSpec("key_flow", ("S-1", "H", "W", 2), "half", valid="key_flow_valid"),
        FieldSpec("key_flow_valid", ("S-1", "H", "W"), "bool"),
        FieldSpec("dynamic_mask", ("S", "H", "W"), "bool"),
        FieldSpec("points", ("S", "H", "W", 3), "float32"),
        FieldSpec("scene_flow", ("S-1", "H", "W", 3), "half", valid="scene_flow_valid"),
        FieldSpec("scene_flow_valid", ("S-1", "H", "W"), "bool"),
    ]
}
DERIVED_FIELDS = ("points",)  # computed on read from depth, K and c2w
STORED_FIELDS = tuple(name for name in FIELDS if name not in DERIVED_FIELDS)

# Attribute `provenance` = {part: how the set gave it}, written by the dataset importer:
# exact (read from the set's files), derived (follows exactly from exact fields), estimated
# (from a labeler), absent (not provided). The index has one column per part.
PROVENANCES = ("exact", "derived", "estimated", "absent")
PROVENANCE_PARTS = ("camera", "depth", "flow", "key_flow", "dynamic_mask", "scene_flow")

_REQUIRED_ATTRS = ("source", "fps", "stride", "metric_scale", "labelers")
_REQUIRED_SOURCE = ("dataset", "uri", "start_sec", "end_sec", "caption")


@dataclass(frozen=True)
class ClipDims:
    """Sizes of one clip: T label frames, S key frames (stride apart), H x W pixels."""

    T: int
    H: int
    W: int
    stride: int

    @property
    def S(self) -> int:
        return (self.T - 1) // self.stride + 1

    def shape_of(self, spec: FieldSpec) -> tuple[int, ...]:
        sizes = {"T": self.T, "T-1": self.T - 1, "S": self.S, "S-1": self.S - 1, "H": self.H, "W": self.W}
        return tuple(sizes[d] if isinstance(d, str) else d for d in spec.dims)


def clip_dims(clip_id: str, arrays: Mapping[str, np.ndarray], stride: int) -> ClipDims:
    """Read T, H, W from `frame_index` and `depth`, and check the stride fits T."""
    for name in ("frame_index", "depth"):
        if name not in arrays:
            raise LabelValidationError(clip_id, name, "missing (needed to know the clip's size)")
    T = int(np.shape(arrays["frame_index"])[0])
    if np.ndim(arrays["depth"]) != 3:
        raise LabelValidationError(clip_id, "depth", f"expected (T, H, W), got shape {np.shape(arrays['depth'])}")
    _, H, W = np.shape(arrays["depth"])
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise LabelValidationError(clip_id, "stride", f"must be a positive integer, got {stride!r}")
    if T < 2 or (T - 1) % stride != 0:
        raise LabelValidationError(clip_id, "frame_index", f"T={T} frames do not fit key-frame stride {stride}")
    return ClipDims(T=T, H=int(H), W=int(W), stride=int(stride))


def validate_attrs(clip_id: str, attrs: Mapping[str, Any]) -> None:
    """Check the attributes a committed clip must carry (LABELS.md "Attributes of one clip")."""
    for key in _REQUIRED_ATTRS:
        if key not in attrs:
            raise LabelValidationError(clip_id, key, "missing attribute")
    source = attrs["source"]
    if not isinstance(source, Mapping):
        raise LabelValidationError(clip_id, "source", "must be a mapping")
    for key in _REQUIRED_SOURCE:
        if key not in source:
            raise LabelValidationError(clip_id, f"source.{key}", "missing attribute")
    if not isinstance(attrs["metric_scale"], bool):
        raise LabelValidationError(clip_id, "metric_scale", f"must be a bool, got {attrs['metric_scale']!r}")
    if not (isinstance(attrs["fps"], (int, float)) and attrs["fps"] > 0):
        raise LabelValidationError(clip_id, "fps", f"must be a positive number, got {attrs['fps']!r}")
    if not isinstance(attrs["labelers"], Mapping):
        raise LabelValidationError(clip_id, "labelers", "must be a mapping of family -> description")
    validate_provenance(clip_id, attrs)


def validate_provenance(clip_id: str, attrs: Mapping[str, Any]) -> None:
    """Check the optional `provenance` attribute: parts of `PROVENANCE_PARTS` -> one of `PROVENANCES`."""
    provenance = attrs.get("provenance")
    if provenance is None:
        return
    if not isinstance(provenance, Mapping):
        raise LabelValidationError(clip_id, "provenance", f"must be a mapping of part -> one of {PROVENANCES}")
    for part, value in provenance.items():
        if part not in PROVENANCE_PARTS:
            raise LabelValidationError(clip_id, "provenance", f"unknown part {part!r}; parts are {PROVENANCE_PARTS}")
        if value not in PROVENANCES:
            raise LabelValidationError(clip_id, f"provenance.{part}", f"must be one of {PROVENANCES}, got {value!r}")


def validate_clip(clip_id: str, arrays: Mapping[str, np.ndarray], stride: int) -> ClipDims:
    """Check every stored array of a clip against the contract.

    Checks presence, shape, dtype family, finiteness (inside the validity mask for masked
    fields), camera sanity (`c2w[0]` = identity, orthonormal rotations with det +1,
    positive focal lengths) and positive depth where valid.

    Returns:
        The clip's dimensions.
    """
    unknown = sorted(set(arrays) - set(STORED_FIELDS))
    if unknown:
        hint = " (derived on read)" if set(unknown) & set(DERIVED_FIELDS) else ""
        raise LabelValidationError(clip_id, unknown[0], f"not a stored field of the contract{hint}")
    dims = clip_dims(clip_id, arrays, stride)
    for name in STORED_FIELDS:  # shapes and dtypes of all fields first: masks index the values below
        if name not in arrays:
            raise LabelValidationError(clip_id, name, "missing")
        _check_shape_and_dtype(clip_id, FIELDS[name], np.asarray(arrays[name]), dims)
    for name in STORED_FIELDS:
        _check_values(clip_id, FIELDS[name], np.asarray(arrays[name]), arrays)
    _check_cameras(clip_id, np.asarray(arrays["K"]), np.asarray(arrays["c2w"]))
    _check_depth(clip_id, np.asarray(arrays["depth"]), np.asarray(arrays["depth_valid"]))
    if np.any(np.diff(np.asarray(arrays["frame_index"])) < 0):
        raise LabelValidationError(clip_id, "frame_index", "must be non-decreasing")
    if np.any(np.asarray(arrays["flow_uncertainty"], np.float64) < 0):
        raise LabelValidationError(clip_id, "flow_uncertainty", "must be >= 0")
    return dims


def _check_shape_and_dtype(clip_id: str, spec: FieldSpec, value: np.ndarray, dims: ClipDims) -> None:
    expected = dims.shape_of(spec)
    if value.shape != expected:
        raise LabelValidationError(clip_id, spec.name, f"expected shape {expected}, got {value.shape}")
    if spec.kind == "bool" and value.dtype != np.bool_:
        raise LabelValidationError(clip_id, spec.name, f"expected bool, got {value.dtype}")
    if spec.kind == "int" and not np.issubdtype(value.dtype, np.integer):
        raise LabelValidationError(clip_id, spec.name, f"expected an integer dtype, got {value.dtype}")
    if spec.kind in ("float64", "float32", "half") and not np.issubdtype(value.dtype, np.floating):
        raise LabelValidationError(clip_id, spec.name, f"expected a float dtype, got {value.dtype}")


def _check_values(clip_id: str, spec: FieldSpec, value: np.ndarray, arrays: Mapping) -> None:
    if spec.kind not in ("float64", "float32", "half"):
        return
    checked = _masked_view(value, np.asarray(arrays[spec.valid]) if spec.valid else None)
    bad = ~np.isfinite(checked)
    if bad.any():
        scope = f" where {spec.valid}" if spec.valid else ""
        raise LabelValidationError(clip_id, spec.name, f"{int(bad.sum())} non-finite values{scope}")
    if spec.kind == "half" and np.abs(checked).max(initial=0.0) > _FLOAT16_MAX:
        raise LabelValidationError(clip_id, spec.name, "values exceed the float16 range allowed by the contract")


_FLOAT16_MAX = 65000.0


def _masked_view(value: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """The values that must be meaningful: all of them, or those under the validity mask."""
    if valid is None:
        return value.reshape(-1)
    return value[valid]


def _check_cameras(clip_id: str, K: np.ndarray, c2w: np.ndarray) -> None:
    K = K.astype(np.float64)
    c2w = c2w.astype(np.float64)
    if not np.allclose(c2w[0], np.eye(4), atol=1e-5):
        raise LabelValidationError(clip_id, "c2w", "c2w[0] must be the identity (first-frame coordinates)")
    if not np.allclose(c2w[:, 3], [0, 0, 0, 1], atol=1e-6):
        raise LabelValidationError(clip_id, "c2w", "last row of every pose must be (0, 0, 0, 1)")
    R = c2w[:, :3, :3]
    ortho_err = np.abs(np.einsum("tji,tjk->tik", R, R) - np.eye(3)).max(axis=(1, 2))
    if (ortho_err > 1e-3).any():
        t = int(np.argmax(ortho_err))
        raise LabelValidationError(clip_id, "c2w", f"rotation of frame {t} is not orthonormal (error {ortho_err[t]:.2e})")
    det = np.linalg.det(R)
    if (det < 0).any():
        raise LabelValidationError(clip_id, "c2w", f"rotation of frame {int(np.argmin(det))} has det -1 (a reflection)")
    if (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise LabelValidationError(clip_id, "K", "focal lengths must be positive")
    if not np.allclose(K[:, 2], [0, 0, 1]):
        raise LabelValidationError(clip_id, "K", "last row must be (0, 0, 1)")


def _check_depth(clip_id: str, depth: np.ndarray, depth_valid: np.ndarray) -> None:
    bad = depth_valid & ~(depth > 0)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LabelValidationError(clip_id, "depth", f"{int(bad.sum())} valid pixels with depth <= 0, first at {first}")
