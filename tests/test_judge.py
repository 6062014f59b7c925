"""`vrt-ray judge` end to end, and the HTML trace page."""
import json
import subprocess
import sys

import pytest
from video_samples import encode

from vrt_ray.episodes import EpisodeJob, replay
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_processor
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets, EpisodeInput
from vrt_ray.report import render_html


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("judge_videos")
    return encode(folder / "a.mp4", "libx264", 40), encode(folder / "b.mp4", "libx264", 24)


def run_judge(*args):
    return subprocess.run([sys.executable, "-m", "vrt_ray", "judge", *map(str, args)],
                          capture_output=True, text=True)


def test_judge_prints_every_dimension_and_writes_the_trace(tiny_model_dir, videos, tmp_path):
    page = tmp_path / "trace.html"
    run = run_judge(*videos, "--model", tiny_model_dir, "--prompt", "a red square", "--json",
                    "--html", page, "--set", "protocol.max_new_tokens=12",
                    "--set", "protocol.max_turns=2")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result["verdicts"]) == {"TA", "VQ", "MQ", "overall"}
    assert all(v in (None, "A", "B", "tie") for v in result["verdicts"].values())
    assert result["turns"] >= 1
    text = page.read_text()
    assert text.count("<img src='data:image/png;base64,") >= 8  # the initial view at least
    assert "a red square" in text and "turn 1:" in text


def test_judge_runs_the_official_preset(tiny_model_dir, videos):
    run = run_judge(*videos, "--model", tiny_model_dir, "--prompt", "a red square", "--json",
                    "--set", "protocol.preset=vr_thinker", "--set", "protocol.max_new_tokens=8",
                    "--set", "protocol.max_turns=1")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result["verdicts"]) == {"TA", "VQ", "MQ", "overall"} and result["turns"] >= 1


def test_judge_bad_inputs_exit_2_with_one_line(tiny_model_dir, videos, tmp_path):
    missing = run_judge(videos[0], tmp_path / "nope.mp4", "--model", tiny_model_dir, "--prompt", "x")
    assert missing.returncode == 2 and "nope.mp4: no such file" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 1000)
    bad = run_judge(videos[0], corrupt, "--model", tiny_model_dir, "--prompt", "x")
    assert bad.returncode == 2 and "corrupt.mp4" in bad.stderr
    no_model = run_judge(*videos, "--model", tmp_path, "--prompt", "x")
    assert no_model.returncode == 2 and "not a checkpoint directory" in no_model.stderr


def test_trace_page_shows_frames_window_drops_and_verdicts_against_labels(tiny_model_dir, videos):
    call = lambda frames: '<tool_call>' + json.dumps(
        {"name": "select_frames", "arguments": {"video": "A", "target_frames": frames}}) + '</tool_call>'
    answer = '<answer>{"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}</answer>'
    job = EpisodeJob(EpisodeInput("p7", "a red square", {"A": str(videos[0]), "B": str(videos[1])},
                                  {"A": 40, "B": 24}))
    trajectory = replay(load_processor(tiny_model_dir), job, load_preset("vrt"),
                        Budgets(initial_frames=2, memory_window=1), PixelBudget(784, 3136),
                        [call([5, 6]), call([7]), answer], cache=FrameCache(1 << 26))
    page = render_html([trajectory], labels={"p7": {"TA": "A", "VQ": "A", "overall": "A"}},
                       prompts={"p7": "a red square"})
    assert "dropped by the memory window: A5, A6" in page
    assert "turn 1: 4 frames in view · came to: valid" in page
    assert "turn 3: 5 frames in view · came to: answer" in page
    assert page.count("<img ") == 4 + 2 + 1
    assert "<td class='right'>A</td>" in page and "<td class='wrong'>B</td>" in page
    assert "<script" not in page
