"""The perception warm-up: caption samples carry labels on the caption only, and a short run
through a real learner group (local Ray, 2 ranks) lowers the held-out caption loss."""
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_helpers import stage_overrides

from vrt_ray import config
from vrt_ray.data.synth import SynthSettings, generate
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_processor
from vrt_ray.preset import load_preset
from vrt_ray.sft import IGNORE, labels
from vrt_ray.data.loaders import load_pairs
from vrt_ray.data.scene import parse_prompt
from vrt_ray.protocol import Budgets
from vrt_ray.warmup import (caption_field_labels, caption_sequences, restate_sequences,
                            warmup_batch)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("warmup")
    generate(root / "data", SynthSettings(pairs=6, min_frames=16, max_frames=24, seed=2))
    return root


def test_a_caption_sample_labels_only_the_caption(data, tiny_model_dir):
    processor = load_processor(tiny_model_dir, 784, 3136)
    row = json.loads((data / "data" / "captions.jsonl").read_text().splitlines()[0])
    (item,) = caption_sequences(processor, [row], data / "data", load_preset("vrt"),
                                PixelBudget(784, 3136), FrameCache(1 << 24))
    target = [t for t in labels(item.seq) if t != IGNORE]
    assert processor.tokenizer.decode(target) == row["caption"] + "<|im_end|>"
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") in item.seq.input_ids


def test_caption_tokens_are_labelled_with_the_fact_they_state(data, tiny_model_dir):
    processor = load_processor(tiny_model_dir, 784, 3136)
    rows = [json.loads(line) for line in (data / "data" / "captions.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["facts"]["quality"] == "clean"][:1] + \
        [r for r in rows if r["facts"]["quality"] != "clean"][:1]
    items = caption_sequences(processor, rows, data / "data", load_preset("vrt"),
                              PixelBudget(784, 3136), FrameCache(1 << 24))
    decode = processor.tokenizer.decode
    for row, item, fields in zip(rows, items, caption_field_labels(processor.tokenizer, rows, items)):
        facts = row["facts"]
        said = {f: decode([item.seq.input_ids[p] for p in sorted(fields) if fields[p] == f]).strip()
                for f in set(fields.values())}
        quality = {"clean": "sharp and clean", "noise": "noisy", "blur": "blurred", "blocking": "blocky"}
        assert said == {"colour": facts["colour"], "shape": facts["shape"],
                        "position": f"{facts['x']:.0f}{facts['y']:.0f}",  # the digits
                        "background": facts["background"], "quality": quality[facts["quality"]]}
        assert all(item.seq.action_mask[p] for p in fields)
    assert caption_field_labels(processor.tokenizer, [{**rows[0], "caption": "A frame."}],
                                items[:1]) == [{}]


def test_a_restating_sample_is_the_first_context_under_another_prompt(data, tiny_model_dir):
    processor = load_processor(tiny_model_dir, 784, 3136)
    (pair,) = load_pairs(data / "data" / "pairs.jsonl", "jsonl").pairs[:1]
    items, fields = restate_sequences(processor, [pair], load_preset("vrt"), Budgets(),
                                      PixelBudget(784, 3136), FrameCache(1 << 24),
                                      np.random.default_rng(0), per_pair=6)
    decode = processor.tokenizer.decode
    prompts = set()
    for item, where in zip(items, fields):
        context = decode(item.seq.input_ids)
        prompt = context.split("Prompt: ")[-2].split("\n")[0]  # the user turn's prompt line
        colour, shape, direction, _ = parse_prompt(prompt)
        prompts.add(prompt)
        target = decode([t for t in labels(item.seq) if t != IGNORE])
        assert target.endswith(f" {colour} {shape} moving {direction}.")
        assert target.startswith("<think>Prompt: ") and "<|im_end|>" not in target
        assert {decode([item.seq.input_ids[p]]).strip(): f for p, f in where.items()} == {
            colour: "restate_colour", shape: "restate_shape", direction: "restate_direction"}
        assert all(item.seq.action_mask[p] for p in where)
        assert context.count("<|vision_start|>") == 2 * Budgets().initial_frames
    assert len(prompts) > 1  # drawn at random, not the pair's own


def test_a_restate_share_fixes_how_much_of_each_batch_restates():
    captions, restating = [f"c{i}" for i in range(40)], [f"r{i}" for i in range(10)]
    rng = random.Random(0)
    for share, size, want in ((0.5, 16, 8), (0.25, 10, 2), (1.0, 4, 4), (1.0, 16, 10)):
        batch = warmup_batch(captions, restating, size, share, rng)
        assert len(set(batch)) == len(batch) == min(size, want + len(captions))
        assert sum(b.startswith("r") for b in batch) == want
    drawn = [b for _ in range(50) for b in warmup_batch(captions, restating, 8, 0.0, rng)]
    assert len(drawn) == 400 and 0 < sum(b.startswith("r") for b in drawn) < 150  # 10 in 50


def test_warmup_lowers_the_held_out_caption_loss(data, tiny_model_dir, local_ray):
    from jobs import warmup

    summary = warmup.main(config.load("tiny_cpu", stage_overrides(
        data, tiny_model_dir, "warmup.steps=25", "warmup.batch_size=8",
        "warmup.restate_per_pair=2", "warmup.restate_share=0.5")))
    assert summary["train_sequences"] > summary["held_out_sequences"] > 0
    before, after = summary["eval_loss"]
    assert after < before
    by_kind = summary["eval_loss_by_class"][-1]
    assert {"all", "word", "number", "colour", "shape", "position", "background", "quality",
            "restate_colour", "restate_shape", "restate_direction"} <= set(by_kind)


def test_a_copying_phase_trains_on_the_copied_tokens_before_the_captions(data, tiny_model_dir,
                                                                         local_ray):
    from jobs import warmup

    summary = warmup.main(config.load("tiny_cpu", stage_overrides(
        data, tiny_model_dir, "warmup.steps=2", "warmup.batch_size=8", "warmup.copy_steps=30",
        "warmup.copy_kinds=[frames,prompt,frame_images]", "warmup.copying_per_step=2")))
    copying = summary["copying"]
    assert copying["steps"] == 30 and (Path(copying["model"]) / "config.json").is_file()
    before, after = copying["eval_loss"]
    assert list(before) == list(after) == ["copy_frames", "copy_prompt", "copy_frame_images"]
    assert all(after[k] < before[k] for k in before)  # a random model's copied tokens cost ln V
    assert Path(summary["model"]) != Path(copying["model"])
    # the captions' held-out loss then measures the same copies, from where the phase left them
    warm_before, warm_after = summary["eval_loss_by_class"]
    assert {k: warm_before[k] for k in after} == pytest.approx(after, abs=1e-4)
    assert {"copy_frame_images", "copy_frames", "copy_prompt"} <= set(warm_after)


def test_the_warmup_command_prints_its_summary_alone_on_stdout(data, tiny_model_dir):
    vrt_ray = shutil.which("vrt-ray") or str(Path(sys.executable).parent / "vrt-ray")
    run = subprocess.run([vrt_ray, "warmup", "tiny_cpu", *stage_overrides(
        data, tiny_model_dir, "warmup.steps=2", "warmup.batch_size=4")],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)  # Ray's copies of its workers' output went to stderr
    assert summary["steps"] == 2 and (Path(summary["model"]) / "config.json").is_file()
