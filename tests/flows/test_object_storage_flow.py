"""The data path on object storage end to end: s3:// videos labelled into an s3:// store, read by info and report."""

import csv
import os
from pathlib import Path

import obstore
import ray
from synthetic_manifest import FRAMES, SIZE, write_manifest

from storage import LabelStore
from worldreel_cli import main


def _upload(bucket_url: str, key: str, path: Path) -> str:
    obstore.put(obstore.store.from_url(bucket_url), key, path.read_bytes())
    return f"{bucket_url}/{key}"


def test_label_videos_in_s3_into_an_s3_store_then_info_and_report(s3_url, tmp_path, capsys):
    """The whole data path on object storage: manifest rows name s3:// videos, the store is s3://."""
    manifest, good, _ = write_manifest(tmp_path / "data", num_good=2, with_bad=False)
    bucket = s3_url.rsplit("/", 1)[0]
    with open(manifest) as fh:
        rows = list(csv.reader(fh))
    for row in rows[1:]:  # upload each video, point the row at it
        row[1] = _upload(bucket, f"videos/{Path(row[1]).name}", manifest.parent / row[1])
    rows.append(["gone", f"{bucket}/videos/gone.mp4", 0.0, 1.0, "missing", "", "", "", ""])
    remote_manifest = tmp_path / "remote.csv"
    with open(remote_manifest, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    args = ["label", "--manifest", str(remote_manifest), "--store", s3_url, "--size", f"{SIZE[0]}x{SIZE[1]}",
            "--frames", str(FRAMES), "--workers", "1", "--batch-size", "1", "--video-cache-dir", str(tmp_path / "cache"),
            "--report-dir", str(tmp_path / "report")]
    # Ray workers read the credentials from their environment when they start: a local Ray that an
    # earlier test started has none; a fresh `worldreel label` process starts its own, as here
    ray.shutdown()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "rejected" in out and "missing_file" in out  # the absent object: one clip's reason, the run goes on
    store = LabelStore.open(s3_url)
    assert len(store.clip_ids()) == len(good) + 1
    assert (tmp_path / "report" / "index.html").exists()
    assert main(["info", "--store", s3_url]) == 0
    assert f"store {s3_url}: {len(good) + 1} clips" in capsys.readouterr().out
    assert main(["report", "--store", s3_url, "--out", str(tmp_path / "report2")]) == 0
    page = (tmp_path / "report2" / "index.html").read_text()
    assert s3_url in page and os.environ["AWS_SECRET_ACCESS_KEY"] not in page
