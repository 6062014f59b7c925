"""The tiny random Qwen2.5-VL: made, loaded with the Auto classes, generating from an image."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vrt_ray import models
from vrt_ray.models import ModelLoadError


def _image(seed=0, size=(100, 80)):
    pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


CONVERSATION = [
    {"role": "system", "content": "Judge the videos."},
    {"role": "user", "content": [{"type": "text", "text": "Video A, frame 1 of 16"},
                                 {"type": "image"}, {"type": "text", "text": "Which is better?"}]},
    {"role": "assistant", "content": '<tool_call>{"name": "select_frames"}</tool_call>'},
    {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "Video B, frame 3 of 16"}]},
]


def test_auto_classes_load_and_generate_from_images(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    assert model.config.model_type == "qwen2_5_vl"
    assert model.config.text_config.hidden_size // model.config.text_config.num_attention_heads == 64
    assert 5e5 < sum(p.numel() for p in model.parameters()) < 2e7

    text = processor.apply_chat_template(CONVERSATION, add_generation_prompt=True)
    inputs = processor(text=[text], images=[_image(0), _image(1)], return_tensors="pt")
    image_tokens = (inputs["input_ids"] == model.config.image_token_id).sum().item()
    merge = processor.image_processor.merge_size ** 2
    assert image_tokens == int(inputs["image_grid_thw"].prod(-1).sum()) // merge > 0
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    stops = set(model.generation_config.eos_token_id)
    assert len(new) > 0 and not stops & set(new[:-1].tolist())  # nothing after a stop token
    assert len(new) == 6 or new[-1].item() in stops  # only a stop token ends it early
    with torch.no_grad():  # greedy: each new token is the argmax given everything before it
        logits = model(**{**inputs, "input_ids": out, "attention_mask": torch.ones_like(out),
                          "mm_token_type_ids": torch.nn.functional.pad(
                              inputs["mm_token_type_ids"], (0, len(new)))}).logits[0]
    prompt_len = inputs["input_ids"].shape[1]
    assert logits[prompt_len - 1:-1].argmax(-1).tolist() == new.tolist()
    assert all(0 <= t < model.config.text_config.vocab_size for t in new.tolist())
    with torch.no_grad():
        again = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, again)


def test_chat_template_renders_like_qwen2_5_vl(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    rendered = processor.apply_chat_template(CONVERSATION, add_generation_prompt=True)
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    assert rendered == (
        "<|im_start|>system\nJudge the videos.<|im_end|>\n"
        f"<|im_start|>user\nVideo A, frame 1 of 16{vision}Which is better?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>{"name": "select_frames"}</tool_call><|im_end|>\n'
        f"<|im_start|>tool\n{vision}Video B, frame 3 of 16<|im_end|>\n"
        "<|im_start|>assistant\n")
    no_system = processor.apply_chat_template([{"role": "user", "content": "hi"}])
    assert no_system == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                         "<|im_start|>user\nhi<|im_end|>\n")
    numbered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "image"}]}],
        add_vision_id=True)
    assert "Picture 1: <|vision_start|><|image_pad|>" in numbered
    assert "Video 1: <|vision_start|><|video_pad|>" in numbered
    assert "Picture 2: " in numbered


def test_tokenizer_has_qwen_and_protocol_tokens_as_single_tokens(tiny_model_dir):
    tokenizer = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    for token in models.QWEN_SPECIAL_TOKENS + models.QWEN_TEXT_TOKENS_1 \
            + models.QWEN_SPECIAL_TOKENS_2 + models.PROTOCOL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token, token
    ids = tokenizer.convert_tokens_to_ids(models.QWEN_SPECIAL_TOKENS)
    assert ids == sorted(ids) and ids[1] == ids[0] + 1  # Qwen's order, contiguous
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    text = 'Any bytes: é ü 漢字 🙂 {"TA": "tie"}'
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    frame = tokenizer.tokenize("frame 128")  # digits are split one by one, as in Qwen2
    assert frame[-3:] == ["1", "2", "8"]


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path, tiny_model_dir):
    again = models.make_tiny(tmp_path / "again", seed=0)
    other = models.make_tiny(tmp_path / "other", seed=1)
    for f in sorted(p.name for p in tiny_model_dir.iterdir()):
        assert (again / f).read_bytes() == (tiny_model_dir / f).read_bytes(), f
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_cli_make_tiny_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "cli-tiny"
    run = subprocess.run([sys.executable, "-m", "vrt_ray", "model", "make-tiny", str(out),
                          "--seed", "3", "--rope-theta", "1e6"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    model = models.load_policy(out)
    assert model.config.vision_config.out_hidden_size == model.config.text_config.hidden_size
    rope = model.config.text_config.rope_parameters
    assert (rope["rope_type"], rope["rope_theta"]) == ("default", 1e6)  # Qwen's layout
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left

    refused = subprocess.run([sys.executable, "-m", "vrt_ray", "model", "make-tiny",
                              str(tmp_path / "no"), "--rope-layout", "split", "--rope-theta", "3"],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "uniform layout's base" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_cli_make_tiny_takes_another_shape_and_refuses_a_bad_one(tmp_path):
    out = tmp_path / "wide"
    run = subprocess.run([sys.executable, "-m", "vrt_ray", "model", "make-tiny", str(out),
                          "--spec", "hidden_size=256", "num_heads=4", "num_kv_heads=2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = models.load_policy(out).config.text_config
    assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads,
            text.hidden_size // text.num_attention_heads) == (256, 4, 2, 64)
    for spec, message in (("hidden=256", "KEY one of bpe_vocab"),
                          ("num_layers=two", "num_layers must be int"),
                          ("num_heads=3", "must split into num_heads 3"),
                          ("rope_layout=split --rope-theta 3", "uniform layout's base")):
        refused = subprocess.run([sys.executable, "-m", "vrt_ray", "model", "make-tiny",
                                  str(tmp_path / "no"), "--spec", *spec.split()],
                                 capture_output=True, text=True)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not (tmp_path / "no").exists()


def _rotary(model):
    return next(m for name, m in model.named_modules()
                if name.endswith("rotary_emb") and "visual" not in name)


def test_split_layout_turns_text_slowly_and_rows_and_columns_fast(tmp_path, tiny_model_dir):
    split = models.make_tiny(tmp_path / "split", spec=models.TinySpec(rope_layout="split"))
    model = models.load_policy(split)
    rotary = _rotary(model)
    t, h, w = model.config.text_config.rope_parameters["mrope_section"]
    freq = rotary.inv_freq.double()
    assert torch.allclose(freq, torch.tensor(models.split_frequencies([t, h, w]), dtype=freq.dtype),
                          rtol=1e-5)
    assert rotary.attention_scaling == 1.0
    assert freq[:t].min() < 1e-4 < 0.1 < freq[t:].min()  # slow text pairs, fast rows and columns

    reference = models.load_policy(tiny_model_dir)
    assert _rotary(reference).inv_freq.min() > 0.1  # the default, base 10: no slow pair at all
    same = [n for n, _ in model.named_parameters()]
    assert same == [n for n, _ in reference.named_parameters()]  # the layout is config only
    weights = "model.safetensors"
    assert (split / weights).read_bytes() == (tiny_model_dir / weights).read_bytes()


def test_loaders_refuse_a_missing_checkpoint_without_reaching_a_hub(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        models.load_policy(tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="no config.json"):
        models.load_processor("Qwen/Qwen2.5-VL-7B-Instruct")


def test_text_only_chat_template_is_refused(tmp_path, tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    processor.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                               "{{ m['content'] }}<|im_end|>\n{% endfor %}")
    with pytest.raises(ModelLoadError, match="does not render images"):
        models.check_chat_template(processor, "old-copy")


def test_pixel_budget_from_config_reaches_the_processor(tiny_model_dir):
    small = models.load_processor(tiny_model_dir, min_pixels=28 * 28, max_pixels=56 * 56)
    inputs = small.image_processor(images=[_image(size=(448, 448))], return_tensors="pt")
    h, w = inputs["image_grid_thw"][0, 1:].tolist()
    assert h * w * 14 * 14 <= 56 * 56
