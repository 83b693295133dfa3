"""The label store on object storage (S3, GCS, Azure) through obstore under Zarr's store API.

Same API and guarantees as the local `LabelStore`; object storage has no rename and no lock,
so a clip is published by a commit record written last, with a conditional PUT.

Layout under `s3://bucket/prefix` (or `gs://`, `az://`)::

    zarr.json                                 root group (attribute "worldreel", as locally)
    clips/<bb>/<clip_id>/<attempt>/...        one Zarr group per write attempt of a clip
    commits/<clip_id>.json                    commit record: {"attempt", "status", "nbytes", ...}
    index/index.parquet                       compacted index
    index/rows/<clip_id>.<attempt>.parquet    index rows not yet compacted (never rewritten)
    .staging/<clip_id>.<attempt>              marker of an attempt not yet resolved

Publish protocol of one clip:

1. PUT the staging marker, then every object of the clip under its own attempt prefix
   (a fresh id per attempt: each object has exactly one writer, nobody reads it yet);
2. PUT the commit record with `If-None-Match: *` (`If-Match: <etag>` when replacing): this
   single atomic PUT is the publish. A writer that loses the race deletes its attempt and
   reports `committed=False`, as a local writer whose rename failed;
3. PUT the index row, delete the replaced attempt (if any), delete the marker.

Readers trust only commit records: a clip is visible once its record exists, and the record
names an attempt whose objects were all written before it. A `kill -9` before step 2 leaves a
marker and a partial attempt (`clean_staging` deletes both); after step 2 the clip is
committed, and `repair_index` adds a missing index row. Compaction replaces
`index/index.parquet` with `If-Match` on the etag it read, so concurrent compactions never
drop each other's rows (the loser reads again and retries).

Credentials come from the environment or the library's usual configuration (for S3:
`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
`AWS_ALLOW_HTTP=true` for a plain-http endpoint); the store never records them, and errors
are one line with every credential value of the environment masked.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import obstore
import obstore.exceptions
import obstore.store
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from storage.store import (
    CommitResult,
    ClipNotFoundError,
    LabelStore,
    _check_clip_id,
    _check_relpath,
    check_settings,
    check_store_meta,
    index_row,
    index_row_table,
    merge_index_parts,
    register_object_backend,
    store_meta,
    write_clip_group,
)

__all__ = ["ObjectLabelStore", "ObjectStoreError", "redact"]

# Environment variables whose values are secrets (or identify the account) for the stores
# obstore reads: masked in every error this module raises.
_SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)
_PARALLEL_GETS = 32  # concurrent requests when reading index rows or writing a clip's objects
_COMPACT_TRIES = 20

T = TypeVar("T")

# obstore's I/O runtime does not survive fork(): a forked child that touches any obstore store
# hangs forever (its worker threads were not copied). Fail fast with the way out instead.
_used_in_this_process = False
_forked_after_use = False


def _note_fork() -> None:
    global _forked_after_use
    _forked_after_use = _forked_after_use or _used_in_this_process


os.register_at_fork(after_in_child=_note_fork)


def _check_not_forked() -> None:
    global _used_in_this_process
    if _forked_after_use:
        raise RuntimeError(
            "an object-storage label store cannot be used in a process forked after the parent used one "
            "(obstore's runtime does not survive fork): start workers with the 'spawn' or 'forkserver' method "
            "(DataLoader(multiprocessing_context='spawn'))"
        )
    _used_in_this_process = True


class ObjectStoreError(OSError):
    """An object-storage request failed; the message is one line and carries no credentials."""


def redact(text: str) -> str:
    """`text` with the value of every credential variable of the environment replaced by ***."""
    for name in _SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _summary(error: BaseException) -> str:
    """First line of an obstore error (its debug dump of the request follows), masked and short."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hint = ""
    plain_http = os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://")
    if plain_http and os.environ.get("AWS_ALLOW_HTTP", "").lower() != "true":
        hint = " (the endpoint is plain http: set AWS_ALLOW_HTTP=true)"
    return redact(first)[:300] + hint


def _wrap_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn obstore's multi-line errors into one masked line naming the store."""

    @functools.wraps(method)
    def wrapper(self: "ObjectLabelStore", *args: Any, **kwargs: Any) -> T:
        _check_not_forked()
        try:
            return method(self, *args, **kwargs)
        except obstore.exceptions.BaseError as error:
            what = method.__name__.lstrip("_")
            raise ObjectStoreError(f"label store {self.root}: {what} failed: {_summary(error)}") from None

    return wrapper


def _is_missing(error: BaseException) -> bool:
    return isinstance(error, (FileNotFoundError, obstore.exceptions.NotFoundError))


class ObjectLabelStore(LabelStore):
    """A label store under an object-storage URL; see the module docstring for the protocol.

    `root` is the URL (a string, not a Path); `clip_path` returns URLs too.
    """

    def __init__(self, url: str, precision: str, codec: str = "blosc-zstd", rounding: str = "none") -> None:
        super().__init__(url, precision, codec, rounding)  # type: ignore[arg-type]
        self._objects = _connect(url)
        self._zarr = zarr.storage.ObjectStore(self._objects)

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        path: str,
        precision: str = "float16",
        exist_ok: bool = True,
        codec: str = "blosc-zstd",
        rounding: str = "none",
    ) -> "ObjectLabelStore":
        """Create a store at an object-storage URL (or open it, if it exists and `exist_ok`)."""
        check_settings(precision, codec, rounding)
        url = _normalise(path)
        objects = _connect(url)
        try:
            if _get(objects, "zarr.json") is not None:
                if not exist_ok:
                    raise FileExistsError(f"label store already exists: {url}")
                return cls.open(url)
            if any(True for batch in objects.list(chunk_size=1) for _ in batch):
                raise FileExistsError(f"{url} holds objects and is not a label store")
            attributes = {"worldreel": store_meta(precision, codec, rounding)}
            meta = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
            try:
                objects.put("zarr.json", json.dumps(meta).encode(), mode="create")
            except obstore.exceptions.AlreadyExistsError:  # created concurrently: use theirs
                return cls.open(url)
        except obstore.exceptions.BaseError as error:
            raise ObjectStoreError(f"label store {url}: create failed: {_summary(error)}") from None
        return cls(url, precision, codec, rounding)

    @classmethod
    def open(cls, path: str) -> "ObjectLabelStore":
        """Open the store at an object-storage URL, checking its schema version."""
        url = _normalise(path)
        try:
            raw = _get(_connect(url), "zarr.json")
        except obstore.exceptions.BaseError as error:
            raise ObjectStoreError(f"label store {url}: open failed: {_summary(error)}") from None
        if raw is None:
            raise FileNotFoundError(f"no label store at {url} (missing zarr.json)")
        meta = json.loads(raw).get("attributes", {}).get("worldreel")
        precision, codec, rounding = check_store_meta(url, meta)
        return cls(url, precision, codec, rounding)

    # ------------------------------------------------------------------ paths
    def clip_path(self, clip_id: str) -> str:  # type: ignore[override]
        """URL prefix of a clip's attempts (whether or not it is committed)."""
        return f"{self.root}/{_clip_prefix(clip_id)}"

    @_wrap_errors
    def has_clip(self, clip_id: str) -> bool:
        """Whether the clip is committed: its commit record is the truth."""
        _check_clip_id(clip_id)
        try:
            self._objects.head(_record_key(clip_id))
        except Exception as error:  # noqa: BLE001 - only "missing" means False
            if _is_missing(error):
                return False
            raise
        return True

    # ------------------------------------------------------------------ writing
    @_wrap_errors
    def _publish(self, clip_id: str, attrs: dict, arrays: dict[str, np.ndarray], replace: bool) -> CommitResult:
        record_key = _record_key(clip_id)
        previous = _get_versioned(self._objects, record_key)
        if previous is not None and not replace:
            return CommitResult(clip_id, attrs["status"], False, self.clip_path(clip_id), 0)
        attempt = f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}"
        prefix = f"{_clip_prefix(clip_id)}/{attempt}"
        self._objects.put(_marker_key(clip_id, attempt), json.dumps({"started_at": time.time()}).encode())
        old_attempt = None if previous is None else json.loads(previous[0])["attempt"]
        if old_attempt is not None:  # found again by clean_staging if we die between publish and delete
            self._objects.put(_marker_key(clip_id, old_attempt), json.dumps({"replaced_at": time.time()}).encode())
        try:
            encoded = _encode_clip(attrs, arrays, self.codec)
            _put_many(self._objects, {f"{prefix}/{key}": data for key, data in encoded.items()})
            nbytes = sum(len(data) for data in encoded.values())
            stored = json.loads(encoded["zarr.json"])["attributes"]
            record = {"clip_id": clip_id, "attempt": attempt, "status": attrs["status"], "nbytes": nbytes,
                      "committed_at": stored["committed_at"]}
            if _get(self._objects, _marker_key(clip_id, attempt)) is None:
                raise ObjectStoreError(
                    f"label store {self.root}: clip {clip_id!r}: its staging marker was removed while it was being "
                    "written (clean_staging with a threshold shorter than a commit?); nothing was published"
                )
            mode: Any = "create" if previous is None else previous[1]
            self._objects.put(record_key, json.dumps(record).encode(), mode=mode)
        except (obstore.exceptions.AlreadyExistsError, obstore.exceptions.PreconditionError):
            # another writer published this clip first: keep theirs, drop ours (a marker of the
            # replaced attempt stays for clean_staging: the winner deletes that attempt)
            self._delete_attempt(clip_id, attempt)
            return CommitResult(clip_id, attrs["status"], False, self.clip_path(clip_id), 0)
        except BaseException:
            self._delete_attempt(clip_id, attempt)  # best effort; clean_staging finds what stays
            raise
        self._put_index_row(stored, nbytes, prefix, attempt)
        if old_attempt is not None:
            self._delete_attempt(clip_id, old_attempt)
        self._objects.delete(_marker_key(clip_id, attempt))
        return CommitResult(clip_id, attrs["status"], True, f"{self.root}/{prefix}", nbytes)

    def _zarr_attrs_raw(self, prefix: str) -> bytes:
        return bytes(self._objects.get(f"{prefix}/zarr.json").bytes())

    def _delete_attempt(self, clip_id: str, attempt: str) -> None:
        """Delete every object of one attempt, then its marker (the marker goes last: it is how
        a crash in between is found again)."""
        keys = [meta["path"] for meta in _list(self._objects, f"{_clip_prefix(clip_id)}/{attempt}/")]
        for start in range(0, len(keys), 1000):
            self._objects.delete(keys[start : start + 1000])
        self._objects.delete(_marker_key(clip_id, attempt))

    def _put_index_row(self, attrs: dict, nbytes: int, shard: str, attempt: str) -> None:
        buffer = io.BytesIO()
        pq.write_table(index_row_table(index_row(attrs, nbytes, shard)), buffer)
        self._objects.put(f"index/rows/{attrs['clip_id']}.{attempt}.parquet", buffer.getvalue())

    # ------------------------------------------------------------------ index
    @_wrap_errors
    def index(self) -> pa.Table:
        """The index as a pyarrow Table: one row per committed clip, newest commit wins."""
        return merge_index_parts(self._index_parts()[0])

    def _index_parts(self) -> tuple[list[pa.Table], dict | None, list[str]]:  # type: ignore[override]
        """(tables, version of the compacted index read (None: there was none), keys of the pending rows read).

        A compaction may delete rows between our listing and our reads; it wrote them into
        the compacted index first, so reading everything again gives a complete view.
        """
        for _ in range(_COMPACT_TRIES):
            compacted = _get_versioned(self._objects, "index/index.parquet")
            listed = _list(self._objects, "index/rows/")
            keys = sorted(meta["path"] for meta in listed if meta["path"].endswith(".parquet"))
            rows = _get_many(self._objects, keys, decode=_parquet)
            if all(r is not None for r in rows):
                parts = [] if compacted is None else [_parquet(compacted[0])]
                return parts + rows, None if compacted is None else compacted[1], keys
        raise ObjectStoreError(f"label store {self.root}: index rows kept vanishing while reading (compaction storm?)")

    @_wrap_errors
    def compact_index(self) -> int:
        """Merge pending index rows into index/index.parquet. Returns rows merged.

        Optimistic: the new index is written with If-Match on the etag read (If-None-Match when
        there was none); if another compaction won, read again and retry. Rows are deleted only
        after the index holding them is in place.
        """
        for _ in range(_COMPACT_TRIES):
            parts, version, keys = self._index_parts()
            buffer = io.BytesIO()
            pq.write_table(merge_index_parts(parts), buffer)
            try:
                mode = "create" if version is None else version
                self._objects.put("index/index.parquet", buffer.getvalue(), mode=mode)
            except (obstore.exceptions.AlreadyExistsError, obstore.exceptions.PreconditionError):
                continue
            for start in range(0, len(keys), 1000):
                self._objects.delete(keys[start : start + 1000])
            return len(keys)
        raise ObjectStoreError(f"label store {self.root}: compaction lost {_COMPACT_TRIES} races in a row")

    @_wrap_errors
    def repair_index(self) -> list[str]:
        """Add index rows for committed clips the index lacks (a crash between publish and index write)."""
        indexed = set(self.index().column("clip_id").to_pylist())
        record_keys = [m["path"] for m in _list(self._objects, "commits/") if m["path"].endswith(".json")]
        missing = [k for k in record_keys if k[len("commits/") : -len(".json")] not in indexed]
        repaired = []
        for key, raw in zip(missing, _get_many(self._objects, missing)):
            if raw is None:
                continue
            record = json.loads(raw)
            prefix = f"{_clip_prefix(record['clip_id'])}/{record['attempt']}"
            attrs = json.loads(self._zarr_attrs_raw(prefix))["attributes"]
            self._put_index_row(attrs, int(record["nbytes"]), prefix, record["attempt"])
            repaired.append(record["clip_id"])
        return sorted(repaired)

    @_wrap_errors
    def clean_staging(self, older_than_s: float = 3600.0) -> int:
        """Delete partial clips of crashed writers whose marker is older than `older_than_s`.

        A marker whose attempt is the committed one (a writer died after publishing) only loses
        its marker. Returns how many partial attempts were deleted.
        """
        removed = 0
        now = time.time()
        for meta in _list(self._objects, ".staging/"):
            if now - meta["last_modified"].timestamp() <= older_than_s:
                continue
            clip_id, _, attempt = meta["path"][len(".staging/") :].rpartition(".")
            record = _get(self._objects, _record_key(clip_id))
            if record is not None and json.loads(record)["attempt"] == attempt:
                self._objects.delete(meta["path"])
                continue
            self._delete_attempt(clip_id, attempt)
            removed += 1
        return removed

    # ------------------------------------------------------------------ side files
    @_wrap_errors
    def put_file(self, relpath: str, data: bytes) -> None:
        """Write a small side file of the store (e.g. "index/manifest_errors.json"); one PUT is atomic."""
        self._objects.put(_check_relpath(relpath), data)

    @_wrap_errors
    def get_file(self, relpath: str) -> bytes | None:
        """A side file written by `put_file`, or None when there is none."""
        return _get(self._objects, _check_relpath(relpath))

    # ------------------------------------------------------------------ reading
    @_wrap_errors
    def attrs(self, clip_id: str) -> dict[str, Any]:
        return super().attrs(clip_id)

    @_wrap_errors
    def read(self, clip_id: str, fields: Sequence[str] | None = None):  # type: ignore[override]
        return super().read(clip_id, fields)

    @_wrap_errors
    def clip_ids(self, status: str | None = None) -> list[str]:
        return super().clip_ids(status)

    def _read_arrays(self, group: zarr.Group, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Arrays side by side: each costs round trips (metadata, shard index, chunks), latency adds up."""
        with ThreadPoolExecutor(min(len(names), 16) or 1) as pool:
            return dict(zip(names, pool.map(lambda name: group[name][...], names)))

    def _clip_group(self, clip_id: str) -> zarr.Group:
        _check_clip_id(clip_id)
        record = _get(self._objects, _record_key(clip_id))
        if record is None:
            raise ClipNotFoundError(f"clip {clip_id!r} is not committed in {self.root}")
        prefix = f"{_clip_prefix(clip_id)}/{json.loads(record)['attempt']}"
        return zarr.open_group(self._zarr, path=prefix, mode="r")

    def _lock(self, name: str):  # type: ignore[override]
        raise NotImplementedError("object storage has no locks; its protocol uses conditional writes")


# ---------------------------------------------------------------------------- helpers
def _normalise(url: str) -> str:
    scheme, _, rest = url.partition("://")
    bucket = rest.split("/", 1)[0]
    if "@" in bucket:  # never echo the URL: it would carry the secret
        raise ValueError("credentials in a store URL are not supported; use the environment (e.g. AWS_ACCESS_KEY_ID)")
    if not bucket:
        raise ValueError(f"store URL {url!r} names no bucket ({scheme}://bucket/prefix)")
    return f"{scheme}://{rest.rstrip('/')}"


def _connect(url: str) -> obstore.store.ObjectStore:
    """An obstore store rooted at `url`: configuration from the environment, as the library does."""
    _check_not_forked()
    try:
        return obstore.store.from_url(url)
    except obstore.exceptions.BaseError as error:
        raise ObjectStoreError(f"label store {url}: cannot configure the client: {_summary(error)}") from None


def _clip_prefix(clip_id: str) -> str:
    _check_clip_id(clip_id)
    return f"clips/{hashlib.sha1(clip_id.encode()).hexdigest()[:2]}/{clip_id}"


def _record_key(clip_id: str) -> str:
    return f"commits/{clip_id}.json"


def _marker_key(clip_id: str, attempt: str) -> str:
    return f".staging/{clip_id}.{attempt}"


def _encode_clip(attrs: dict, arrays: dict[str, np.ndarray], codec: str) -> dict[str, bytes]:
    """The objects of one clip's Zarr group (key relative to the group -> bytes), encoded in memory.

    Encoding first and uploading the objects side by side avoids what Zarr does on a remote
    store: a metadata check and a conditional PUT of every parent group for every array.
    """
    objects: dict = {}
    write_clip_group(zarr.storage.MemoryStore(store_dict=objects), "", attrs, arrays, codec)
    return {key: buffer.to_bytes() for key, buffer in objects.items()}


def _put_many(objects: Any, items: dict[str, bytes]) -> None:
    """PUT many objects in parallel (each a single atomic PUT)."""
    with ThreadPoolExecutor(_PARALLEL_GETS) as pool:
        list(pool.map(lambda kv: objects.put(kv[0], kv[1]), items.items()))


def _get(objects: Any, key: str) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    try:
        return bytes(objects.get(key).bytes())
    except Exception as error:  # noqa: BLE001 - only "missing" means None
        if _is_missing(error):
            return None
        raise


def _get_versioned(objects: Any, key: str) -> tuple[bytes, dict] | None:
    """(bytes, the put mode that replaces exactly this version: If-Match), or None when missing."""
    try:
        result = objects.get(key)
        # S3 and Azure match the etag, GCS the generation ("version")
        mode = {name: result.meta[name] for name in ("e_tag", "version") if result.meta.get(name) is not None}
        return bytes(result.bytes()), mode
    except Exception as error:  # noqa: BLE001
        if _is_missing(error):
            return None
        raise


def _get_many(objects: Any, keys: Sequence[str], decode: Callable[[bytes], Any] = bytes) -> list[Any]:
    """GET (and decode) many small objects in parallel (obstore and pyarrow release the GIL);
    None for a vanished one."""

    def fetch(key: str) -> Any:
        data = _get(objects, key)
        return None if data is None else decode(data)

    if len(keys) <= 1:
        return [fetch(k) for k in keys]
    with ThreadPoolExecutor(_PARALLEL_GETS) as pool:
        return list(pool.map(fetch, keys))


def _parquet(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def _list(objects: Any, prefix: str) -> Iterable[dict]:
    for batch in objects.list(prefix, chunk_size=1000):
        yield from batch


register_object_backend(ObjectLabelStore)
