"""Benchmark loaders on small files in each published format, bad rows included."""
import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_helpers import (FIXTURES, JSONL_VIDEOS, MJBENCH_VIDEOS, TRAIN_VIDEOS, VIDEOGEN_VIDEOS,
                          stage, write_tiny_mp4)
from vrt_ray.data.loaders import (FORMATS, DataFileError, MissingVideoError, load_pairs)
from vrt_ray.errors import VrtError


def _reasons(report):
    return {bad.line: bad.reason for bad in report.bad_rows}


def test_videogen_rewardbench_csv_by_column_name(tmp_path):
    path = stage("videogen_rewardbench.csv", tmp_path, VIDEOGEN_VIDEOS)
    report = load_pairs(path, "videogen-rewardbench")
    assert (report.rows, len(report.pairs), report.unit) == (8, 3, "line")
    first, second, third = report.pairs
    assert first.prompt == "a red ball rolls left"
    assert first.labels == {"VQ": "tie", "MQ": "B", "TA": "A", "overall": "A"}
    assert first.video_a == str(tmp_path / "videos/pika/p0.mp4")
    assert first.video_b == str(tmp_path / "videos/kling/p0.mp4")   # "./" prefix
    assert first.meta == {"source": "videogen-rewardbench", "path_a": "videos/pika/p0.mp4",
                          "path_b": "./videos/kling/p0.mp4", "model_a": "gen2",
                          "model_b": "kling", "fps_a": 8.0, "num_frames_a": 49, "fps_b": 8.0,
                          "num_frames_b": 49}
    assert second.prompt == "a cat, on a sofa" and set(second.labels.values()) == {"tie"}
    assert second.meta["num_frames_a"] == 126 and isinstance(second.meta["num_frames_a"], int)
    assert third.labels == {"VQ": "B", "MQ": "A", "TA": "B", "overall": "B"}
    reasons = _reasons(report)
    assert sorted(reasons) == [4, 5, 6, 9]
    assert "VQ='C'" in reasons[4] and "prompt" in reasons[5]
    assert "num_frames_A='abc'" in reasons[6] and "5 fields, header has 13" in reasons[9]
    assert [(m.line, m.path) for m in report.missing_videos] == \
        [(7, str(tmp_path / "videos/kling/gone.mp4"))]
    assert report.label_counts()["MQ"] == {"A": 1, "B": 1, "tie": 1}
    assert not report.clean and report.skipped == 5


def test_videogen_training_csv_lacks_models_and_overall(tmp_path):
    path = stage("videogen_train.csv", tmp_path, TRAIN_VIDEOS)
    report = load_pairs(path, "videogen-rewardbench")
    assert len(report.pairs) == 2 and "better" in _reasons(report)[4]
    pair = report.pairs[0]
    assert pair.labels == {"VQ": "B", "MQ": "tie", "TA": "A"}
    assert "model_a" not in pair.meta and pair.meta["num_frames_b"] == 65


def test_video_root_is_where_paths_resolve(tmp_path):
    root = tmp_path / "dataset"
    (tmp_path / "anno").mkdir()
    path = stage("videogen_train.csv", tmp_path / "anno", TRAIN_VIDEOS, video_root=root)
    report = load_pairs(path, "videogen-rewardbench", video_root=root)
    assert len(report.pairs) == 2 and not report.missing_videos
    assert report.pairs[0].video_a == str(root / "videos/t0_A.mp4")
    assert len(load_pairs(path, "videogen-rewardbench").missing_videos) == 4


def test_strict_makes_a_missing_video_an_error_and_check_videos_off_skips_the_check(tmp_path):
    path = stage("videogen_rewardbench.csv", tmp_path, VIDEOGEN_VIDEOS)
    with pytest.raises(MissingVideoError, match="1 missing video file.*line 7.*gone.mp4"):
        load_pairs(path, "videogen-rewardbench", strict=True)
    report = load_pairs(path, "videogen-rewardbench", check_videos=False)
    assert len(report.pairs) == 4 and not report.missing_videos


HEX = ["0a1b2c3d4e5f60718293a4b5c6d7e8f9", "ffeeddccbbaa99887766554433221100",
       "00112233445566778899aabbccddeeff", "abcdefabcdefabcdefabcdefabcdef01"]
URL = "https://example.org/videos/{}.mp4"


@pytest.fixture
def genai_parquet(tmp_path):
    """GenAI-Bench video_generation as published: parquet, video columns hold URLs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("a panda eats bamboo", "A", HEX[0], "B", HEX[1], "leftvote"),
            ("waves at sunset", "A", HEX[1], "C", HEX[2], "rightvote"),
            ("a robot dances", "B", HEX[2], "C", HEX[3], "tievote"),
            ("rain on a window", "A", HEX[0], "C", HEX[3], "bothbad_vote"),
            ("a kite", "A", HEX[0], "B", HEX[1], "upvote"),
            ("a bus", "A", HEX[0], "B", None, "leftvote"),
            ("", "A", HEX[0], "B", HEX[1], "leftvote"),
            ("a tram", "A", HEX[0], "B", "f" * 32, "rightvote")]
    columns = ["prompt", "left_model", "left_video", "right_model", "right_video", "vote_type"]
    data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
    for side in ("left_video", "right_video"):
        data[side] = [URL.format(h) if h else None for h in data[side]]
    path = tmp_path / "test.parquet"
    pq.write_table(pa.table(data), path)
    videos = tmp_path / "videos"
    source = write_tiny_mp4(videos / f"{HEX[0]}.mp4")
    for h in HEX[1:]:
        shutil.copyfile(source, videos / f"{h}.mp4")
    return path


def test_genai_bench_parquet(genai_parquet):
    root = genai_parquet.parent / "videos"
    report = load_pairs(genai_parquet, "genai-bench", video_root=root)
    assert (report.rows, len(report.pairs), report.unit) == (8, 4, "row")
    assert [p.labels for p in report.pairs] == \
        [{"overall": "A"}, {"overall": "B"}, {"overall": "tie"}, {"overall": "tie"}]
    first = report.pairs[0]
    assert first.video_a == str(root / f"{HEX[0]}.mp4")
    assert first.meta == {"source": "genai-bench", "vote_type": "leftvote", "model_a": "A",
                          "model_b": "B", "video_a_source": URL.format(HEX[0]),
                          "video_b_source": URL.format(HEX[1])}
    assert report.meta_counts("vote_type") == {"leftvote": 1, "rightvote": 1, "tievote": 1,
                                               "bothbad_vote": 1}
    reasons = _reasons(report)
    assert sorted(reasons) == [5, 6, 7]
    assert "upvote" in reasons[5] and "right_video" in reasons[6] and "prompt" in reasons[7]
    assert [m.line for m in report.missing_videos] == [8]


def test_genai_bench_json_copy_with_renamed_fields(tmp_path):
    names = ["0a1b2c3d4e5f60718293a4b5c6d7e8f9.mp4", "ffeeddccbbaa99887766554433221100.mp4",
             "11111111111111111111111111111111.mp4", "22222222222222222222222222222222.mp4"]
    path = stage("genai_bench_unifiedreward.json", tmp_path, names)
    report = load_pairs(path, "genai-bench")
    assert [p.id for p in report.pairs] == ["0", "1"] and report.unit == "item"
    assert report.pairs[1].labels == {"overall": "tie"}
    assert report.pairs[1].meta["vote_type"] == "bothbad_vote"
    assert report.pairs[0].video_b == str(tmp_path / names[1])
    reasons = _reasons(report)
    assert "video_right" in reasons[3] and "downvote" in reasons[4]


def test_mjbench_video(tmp_path):
    path = stage("mjbench_video_test.json", tmp_path, MJBENCH_VIDEOS)
    report = load_pairs(path, "mjbench-video")
    assert (report.rows, len(report.pairs)) == (11, 5)
    one, two, same, hard, video2 = report.pairs
    # Aspects come from the annotators' category_preference ("Coherence & Consistency" -> MQ).
    assert one.labels == {"overall": "A", "TA": "A", "VQ": "B", "MQ": "tie", "Safety": "tie",
                          "Bias": "tie"}
    assert one.video_a == str(tmp_path / "test/0_0.mp4") and one.prompt == "a chef chops onions"
    assert one.meta["video_1_total_score"] == 0 and one.meta["video_0_label"]["object"] == 1
    # "Hard to judge" gives no label; aspects missing from category_preference come from the
    # scores, where 1 (good) beats 2 (bad).
    assert two.labels == {"overall": "A", "Safety": "A", "VQ": "tie", "MQ": "B", "Bias": "A"}
    assert two.meta["overall_preference"] == "Video 1 better"   # "Video 1 Better" normalised
    # A score of 0 (not relevant) gives no label for that aspect.
    assert same.labels == {"overall": "tie", "TA": "tie", "VQ": "tie", "MQ": "tie"}
    assert hard.labels == {} and hard.meta["overall_preference"] == "Hard to judge"
    assert video2.labels == {"overall": "B", "TA": "B", "Bias": "B"}
    reasons = _reasons(report)
    assert sorted(reasons) == [6, 7, 8, 10, 11]
    assert "Video 3 better" in reasons[6] and "caption" in reasons[7]
    assert "Alignment score 3" in reasons[8] and "str" in reasons[10]
    assert "category_preference[Bias]='Both bad'" in reasons[11]
    assert [m.path for m in report.missing_videos] == [str(tmp_path / "test/missing.mp4")]
    assert report.meta_counts("overall_preference") == {
        "Video 1 better": 2, "Same": 1, "Hard to judge": 1, "Video 2 better": 1}


def test_jsonl(tmp_path):
    path = stage("pairs.jsonl", tmp_path, JSONL_VIDEOS)
    report = load_pairs(path, "jsonl")
    assert [p.id for p in report.pairs] == ["s0", "s1"] and report.rows == 6
    assert report.pairs[0].video_a == str(tmp_path / "videos/s0_a.mp4")
    assert report.pairs[0].meta == {"source": "synthetic", "num_frames": 64}
    reasons = _reasons(report)
    assert "overall='C'" in reasons[4] and "video_b" in reasons[5] and "not JSON" in reasons[6]
    assert [m.line for m in report.missing_videos] == [7]


@pytest.mark.parametrize("fmt,content", [
    ("videogen-rewardbench", b"\x00\x00\x00\x18ftypmp42 binary"),
    ("videogen-rewardbench", b'[{"caption": "x"}]'),
    ("videogen-rewardbench", b"path_A,path_B,prompt,fps_A\n"),
    ("videogen-rewardbench", b""),
    ("mjbench-video", b"path_A,path_B\na,b\n"),
    ("mjbench-video", b'{"caption": "x"}'),
    ("genai-bench", b"PAR1 damaged parquet"),
    ("genai-bench", b"prompt,left_video\nx,y\n"),
    ("jsonl", b"not json\nnor this\n"),
])
def test_unreadable_file_raises_data_file_error(tmp_path, fmt, content):
    path = tmp_path / "file"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=str(path)):
        load_pairs(path, fmt)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        load_pairs(tmp_path / "nope.csv", "videogen-rewardbench")
    with pytest.raises(DataFileError, match="unknown format"):
        load_pairs(FIXTURES / "pairs.jsonl", "csv")
    assert issubclass(DataFileError, VrtError) and issubclass(MissingVideoError, VrtError)


# --- property tests: garbled content never raises anything but DataFileError ---------------

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = ["caption", "prompt", "video_0_path", "video_1_path", "overall_preference",
        "video_0_overall_score", "video_1_overall_score", "left_video", "right_video",
        "video_left", "video_right", "vote_type", "id", "video_a", "video_b", "labels", "meta"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
ROWS = st.one_of(JSON_VALUES, st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=8))


def _loads_or_file_error(path, fmt):
    try:
        return load_pairs(path, fmt, check_videos=False)
    except DataFileError:
        return None


@SETTINGS
@given(lines=st.lists(st.text(max_size=60), max_size=6), at=st.integers(0, 9))
def test_garbled_csv_lines_never_raise(tmp_path, lines, at):
    text = (FIXTURES / "videogen_rewardbench.csv").read_text().splitlines()
    path = tmp_path / "garbled.csv"
    path.write_text("\n".join(text[:1 + at] + lines + text[1 + at:]), encoding="utf-8")
    report = load_pairs(path, "videogen-rewardbench", check_videos=False)
    assert len(report.pairs) + len(report.bad_rows) == report.rows


@SETTINGS
@given(lines=st.lists(st.text(max_size=60), max_size=6))
def test_garbled_jsonl_lines_never_raise_and_keep_good_lines(tmp_path, lines):
    path = tmp_path / "garbled.jsonl"
    path.write_text((FIXTURES / "pairs.jsonl").read_text() + "\n".join(lines), encoding="utf-8")
    report = load_pairs(path, "jsonl", check_videos=False)
    assert [p.id for p in report.pairs][:3] == ["s0", "s1", "s4"]


@SETTINGS
@given(rows=st.lists(ROWS, max_size=6), fmt=st.sampled_from(["mjbench-video", "genai-bench"]))
def test_garbled_json_items_never_raise_and_keep_good_items(tmp_path, rows, fmt):
    fixture = {"mjbench-video": "mjbench_video_test.json",
               "genai-bench": "genai_bench_unifiedreward.json"}[fmt]
    items = json.loads((FIXTURES / fixture).read_text())
    path = tmp_path / "garbled.json"
    path.write_text(json.dumps(items + rows), encoding="utf-8")
    report = load_pairs(path, fmt, check_videos=False)
    assert len(report.pairs) >= {"mjbench-video": 6, "genai-bench": 2}[fmt]


@SETTINGS
@given(data=st.binary(max_size=200), fmt=st.sampled_from(FORMATS))
def test_arbitrary_bytes_load_or_raise_data_file_error(tmp_path, data, fmt):
    path = tmp_path / "random"
    path.write_bytes(data)
    _loads_or_file_error(path, fmt)
