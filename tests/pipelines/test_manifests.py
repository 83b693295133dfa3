"""Manifest readers (SpatialVID, Panda-70M, plain) and stable clip ids."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.clips import Annotations, ClipRejected, ClipSpec, check_clip_id, make_clip_id
from pipelines.manifests import (
    ManifestError,
    RowError,
    detect_format,
    iter_manifest,
    main,
    parse_fps,
    parse_timecode,
    read_manifest,
)

SPATIALVID_HEADER = (
    "video_path,id,num_frames,height,width,aspect_ratio,fps,resolution,"
    "timestamp_start,timestamp_end,frame_start,frame_end,id_ori"
)
PANDA_HEADER = "videoID,url,timestamp,caption,matching_score"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- clip ids


def test_clip_id_golden_value_is_stable():
    # A fixed value: any change to the id scheme silently orphans every stored clip.
    assert make_clip_id("videos/abc.mp4", 1.5, 7.25) == "abc-" + _sha12("videos/abc.mp4|1500|7250")


def _sha12(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:12]


def test_clip_id_same_in_another_process_with_other_hash_seed():
    code = "from pipelines.clips import make_clip_id; print(make_clip_id('a/b c.mp4', 0.0, 6.0))"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == make_clip_id("a/b c.mp4", 0.0, 6.0)


def test_clip_id_normalises_spelling_and_rounds_to_ms():
    base = make_clip_id("data/v1.mp4", 1.0, 2.0)
    assert make_clip_id("./data//v1.mp4", 1.0, 2.0) == base
    assert make_clip_id("data\\v1.mp4", 1.0, 2.0) == base
    assert make_clip_id(" data/v1.mp4 ", 1.0004, 1.9996) == base
    assert make_clip_id("data/v1.mp4", 1.001, 2.0) != base
    assert make_clip_id("data/v1.mp4", 1.0, 2.001) != base
    assert make_clip_id("other/v1.mp4", 1.0, 2.0) != base
    assert make_clip_id("HTTPS://Example.COM/x/v.mp4", 0, 1) == make_clip_id("https://example.com/x/v.mp4", 0, 1)


@pytest.mark.parametrize(
    "uri, stem",
    [
        ("My Video (1).MP4", "My_Video_1"),
        ("https://www.youtube.com/watch?v=abc", "watch"),
        ("file:///data/clip.mkv", "clip"),
        ("..", "clip"),
        (".hidden.mp4", "hidden"),
        ("--9aB_x", "9aB_x"),
        ("ü" * 10 + ".mp4", "clip"),
        ("x" * 300 + ".mp4", "x" * 64),
    ],
)
def test_clip_id_is_a_safe_directory_name(uri, stem):
    clip_id = make_clip_id(uri, 0.0, 3.0)
    check_clip_id(clip_id)
    assert clip_id.rsplit("-", 1)[0] == stem


@pytest.mark.parametrize("bad", ["", ".x", "a/b", "a b", "a\\b", "x" * 201])
def test_check_clip_id_rejects_unsafe_names(bad):
    with pytest.raises(ValueError):
        check_clip_id(bad)


def test_clip_spec_checks_its_fields():
    with pytest.raises(ValueError, match="start_sec < end_sec"):
        ClipSpec("c", "/v.mp4", 3.0, 3.0)
    with pytest.raises(ValueError, match="fps_target"):
        ClipSpec("c", "/v.mp4", 0.0, 3.0, fps_target=0.0)
    with pytest.raises(ValueError, match="focal"):
        ClipSpec("c", "/v.mp4", 0.0, 3.0, intrinsics=(0.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="annotation kind"):
        Annotations("colmap", "/d", "n")  # type: ignore[arg-type]
    spec = ClipSpec("c", "/v.mp4", 0.0, 3.0, caption="hi", dataset="d")
    assert spec.source_attrs() == {
        "dataset": "d", "uri": "/v.mp4", "start_sec": 0.0, "end_sec": 3.0, "caption": "hi", "native_id": ""
    }


def test_clip_spec_round_trips_through_json():
    spec = ClipSpec(
        "c", "/v.mp4", 1.0, 7.0, "cap", "spatialvid", None, Annotations("spatialvid", "/a/c", "c", 30), (1, 2, 3, 4), "v_0"
    )
    assert spec.intrinsics == (1.0, 2.0, 3.0, 4.0)
    assert ClipSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_clip_rejected_pickles_with_its_fields():
    error = pickle.loads(pickle.dumps(ClipRejected("c1", "too_short", "needs 6 s")))
    assert (error.clip_id, error.reason, error.message) == ("c1", "too_short", "needs 6 s")
    assert "c1" in str(error) and "too_short" in str(error)
    with pytest.raises(ValueError):
        ClipRejected("c1", "Too Short", "x")


# ---------------------------------------------------------------- times


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0:00:15.982", 15.982),
        ("00:00:01.234", 1.234),
        ("01:02:03.5", 3723.5),
        ("02:03", 123.0),
        ("7.25", 7.25),
        (3, 3.0),
    ],
)
def test_parse_timecode(text, seconds):
    assert parse_timecode(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("text", ["", "abc", "-1", "0:61:00", "0:00:60.5", "nan", "inf"])
def test_parse_timecode_rejects(text):
    with pytest.raises(ValueError):
        parse_timecode(text)


def test_parse_fps():
    assert parse_fps("native") is None and parse_fps(None) is None
    assert parse_fps("8") == 8.0 and parse_fps(29.97) == 29.97
    with pytest.raises(ValueError):
        parse_fps("0")


# ---------------------------------------------------------------- SpatialVID


def test_spatialvid_manifest(tmp_path):
    manifest = write(
        tmp_path / "meta" / "clips_info.csv",
        SPATIALVID_HEADER
        + "\n"
        + "raw/vid_a.mp4,vid_a_0,180,720,1280,1.78,30.0,720p,00:00:01.000,00:00:07.000,30,210,vid_a_0\n"
        + "raw/vid_a.mp4,vid_a_1,150,720,1280,1.78,30.0,720p,00:00:10.500,00:00:15.500,315,465,vid_a_1\n"
        + "raw/vid_b.mp4,vid_b_0,100,720,1280,1.78,29.97,720p,00:00:xx,00:00:05.000,0,100,vid_b_0\n"
        + "raw/vid_c.mp4,vid_c_0,100,720,1280,1.78,30.0,720p,00:00:02.000,00:00:06.000,10,130,vid_c_0\n",
    )
    result = read_manifest(manifest, annotation_root=tmp_path / "ann", fps_target=None)
    assert result.format == "spatialvid"
    assert [s.native_id for s in result.specs] == ["vid_a_0", "vid_a_1"]
    a0, a1 = result.specs
    assert a0.uri == str(tmp_path / "meta" / "raw" / "vid_a.mp4")
    assert (a1.start_sec, a1.end_sec) == (10.5, 15.5)
    assert a0.clip_id == make_clip_id("raw/vid_a.mp4", 1.0, 7.0)
    assert a0.dataset == "spatialvid" and a0.fps_target is None
    assert a1.annotations == Annotations("spatialvid", str(tmp_path / "ann" / "vid_a_1"), "vid_a_1", 315)
    assert [(e.row, e.path) for e in result.errors] == [(4, str(manifest)), (5, str(manifest))]
    assert "timestamp_start" in result.errors[0].message
    assert "frame_start" in result.errors[1].message  # 10/30 s is not 2 s: shifted columns
    assert str(result.errors[0]).startswith(f"{manifest} row 4: ")


def test_spatialvid_video_root(tmp_path):
    manifest = write(
        tmp_path / "clips_info.csv",
        SPATIALVID_HEADER + "\nraw/v.mp4,v_0,90,360,640,1.78,30,360p,00:00:00.000,00:00:03.000,0,90,v_0\n",
    )
    (spec,) = read_manifest(manifest, video_root=tmp_path / "elsewhere").specs
    assert spec.uri == str(tmp_path / "elsewhere" / "raw" / "v.mp4")
    assert spec.annotations is None


# ---------------------------------------------------------------- Panda-70M


def _panda_row(video_id: str, spans: list, captions: list, scores: list) -> str:
    def q(value) -> str:
        return '"' + repr(value).replace('"', '""') + '"'

    return f"{video_id},https://www.youtube.com/watch?v={video_id},{q(spans)},{q(captions)},{q(scores)}\n"


def test_panda70m_rows_hold_several_clips(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "AAAAAAAAAAA.mkv").write_bytes(b"")  # yt-dlp may leave .mkv
    manifest = write(
        tmp_path / "panda70m_training_2m.csv",
        PANDA_HEADER
        + "\n"
        + _panda_row(
            "AAAAAAAAAAA",
            [["0:00:00.000", "0:00:06.506"], ["0:00:15.982", "0:00:25.025"], ["0:01:02.500", "0:01:09.000"]],
            ["A man, talking.", "A dog runs.", 'A "quoted" caption, with commas.'],
            [0.51, 0.44, 0.47],
        )
        + "BBBBBBBBBBB,https://youtu.be/BBBBBBBBBBB,\"[['0:00:01.000', '0:00:0\",\"['x']\",\"[0.4]\"\n"
        + _panda_row("CCCCCCCCCCC", [["0:00:03.000", "0:00:09.000"], ["0:00:09.000", "bad"]], ["one", "two"], [0.5, 0.5])
        + _panda_row("DDDDDDDDDDD", [["0:00:03.000", "0:00:09.000"]], ["one", "two"], [0.5]),
    )
    result = read_manifest(manifest, video_root=videos)
    assert result.format == "panda70m"
    assert [s.native_id for s in result.specs] == ["AAAAAAAAAAA_0", "AAAAAAAAAAA_1", "AAAAAAAAAAA_2", "CCCCCCCCCCC_0"]
    clip1 = result.specs[1]
    assert (clip1.start_sec, clip1.end_sec) == pytest.approx((15.982, 25.025))
    assert clip1.caption == "A dog runs."
    assert result.specs[2].caption == 'A "quoted" caption, with commas.'
    assert result.specs[2].start_sec == pytest.approx(62.5)
    assert clip1.uri == str(videos / "AAAAAAAAAAA.mkv")
    assert result.specs[3].uri == str(videos / "CCCCCCCCCCC.mp4")  # not on disk: decode reports missing_file
    assert clip1.clip_id == make_clip_id("AAAAAAAAAAA", 15.982, 25.025)
    assert len({s.clip_id for s in result.specs}) == 4
    rows = [(e.row, e.entry) for e in result.errors]
    assert rows == [(3, None), (4, 1), (5, None)]
    assert "list literal" in result.errors[0].message
    assert "bad" in result.errors[1].message and "clip 1" in str(result.errors[1])
    assert "caption has 2 entries" in result.errors[2].message


def test_panda70m_video_path_column_and_manifest_folder(tmp_path):
    manifest = write(
        tmp_path / "p.csv",
        "videoID,url,timestamp,caption,matching_score,video_path\n"
        "vid1,u,\"[['0:00:00.000', '0:00:07.000']]\",\"['c']\",\"[0.5]\",dl/vid1.webm\n"
        "vid2,u,\"[['0:00:00.000', '0:00:07.000']]\",\"['c']\",\"[0.5]\",\n",
    )
    specs = read_manifest(manifest).specs
    assert specs[0].uri == str(tmp_path / "dl" / "vid1.webm")
    assert specs[1].uri == str(tmp_path / "vid2.mp4")  # default: <videoID>.mp4 next to the manifest


# ---------------------------------------------------------------- plain


def test_plain_manifest(tmp_path):
    manifest = write(
        tmp_path / "sub" / "clips.csv",
        "clip_id,video_path,start_sec,end_sec,caption,annotations,fx,fy,cx,cy\n"
        ",v/a.mp4,0,6.5,first,vipe:../vipe_out,500,500,320,180\n"
        "keep-me,/abs/b.mp4,1.25,7.5,\"second, with comma\",spatialvid:ann/b_0001,,,,\n"
        "bad/id,v/c.mp4,0,6,,,,,,\n"
        ",v/d.mp4,5,4,,,,,,\n"
        ",v/e.mp4,0,6,,colmap:x,,,,\n"
        ",v/f.mp4,0,6,,,500,,,\n"
        "keep-me,v/g.mp4,0,6,dup,,,,,\n"
        ",v/a.mp4,0.0,6.5,same span again,,,,,\n",
    )
    result = read_manifest(manifest)
    assert result.format == "plain"
    a, b = result.specs
    assert a.clip_id == make_clip_id("v/a.mp4", 0.0, 6.5)
    assert a.uri == str(tmp_path / "sub" / "v" / "a.mp4")
    assert a.annotations == Annotations("vipe", str(tmp_path / "vipe_out"), "a")
    assert a.intrinsics == (500.0, 500.0, 320.0, 180.0)
    assert a.dataset == "custom" and a.fps_target == 8.0
    assert b.clip_id == "keep-me" and b.uri == "/abs/b.mp4" and b.caption == "second, with comma"
    assert b.annotations == Annotations("spatialvid", str(tmp_path / "sub" / "ann" / "b_0001"), "b_0001")
    assert b.intrinsics is None
    by_row = {e.row: e.message for e in result.errors}
    assert sorted(by_row) == [4, 5, 6, 7, 8, 9]
    assert "bad/id" in by_row[4]
    assert "start_sec < end_sec" in by_row[5]
    assert "vipe:<dir>" in by_row[6]
    assert "fx, fy, cx, cy" in by_row[7]
    assert "duplicate clip id keep-me (first at row 3)" in by_row[8]
    assert f"duplicate clip id {a.clip_id} (first at row 2)" in by_row[9]


def test_plain_manifest_streams_and_counts_extra_fields(tmp_path):
    manifest = write(
        tmp_path / "c.csv",
        "clip_id,video_path,start_sec,end_sec,caption\nx,a.mp4,0,6,c,EXTRA\ny,b.mp4,00:00:01.000,0:00:08,c\n",
    )
    items = list(iter_manifest(manifest, "plain", fps_target=None))
    assert isinstance(items[0], RowError) and items[0].row == 2 and "more fields" in items[0].message
    assert isinstance(items[1], ClipSpec) and (items[1].start_sec, items[1].end_sec) == (1.0, 8.0)


# ---------------------------------------------------------------- SpatialVID-HQ release

# The release metadata's header as third-party loaders read it (an assumption, see
# docs/datasets.md, "SpatialVID"): columns matched by name, so order and extra columns do not matter.
HQ_HEADER = "id,video path,annotation path,group id,num frames,fps,resolution,distLevel,ocr score"
HQ_A = "0a00f99d-9d9a-5265-9548-e97a34c1302c"
HQ_B = "0a7b25d8-41fd-563f-bec3-9fb2b675be3e"


def hq_release(root: Path, rows: str, header: str = HQ_HEADER) -> Path:
    """A release tree: data/train/SpatialVID_HQ_metadata.csv, videos/ and annotations/ group folders."""
    (root / "videos" / "group_0001").mkdir(parents=True)
    (root / "annotations" / "group_0001" / HQ_A).mkdir(parents=True)
    return write(root / "data" / "train" / "SpatialVID_HQ_metadata.csv", f"{header}\n{rows}")


def test_spatialvid_hq_release_layout(tmp_path):
    rows = (
        f"{HQ_A},videos/group_0001/{HQ_A}.mp4,annotations/group_0001/{HQ_A},1,150,30.0,1280x720,3,0.01\n"
        f"{HQ_B},videos/group_0012/{HQ_B}.mp4,annotations/group_0012/{HQ_B},12,241,29.97,1920x1080,2,0.0\n"
    )
    manifest = hq_release(tmp_path / "HQ", rows)
    assert detect_format(HQ_HEADER.split(",")) == "spatialvid-hq"
    result = read_manifest(manifest, fps_target=None)
    assert result.format == "spatialvid-hq" and not result.errors
    a, b = result.specs
    root = tmp_path / "HQ"
    assert a.uri == str(root / "videos" / "group_0001" / f"{HQ_A}.mp4")
    assert (a.start_sec, a.end_sec) == (0.0, 5.0)  # the whole clip video: 150 frames at 30 fps
    assert b.end_sec == pytest.approx(241 / 29.97)
    assert a.annotations == Annotations("spatialvid", str(root / "annotations" / "group_0001" / HQ_A), HQ_A, 0)
    assert b.annotations.dir == str(root / "annotations" / "group_0012" / HQ_B)
    assert a.clip_id.startswith(HQ_A + "-") and a.native_id == HQ_A and a.dataset == "spatialvid-hq"
    # Explicit roots win over the release defaults.
    moved = read_manifest(manifest, "spatialvid-hq", video_root=tmp_path / "v", annotation_root=tmp_path / "a")
    assert moved.specs[0].uri == str(tmp_path / "v" / "group_0001" / f"{HQ_A}.mp4")
    assert moved.specs[0].annotations.dir == str(tmp_path / "a" / "group_0001" / HQ_A)
    assert moved.specs[0].clip_id == a.clip_id  # ids do not depend on where the data sits


def test_spatialvid_hq_columns_by_name_and_bad_rows(tmp_path):
    header = "FPS,Num_Frames,Group_ID,ID"  # other order, other spelling of the same names
    rows = f"30,90,1,{HQ_A}\n30,0,1,{HQ_B}\n25,50,,{HQ_B}\n30,90,1,../x\n"
    result = read_manifest(hq_release(tmp_path / "HQ", rows, header), fps_target=None)
    assert result.format == "spatialvid-hq" and [s.native_id for s in result.specs] == [HQ_A]
    assert [(e.row, e.message) for e in result.errors] == [
        (3, "num frames (0) and fps (30.0) must be > 0"),
        (4, "empty group id"),
        (5, "id '../x' is not a folder name"),
    ]


def test_spatialvid_hq_missing_column_is_named(tmp_path):
    manifest = hq_release(tmp_path / "HQ", f"{HQ_A},1,30\n", header="id,group id,fps")
    with pytest.raises(ManifestError, match=r"lacks columns \['num frames'\]"):
        read_manifest(manifest, "spatialvid-hq")
    with pytest.raises(ManifestError, match="cannot tell"):
        read_manifest(manifest)


def test_spatialvid_hq_without_annotations_folder(tmp_path):
    csv_path = tmp_path / "HQ" / "data" / "train" / "SpatialVID_HQ_metadata.csv"
    manifest = write(csv_path, f"{HQ_HEADER}\n{HQ_A},,,1,30,30,,,\n")
    (spec,) = read_manifest(manifest).specs
    assert spec.annotations is None and spec.uri == str(tmp_path / "HQ" / "videos" / "group_0001" / f"{HQ_A}.mp4")


# ---------------------------------------------------------------- whole-file problems and CLI


def test_format_detection_and_file_errors(tmp_path):
    assert detect_format(SPATIALVID_HEADER.split(",")) == "spatialvid"
    assert detect_format(PANDA_HEADER.split(",")) == "panda70m"
    assert detect_format(["clip_id", "video_path", "start_sec", "end_sec", "caption"]) == "plain"
    with pytest.raises(ManifestError, match="cannot tell"):
        read_manifest(write(tmp_path / "x.csv", "a,b\n1,2\n"))
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "missing.csv")
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(write(tmp_path / "empty.csv", ""))
    with pytest.raises(ManifestError, match="lacks columns"):
        read_manifest(write(tmp_path / "p.csv", "video_path,start_sec\n"), "plain")
    with pytest.raises(ManifestError, match="SpatialVID manifests only"):
        read_manifest(write(tmp_path / "q.csv", "video_path,start_sec,end_sec\n"), annotation_root=tmp_path)


def test_cli_writes_specs_and_reports_rejections(tmp_path, capsys):
    manifest = write(tmp_path / "c.csv", "clip_id,video_path,start_sec,end_sec,caption\n,a.mp4,0,6,c\nz,b.mp4,x,6,c\n")
    out = tmp_path / "specs.jsonl"
    assert main([str(manifest), "--fps", "native", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 clips, 1 rejected rows" in captured.out
    assert f"{manifest} row 3: start_sec" in captured.err
    (line,) = out.read_text().splitlines()
    record = json.loads(line)
    assert record["fps_target"] is None and record["clip_id"] == make_clip_id("a.mp4", 0, 6)
    assert ClipSpec.from_dict(record) == read_manifest(manifest, fps_target=None).specs[0]
    assert main([str(tmp_path / "nope.csv")]) == 2
