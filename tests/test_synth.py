"""The synthetic data set: defects visible in decoded frames, labels, determinism, the teacher.

Frames are checked with numpy measures written here (not the teacher's perception), so the
generator is tested independently of the teacher that reads it.
"""
import colorsys
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from vrt_ray.data.pair import PreferencePair
from vrt_ray.data.scene import COLOURS, prompt_text
from vrt_ray.data.synth import (CAPTIONS_PER_VIDEO, SynthError, SynthSettings, caption_spans,
                                generate, labels_from_defects, render_video, video_reader)
from vrt_ray.data.teacher import Teacher, place, scan_indices
from vrt_ray.video import open_video, uniform_indices

TEACHER_PAIRS = 40


# -- independent frame measures ---------------------------------------------------------------
def _object_mask(frame):
    f = frame.astype(int)
    return (f.max(axis=2) - f.min(axis=2)) > 80


def _centroid(frame):
    ys, xs = np.nonzero(_object_mask(frame))
    return xs.mean() + 0.5, ys.mean() + 0.5


def _hue(frame):
    rgb = frame[_object_mask(frame)].mean(axis=0) / 255.0
    return colorsys.rgb_to_hsv(*rgb)[0] * 360.0


def _hue_distance(a, b):
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _high_freq(frame):
    """Mean |Laplacian| of the grey image away from the object."""
    g = frame.astype(float).mean(axis=2)
    lap = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    far = ~_object_mask(frame)[1:-1, 1:-1]
    return lap[far].mean()


def _edge_energy(frame):
    g = frame.astype(float)
    return (np.abs(np.diff(g, axis=0)) ** 2).mean() + (np.abs(np.diff(g, axis=1)) ** 2).mean()


def _block_step_ratio(frame):
    """Mean step across 8-pixel block borders / mean step inside blocks."""
    d = np.abs(np.diff(frame.astype(float), axis=1)).sum(axis=2)
    on = (np.arange(d.shape[1]) % 8) == 7
    return d[:, on].mean() / max(d[:, ~on].mean(), 1e-6)


def _render(tmp_path, kind, segment, n=48, prompt=None, seed=0):
    prompt = prompt or prompt_text("red", "circle", "right", "grey")
    path = tmp_path / f"{kind}.mp4"
    states = render_video(path, prompt, n, [{"dimension": "?", "kind": kind, "segment": segment}],
                          rng=np.random.default_rng(seed))
    with open_video(path) as reader:
        frames = reader.read(list(range(1, n + 1)))
    assert len(frames) == n and frames[0].shape == (112, 112, 3)
    inside = list(range(segment[0], segment[1] + 1))
    outside = [t for t in range(1, n + 1) if t not in inside]
    return frames, states, inside, outside


# -- sampling helpers --------------------------------------------------------------------------
def test_uniform_indices_hand_cases():
    assert uniform_indices(16, 4) == [1, 6, 11, 16]
    assert uniform_indices(256, 4) == [1, 86, 171, 256]
    assert uniform_indices(10, 2) == [1, 10]
    assert uniform_indices(3, 5) == [1, 2, 3]


def test_scan_indices_hand_case():
    # gaps of 4 unseen frames each: 8 frames split 3, 3, 2 (ties go to the earlier gap)
    assert scan_indices(16, [1, 6, 11, 16], 8) == [2, 4, 5, 7, 9, 10, 13, 14]
    assert scan_indices(5, [1, 5], 8) == [2, 3, 4]


@given(n=st.integers(1, 400), k=st.integers(1, 8), count=st.integers(1, 12))
def test_scan_indices_are_new_in_range_and_bounded(n, k, count):
    seen = uniform_indices(n, k)
    picks = scan_indices(n, seen, count)
    assert picks == sorted(set(picks)) and not set(picks) & set(seen)
    assert all(1 <= t <= n for t in picks)
    assert len(picks) == min(count, n - len(seen))


# -- defects are visible in the decoded frames -------------------------------------------------
def test_noise_segment_has_more_high_frequency_energy(tmp_path):
    frames, _, inside, outside = _render(tmp_path, "noise", [20, 30])
    hf_in = min(_high_freq(frames[t - 1]) for t in inside)
    hf_out = max(_high_freq(frames[t - 1]) for t in outside)
    assert hf_in > 5 * hf_out


def test_blur_segment_lowers_edge_energy(tmp_path):
    frames, _, inside, outside = _render(tmp_path, "blur", [10, 18])
    assert max(_edge_energy(frames[t - 1]) for t in inside) < 0.5 * min(
        _edge_energy(frames[t - 1]) for t in outside)


def test_blocking_segment_puts_steps_on_the_block_grid(tmp_path):
    frames, _, inside, outside = _render(tmp_path, "blocking", [30, 40])
    assert min(_block_step_ratio(frames[t - 1]) for t in inside) > 10
    assert max(_block_step_ratio(frames[t - 1]) for t in outside) < 4


def test_wrong_colour_segment_has_the_wrong_hue(tmp_path):
    frames, states, inside, outside = _render(tmp_path, "wrong_colour", [5, 12])
    red = _hue(np.asarray([[COLOURS["red"]]], dtype=np.uint8))
    assert all(_hue_distance(_hue(frames[t - 1]), red) < 10 for t in outside)
    assert all(_hue_distance(_hue(frames[t - 1]), red) >= 50 for t in inside)
    assert {states[t - 1].colour for t in inside} != {"red"}


def test_wrong_shape_segment_changes_the_outline(tmp_path):
    frames, states, inside, outside = _render(tmp_path, "wrong_shape", [5, 12])
    area = {t: _object_mask(frames[t - 1]).sum() for t in range(1, 49)}
    assert {states[t - 1].shape for t in inside} != {"circle"}
    assert min(abs(area[t] - np.median([area[o] for o in outside])) for t in inside) > 20


def test_freeze_gives_identical_positions(tmp_path):
    frames, _, inside, outside = _render(tmp_path, "freeze", [20, 32])
    xs = [_centroid(frames[t - 1])[0] for t in inside]
    assert max(xs) - min(xs) < 0.2
    steps = np.diff([_centroid(frames[t - 1])[0] for t in outside[:18]])
    assert steps.min() > 0.5  # elsewhere it moves right every frame


def test_teleport_moves_the_centroid_far_off_the_trajectory(tmp_path):
    frames, _, inside, outside = _render(tmp_path, "teleport", [20, 28])
    line = np.median([_centroid(frames[t - 1])[1] for t in outside])
    assert all(abs(_centroid(frames[t - 1])[1] - line) > 20 for t in inside)
    assert all(abs(_centroid(frames[t - 1])[1] - line) < 0.5 for t in outside)


def test_jitter_shakes_the_object_off_its_path(tmp_path):
    frames, _, inside, outside = _render(tmp_path, "jitter", [20, 28])
    line = np.median([_centroid(frames[t - 1])[1] for t in outside])
    assert all(3 < abs(_centroid(frames[t - 1])[1] - line) < 8 for t in inside)


def test_wrong_direction_moves_backwards_in_the_segment(tmp_path):
    frames, _, inside, outside = _render(tmp_path, "wrong_direction", [20, 32])
    xs = {t: _centroid(frames[t - 1])[0] for t in range(1, 49)}
    assert all(xs[t + 1] < xs[t] for t in inside[:-1])
    assert xs[48] > xs[1] + 30  # still moving right overall


# -- the data set ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = generate(out, SynthSettings(pairs=TEACHER_PAIRS, seed=3, max_frames=96),
                       progress=False)
    pairs = [PreferencePair.from_dict(json.loads(line)) for line in open(out / "pairs.jsonl")]
    traces = [json.loads(line) for line in open(out / "traces.jsonl")]
    return out, summary, pairs, traces


def _label_rule(defects):
    has = {v: {d["dimension"] for d in defects[v]} for v in "AB"}
    labels = {}
    for dim in ("TA", "VQ", "MQ"):
        labels[dim] = {(True, False): "B", (False, True): "A"}.get(
            (dim in has["A"], dim in has["B"]), "tie")
    a = list(labels.values()).count("A")
    b = list(labels.values()).count("B")
    labels["overall"] = "A" if a > b else "B" if b > a else "tie"
    return labels


def test_labels_follow_from_the_defects(dataset):
    _, _, pairs, _ = dataset
    for p in pairs:
        assert p.labels == _label_rule(p.meta["defects"])
        assert p.meta["source"] == "synthetic" and p.meta["fps"] == 8
    for dim in ("TA", "VQ", "MQ", "overall"):
        assert {p.labels[dim] for p in pairs} == {"A", "B", "tie"}, dim


def test_labels_hand_case():
    vq = {"dimension": "VQ", "kind": "noise", "segment": [2, 5]}
    mq = {"dimension": "MQ", "kind": "freeze", "segment": [8, 12]}
    assert labels_from_defects({"A": [vq], "B": [vq, mq]}) == {
        "TA": "tie", "VQ": "tie", "MQ": "A", "overall": "A"}
    assert labels_from_defects({"A": [vq], "B": [mq]}) == {
        "TA": "tie", "VQ": "B", "MQ": "A", "overall": "tie"}


def test_lengths_spread_and_segments_fit(dataset):
    _, summary, pairs, _ = dataset
    lengths = [p.meta["num_frames"] for p in pairs]
    assert min(lengths) < 40 and max(lengths) > 70 and all(16 <= n <= 96 for n in lengths)
    for p in pairs:
        for v in "AB":
            segs = [d["segment"] for d in p.meta["defects"][v]]
            assert all(2 <= s <= e <= p.meta["num_frames"] - 1 for s, e in segs)
            assert all(e1 < s2 for (_, e1), (s2, _) in zip(segs, segs[1:]))


def test_uniform_initial_frames_often_miss_a_defect(dataset):
    _, _, pairs, traces = dataset
    missed = sum(not any(s <= t <= e for t in tr["initial"][v])
                 for p, tr in zip(pairs, traces) for v in "AB"
                 for s, e in (d["segment"] for d in p.meta["defects"][v]))
    total = sum(len(p.meta["defects"][v]) for p in pairs for v in "AB")
    assert missed / total > 0.3


def test_splits_partition_the_pairs(dataset):
    out, _, pairs, _ = dataset
    ids = [json.loads(line)["id"] for name in ("train", "val", "test")
           for line in open(out / f"{name}.jsonl")]
    assert sorted(ids) == sorted(p.id for p in pairs)
    assert len([1 for _ in open(out / "train.jsonl")]) == round(0.8 * len(pairs))


def test_teacher_finds_every_defect_and_answers_right(dataset):
    _, summary, pairs, traces = dataset
    found = [d["found"] for t in traces for d in t["found"]["defects"]]
    right = [t["found"]["all_correct"] for t in traces]
    print(f"\nteacher on {len(traces)} pairs: found {sum(found)}/{len(found)} defects, "
          f"all dimensions right on {sum(right)}/{len(right)} pairs")
    assert all(found) and all(right)
    assert summary["teacher"]["defects_found"] == 1.0 and summary["teacher"]["all_correct"] == 1.0


def test_teacher_never_reads_labels_or_meta(dataset):
    out, _, pairs, traces = dataset
    teacher = Teacher(*video_reader(out))
    for p, t in list(zip(pairs, traces))[:10]:
        stripped = PreferencePair(p.id, p.prompt, p.video_a, p.video_b)
        again = teacher.run(stripped)
        assert again == {k: v for k, v in t.items() if k not in ("found", "split")}


def test_traces_keep_the_budgets_and_describe_every_frame(dataset):
    _, _, pairs, traces = dataset
    for p, t in zip(pairs, traces):
        n = p.meta["num_frames"]
        assert t["pair_id"] == p.id
        assert t["initial"] == {"A": uniform_indices(n, 4), "B": uniform_indices(n, 4)}
        calls = [turn["tool_call"] for turn in t["turns"][:-1]]
        assert all("answer" not in turn for turn in t["turns"][:-1])
        assert "tool_call" not in t["turns"][-1]
        assert set(t["turns"][-1]["answer"]) == {"TA", "VQ", "MQ", "overall"}
        assert len(calls) <= SynthSettings(pairs=1).max_turns  # within the tool budget
        assert {c["video"] for c in calls} == {"A", "B"}  # each video gets its coarse scan
        assert len({(c["video"], tuple(c["target_frames"])) for c in calls}) == len(calls)
        for c in calls:
            assert c["video"] in ("A", "B") and 1 <= len(c["target_frames"]) <= 8
            assert all(isinstance(i, int) and 1 <= i <= n for i in c["target_frames"])
        # each turn first says what every frame it just received shows
        shown = [[("A", i) for i in t["initial"]["A"]] + [("B", i) for i in t["initial"]["B"]]]
        shown += [[(c["video"], i) for i in c["target_frames"]] for c in calls]
        for turn, frames in zip(t["turns"], shown):
            for video, i in frames:
                assert re.search(rf"\b{video} {i}: ", turn["think"]), (p.id, video, i)


def test_captions_match_the_rendered_frames(dataset):
    out, _, pairs, _ = dataset
    rows = [json.loads(line) for line in open(out / "captions.jsonl")]
    assert len(rows) == 2 * CAPTIONS_PER_VIDEO * len(pairs)
    assert {r["facts"]["quality"] for r in rows} >= {"clean", "noise", "blur", "blocking"}
    for r in rows:
        facts = r["facts"]
        with open_video(out / r["video"]) as reader:
            frame = reader.read([r["frame"]])[0]
        truth = _hue(np.asarray([[COLOURS[facts["colour"]]]], np.uint8))
        assert _hue_distance(_hue(frame), truth) < 12
        if facts["quality"] != "blocking":
            x, y = _centroid(frame)
            assert abs(x - facts["x"]) < 1.5 and abs(y - facts["y"]) < 1.5, r
        noisy = _high_freq(frame) > 10
        assert noisy == (facts["quality"] == "noise"), r
        assert r["caption"].startswith(f"A {facts['colour']} {facts['shape']} at ")


def _ninths(x, y, size, margin=1.5):
    """The places a centre may be named by, allowing `margin` px either side of a third."""
    shifts = (-margin, 0, margin)
    return {place(x + dx, y + dy, size) for dx in shifts for dy in shifts}


def test_place_names_the_ninth_of_the_frame():
    assert place(0, 0, 112) == "top left" and place(111.9, 111.9, 112) == "bottom right"
    assert place(56, 20, 112) == "top centre" and place(20, 56, 112) == "middle left"
    assert place(37.3, 74.6, 112) == "middle left" and place(37.4, 74.7, 112) == "bottom centre"


def test_coarse_notes_change_the_words_only(dataset):
    out, _, pairs, traces = dataset
    coarse, placed = Teacher(*video_reader(out), notes="coarse"), 0
    for p, t in list(zip(pairs, traces))[:12]:
        again = coarse.run(PreferencePair(p.id, p.prompt, p.video_a, p.video_b))
        assert again["findings"] == t["findings"] and again["initial"] == t["initial"]
        assert [{k: v for k, v in turn.items() if k != "think"} for turn in again["turns"]] == \
            [{k: v for k, v in turn.items() if k != "think"} for turn in t["turns"]]
        for turn in again["turns"]:
            text = turn["think"]
            assert not re.search(r"\(\d+,\d+\)|\d\.\d|\bpx\b", text), text  # no pixel figures
            for video, frame, where in re.findall(r"\b([AB]) (\d+): \w+ \w+ at (\w+ \w+),", text):
                with open_video(out / (p.video_a if video == "A" else p.video_b)) as reader:
                    image = reader.read([int(frame)])[0]
                assert where in _ninths(*_centroid(image), image.shape[1]), (p.id, video, frame)
                placed += 1
    assert placed > 12 * 8  # every pair's initial frames at least
    with pytest.raises(ValueError, match="notes 'rough'"):
        Teacher(*video_reader(out), notes="rough")


def test_coarse_captions_name_the_place(tmp_path):
    generate(tmp_path / "exact", SynthSettings(pairs=2, seed=5, max_frames=32), progress=False)
    generate(tmp_path / "coarse", SynthSettings(pairs=2, seed=5, max_frames=32, notes="coarse"),
             progress=False)
    for name in ("pairs.jsonl", "videos/synth-5-00001-B.mp4"):  # the same data, other words
        assert (tmp_path / "exact" / name).read_bytes() == (tmp_path / "coarse" / name).read_bytes()
    exact, coarse = ([json.loads(line) for line in open(tmp_path / n / "captions.jsonl")]
                     for n in ("exact", "coarse"))
    for e, c in zip(exact, coarse):
        assert e["facts"] == c["facts"] and e["frame"] == c["frame"]
        where = place(c["facts"]["x"], c["facts"]["y"], 112)
        assert c["caption"] == e["caption"].replace(
            f"({c['facts']['x']:.0f},{c['facts']['y']:.0f})", where)
        assert [(f, c["caption"][a:b]) for f, a, b in caption_spans(c["caption"])
                if f == "position"] == [("position", where)]


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_with_any_number_of_workers(tmp_path):
    hashes = []
    for folder, seed, workers in (("one", 7, 1), ("two", 7, 2), ("three", 8, 2)):
        generate(tmp_path / folder, SynthSettings(pairs=3, seed=seed, max_frames=40),
                 progress=False, workers=workers)
        hashes.append(_tree_hash(tmp_path / folder))
    assert hashes[0] == hashes[1] != hashes[2]


def test_zero_workers_are_refused(tmp_path):
    with pytest.raises(SynthError, match=re.escape("--workers 0")):
        generate(tmp_path, SynthSettings(pairs=1), progress=False, workers=0)
    assert not list((tmp_path / "videos").iterdir())


def test_split_counts_are_honoured(tmp_path):
    summary = generate(tmp_path, SynthSettings(pairs=3, seed=7, max_frames=32, split=(0, 1, 2)),
                       progress=False)
    assert summary["splits"] == {"train": 0, "val": 1, "test": 2}
    lines = {name: (tmp_path / f"{name}.jsonl").read_text().splitlines()
             for name in ("train", "val", "test")}
    assert [len(v) for v in lines.values()] == [0, 1, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"pairs": 0}, "--pairs 0"), ({"pairs": 1, "min_frames": 8}, "frame range"),
    ({"pairs": 1, "size": 100}, "--size 100"), ({"pairs": 1, "size": 64}, "--size 64"),
    ({"pairs": 3, "split": (1, 1)}, "split [1, 1]"), ({"pairs": 3, "split": (2, 2, 0)}, "split [2, 2, 0]"),
    ({"pairs": 1, "notes": "rough"}, "--notes rough")])
def test_bad_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(SynthError, match=re.escape(message)):
        generate(tmp_path, SynthSettings(**kwargs), progress=False)


def test_cli_prints_a_summary(tmp_path):
    run = subprocess.run([sys.executable, "-m", "vrt_ray", "data", "synth", "--out",
                          str(tmp_path), "--pairs", "2", "--max-frames", "32", "--no-progress"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["pairs"] == 2 and "defects_found" in summary["teacher"]
    bad = subprocess.run([sys.executable, "-m", "vrt_ray", "data", "synth", "--out",
                          str(tmp_path), "--pairs", "-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("vrt-ray: error: --pairs -1")


def _frames_mentioned(text):
    """Frame numbers a think text names: 'A 17:', 'since 17', 'identical to 17', 'frames 3-5, 9',
    'between frames 3 and 9', 'from frame 3 to 9'."""
    found = set()
    for m in re.finditer(r"\b[AB] (\d+):|since (\d+)|identical to (\d+)|same place as (\d+)"
                         r"|from frame (\d+) to (\d+)|between frames (\d+) and (\d+)", text):
        found |= {int(g) for g in m.groups() if g}
    for m in re.finditer(r"\bframes? ((?:\d+(?:-\d+)?(?:, )?)+)", text):
        for part in m.group(1).split(", "):
            lo, _, hi = part.partition("-")
            found |= set(range(int(lo), int(hi or lo) + 1))
    return found


def test_reasoning_names_only_frames_already_seen(dataset):
    _, _, _, traces = dataset
    for t in traces:
        seen = {v: set(t["initial"][v]) for v in "AB"}
        for turn in t["turns"]:
            call = turn.get("tool_call", {"video": "A", "target_frames": []})
            asked = set(call["target_frames"])
            every = seen["A"] | seen["B"] | asked
            assert _frames_mentioned(turn["think"]) <= every, (t["pair_id"], turn["think"])
            for video, frame in re.findall(r"\b([AB]) (\d+):", turn["think"]):
                assert int(frame) in seen[video], (t["pair_id"], video, frame)
            seen[call["video"]] |= asked
