"""Zarr v3 label store with a Parquet index (DESIGN.md "Storage").

Layout of a store directory::

    zarr.json                     root group; attribute "worldreel" = {schema_version, precision, codec,
                                  rounding, mantissa_bits}
    clips/<bb>/<clip_id>/         one Zarr group per committed clip (bb: 2 hex digits of a hash)
        zarr.json                 clip attributes (LABELS.md "Attributes of one clip")
        <field>/...               one array per field; one shard file per array, one chunk per frame
    index/index.parquet           compacted index, one row per clip
    index/rows/<clip_id>.parquet  index rows not yet compacted (one per commit)
    .staging/                     clips being written; never read

Commit protocol: a clip is written completely under `.staging/`, validated, then published
with one `os.rename` into `clips/`; only then is its index row written (temp file +
`os.replace`). Every shard file belongs to exactly one clip, so each shard has exactly one
writer and concurrent processes never read-modify-write the same file. A crash leaves at
most a staging directory (ignored, cleaned up later) or a published clip without an index
row (found again by `repair_index`). The directory under `clips/` is the truth about what
is committed; the index is the fast view of it.

Object storage (`s3://`, `gs://`, `az://`): `storage.object_store.ObjectLabelStore`, the same
API with a publish protocol that needs no rename (see that module). `create`/`open` pick the
backend from the location; plain paths and `file://` URLs are local directories.

Rounding (`rounding="compact"`): before compression, the float fields in `ROUNDINGS[name]`
keep only that many mantissa bits (round to nearest), so their low bits are zeros that the
compressor removes. The stored values stay ordinary float16/float32 that every reader
understands; the relative error is at most 2^-(bits + 1). "compact" keeps 7 bits of flow,
key flow and scene flow (at most 0.4 % of the value, 0.016 px on a 4 px flow, far below any
flow's accuracy) and 4 bits of flow uncertainty (3 %, an error estimate), and leaves depth
alone (point maps are derived from it). Measured on DIS pseudo-labels at 240x360
(`bench/bench_storage.py --rounding`): see docs/benchmarks.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from storage.schema import (
    DERIVED_FIELDS,
    FIELDS,
    PROVENANCE_PARTS,
    SCHEMA_VERSION,
    STORED_FIELDS,
    LabelValidationError,
    validate_attrs,
    validate_clip,
    validate_provenance,
)

__all__ = [
    "LabelStore",
    "ClipLabels",
    "SchemaVersionError",
    "ClipNotFoundError",
    "CommitResult",
    "ROUNDINGS",
    "round_mantissa",
]

_STATUSES = ("accepted", "rejected")
OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "azure")
_PRECISIONS = {"float16": np.float16, "float32": np.float32}
ROUNDINGS: dict[str, dict[str, int]] = {
    "none": {},
    "compact": {"flow": 7, "key_flow": 7, "scene_flow": 7, "flow_uncertainty": 4},
}


class SchemaVersionError(RuntimeError):
    """The store or a clip was written with a schema version this reader does not know."""


class ClipNotFoundError(KeyError):
    """No committed clip with that id."""


class RejectedClipError(LookupError):
    """The clip was committed as rejected: it has attributes and reasons but no label arrays."""


class ClipLabels(dict):
    """Arrays of one clip named as LABELS.md, plus the clip's attributes in `.attrs`."""

    def __init__(self, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
        super().__init__(arrays)
        self.attrs = dict(attrs)


@dataclass(frozen=True)
class CommitResult:
    """What a commit did: `committed` is False when the clip was already there.

    `path`: the clip's directory, or its URL in an object store."""

    clip_id: str
    status: str
    committed: bool
    path: Path | str
    nbytes: int


CODECS = ("blosc-zstd", "blosc-lz4", "zstd", "none")


_MANTISSA = {np.dtype(np.float16): (10, np.uint16), np.dtype(np.float32): (23, np.uint32)}


def round_mantissa(values: np.ndarray, keep_bits: int) -> np.ndarray:
    """`values` (float16 or float32) rounded to nearest with `keep_bits` mantissa bits.

    Works on the bit pattern: adding half of the dropped part carries into the exponent when
    needed, so the result is the nearest representable value. A value that would round up to
    infinity is truncated instead. NaN and infinities stay as they are. The relative error is
    at most 2^-(keep_bits + 1) on normal numbers; subnormals (below 6.1e-5 in float16) keep
    fewer significant bits, an absolute error under 2^-(14 + keep_bits + 1).
    """
    width, uint = _MANTISSA[values.dtype]
    if not 0 <= keep_bits <= width:
        raise ValueError(f"keep_bits must be in [0, {width}] for {values.dtype}, got {keep_bits}")
    drop = width - keep_bits
    if drop == 0:
        return values
    bits = np.ascontiguousarray(values).view(uint)
    mask = uint(~((1 << drop) - 1) & np.iinfo(uint).max)
    rounded = ((bits + uint(1 << (drop - 1))) & mask).view(values.dtype)
    truncated = (bits & mask).view(values.dtype)
    finite = np.isfinite(values)
    return np.where(finite & np.isfinite(rounded), rounded, np.where(finite, truncated, values))


def compressors_for(codec: str, dtype: np.dtype) -> tuple:
    """Zarr compressors of a codec name; masks get bit shuffle, other arrays byte shuffle.

    "blosc-zstd" is the default: `make bench` measured it smallest at similar speed.
    """
    shuffle = "bitshuffle" if np.dtype(dtype) == np.bool_ else "shuffle"
    if codec == "blosc-zstd":
        return (BloscCodec(cname="zstd", clevel=3, shuffle=shuffle),)
    if codec == "blosc-lz4":
        return (BloscCodec(cname="lz4", clevel=5, shuffle=shuffle),)
    if codec == "zstd":
        return (ZstdCodec(level=3),)
    if codec == "none":
        return ()
    raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")


def _is_local_store(root: Path) -> bool:
    return (root / "zarr.json").exists()


class LabelStore:
    """A directory holding labelled clips; see the module docstring for the layout."""

    def __init__(self, root: Path, precision: str, codec: str = "blosc-zstd", rounding: str = "none") -> None:
        self.root = root
        self.precision = precision
        self.codec = codec
        self.rounding = rounding

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        precision: str = "float16",
        exist_ok: bool = True,
        codec: str = "blosc-zstd",
        rounding: str = "none",
    ) -> "LabelStore":
        """Create a store (or open it, if it exists and `exist_ok`).

        Args:
            path: directory of the store, a `file://` URL, or an object-storage URL
                (`s3://bucket/prefix`, `gs://`, `az://`; see `storage.object_store`).
            precision: "float16" (contract default for depth, flows, uncertainty, scene flow)
                or "float32" (for exact synthetic labels).
            codec: compression of every array, one of `CODECS`.
            rounding: mantissa rounding before compression, a key of `ROUNDINGS` (module docstring).

        An existing store keeps the settings it was created with.
        """
        if is_object_url(path):
            return _object_backend().create(object_url(path), precision, exist_ok, codec, rounding)
        check_settings(precision, codec, rounding)
        root = local_path(path)
        if _is_local_store(root):
            if not exist_ok:
                raise FileExistsError(f"label store already exists: {root}")
            return cls.open(root)
        if root.exists() and any(root.iterdir()) and not _is_local_store(root):
            raise FileExistsError(f"{root} exists, is not empty and is not a label store")
        root.mkdir(parents=True, exist_ok=True)
        created = True
        try:
            zarr.open_group(
                zarr.storage.LocalStore(root), mode="w-", attributes={"worldreel": store_meta(precision, codec, rounding)}
            )
        except FileExistsError:  # another run created it since the check above (two runs started at once)
            if not exist_ok:
                raise FileExistsError(f"label store already exists: {root}") from None
            created = False
        for sub in ("clips", "index/rows", ".staging", ".locks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return cls(root, precision, codec, rounding) if created else cls.open(root)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "LabelStore":
        """Open an existing store (a directory, `file://` URL or object-storage URL), checking its schema version."""
        if is_object_url(path):
            return _object_backend().open(object_url(path))
        root = local_path(path)
        if not (root / "zarr.json").exists():
            raise FileNotFoundError(f"no label store at {root} (missing zarr.json)")
        group = zarr.open_group(zarr.storage.LocalStore(root, read_only=True), mode="r")
        precision, codec, rounding = check_store_meta(str(root), group.attrs.get("worldreel"))
        return cls(root, precision, codec, rounding)

    @property
    def location(self) -> str:
        """Where the store lives: a directory path, or an object-storage URL (never credentials)."""
        return str(self.root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r}, precision={self.precision!r})"

    # ------------------------------------------------------------------ paths
    def clip_path(self, clip_id: str) -> Path:
        """Directory of a committed clip (whether or not it exists)."""
        _check_clip_id(clip_id)
        bucket = hashlib.sha1(clip_id.encode()).hexdigest()[:2]
        return self.root / "clips" / bucket / clip_id

    def has_clip(self, clip_id: str) -> bool:
        """Whether the clip is committed (accepted or rejected). The directory is the truth."""
        return (self.clip_path(clip_id) / "zarr.json").exists()

    # ------------------------------------------------------------------ writing
    def commit(
        self,
        clip_id: str,
        arrays: Mapping[str, np.ndarray],
        attrs: Mapping[str, Any],
        replace: bool = False,
    ) -> CommitResult:
        """Validate and atomically commit an accepted clip.

        Args:
            clip_id: stable id of the clip.
            arrays: every stored field of LABELS.md (`points` is derived on read, not stored).
            attrs: clip attributes; `source`, `fps`, `stride`, `metric_scale`, `labelers` are
                required, `qa` is optional. `height`, `width`, `T`, `status`, `schema_version`
                are set here.
            replace: replace a clip that is already committed (e.g. a re-labelled rejected clip).

        Raises:
            LabelValidationError: naming the clip and field; nothing becomes visible.
        """
        attrs = _plain(dict(attrs))
        validate_attrs(clip_id, attrs)
        dims = validate_clip(clip_id, arrays, attrs["stride"])
        full_attrs = {
            **attrs,
            "clip_id": clip_id,
            "height": dims.H,
            "width": dims.W,
            "T": dims.T,
            "status": "accepted",
            "reasons": [],
            "qa": dict(attrs.get("qa", {})),
        }
        return self._publish(clip_id, full_attrs, self._stored_arrays(arrays), replace)

    def commit_rejected(
        self,
        clip_id: str,
        attrs: Mapping[str, Any],
        reasons: Sequence[str],
        replace: bool = False,
    ) -> CommitResult:
        """Record a rejected clip: attributes and reasons only, no arrays.

        `attrs` needs at least `source`; quality metrics under `qa` are kept for reports.
        """
        if not reasons:
            raise LabelValidationError(clip_id, "reasons", "a rejected clip needs at least one reason")
        attrs = _plain(dict(attrs))
        if "source" not in attrs:
            raise LabelValidationError(clip_id, "source", "missing attribute")
        validate_provenance(clip_id, attrs)
        full_attrs = {**attrs, "clip_id": clip_id, "status": "rejected", "reasons": [str(r) for r in reasons]}
        full_attrs.setdefault("qa", {})
        return self._publish(clip_id, full_attrs, {}, replace)

    def _stored_arrays(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Cast to the stored dtypes and zero values outside validity masks (they mean nothing)."""
        half = _PRECISIONS[self.precision]
        out = {}
        for name in STORED_FIELDS:
            spec = FIELDS[name]
            value = np.asarray(arrays[name])
            dtype = {"int": np.int64, "float64": np.float64, "float32": np.float32, "half": half, "bool": np.bool_}[
                spec.kind
            ]
            value = value.astype(dtype, copy=True)
            if name in ROUNDINGS[self.rounding]:
                value = round_mantissa(value, ROUNDINGS[self.rounding][name])
            if spec.valid is not None:
                valid = np.asarray(arrays[spec.valid], bool)
                value[~valid] = 0
            out[name] = value
        return out

    def _publish(self, clip_id: str, attrs: dict, arrays: dict[str, np.ndarray], replace: bool) -> CommitResult:
        final = self.clip_path(clip_id)
        if final.exists() and not replace:
            return CommitResult(clip_id, attrs["status"], False, final, 0)
        staging = self.root / ".staging" / f"{clip_id}.{uuid.uuid4().hex}"
        try:
            nbytes = self._write_group(staging, attrs, arrays)
            final.parent.mkdir(parents=True, exist_ok=True)
            committed = self._rename_into_place(staging, final, replace)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if committed:
            self._write_index_row(attrs, nbytes)
        return CommitResult(clip_id, attrs["status"], committed, final, nbytes)

    def _write_group(self, path: Path, attrs: dict, arrays: dict[str, np.ndarray]) -> int:
        write_clip_group(zarr.storage.LocalStore(path), "", attrs, arrays, self.codec)
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

    def _rename_into_place(self, staging: Path, final: Path, replace: bool) -> bool:
        if replace and final.exists():
            trash = self.root / ".staging" / f"{final.name}.old.{uuid.uuid4().hex}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(staging, final)
        except OSError:
            if final.exists():  # another writer committed the same clip first: keep theirs
                return False
            raise
        return True

    # ------------------------------------------------------------------ index
    def _write_index_row(self, attrs: dict, nbytes: int) -> None:
        shard = str(self.clip_path(attrs["clip_id"]).relative_to(self.root))
        table = index_row_table(index_row(attrs, nbytes, shard))
        rows = self.root / "index" / "rows"
        rows.mkdir(parents=True, exist_ok=True)
        tmp = rows / f".{attrs['clip_id']}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, rows / f"{attrs['clip_id']}.parquet")

    def index(self) -> pa.Table:
        """The index as a pyarrow Table: one row per committed clip, newest commit wins.

        Columns: see `_EMPTY_INDEX_SCHEMA`, plus `qa_<metric>` per QA metric. Indexes written
        before the `provenance_<part>` columns existed read with those columns null.
        """
        return merge_index_parts(self._index_parts())

    def _index_parts(self) -> list[pa.Table]:
        parts = []
        compacted = self.root / "index" / "index.parquet"
        if compacted.exists():
            parts.append(pq.read_table(compacted))
        with ThreadPoolExecutor(8) as pool:  # pending rows: many tiny files, decoding releases the GIL
            parts.extend(pool.map(pq.read_table, self._row_files()))
        return parts

    def _row_files(self) -> list[Path]:
        return sorted((self.root / "index" / "rows").glob("*.parquet"))

    def compact_index(self) -> int:
        """Merge pending index rows into index/index.parquet (under a lock). Returns rows merged."""
        with self._lock("index"):
            files = self._row_files()
            stats = {p: p.stat().st_mtime_ns for p in files}
            table = self.index()
            tmp = self.root / "index" / f".index.{uuid.uuid4().hex}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, self.root / "index" / "index.parquet")
            for p in files:
                try:
                    if p.stat().st_mtime_ns == stats[p]:  # rewritten since we read it: keep for next time
                        p.unlink()
                except FileNotFoundError:
                    pass
        return len(files)

    def repair_index(self) -> list[str]:
        """Add index rows for committed clips the index lacks (a crash between publish and index write)."""
        indexed = set(self.index().column("clip_id").to_pylist())
        repaired = []
        for zarr_json in (self.root / "clips").glob("*/*/zarr.json"):
            clip_id = zarr_json.parent.name
            if clip_id in indexed:
                continue
            attrs = json.loads(zarr_json.read_text())["attributes"]
            nbytes = sum(f.stat().st_size for f in zarr_json.parent.rglob("*") if f.is_file())
            self._write_index_row(attrs, nbytes)
            repaired.append(clip_id)
        return repaired

    def clean_staging(self, older_than_s: float = 3600.0) -> int:
        """Remove staging leftovers of crashed writers older than `older_than_s`. Returns how many."""
        removed = 0
        staging = self.root / ".staging"
        for p in staging.iterdir() if staging.is_dir() else ():
            try:
                age_s = time.time() - p.stat().st_mtime
            except FileNotFoundError:  # published or cleaned by another process meanwhile
                continue
            if age_s > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
        return removed

    def put_file(self, relpath: str, data: bytes) -> None:
        """Write a small side file of the store (e.g. "index/manifest_errors.json"), atomically."""
        path = self.root / _check_relpath(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get_file(self, relpath: str) -> bytes | None:
        """A side file written by `put_file`, or None when there is none."""
        path = self.root / _check_relpath(relpath)
        return path.read_bytes() if path.is_file() else None

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        (self.root / ".locks").mkdir(exist_ok=True)
        with open(self.root / ".locks" / f"{name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ reading
    def clip_ids(self, status: str | None = None) -> list[str]:
        """Committed clip ids, sorted.

        Args:
            status: "accepted" (clips with labels, what `read` and training take),
                "rejected" (clips recorded with their reasons and QA metrics only) or None
                (both: every clip a re-run skips).
        """
        if status is not None and status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES} or None, got {status!r}")
        table = self.index()
        ids = table.column("clip_id").to_pylist()
        statuses = table.column("status").to_pylist()
        return sorted(c for c, s in zip(ids, statuses) if status is None or s == status)

    def attrs(self, clip_id: str) -> dict[str, Any]:
        """Attributes of a committed clip."""
        return dict(self._open_clip(clip_id).attrs)

    def read(self, clip_id: str, fields: Sequence[str] | None = None) -> ClipLabels:
        """Arrays of an accepted clip, named as LABELS.md, plus `.attrs`.

        Args:
            fields: names to read (default: every field, `points` included). `points` is
                derived from depth, K and c2w on the key frames (zero where depth is invalid).

        Raises:
            ClipNotFoundError: no clip with that id is committed.
            RejectedClipError: the clip was rejected; `attrs(clip_id)` has its reasons and metrics.
        """
        group = self._open_clip(clip_id)
        attrs = dict(group.attrs)
        wanted = list(FIELDS) if fields is None else list(fields)
        unknown = [f for f in wanted if f not in FIELDS]
        if unknown:
            raise KeyError(f"unknown field(s) {unknown}; fields are {list(FIELDS)}")
        if attrs.get("status") != "accepted":
            reasons = "; ".join(attrs.get("reasons", [])) or "no reason recorded"
            raise RejectedClipError(
                f"clip {clip_id!r} was rejected ({reasons}): it has no label arrays; attrs() has its QA metrics"
            )
        arrays = self._read_arrays(group, [name for name in wanted if name not in DERIVED_FIELDS])
        if "points" in wanted:
            arrays["points"] = _points_from_group(group, int(attrs["stride"]))
        return ClipLabels(arrays, attrs)

    def _open_clip(self, clip_id: str) -> zarr.Group:
        group = self._clip_group(clip_id)
        version = group.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(f"clip {clip_id!r} has schema_version {version!r}; reader knows {SCHEMA_VERSION}")
        return group


    def _read_arrays(self, group: zarr.Group, names: Sequence[str]) -> dict[str, np.ndarray]:
        return {name: group[name][...] for name in names}

    def _clip_group(self, clip_id: str) -> zarr.Group:
        path = self.clip_path(clip_id)
        if not (path / "zarr.json").exists():
            raise ClipNotFoundError(f"clip {clip_id!r} is not committed in {self.root}")
        return zarr.open_group(zarr.storage.LocalStore(path, read_only=True), mode="r")


def write_clip_group(
    store: zarr.abc.store.Store, path: str, attrs: dict, arrays: dict[str, np.ndarray], codec: str
) -> None:
    """Write one clip as a Zarr group at `path` of `store`: its attributes and one array per field."""
    attrs = {**attrs, "schema_version": SCHEMA_VERSION, "committed_at": time.time()}
    group = zarr.open_group(store, path=path, mode="w-", attributes=attrs)
    for name, value in arrays.items():
        # One chunk per frame (a training read of a few frames touches little), one shard
        # per array (one file or object, one writer).
        chunks = (1,) + value.shape[1:] if value.ndim > 1 else value.shape
        compressors = compressors_for(codec, value.dtype)
        group.create_array(name, data=value, chunks=chunks, shards=value.shape, compressors=compressors)


def _points_from_group(group: zarr.Group, stride: int) -> np.ndarray:
    """P_k(u) = c2w_k [D_k(u) K_k^-1 (u, v, 1); 1] on key frames, float32, zero where depth is invalid."""
    depth = group["depth"][::stride].astype(np.float64)
    valid = group["depth_valid"][::stride]
    K = group["K"][::stride].astype(np.float64)
    c2w = group["c2w"][::stride].astype(np.float64)
    S, H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    uv1 = np.stack([u, v, np.ones_like(u)], axis=-1)
    rays = uv1[None] @ np.swapaxes(np.linalg.inv(K), 1, 2)[:, None]  # matmul: ~3x faster than einsum here
    cam = rays * depth[..., None]
    world = cam @ np.swapaxes(c2w[:, :3, :3], 1, 2)[:, None] + c2w[:, None, None, :3, 3]
    world[~valid] = 0
    return world.astype(np.float32)


def index_row(attrs: Mapping[str, Any], nbytes: int, shard: str) -> dict[str, Any]:
    """The index row of a clip's attributes; `shard`: where its group lives, relative to the store root."""
    source = attrs.get("source", {})
    row = {
        "clip_id": attrs["clip_id"],
        "shard": shard,
        "status": attrs["status"],
        "reasons": list(attrs.get("reasons", [])),
        "dataset": str(source.get("dataset", "")),
        "uri": str(source.get("uri", "")),
        "start_sec": float(source.get("start_sec", np.nan)),
        "end_sec": float(source.get("end_sec", np.nan)),
        "caption": str(source.get("caption", "")),
        "metric_scale": bool(attrs.get("metric_scale", False)),
        "labelers": json.dumps(attrs.get("labelers", {}), sort_keys=True),
        "nbytes": int(nbytes),
        "committed_at": float(attrs.get("committed_at", time.time())),
        "schema_version": SCHEMA_VERSION,
    }
    row["fps"] = float(attrs["fps"]) if "fps" in attrs else None
    for key in ("height", "width", "T", "stride"):
        row[key] = int(attrs[key]) if key in attrs else None
    provenance = attrs.get("provenance") or {}
    for part in PROVENANCE_PARTS:
        row[f"provenance_{part}"] = provenance.get(part)
    for name, value in attrs.get("qa", {}).items():
        if isinstance(value, (bool, int, float, np.floating, np.integer)) or value is None:
            row[f"qa_{name}"] = None if value is None else float(value)
    return row


# The columns every index row has (QA columns vary by labeler): what an empty index holds, so
# readers and later merges see the same schema whether or not a clip was ever committed.
_EMPTY_INDEX_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("shard", pa.string()),
        ("status", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("dataset", pa.string()),
        ("uri", pa.string()),
        ("start_sec", pa.float64()),
        ("end_sec", pa.float64()),
        ("caption", pa.string()),
        ("metric_scale", pa.bool_()),
        ("labelers", pa.string()),
        ("nbytes", pa.int64()),
        ("committed_at", pa.float64()),
        ("schema_version", pa.int64()),
        ("fps", pa.float64()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("T", pa.int64()),
        ("stride", pa.int64()),
        *[(f"provenance_{part}", pa.string()) for part in PROVENANCE_PARTS],
    ]
)


def index_row_table(row: dict[str, Any]) -> pa.Table:
    """One index row as a table whose known columns have their types even when the value is null."""
    table = pa.Table.from_pylist([row])
    for i, name in enumerate(table.column_names):
        if table.schema.field(i).type == pa.null() and name in _EMPTY_INDEX_SCHEMA.names:
            table = table.set_column(i, name, table.column(i).cast(_EMPTY_INDEX_SCHEMA.field(name).type))
    return table


def merge_index_parts(parts: Sequence[pa.Table]) -> pa.Table:
    """One row per clip (newest commit wins) from the compacted index and pending rows, every
    column of `_EMPTY_INDEX_SCHEMA` present (older stores lack the provenance columns)."""
    if not parts:
        return pa.Table.from_pylist([], schema=_EMPTY_INDEX_SCHEMA)
    table = _latest_per_clip(pa.concat_tables(parts, promote_options="permissive"))
    for field in _EMPTY_INDEX_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def _latest_per_clip(table: pa.Table) -> pa.Table:
    """Keep the newest row of each clip, sorted by clip id."""
    if table.num_rows == 0:
        return table
    order = table.sort_by([("clip_id", "ascending"), ("committed_at", "descending")])
    ids = order.column("clip_id").to_pylist()
    keep = [i for i, c in enumerate(ids) if i == 0 or ids[i - 1] != c]
    return order.take(keep)


def object_url(location: str | os.PathLike) -> str | None:
    """The object-storage URL of a store location (s3://, gs://, az://, ...), or None for a local one.

    A URL that went through `pathlib.Path` ("s3:/bucket/prefix": Path folds the double slash)
    is recognised too, so a CLI argument typed as Path still reaches the bucket.
    """
    text = os.fspath(location)
    scheme, sep, rest = text.partition(":/")
    if not sep or scheme.lower() not in OBJECT_SCHEMES:
        return None
    return f"{scheme.lower()}://{rest.lstrip('/')}"


# The object-storage subclass (`storage.object_store.ObjectLabelStore`) registers itself when the
# `storage` package is imported, so this module never imports its own subclass.
_OBJECT_BACKENDS: list[type] = []


def register_object_backend(backend: type) -> None:
    """Make `backend` the class that `LabelStore.create/open` use for object-storage URLs."""
    _OBJECT_BACKENDS[:] = [backend]


def _object_backend() -> type:
    if not _OBJECT_BACKENDS:
        raise RuntimeError("no object-storage backend registered (import the storage package)")
    return _OBJECT_BACKENDS[0]


def is_object_url(location: str | os.PathLike) -> bool:
    """Whether a store location names object storage rather than a local directory."""
    return object_url(location) is not None


def local_path(location: str | os.PathLike) -> Path:
    """The directory of a local location: a path or a `file://` URL."""
    if isinstance(location, str) and location.startswith("file://"):
        return Path(location[len("file://") :])
    if isinstance(location, str) and "://" in location:
        scheme = location.split("://", 1)[0]
        raise ValueError(
            f"unsupported store location scheme {scheme!r}; use a path, file:// or one of {OBJECT_SCHEMES}"
        )
    return Path(location)


def check_settings(precision: str, codec: str, rounding: str) -> None:
    """Fail early on an unknown precision, codec or rounding."""
    compressors_for(codec, np.float32)
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {sorted(ROUNDINGS)}, got {rounding!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")


def store_meta(precision: str, codec: str, rounding: str) -> dict[str, Any]:
    """The root group's "worldreel" attribute of a new store."""
    return {
        "schema_version": SCHEMA_VERSION,
        "precision": precision,
        "codec": codec,
        "rounding": rounding,
        "mantissa_bits": ROUNDINGS[rounding],
    }


def check_store_meta(location: str, meta: Any) -> tuple[str, str, str]:
    """(precision, codec, rounding) of a store's "worldreel" attribute; SchemaVersionError if unknown."""
    if not isinstance(meta, dict):
        raise SchemaVersionError(f"{location} is a Zarr group but not a WorldReel label store")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{location} has schema_version {meta.get('schema_version')!r}; this reader knows {SCHEMA_VERSION}"
        )
    rounding = meta.get("rounding", "none")
    if rounding not in ROUNDINGS:
        raise SchemaVersionError(f"{location} uses rounding {rounding!r}; this reader knows {sorted(ROUNDINGS)}")
    return meta["precision"], meta.get("codec", "blosc-zstd"), rounding


_RESERVED = ("zarr.json", "clips/", "commits/", ".staging/", ".locks/", "index/rows/", "index/index.parquet")


def _check_relpath(relpath: str) -> str:
    """A side file's path: relative, plain, and none of the store's own objects."""
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid side-file path {relpath!r}: must be a plain relative path")
    if any(relpath == r or (r.endswith("/") and relpath.startswith(r)) for r in _RESERVED):
        raise ValueError(f"side-file path {relpath!r} would overwrite the store's own data ({', '.join(_RESERVED)})")
    return relpath


def _check_clip_id(clip_id: str) -> None:
    if not clip_id or "/" in clip_id or clip_id.startswith(".") or len(clip_id) > 200:
        raise ValueError(f"invalid clip id {clip_id!r}: must be a non-empty file name not starting with '.'")


def _plain(value: Any) -> Any:
    """JSON-safe copy of attributes (numpy scalars and arrays to Python values)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
