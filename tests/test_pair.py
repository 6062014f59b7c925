"""The PreferencePair record."""
import pytest

from vrt_ray.data import PreferencePair


def test_round_trip_through_dict():
    pair = PreferencePair("p1", "a red ball", "a.mp4", "b.mp4", {"TA": "A", "overall": "tie"},
                          {"source": "synthetic", "num_frames": 64})
    assert PreferencePair.from_dict(pair.to_dict()) == pair


@pytest.mark.parametrize("row,reason", [
    ({"id": "1", "prompt": "x", "video_a": "a.mp4"}, "missing field(s) video_b"),
    ({"id": "1", "prompt": "", "video_a": "a", "video_b": "b"}, "prompt must be"),
    ({"id": "1", "prompt": "x", "video_a": "a", "video_b": "b", "labels": {"TA": "C"}}, "TA='C'"),
    ({"id": "1", "prompt": "x", "video_a": "a", "video_b": "b", "labels": ["A"]}, "JSON objects"),
    (["not", "a", "dict"], "JSON object"),
])
def test_bad_rows_raise_value_error_with_reason(row, reason):
    with pytest.raises(ValueError, match=__import__("re").escape(reason)):
        PreferencePair.from_dict(row)
