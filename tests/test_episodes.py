"""Episodes on the tiny model through the HF engine: batching, trajectories, log-prob agreement
of every turn with a forward pass on the rebuilt inputs, and packing."""
import json

import numpy as np
import pytest
import torch

from scripted import ScriptedTurns
from video_samples import encode
from vrt_ray.data import PreferencePair
from vrt_ray.data.synth import SynthSettings, generate
from vrt_ray.engines.base import SamplingParams
from vrt_ray.engines.hf import HFEngine
from vrt_ray.episodes import EpisodeJob, replay, run_episodes
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import FrameSource, PixelBudget, rebuild_inputs
from vrt_ray.models import load_policy, load_processor
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets, EpisodeInput, format_turn
from vrt_ray.trajectory import Trajectory, to_sequences

PIXELS = PixelBudget(min_pixels=28 * 28, max_pixels=56 * 56)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("episode_videos")
    return {"A": encode(folder / "a.mp4", "libx264", 40), "B": encode(folder / "b.mp4", "libx264", 24)}


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(load_policy(tiny_model_dir), load_processor(tiny_model_dir), seed=0)


def job(videos, i=0):
    return EpisodeJob(EpisodeInput(f"p{i}", "a red square", {k: str(v) for k, v in videos.items()},
                                   {"A": 40, "B": 24}), sample_index=i)


def forward_logprobs(model, processor, input_ids, visuals, videos, positions):
    """Log-probs of input_ids at `positions` from one forward pass on the rebuilt inputs."""
    images, vids = FrameSource(videos, PIXELS, FrameCache(1 << 26)).visuals(visuals)
    inputs = rebuild_inputs(processor, input_ids, images, vids)
    with torch.no_grad():
        logits = model(**inputs).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return [logprobs[p - 1, input_ids[p]].item() for p in positions]


@pytest.fixture(scope="module")
def synthetic_pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, SynthSettings(pairs=4, seed=3, min_frames=16, max_frames=64), progress=False)
    pairs = [PreferencePair.from_dict(json.loads(line))
             for line in (out / "pairs.jsonl").read_text().splitlines()]
    return out, pairs


def test_batched_episodes_on_synthetic_videos_give_complete_trajectories(engine, synthetic_pairs):
    out, pairs = synthetic_pairs
    budgets = Budgets(initial_frames=2, memory_window=1, max_turns=3)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=12)
    jobs = [EpisodeJob(EpisodeInput(p.id, p.prompt, {"A": str(out / p.video_a), "B": str(out / p.video_b)},
                                    {"A": p.meta["num_frames"], "B": p.meta["num_frames"]}), i)
            for p in pairs for i in range(2)]
    trajectories = run_episodes(engine, jobs, load_preset("vrt"), budgets, sampling, PIXELS,
                                max_batch=8, cache=FrameCache(1 << 26))
    assert [t.sample_index for t in trajectories] == [0, 1] * 4
    for t in trajectories:
        assert t.end_reason in ("answer", "no_action", "budget", "context")
        assert t.turns and all(len(turn.token_ids) == len(turn.logprobs) for turn in t.turns)
        # every turn is accounted for: an action (tool call, valid or not), a turn past the
        # budget, or the answer that ended the episode
        assert len(t.turns) == (t.valid_calls + t.invalid_calls + t.tool_failures
                                + t.turns_over_budget + (t.end_reason == "answer"))
        assert len(t.outcomes) == len(t.turns) and t.outcomes.count("valid") == t.valid_calls
        assert all(1 <= len(turn.token_ids) <= 12 for turn in t.turns)
        assert all(lp <= 0 for turn in t.turns for lp in turn.logprobs)
        assert t.invalid_calls + t.valid_calls >= 1 or t.end_reason == "answer"
        again = Trajectory.from_dict(json.loads(json.dumps(t.to_dict())))
        assert again.turns[0].visuals == t.turns[0].visuals
    random_model_turns = sum(len(t.turns) for t in trajectories)
    assert random_model_turns > 8  # a random model writes no answer: the protocol answers it


def test_engine_logprobs_equal_a_forward_pass_on_rebuilt_inputs(engine, videos):
    budgets = Budgets(initial_frames=2, memory_window=1, max_turns=3)
    (trajectory,) = run_episodes(engine, [job(videos)], load_preset("vrt"), budgets,
                                 SamplingParams(temperature=1.0, max_new_tokens=10), PIXELS,
                                 cache=FrameCache(1 << 26))
    assert len(trajectory.turns) >= 2
    for turn in trajectory.turns:
        ids = turn.prompt_ids + turn.token_ids
        positions = range(len(turn.prompt_ids), len(ids))
        ours = forward_logprobs(engine.model, engine.processor, ids, turn.visuals,
                                trajectory.videos, positions)
        assert ours == pytest.approx(turn.logprobs, abs=2e-4)


def test_a_batch_of_unequal_prompts_decodes_as_each_prompt_alone(engine, tiny_model_dir):
    """Prompts prefilled one by one, their caches merged left-padded and decoded together:
    each row gives the tokens and log-probs of a plain `generate` on that prompt alone
    (different lengths, images or none, so the M-RoPE offsets differ per row)."""
    from vrt_ray.engines.base import Prompt
    rng = np.random.default_rng(0)
    processor = engine.processor

    def prompt(images, text):
        content = [{"type": "image"}] * images + [{"type": "text", "text": text}]
        rendered = processor.apply_chat_template([{"role": "user", "content": content}],
                                                 add_generation_prompt=True, tokenize=False)
        return Prompt(rendered, [rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)
                                 for _ in range(images)])

    prompts = [prompt(2, "a red circle moving up " * 3), prompt(0, "hello"), prompt(3, "x " * 40)]
    generations = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=12))
    lengths = {len(g.prompt_ids) for g in generations}
    assert len(lengths) == 3
    for p, got in zip(prompts, generations):
        inputs = processor(text=[p.text], images=list(p.images) or None, return_tensors="pt")
        with torch.no_grad():
            alone = engine.model.generate(**inputs, max_new_tokens=12, do_sample=False,
                                          suppress_tokens=engine.suppress_ids,
                                          eos_token_id=engine.stop_ids, pad_token_id=engine.pad_id,
                                          output_logits=True, return_dict_in_generate=True)
        assert got.prompt_ids == inputs["input_ids"][0].tolist()
        expected = alone.sequences[0, inputs["input_ids"].shape[1]:].tolist()[:len(got.token_ids)]
        assert got.token_ids == expected
        logprobs = torch.log_softmax(torch.stack(alone.logits, 1)[0].float(), -1)
        assert got.logprobs == pytest.approx(
            [logprobs[i, t].item() for i, t in enumerate(got.token_ids)], abs=1e-4)


def test_logprobs_agree_on_every_turn_when_the_window_drops_images(tiny_model_dir, videos):
    call = lambda video, frames: '<tool_call>' + json.dumps(
        {"name": "select_frames", "arguments": {"video": video, "target_frames": frames}}) + '</tool_call>'
    texts = [call("A", [3, 4]), call("B", [7]),
             '<answer>{"TA": "B", "VQ": "A", "MQ": "A", "overall": "B"}</answer>']
    processor = load_processor(tiny_model_dir)
    engine = HFEngine(load_policy(tiny_model_dir), processor,
                      logits_processors=[ScriptedTurns(processor.tokenizer, texts)])
    budgets = Budgets(initial_frames=2, memory_window=1, pin_initial=False, max_turns=3)
    (trajectory,) = run_episodes(engine, [job(videos)], load_preset("vrt"), budgets,
                                 SamplingParams(temperature=0.0, max_new_tokens=64), PIXELS,
                                 cache=FrameCache(1 << 26))
    assert trajectory.end_reason == "answer" and trajectory.verdicts["overall"] == "B"
    turns = trajectory.turns
    assert [len(t.visuals) for t in turns] == [4, 2, 1]  # the window dropped images twice
    assert len(to_sequences(turns)) == 3
    for turn in turns:
        ids = turn.prompt_ids + turn.token_ids
        ours = forward_logprobs(engine.model, processor, ids, turn.visuals, trajectory.videos,
                                range(len(turn.prompt_ids), len(ids)))
        assert ours == pytest.approx(turn.logprobs, abs=2e-4)


def test_packed_sequences_score_like_separate_turns(engine, videos):
    """A teacher-forced episode whose window never drops: all turns pack into one sequence,
    and its action log-probs equal those of the turns scored one by one."""
    call = lambda frames: ('<think>look</think><tool_call>' + json.dumps(
        {"name": "select_frames", "arguments": {"video": "A", "target_frames": frames}}) + '</tool_call>')
    texts = [call([5, 6]), call([30]),
             '<think>done</think><answer>{"TA": "A", "VQ": "A", "MQ": "tie", "overall": "A"}</answer>']
    budgets = Budgets(initial_frames=2, memory_window=4, max_turns=3)
    trajectory = replay(engine.processor, job(videos), load_preset("vrt"), budgets, PIXELS, texts,
                        cache=FrameCache(1 << 26))
    assert trajectory.end_reason == "answer" and trajectory.verdicts["MQ"] == "tie"
    packed, separate = to_sequences(trajectory.turns), to_sequences(trajectory.turns, pack=False)
    assert len(packed) == 1 and len(separate) == 3
    assert packed[0].turn_indices == (0, 1, 2)
    assert sum(packed[0].action_mask) == sum(len(t.token_ids) for t in trajectory.turns)
    model, processor = engine.model, engine.processor
    seq = packed[0]
    packed_lp = forward_logprobs(model, processor, seq.input_ids, seq.visuals, trajectory.videos,
                                 [i for i, a in enumerate(seq.action_mask) if a])
    separate_lp = [lp for s in separate for lp in forward_logprobs(
        model, processor, s.input_ids, s.visuals, trajectory.videos,
        [i for i, a in enumerate(s.action_mask) if a])]
    assert packed_lp == pytest.approx(separate_lp, abs=2e-4)


def test_window_drop_breaks_packing(engine, videos):
    call = lambda frames: ('<tool_call>' + json.dumps(
        {"name": "select_frames", "arguments": {"video": "B", "target_frames": frames}}) + '</tool_call>')
    budgets = Budgets(initial_frames=2, memory_window=1, max_turns=3)
    trajectory = replay(engine.processor, job(videos), load_preset("vrt"), budgets, PIXELS,
                        [call([1]), call([2]), call([3])], cache=FrameCache(1 << 26))
    sequences = to_sequences(trajectory.turns)
    # turn 2 only adds to turn 1's context; turn 3's context has lost turn 2's frame
    assert [s.turn_indices for s in sequences] == [(0, 1), (2,)]


def test_unreadable_video_ends_the_episode_before_its_first_turn(engine, videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    bad = EpisodeJob(EpisodeInput("bad", "x", {"A": str(videos["A"]), "B": str(broken)},
                                  {"A": 40, "B": 24}))
    (trajectory,) = run_episodes(engine, [bad], load_preset("vrt"), Budgets(), SamplingParams(),
                                 PIXELS, cache=FrameCache(1 << 26))
    assert trajectory.turns == [] and trajectory.end_reason.startswith("unreadable_video: ")
    assert "broken.mp4" in trajectory.end_reason


def test_teacher_traces_replay_through_the_protocol(engine, synthetic_pairs):
    """Every teacher step is a valid call or a complete answer under the vrt preset, and the
    protocol's initial view is the one the teacher reasoned from."""
    out, pairs = synthetic_pairs
    preset = load_preset("vrt")
    traces = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    for pair, trace in zip(pairs, traces):
        inp = EpisodeInput(pair.id, pair.prompt, {"A": str(out / pair.video_a), "B": str(out / pair.video_b)},
                           {"A": pair.meta["num_frames"], "B": pair.meta["num_frames"]})
        texts = [format_turn(preset, t["think"], t.get("tool_call"), t.get("answer")) for t in trace["turns"]]
        trajectory = replay(engine.processor, EpisodeJob(inp), preset, Budgets(), PIXELS, texts,
                            cache=FrameCache(1 << 26))
        initial = [ref.index for kind, refs in trajectory.turns[0].visuals for ref in refs]
        assert initial == trace["initial"]["A"] + trace["initial"]["B"]
        assert trajectory.invalid_calls == 0 and trajectory.valid_calls == len(trace["turns"]) - 1
        assert trajectory.outcomes == ["valid"] * trajectory.valid_calls + ["answer"]
        assert trajectory.end_reason == "answer" and trajectory.answer_complete
        assert trajectory.verdicts == pair.labels


def test_official_preset_runs_with_its_pooled_video_item(tiny_model_dir, videos):
    """The vr_thinker preset's initial view is one video item of 8 pool frames: it goes through
    the processor's video path, and its log-probs agree with a forward pass too."""
    call = '<tool_call>' + json.dumps({"name": "select_frames", "arguments": {"target_frames": [10, 60]}}) + '</tool_call>'
    texts = [call, "<final answer>TA = 1, MQ = 0, VQ = 2, OA = 2</final answer>\\boxed{2}"]
    processor = load_processor(tiny_model_dir)
    engine = HFEngine(load_policy(tiny_model_dir), processor,
                      logits_processors=[ScriptedTurns(processor.tokenizer, texts)])
    (trajectory,) = run_episodes(engine, [job(videos)], load_preset("vr_thinker"),
                                 Budgets(initial_frames=4, memory_window=1, max_turns=3),
                                 SamplingParams(temperature=0.0, max_new_tokens=64), PIXELS,
                                 cache=FrameCache(1 << 26))
    assert trajectory.end_reason == "answer"
    assert trajectory.verdicts == {"TA": "A", "VQ": "B", "MQ": "tie", "overall": "B"}
    first = trajectory.turns[0]
    assert [kind for kind, _ in first.visuals] == ["video"] and len(first.visuals[0][1]) == 8
    assert [kind for kind, _ in trajectory.turns[1].visuals] == ["video", "image", "image"]
    for turn in trajectory.turns:
        ids = turn.prompt_ids + turn.token_ids
        ours = forward_logprobs(engine.model, processor, ids, turn.visuals, trajectory.videos,
                                range(len(turn.prompt_ids), len(ids)))
        assert ours == pytest.approx(turn.logprobs, abs=2e-4)


def test_checkpoint_generation_defaults_do_not_leak_into_sampling(tiny_model_dir, videos):
    """A checkpoint whose generation_config carries a huge repetition penalty and tight top-k /
    top-p / min-p: greedy decoding must still pick the argmax of the reported distribution."""
    model = load_policy(tiny_model_dir)
    model.generation_config.update(repetition_penalty=50.0, top_k=1, top_p=0.001, min_p=0.9,
                                   no_repeat_ngram_size=1, do_sample=True, temperature=0.01)
    engine = HFEngine(model, load_processor(tiny_model_dir))
    (trajectory,) = run_episodes(engine, [job(videos)], load_preset("vrt"),
                                 Budgets(initial_frames=2, max_turns=1),
                                 SamplingParams(temperature=0.0, max_new_tokens=24), PIXELS,
                                 cache=FrameCache(1 << 26))
    for turn in trajectory.turns:
        ids = turn.prompt_ids + turn.token_ids
        images, vids = FrameSource(trajectory.videos, PIXELS, FrameCache(1 << 26)).visuals(turn.visuals)
        with torch.no_grad():
            logits = model(**rebuild_inputs(engine.processor, ids, images, vids)).logits[0]
        vision = set(engine.suppress_ids)
        for p in range(len(turn.prompt_ids), len(ids)):
            ranked = [t for t in logits[p - 1].argsort(descending=True).tolist() if t not in vision]
            assert ids[p] == ranked[0]
