"""The video layer against a reference: real files of every kind, encoded here with PyAV (see
tests/video_samples.py), each frame identified by the index code it carries."""
import os
import random

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import video_samples as vs
from vrt_ray import frame_cache
from vrt_ray.cli import main
from vrt_ray.frame_cache import FrameCache, default_cache
from vrt_ray.video import VideoError, VideoInfo, open_video, resize_to_budget, uniform_indices

H264_FILES = ["h264_bframes.mp4", "rotated90.mp4", "vfr.mp4"]
ALL_FILES = list(vs.KINDS) + ["raw.h264"]
CODECS = {"h264_bframes.mp4": "h264", "hevc_bframes.mp4": "hevc", "vp9.webm": "vp9",
          "av1.mkv": "av1", "anim.gif": "gif", "rotated90.mp4": "h264", "vfr.mp4": "h264",
          "hevc.ts": "hevc", "raw.h264": "h264"}


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    return vs.make_all(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="session")
def reference(videos):
    """Each file's frames by plain sequential decoding (coded orientation)."""
    return {name: vs.sequential_frames(path) for name, path in videos.items()}


def _coded(frame, info):
    """A display-oriented frame turned back to the coded orientation."""
    return np.rot90(frame, -info.rotation // 90) if info.rotation else frame


# -- the sample files are what they claim to be ------------------------------------------------
@pytest.mark.parametrize("name", ALL_FILES)
def test_sample_frames_carry_their_index(name, reference):
    assert [vs.read_code(f) for f in reference[name]] == list(range(len(reference[name])))


@pytest.mark.parametrize("name", ["h264_bframes.mp4", "hevc_bframes.mp4", "hevc.ts"])
def test_sample_has_b_frames(name, videos):
    with av.open(str(videos[name])) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]
    assert pts != sorted(pts)  # decoding order differs from display order


@pytest.mark.parametrize("name", ["vp9.webm", "hevc.ts"])
def test_sample_lacks_frame_count_metadata(name, videos):
    with av.open(str(videos[name])) as container:
        assert container.streams.video[0].frames == 0  # so the reader must count


def test_sample_vfr_has_irregular_timestamps(videos):
    with av.open(str(videos["vfr.mp4"])) as container:
        pts = sorted(p.pts for p in container.demux(video=0) if p.size)
    assert len(set(np.diff(pts))) > 3


# -- exact access by index ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_FILES)
def test_pyav_every_frame_by_index_in_shuffled_order(name, videos, reference):
    _check_every_frame(videos[name], "pyav", reference[name])


@pytest.mark.parametrize("name", H264_FILES)
def test_decord_every_frame_by_index_in_shuffled_order(name, videos, reference):
    _check_every_frame(videos[name], "decord", reference[name])


def _check_every_frame(path, backend, expected):
    order = list(range(1, len(expected) + 1))
    random.Random(7).shuffle(order)
    with open_video(path, backend) as reader:
        assert reader.info.num_frames == len(expected) and reader.info.backend == backend
        start = 0
        for size in (1, 3, 8, 5, len(order)):  # calls of several sizes, one with duplicates
            call = order[start:start + size]
            if size == 5:
                call = call + call[:2]
            start += size
            for index, frame in zip(call, reader.read(call)):
                assert frame.dtype == np.uint8 and frame.shape == (
                    reader.info.height, reader.info.width, 3)
                coded = _coded(frame, reader.info)
                assert vs.read_code(coded) == index - 1, f"frame {index}"
                assert np.array_equal(coded, expected[index - 1]), f"frame {index}"


def test_pyav_seeks_to_the_keyframe_before_the_first_target(videos):
    with open_video(videos["h264_bframes.mp4"]) as reader:  # a keyframe every 10 frames
        decoded = 0
        real = reader._decoded

        def counting(container):
            nonlocal decoded
            for frame in real(container):
                decoded += 1
                yield frame

        reader._decoded = counting
        frames = reader.read([39, 38])
    assert [vs.read_code(f) for f in frames] == [38, 37]
    assert decoded <= 10  # from frame 31 on, not from the start


@pytest.mark.parametrize("name", H264_FILES)
def test_decord_pixels_equal_pyav_on_h264(name, videos):
    with open_video(videos[name], "pyav") as a, open_video(videos[name], "decord") as b:
        assert a.info.num_frames == b.info.num_frames
        indices = list(range(1, a.info.num_frames + 1))
        for x, y in zip(a.read(indices), b.read(indices)):
            assert np.array_equal(x, y)


def test_decord_rotated_narrow_frames_are_right_or_refused(tmp_path):
    """decord 0.6.0 mis-sizes rotated frames 48 pixels wide: never pass them on."""
    path = vs.encode(tmp_path / "rotated_narrow.mp4", "libx264", 6, rotation=90)
    with open_video(path, "pyav") as reader:
        expected = reader.read([1, 2, 3, 4, 5, 6])
    with open_video(path, "decord") as reader:
        try:
            frames = reader.read([1, 2, 3, 4, 5, 6])
        except VideoError as exc:
            assert "use backend pyav" in str(exc)
        else:
            assert all(np.array_equal(a, b) for a, b in zip(frames, expected))


@pytest.mark.parametrize("name,reason", [
    ("hevc_bframes.mp4", "neighbouring frame"), ("hevc.ts", "neighbouring frame"),
    ("av1.mkv", "no AV1 decoder"), ("anim.gif", "cannot open animated GIF"),
    ("vp9.webm", "verified exact on H.264 only"), ("raw.h264", "without timestamps")])
def test_decord_refuses_what_it_reads_wrong(name, reason, videos):
    with pytest.raises(VideoError, match="use backend pyav") as exc:
        open_video(videos[name], "decord")
    assert str(videos[name]) in str(exc.value) and reason in str(exc.value)


def test_colour_channels_are_rgb(videos):
    with open_video(videos["h264_bframes.mp4"]) as reader:
        (frame,) = reader.read([2])  # index 1: bit 0 set, the top-left cell is red
    red_cell = frame[4:20, 4:12].reshape(-1, 3).mean(0)
    assert red_cell[0] > 180 and red_cell[1] < 80 and red_cell[2] < 80


# -- what the reader reports -------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_FILES)
def test_info_codec_and_frame_count(name, videos, reference):
    with open_video(videos[name]) as reader:
        info = reader.info
    assert isinstance(info, VideoInfo) and info.path == str(videos[name])
    assert info.codec == CODECS[name] and info.num_frames == len(reference[name])


def test_info_timing(videos):
    with open_video(videos["h264_bframes.mp4"]) as reader:
        info = reader.info
    assert info.fps == pytest.approx(24) and info.duration == pytest.approx(40 / 24)
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    with open_video(videos["vfr.mp4"]) as reader:
        vfr = reader.info
    last_pts_ms = vs.KINDS["vfr.mp4"]["pts_ms"][-1]  # 2008: the last frame starts here
    assert last_pts_ms / 1000 < vfr.duration <= (last_pts_ms + 100) / 1000
    assert vfr.fps == pytest.approx(40 / vfr.duration)


def test_rotation_is_applied(videos, reference):
    with open_video(videos["rotated90.mp4"]) as reader:
        info = reader.info
        frames = reader.read([1, 30, 12])
    coded_h, coded_w = reference["rotated90.mp4"][0].shape[:2]
    assert (coded_w, coded_h) == (96, 64)
    assert info.rotation == 90 and (info.width, info.height) == (coded_h, coded_w)
    for index, frame in zip([1, 30, 12], frames):
        assert frame.shape == (coded_w, coded_h, 3)  # transposed against the coded size
        assert np.array_equal(frame, np.rot90(reference["rotated90.mp4"][index - 1]))


@pytest.mark.parametrize("degrees,turns", [(90, 1), (180, 2), (-90, 3)])
def test_rotation_matches_decord(degrees, turns, tmp_path):
    path = vs.encode(tmp_path / "rotated.mp4", "libx264", 4, size=(96, 64), rotation=degrees)
    coded = vs.sequential_frames(path)
    with open_video(path, "pyav") as a, open_video(path, "decord") as b:
        assert a.info.rotation == b.info.rotation == 90 * turns
        for index, x, y in zip(range(4), a.read([1, 2, 3, 4]), b.read([1, 2, 3, 4])):
            assert np.array_equal(x, np.rot90(coded[index], turns)) and np.array_equal(x, y)


# -- errors ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bad_files(videos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    text_txt = folder / "notes.txt"  # FFmpeg would render this as ANSI-art frames
    text_txt.write_text("this is a text file, not a video\n" * 20)
    truncated = folder / "truncated.mp4"
    data = videos["h264_bframes.mp4"].read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    garbage = folder / "garbage.mp4"  # a sound container whose coded pictures are noise
    data = bytearray(videos["h264_bframes.mp4"].read_bytes())
    start = data.find(b"mdat") + 4
    end = start - 8 + int.from_bytes(data[start - 8:start - 4], "big")
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, np.uint8).tobytes()
    garbage.write_bytes(bytes(data))
    zero = folder / "zero.y4m"  # a rawvideo stream with a header and no frames
    zero.write_text("YUV4MPEG2 W64 H48 F24:1 Ip A1:1 C420jpeg\n")
    return {"text": text, "text_txt": text_txt, "truncated": truncated, "garbage": garbage, "zero": zero,
            "missing": folder / "nope.mp4"}


@pytest.mark.parametrize("kind,message", [
    ("missing", "no such file"), ("text", "not a readable video"),
    ("text_txt", r"not a readable video \(a text file\)"),
    ("truncated", "not a readable video"), ("garbage", "cannot decode the h264 stream"),
    ("zero", "the video stream has no frames")])
def test_bad_file_raises_video_error(kind, message, bad_files):
    with pytest.raises(VideoError, match=message) as exc:
        open_video(bad_files[kind])
    assert str(exc.value).startswith(str(bad_files[kind]))


@pytest.mark.parametrize("index", [0, 41, -1])
def test_index_out_of_range(index, videos):
    with open_video(videos["h264_bframes.mp4"]) as reader:
        with pytest.raises(VideoError, match=f"frame {index} is out of range: valid frames are "
                                             r"1\.\.40"):
            reader.read([3, index])


def test_non_integer_index_and_unknown_backend(videos):
    with open_video(videos["h264_bframes.mp4"]) as reader:
        with pytest.raises(VideoError, match="is not an integer"):
            reader.read([1.5])
    with pytest.raises(VideoError, match="unknown video backend 'opencv'"):
        open_video(videos["h264_bframes.mp4"], "opencv")


# -- sampling and resizing ---------------------------------------------------------------------
@pytest.mark.parametrize("num_frames,k,expected", [
    (10, 4, [1, 4, 7, 10]), (10, 3, [1, 6, 10]), (128, 4, [1, 43, 86, 128]),
    (5, 5, [1, 2, 3, 4, 5]), (3, 8, [1, 2, 3]), (7, 1, [1]), (2, 2, [1, 2])])
def test_uniform_indices(num_frames, k, expected):
    assert uniform_indices(num_frames, k) == expected


@given(st.integers(1, 5000), st.integers(1, 300))
def test_uniform_indices_properties(num_frames, k):
    picked = uniform_indices(num_frames, k)
    assert len(picked) == min(num_frames, k) and picked == sorted(set(picked))
    assert picked[0] == 1 and 1 <= picked[-1] <= num_frames
    if k >= 2:
        assert picked[-1] == num_frames


@pytest.mark.parametrize("height,width,expected", [
    (48, 64, (56, 56)),  # rounded to multiples of 28: 56x56 meets the 3136 minimum exactly
    (480, 640, (84, 112)),  # beta = sqrt(307200 / 12544) = 4.95: floor(3.46)*28, floor(4.62)*28
    (20, 30, (56, 84)),  # up: beta = sqrt(3136 / 600) = 2.29: ceil(1.63)*28, ceil(2.45)*28
])
def test_resize_to_budget(height, width, expected):
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    resized = resize_to_budget(frame, 56 * 56, 112 * 112)
    assert resized.shape == (*expected, 3) and resized.dtype == np.uint8
    bicubic = Image.fromarray(frame).resize(expected[::-1], Image.Resampling.BICUBIC)
    assert np.array_equal(resized, np.asarray(bicubic))


def test_resize_within_budget_is_a_no_op():
    frame = np.zeros((56, 84, 3), np.uint8)
    assert resize_to_budget(frame, 56 * 56, 112 * 112) is frame


# -- the frame cache ---------------------------------------------------------------------------
@pytest.fixture
def read_calls(monkeypatch):
    """Every (path, indices) a cache passes to a reader."""
    calls = []
    real_open = frame_cache.open_video

    def spying_open(path, backend="pyav"):
        reader = real_open(path, backend)
        real_read = reader.read
        reader.read = lambda indices: calls.append((path, list(indices))) or real_read(indices)
        return reader

    monkeypatch.setattr(frame_cache, "open_video", spying_open)
    return calls


def test_cache_hit_returns_same_arrays_without_decoding(videos, reference, read_calls):
    cache = FrameCache(10 * 2**20)
    path = videos["hevc_bframes.mp4"]
    first = cache.get(path, [30, 4, 30, 12])
    assert read_calls == [(path, [4, 12, 30])]  # the misses, sorted, in one pass
    assert (cache.misses, cache.hits, cache.decoded_frames) == (3, 0, 3)
    assert [vs.read_code(f) for f in first] == [29, 3, 29, 11]
    again = cache.get(path, [12, 30])
    assert len(read_calls) == 1 and cache.decoded_frames == 3 and cache.hits == 2
    assert again[0] is first[3] and again[1] is first[0]
    assert not again[0].flags.writeable
    mixed = cache.get(path, [12, 13])
    assert read_calls[-1] == (path, [13]) and cache.decoded_frames == 4
    assert np.array_equal(mixed[1], reference["hevc_bframes.mp4"][12])


def test_cache_keys_on_budget_and_file_identity(videos, tmp_path, read_calls):
    cache = FrameCache(10 * 2**20)
    path = tmp_path / "copy.mp4"
    path.write_bytes(videos["h264_bframes.mp4"].read_bytes())
    (plain,) = cache.get(path, [5])
    (small,) = cache.get(path, [5], min_pixels=28 * 28, max_pixels=28 * 28)
    assert plain.shape == (48, 64, 3) and small.shape == (28, 28, 3) and len(read_calls) == 2
    cache.get(path, [5], min_pixels=28 * 28, max_pixels=28 * 28)
    assert len(read_calls) == 2
    path.write_bytes(videos["vfr.mp4"].read_bytes())  # same name, other content
    os.utime(path, ns=(1, 1))
    (replaced,) = cache.get(path, [5])
    assert len(read_calls) == 3 and vs.read_code(replaced) == 4


def test_cache_evicts_least_recently_used(videos):
    path = videos["h264_bframes.mp4"]
    frame_bytes = 64 * 48 * 3
    cache = FrameCache(2 * frame_bytes)
    cache.get(path, [1, 2])
    cache.get(path, [1])  # 1 is now more recent than 2
    cache.get(path, [3])  # evicts 2
    assert len(cache) == 2 and cache.nbytes == 2 * frame_bytes
    decoded = cache.decoded_frames
    cache.get(path, [1, 3])
    assert cache.decoded_frames == decoded
    cache.get(path, [2])
    assert cache.decoded_frames == decoded + 1


def test_cache_errors_and_default(videos, bad_files):
    cache = FrameCache(2**20)
    with pytest.raises(VideoError, match="no such file"):
        cache.get(bad_files["missing"], [1])
    with pytest.raises(VideoError, match=r"valid frames are 1\.\.40"):
        cache.get(videos["h264_bframes.mp4"], [41])
    with pytest.raises(VideoError, match="frame index 'x' is not an integer"):
        cache.get(videos["h264_bframes.mp4"], [3, "x"])
    with pytest.raises(VideoError, match="refuses the hevc stream"):
        cache.get(videos["hevc.ts"], [1], backend="decord")
    assert default_cache() is default_cache() and default_cache().max_bytes > 0


# -- the command line --------------------------------------------------------------------------
def test_cli_info(videos, capsys):
    assert main(["video", "info", str(videos["rotated90.mp4"])]) == 0
    out = capsys.readouterr().out
    for line in ("frames:    30", "fps:       24.000", "duration:  1.250 s", "size:      64x96",
                 "codec:     h264", "rotation:  90", "backend:   pyav"):
        assert line in out


def test_cli_frames_writes_what_the_reader_returns(videos, tmp_path, capsys):
    path = videos["rotated90.mp4"]
    assert main(["video", "frames", str(path), "--frames", "17,1", "--out", str(tmp_path)]) == 0
    with open_video(path) as reader:
        expected = reader.read([17, 1])
    for index, frame in zip([17, 1], expected):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"frame_{index:05d}.png")), frame)
    assert main(["video", "frames", str(path), "--frames", "2", "--out", str(tmp_path / "s"),
                 "--size", "48"]) == 0
    assert Image.open(tmp_path / "s" / "frame_00002.png").size == (32, 48)
    assert main(["video", "frames", str(path), "--frames", "3", "--out", str(tmp_path / "b"),
                 "--min-pixels", "3136", "--max-pixels", "12544"]) == 0
    with open_video(path) as reader:
        budget = resize_to_budget(reader.read([3])[0], 3136, 12544)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "frame_00003.png")), budget)


@pytest.mark.parametrize("args,message", [
    (["info", "{missing}"], "no such file"),
    (["frames", "{video}", "--frames", "1,41", "--out", "{out}"], "valid frames are 1..40"),
    (["frames", "{video}", "--frames", "1,x", "--out", "{out}"], "comma-separated"),
    (["info", "{video}", "--backend", "decord"], None),
])
def test_cli_errors_are_one_line_exit_2(args, message, videos, bad_files, tmp_path, capsys):
    fill = {"missing": bad_files["missing"], "video": videos["h264_bframes.mp4"],
            "out": tmp_path}
    code = main(["video"] + [a.format(**fill) for a in args])
    err = capsys.readouterr().err
    if message is None:  # decord accepts H.264
        assert code == 0
        return
    assert code == 2 and err.startswith("vrt-ray: error: ") and err.count("\n") == 1
    assert message in err


def test_info_holds_plain_numbers(videos):
    with open_video(videos["anim.gif"]) as reader:
        info = reader.info
    assert type(info.fps) is float and type(info.duration) is float
    assert all(type(getattr(info, f)) is int for f in ("num_frames", "width", "height",
                                                          "rotation"))
