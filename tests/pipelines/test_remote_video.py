"""Source videos in object storage: decoded through a bounded local cache, on a real S3 server."""

import os
import uuid

import numpy as np
import obstore
import pytest

from pipelines.clips import ClipRejected, ClipSpec
from pipelines.decode import DecodeConfig, decode_clip
from pipelines.remote_video import VideoCache, is_remote
from pipelines.synthetic import SceneConfig
from pipelines.synthetic_set import write_synthetic_set

SIZE = (48, 64)


@pytest.fixture(scope="module")
def local_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    configs = [SceneConfig(seed=s, height=SIZE[0], width=SIZE[1], num_frames=9, camera="orbit") for s in (1, 2)]
    rows = write_synthetic_set(root, configs)
    return [root / r.video_path for r in rows]


@pytest.fixture
def bucket(s3_url):
    """A fresh bucket holding the two videos; returns its s3:// URL."""
    url = s3_url.rsplit("/", 1)[0]
    return url


def _upload(bucket_url: str, key: str, path) -> str:
    store = obstore.store.from_url(bucket_url)
    obstore.put(store, key, path.read_bytes())
    return f"{bucket_url}/{key}"


def _spec(uri: str) -> ClipSpec:
    return ClipSpec(clip_id=f"remote-{uuid.uuid4().hex[:6]}", uri=uri, start_sec=0.0, end_sec=1.0, fps_target=8.0)


def test_is_remote():
    assert is_remote("s3://b/k.mp4") and is_remote("gs://b/k.mp4") and is_remote("az://acct/cont/k.mp4")
    assert not is_remote("/data/k.mp4") and not is_remote("file:///data/k.mp4") and not is_remote("videos/k.mp4")


def test_remote_video_decodes_like_the_local_file_and_is_fetched_once(bucket, local_videos, tmp_path):
    uri = _upload(bucket, "videos/a.mp4", local_videos[0])
    config = DecodeConfig(num_frames=9, height=SIZE[0], width=SIZE[1], num_threads=1, video_cache_dir=str(tmp_path / "cache"))
    remote = decode_clip(_spec(uri), config)
    local = decode_clip(_spec(str(local_videos[0])), config)
    np.testing.assert_array_equal(remote.frames, local.frames)
    np.testing.assert_array_equal(remote.frame_index, local.frame_index)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].stat().st_size == local_videos[0].stat().st_size
    inode = cached[0].stat().st_ino
    decode_clip(_spec(uri), config)  # a second clip of the same video reuses the copy
    assert [p.stat().st_ino for p in (tmp_path / "cache").iterdir()] == [inode]


def test_missing_remote_video_is_a_reason_naming_clip_and_uri(bucket, tmp_path):
    spec = _spec(f"{bucket}/videos/nope.mp4")
    with pytest.raises(ClipRejected) as info:
        decode_clip(spec, DecodeConfig(num_frames=9, height=SIZE[0], width=SIZE[1], video_cache_dir=str(tmp_path)))
    assert info.value.reason == "missing_file"
    message = str(info.value)
    assert spec.clip_id in message and spec.uri in message and "\n" not in message
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in message
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_cache_keeps_to_its_bound_least_recently_used_first(bucket, local_videos, tmp_path):
    uris = [_upload(bucket, f"videos/{i}.mp4", p) for i, p in enumerate(local_videos)]
    size = max(p.stat().st_size for p in local_videos)
    cache = VideoCache(tmp_path, max_bytes=size + 1, grace_s=0.0)  # room for one video
    first = cache.local_path(uris[0])
    os.utime(first, (1, 1))  # long unused
    second = cache.local_path(uris[1])
    assert not first.exists() and second.exists()
    assert sorted(tmp_path.iterdir()) == [second]

