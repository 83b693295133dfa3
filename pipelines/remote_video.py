"""Source videos in object storage (`s3://`, `gs://`, `az://`): a bounded local cache for the decoders.

decord needs a seekable local file, and a clip's decode touches the stream from its nearest key
frame on, so a remote video is copied once into a local cache (streamed in chunks: memory stays
bounded) and decoded from there. Several clips of one video (Panda-70M rows) then share one
copy. The cache holds at most `max_bytes`: after each download the least recently used videos
are deleted, except those used in the last `grace_s` seconds (another worker may be about to
open them). Credentials come from the environment as obstore reads them (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ..., AWS_ALLOW_HTTP) and never appear in a reason.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

__all__ = ["REMOTE_SCHEMES", "RemoteVideoError", "VideoCache", "is_remote"]

REMOTE_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss")
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "worldreel-video-cache"


class RemoteVideoError(OSError):
    """A remote video that cannot be fetched; `reason` is "missing_file" or "unreadable", the message one line."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def is_remote(uri: str) -> bool:
    """True for an object-storage URL this module fetches (`s3://bucket/key`, ...)."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


@dataclass(frozen=True)
class VideoCache:
    """Local copies of remote videos under `root`, at most `max_bytes` in all (one video may exceed it)."""

    root: Path = DEFAULT_CACHE_DIR
    max_bytes: int = 20 * 1024**3
    grace_s: float = 120.0

    def local_path(self, uri: str) -> Path:
        """The local copy of `uri`, downloaded if it is not cached yet. Raises RemoteVideoError."""
        path = self.root / _cache_name(uri)
        if path.is_file():
            os.utime(path)  # most recently used
            return path
        self.root.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            _download(uri, partial)
            os.replace(partial, path)  # concurrent downloads of one video: the last replace wins, same bytes
        finally:
            partial.unlink(missing_ok=True)
        self.evict(keep=path)
        return path

    def evict(self, keep: Path | None = None) -> int:
        """Delete least recently used videos until the cache fits `max_bytes`; returns how many were deleted."""
        entries = []
        for p in self.root.iterdir():
            try:
                stat = p.stat()
            except FileNotFoundError:  # another worker evicted it
                continue
            entries.append((stat.st_mtime, stat.st_size, p))
        total = sum(size for _, size, _ in entries)
        deleted = 0
        now = time.time()
        for mtime, size, p in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if p == keep or now - mtime < self.grace_s:
                continue
            p.unlink(missing_ok=True)
            total -= size
            deleted += 1
        return deleted


def _cache_name(uri: str) -> str:
    suffix = PurePosixPath(uri.split("?", 1)[0]).suffix[:8]
    return hashlib.sha256(uri.encode()).hexdigest()[:24] + suffix


def _split(uri: str) -> tuple[str, str]:
    """("s3://bucket", "key/of/video.mp4"); Azure keeps account and container in the store URL."""
    scheme, _, rest = uri.partition("://")
    parts = rest.split("/")
    head = 2 if scheme.lower() in ("az", "abfs", "abfss") and len(parts) > 2 else 1
    bucket, key = "/".join(parts[:head]), "/".join(parts[head:])
    if not bucket or not key:
        raise RemoteVideoError("missing_file", f"video {uri}: expected {scheme}://bucket/key")
    return f"{scheme}://{bucket}", key


@lru_cache(maxsize=16)
def _store(bucket_url: str):
    import obstore

    return obstore.store.from_url(bucket_url)


def _download(uri: str, target: Path) -> None:
    import obstore

    from storage.object_store import redact

    bucket_url, key = _split(uri)
    try:
        result = obstore.get(_store(bucket_url), key)
        with open(target, "wb") as f:
            for chunk in result.stream(min_chunk_size=8 * 1024**2):
                f.write(chunk)
    except (FileNotFoundError, obstore.exceptions.NotFoundError):
        raise RemoteVideoError("missing_file", f"video {uri} does not exist") from None
    except (obstore.exceptions.BaseError, OSError) as e:
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise RemoteVideoError("unreadable", f"cannot fetch video {uri}: {redact(first)[:200]}") from None
