"""`vrt-ray data validate`: what it prints and its exit codes 0 / 1 / 2."""
import json

from data_helpers import JSONL_VIDEOS, MJBENCH_VIDEOS, stage
from vrt_ray.cli import main


def test_clean_file_exits_0(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    good = [json.loads(line) for line in
            (stage("pairs.jsonl", tmp_path, JSONL_VIDEOS)).read_text().splitlines()[:2]]
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    assert main(["data", "validate", str(path), "--format", "jsonl"]) == 0
    out = capsys.readouterr().out
    assert "2 rows, 2 pairs loaded, 0 bad rows, 0 pairs with missing videos" in out
    assert "overall" in out and "bad row:" not in out


def test_skipped_rows_exit_1_and_are_listed(tmp_path, capsys):
    path = stage("mjbench_video_test.json", tmp_path, MJBENCH_VIDEOS)
    assert main(["data", "validate", str(path), "--format", "mjbench-video"]) == 1
    out = capsys.readouterr().out
    assert "11 rows, 5 pairs loaded, 5 bad rows, 1 pairs with missing videos" in out
    assert "bad row: item 6: overall_preference='Video 3 better'" in out
    assert f"missing video: item 9: {tmp_path / 'test/missing.mp4'}" in out
    assert "Hard to judge 1" in out
    # per-dimension distribution: TA is A 1, B 1, tie 1 over the loaded pairs
    assert any(line.split() == ["TA", "1", "1", "1"] for line in out.splitlines())


def test_unreadable_file_and_strict_missing_video_exit_2(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "none.csv"),
                 "--format", "videogen-rewardbench"]) == 2
    assert "vrt-ray: error:" in capsys.readouterr().err
    path = stage("mjbench_video_test.json", tmp_path, MJBENCH_VIDEOS)
    assert main(["data", "validate", str(path), "--format", "mjbench-video", "--strict"]) == 2
    assert "missing video file" in capsys.readouterr().err


def test_video_root_option(tmp_path, capsys):
    root = tmp_path / "videos_here"
    path = stage("mjbench_video_test.json", tmp_path, MJBENCH_VIDEOS, video_root=root)
    main(["data", "validate", str(path), "--format", "mjbench-video", "--video-root", str(root)])
    assert "5 pairs loaded" in capsys.readouterr().out
