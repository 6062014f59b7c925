"""The vLLM engine's request building and sampling rules, without vllm (main venv)."""
import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from vrt_ray.engines.base import Prompt, SamplingParams
from vrt_ray.engines.vllm import (VIDEO_FPS, RopeLayoutError, SamplingError, VLLMEngine,
                                  build_request, check_rope, check_sampling, logprobs_mode,
                                  pixel_size, sampling_kwargs, stop_token_ids, video_item)
from vrt_ray.engines.vllm_worker import pack_weights, unpack_weights
from vrt_ray.models import TinySpec, build_tiny_processor, make_tiny


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


def frame(value, h=56, w=84):
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_text_only_prompt_goes_as_the_token_ids_the_processor_gives(processor):
    text = "<|im_start|>user\nWhich video is better?<|im_end|>\n<|im_start|>assistant\n"
    request = build_request(Prompt(text), processor.tokenizer, pixel_size(processor))
    expected = processor(text=[text], return_tensors="pt")["input_ids"][0].tolist()
    assert request == {"prompt_token_ids": expected}


def test_image_prompt_sends_text_and_images_in_order(processor):
    text = "<|vision_start|><|image_pad|><|vision_end|>a<|vision_start|><|image_pad|><|vision_end|>"
    images = [frame(1), frame(2)]
    request = build_request(Prompt(text, images), processor.tokenizer, pixel_size(processor))
    assert set(request) == {"prompt", "multi_modal_data", "mm_processor_kwargs"}
    assert request["prompt"] == text
    assert list(request["multi_modal_data"]) == ["image"]
    sent = request["multi_modal_data"]["image"]
    assert [img[0, 0, 0] for img in sent] == [1, 2]
    assert all(img.shape == (56, 84, 3) and img.dtype == np.uint8 for img in sent)
    assert request["mm_processor_kwargs"] == {"size": {"shortest_edge": 56 * 56,
                                                       "longest_edge": 112 * 112}}


def test_video_prompt_sends_stacked_frames_with_sampled_metadata(processor):
    text = "<|vision_start|><|video_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>"
    clip = [frame(i) for i in range(4)]
    request = build_request(Prompt(text, [frame(9)], [clip]), processor.tokenizer)
    data = request["multi_modal_data"]
    assert list(data) == ["image", "video"] and len(data["video"]) == 1
    frames, meta = data["video"][0]
    assert frames.shape == (4, 56, 84, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert meta == {"fps": VIDEO_FPS, "duration": 4 / VIDEO_FPS, "total_num_frames": 4,
                    "frames_indices": [0, 1, 2, 3], "video_backend": "opencv",
                    "do_sample_frames": False}
    assert request["mm_processor_kwargs"] == {"do_sample_frames": False}


def test_video_metadata_gives_the_fps_transformers_assumes_without_metadata():
    """The HF engine passes clips without metadata; vLLM needs metadata: both must give the
    same sampled fps (hence the same second_per_grid_ts)."""
    _, meta = video_item([frame(0)] * 6)
    given = VideoMetadata(**{k: v for k, v in meta.items() if k != "do_sample_frames"})
    assumed = VideoMetadata(total_num_frames=6, fps=None, frames_indices=list(range(6)))
    assert given.sampled_fps == assumed.sampled_fps == VIDEO_FPS


def test_pixel_size_is_none_without_an_image_processor(processor):
    assert pixel_size(processor.tokenizer) is None


def test_stop_tokens_are_im_end_and_endoftext(processor):
    tok = processor.tokenizer
    assert stop_token_ids(tok) == sorted([tok.convert_tokens_to_ids("<|im_end|>"),
                                          tok.convert_tokens_to_ids("<|endoftext|>")])


@pytest.mark.parametrize("sampling, mode", [
    (SamplingParams(temperature=0.0, top_k=5), "raw_logprobs"),
    (SamplingParams(temperature=1.0, top_p=0.9, top_k=20), "raw_logprobs"),
    (SamplingParams(temperature=0.7), "processed_logprobs"),
])
def test_logprobs_mode_is_the_one_equal_to_the_tempered_unfiltered_logprobs(sampling, mode):
    assert logprobs_mode(sampling) == mode
    check_sampling(mode, sampling)


def test_tempered_and_filtered_sampling_has_no_exact_mode():
    with pytest.raises(SamplingError, match="temperature 0.7"):
        logprobs_mode(SamplingParams(temperature=0.7, top_p=0.9))


@pytest.mark.parametrize("mode, sampling", [
    ("raw_logprobs", SamplingParams(temperature=0.7)),
    ("processed_logprobs", SamplingParams(temperature=1.0, top_k=5)),
])
def test_sampling_the_engine_cannot_report_exactly_is_refused(mode, sampling):
    with pytest.raises(SamplingError, match=mode):
        check_sampling(mode, sampling)
    check_sampling(mode, SamplingParams(temperature=0.0))  # greedy is exact in every mode


def test_sampling_kwargs():
    assert sampling_kwargs(SamplingParams(0.0, 0.5, 3, 7), [5, 9]) == dict(
        temperature=0.0, top_p=1.0, top_k=0, max_tokens=7, stop_token_ids=[5, 9], logprobs=0,
        detokenize=False)
    assert sampling_kwargs(SamplingParams(1.0, 0.9, 20, 64), [5]) == dict(
        temperature=1.0, top_p=0.9, top_k=20, max_tokens=64, stop_token_ids=[5], logprobs=0,
        detokenize=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weights_pack_to_bytes_and_back(dtype):
    named = [("a.weight", torch.randn(3, 5).to(dtype)), ("b.bias", torch.arange(4).to(dtype)),
             ("c", torch.randn(6, 4).to(dtype).t())]  # non-contiguous
    packed = pack_weights(named)
    assert all(isinstance(p[3], bytes) for p in packed)
    for (name, tensor), (name2, back) in zip(named, unpack_weights(packed)):
        assert name == name2 and back.dtype == dtype and torch.equal(back, tensor)


def test_a_layout_vllm_would_position_differently_is_refused_before_vllm_starts(tmp_path,
                                                                                tiny_model_dir,
                                                                                processor):
    split = make_tiny(tmp_path / "split", spec=TinySpec(rope_layout="split"))
    with pytest.raises(RopeLayoutError, match="longrope.*--rope-layout uniform"):
        VLLMEngine(str(split), processor)  # refused before vllm (not installed here) is imported
    check_rope(str(tiny_model_dir))  # the default layout passes
