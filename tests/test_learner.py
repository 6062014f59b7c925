"""The learner: pure learner_core units in this process, then a real local Ray with a DeepSpeed
learner group of 2 ranks on gloo (ZeRO-2, and one ZeRO-3 case) over the tiny model."""
import dataclasses
import json

import pytest
import torch

from video_samples import encode
from vrt_ray.config import GRPOConfig, LearnerConfig
from vrt_ray.episodes import EpisodeJob, replay
from vrt_ray.frame_cache import FrameCache
from vrt_ray.learner_core import (IGNORE_INDEX, TrainSequence, grpo_loss_for, make_shards,
                                  micro_batches, preload_frames, sequence_logprobs, sft_labels,
                                  sft_loss_for, shard_plan, train_sequences)
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_policy, load_processor
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets, EpisodeInput
from vrt_ray.trajectory import PackedSequence

PIXELS = PixelBudget(min_pixels=28 * 28, max_pixels=56 * 56)


def fake(n):
    return TrainSequence(PackedSequence([1] * n, [], [False, True] * (n // 2) + [False] * (n % 2),
                                        [None] * n, (0,)), {}, PIXELS)


# ---- pure units ---------------------------------------------------------------------------

def test_micro_batches_respect_the_token_budget_in_order():
    assert micro_batches([fake(n) for n in (3, 4, 2, 9, 1, 1)], max_tokens=8) == \
        [[0, 1], [2], [3], [4, 5]]
    assert micro_batches([fake(n) for n in (5, 5)], max_tokens=10) == [[0, 1]]
    assert micro_batches([], max_tokens=8) == []


def test_shard_plan_pads_ranks_to_equal_shares_and_micro_batch_counts():
    # 3 sequences over 2 ranks: rank 1 gets a zero-weight copy; rank 0's two sequences do not
    # fit one micro-batch, so rank 1 gets a zero-weight extra micro-batch
    plan = shard_plan([6, 2, 5], world_size=2, max_tokens=8)
    assert plan == [[[(0, 1.0)], [(2, 1.0)]], [[(1, 1.0), (1, 0.0)], [(1, 0.0)]]]
    assert [len(p) for p in shard_plan([1] * 7, 4, 100)] == [1, 1, 1, 1]
    # ZeRO-3 gathers parameters in every forward: micro-batch j must hold as many sequences
    # on every rank
    assert shard_plan([3, 6, 3, 3], 2, 8) == [[[(0, 1.0), (2, 1.0)], [(0, 0.0)]],
                                              [[(1, 1.0)], [(3, 1.0)]]]
    assert shard_plan([3, 6, 3, 3], 2, 8, same_shape=True) == [[[(0, 1.0), (2, 1.0)], [(0, 0.0)]],
                                                               [[(1, 1.0), (3, 0.0)], [(3, 1.0)]]]


def test_make_shards_keep_global_totals_and_indices():
    items = [fake(6), fake(2), fake(5)]
    shards = make_shards(items, 2, 8, advantages=[1.0, -1.0, 0.5])
    assert [s.indices for s in shards] == [[0, 2], [1]]
    assert shards[0].advantages == [1.0, 0.5] and shards[1].advantages == [-1.0]
    assert all(s.total_action_tokens == 3 + 1 + 2 and s.total_sequences == 3 for s in shards)
    real = sorted(s.indices[i] for s in shards for g in s.micro_batches for i, w in g if w)
    assert real == [0, 1, 2]  # every sequence counted exactly once
    weighted = make_shards([dataclasses.replace(items[0], loss_weight=2.5), *items[1:]], 2, 8)
    assert all(s.total_action_tokens == 3 * 2.5 + 1 + 2 for s in weighted)


# ---- trajectories on the tiny model --------------------------------------------------------

def call(video, frames):
    return '<think>look</think><tool_call>' + json.dumps(
        {"name": "select_frames", "arguments": {"video": video, "target_frames": frames}}) + '</tool_call>'


ANSWER = '<think>done</think><answer>{"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}</answer>'


@pytest.fixture(scope="module")
def items(tiny_model_dir, tmp_path_factory):
    """Teacher-forced episodes: one packs into one sequence, one splits where the window drops."""
    folder = tmp_path_factory.mktemp("learner_videos")
    videos = {"A": str(encode(folder / "a.mp4", "libx264", 24)),
              "B": str(encode(folder / "b.mp4", "libx264", 16))}
    processor = load_processor(tiny_model_dir)
    job = EpisodeJob(EpisodeInput("p0", "a red square", videos, {"A": 24, "B": 16}))
    packs = replay(processor, job, load_preset("vrt"), Budgets(initial_frames=2, memory_window=4,
                   max_turns=3), PIXELS, [call("A", [5]), ANSWER], cache=FrameCache(1 << 26))
    drops = replay(processor, job, load_preset("vrt"), Budgets(initial_frames=2, memory_window=1,
                   pin_initial=False, max_turns=3), PIXELS, [call("B", [3]), call("A", [7]), ANSWER],
                   cache=FrameCache(1 << 26))
    out = train_sequences(packs) + train_sequences(drops)
    assert len(out) == 1 + 3
    return out


def shown_frames(items):
    return {(it.videos[r.video], r.index) for it in items for _, refs in it.seq.visuals
            for r in refs}


def test_preload_decodes_each_shown_frame_once_and_the_steps_then_hit_the_cache(items):
    cache = FrameCache(1 << 26)
    assert preload_frames(items, cache) == len(shown_frames(items))
    assert preload_frames(items, cache) == 0
    misses = cache.misses
    for it in items:
        it.source(cache).visuals(it.seq.visuals)
    assert cache.misses == misses  # same keys: path, pixel budget, backend, index


def test_labels_are_only_the_assistants_own_tokens(items, tiny_model_dir):
    """Tool results, images and prompts never carry labels: the labelled ids of a sequence are
    exactly the tokens the assistant wrote in its turns."""
    processor = load_processor(tiny_model_dir)
    vision = {processor.tokenizer.convert_tokens_to_ids(t) for t in
              ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    for it in items:
        labels = sft_labels(it)
        labelled = [l for l in labels if l != IGNORE_INDEX]
        assert not vision & set(labelled)
        assert sum(l != IGNORE_INDEX for l in labels) == sum(it.seq.action_mask)
    packed = items[0]
    assert len(packed.seq.turn_indices) == 2  # the tool result (with frames) sits in between
    labelled = [l for l in sft_labels(packed) if l != IGNORE_INDEX]
    assert processor.tokenizer.decode(labelled) == call("A", [5]) + "<|im_end|>" + ANSWER + "<|im_end|>"
    assert len(packed) > 2 * len(labelled)  # ... and the rest of the sequence is unlabelled
    n_images = sum(t == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
                   for t in packed.seq.input_ids)
    assert n_images > 0


def test_a_text_only_sequence_scores_as_a_plain_forward_on_its_ids(tiny_model_dir):
    """Text-only sequences go in as embeddings plus the vision tower's zero anchor: the
    log-probs are those of the plain forward on their ids."""
    model, processor = load_policy(tiny_model_dir), load_processor(tiny_model_dir)
    item = TrainSequence(PackedSequence(list(range(100, 140)), [], [True] * 40, [None] * 40,
                                        (0,)), {}, PIXELS)
    with torch.no_grad():
        ours = sequence_logprobs(model, processor, item)
        logits = model(input_ids=torch.tensor([item.seq.input_ids])).logits[0]
    plain = torch.log_softmax(logits[:-1].float(), -1).gather(
        -1, torch.tensor(item.seq.input_ids[1:])[:, None])[:, 0]
    assert ours[0] == 0 and torch.allclose(ours[1:], plain, atol=1e-5)


def test_action_only_scoring_equals_the_full_pass_on_action_tokens(items, tiny_model_dir):
    """The LM head run on action positions only gives the full pass's log-probs there, 0 at
    every other position."""
    model, processor = load_policy(tiny_model_dir), load_processor(tiny_model_dir)
    cache = FrameCache(1 << 26)
    for it in items[:2]:
        with torch.no_grad():
            full = sequence_logprobs(model, processor, it, cache=cache)
            action = sequence_logprobs(model, processor, it, cache=cache, action_only=True)
        mask = torch.tensor(it.seq.action_mask)
        mask[0] = False
        assert mask.any() and (~mask).any()
        assert torch.allclose(action[mask], full[mask], atol=1e-5)
        assert (action[~mask] == 0).all() and (full[~mask][1:] != 0).any()


def test_grpo_loss_on_policy_is_minus_the_advantage_and_kl_follows_the_reference(items, tiny_model_dir):
    """On-policy (old log-probs = current) the ratio is 1, so token-mean pg_loss = -mean A over
    action tokens; a weight-0 sequence counts for nothing; a reference 0.1 nats below the
    policy on every action token gives k1 = 0.1 and k3 = e^-0.1 - 1 + 0.1."""
    model, processor = load_policy(tiny_model_dir), load_processor(tiny_model_dir)
    cache = FrameCache(1 << 26)
    batch = items[1:3]
    with torch.no_grad():
        current = [sequence_logprobs(model, processor, it, cache=cache).tolist() for it in batch]
    batch = with_engine_logprobs(batch, current)
    ref = [[lp - 0.1 for lp in lps] for lps in current]
    n = [sum(it.seq.action_mask) for it in batch]
    with torch.no_grad():
        terms = grpo_loss_for(model, processor, batch, [0.5, -2.0], ref, beta=0.5,
                              kl_estimator="k1", cache=cache)
        assert terms.result.ratio_mean == pytest.approx(1.0, abs=1e-5)
        assert terms.result.pg_loss == pytest.approx((-0.5 * n[0] + 2.0 * n[1]) / sum(n), abs=1e-5)
        assert terms.result.kl == pytest.approx(0.1, abs=1e-5)
        assert float(terms.result.loss) == pytest.approx(terms.result.pg_loss + 0.05, abs=1e-5)
        assert terms.action_tokens == sum(n) and terms.sequences == 2
        only_first = grpo_loss_for(model, processor, batch, [0.5, -2.0], ref, beta=0.5,
                                   kl_estimator="k3", weights=[1.0, 0.0], cache=cache)
        assert only_first.result.pg_loss == pytest.approx(-0.5, abs=1e-5)
        assert only_first.result.kl == pytest.approx(float(torch.tensor(-0.1).exp()) - 1 + 0.1,
                                                     abs=1e-5)
        assert only_first.action_tokens == n[0] and only_first.sequences == 1


# ---- the learner group on local Ray --------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def make_group(tiny_model_dir, zero_stage, lr=2e-3, **options):
    from actors.learner import LearnerGroup

    cfg = LearnerConfig(world_size=2, num_cpus_per_worker=0.5, zero_stage=zero_stage, lr=lr,
                        micro_batch_tokens=256, max_grad_norm=1.0, **options)
    return LearnerGroup(cfg, str(tiny_model_dir), total_steps=4, grpo=GRPOConfig(beta=0.0))


@pytest.fixture(scope="module")
def group(ray_local, tiny_model_dir):
    g = make_group(tiny_model_dir, zero_stage=2)
    print(f"\nlearner group start (ZeRO-2): {g.start_s:.1f}s")
    yield g
    g.shutdown()


def test_group_preload_fills_each_ranks_cache(group, items):
    """The first test on the group, so its caches are still empty."""
    assert group.preload(items) == len(shown_frames(items))
    assert group.preload(items) == 0


def rank_weights(group):
    import ray

    return ray.get([w.weights.remote(rank0_only=False) for w in group.workers])


def local_logprobs(state, tiny_model_dir, items):
    model = load_policy(tiny_model_dir)
    model.load_state_dict(state)
    processor = load_processor(tiny_model_dir)
    with torch.no_grad():
        return [sequence_logprobs(model, processor, it, cache=FrameCache(1 << 26), action_only=True)
                for it in items]


def test_group_logprobs_equal_a_local_forward_pass(group, items, tiny_model_dir):
    ours = group.logprobs(items)
    local = local_logprobs(group.weights(), tiny_model_dir, items)
    for it, got, want in zip(items, ours, local):
        assert len(got) == len(it) and got[0] == 0.0
        assert got == pytest.approx(want.tolist(), abs=1e-4)


def whole_batch_sft_grad_norm(state, tiny_model_dir, items):
    """The gradient norm of the whole batch's SFT loss (mean over all its action tokens) in one
    process: what the ranks' scaled, averaged gradients must add up to."""
    model = load_policy(tiny_model_dir).train()
    model.load_state_dict(state)
    processor = load_processor(tiny_model_dir)
    loss, _ = sft_loss_for(model, processor, items, cache=FrameCache(1 << 26))
    loss.backward()
    return torch.linalg.vector_norm(torch.stack(
        [p.grad.norm() for p in model.parameters() if p.grad is not None])).item()


def test_group_logprobs_equal_the_engines_on_a_sampled_episode(group, items, tiny_model_dir):
    """An episode sampled by the HF engine from the group's current weights: the group's
    log-probs on every generated token of every turn equal the engine's."""
    from vrt_ray.engines.base import SamplingParams
    from vrt_ray.engines.hf import HFEngine
    from vrt_ray.episodes import run_episodes

    model = load_policy(tiny_model_dir)
    model.load_state_dict(group.weights())
    engine = HFEngine(model, load_processor(tiny_model_dir), seed=1)
    videos = items[0].videos
    job = EpisodeJob(EpisodeInput("p1", "a red square", videos, {"A": 24, "B": 16}))
    (trajectory,) = run_episodes(engine, [job], load_preset("vrt"),
                                 Budgets(initial_frames=2, memory_window=4, max_turns=2),
                                 SamplingParams(temperature=1.0, max_new_tokens=8), PIXELS,
                                 cache=FrameCache(1 << 26))
    sequences = train_sequences(trajectory)
    assert sequences and all(it.seq.logprobs for it in sequences)
    for it, ours in zip(sequences, group.logprobs(sequences)):
        positions = [p for p, a in enumerate(it.seq.action_mask) if a]
        assert [ours[p] for p in positions] == pytest.approx(
            [it.seq.logprobs[p] for p in positions], abs=2e-4)


def test_grpo_step_scores_at_the_sampling_temperature(group, items, tiny_model_dir):
    """Sampled at T = 0.5 from the group's weights: the first GRPO step is on-policy (ratio 1,
    nothing clipped) only because the learner scores at the same temperature."""
    from vrt_ray.engines.base import SamplingParams
    from vrt_ray.engines.hf import HFEngine
    from vrt_ray.episodes import run_episodes

    model = load_policy(tiny_model_dir)
    model.load_state_dict(group.weights())
    engine = HFEngine(model, load_processor(tiny_model_dir), seed=2)
    job = EpisodeJob(EpisodeInput("p1", "a red square", items[0].videos, {"A": 24, "B": 16}))
    (trajectory,) = run_episodes(engine, [job], load_preset("vrt"),
                                 Budgets(initial_frames=2, memory_window=4, max_turns=1),
                                 SamplingParams(temperature=0.5, max_new_tokens=8), PIXELS,
                                 cache=FrameCache(1 << 26))
    sequences = train_sequences(trajectory)
    metrics = group.train_grpo(sequences, [1.0] * len(sequences), temperature=0.5)
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["clip_fraction"] == 0.0


def test_sft_steps_lower_the_loss_on_their_sequences(group, items, tiny_model_dir):
    expected_norm = whole_batch_sft_grad_norm(group.weights(), tiny_model_dir, items)
    first = group.train_sft(items)  # 4 sequences of unequal length over 2 ranks
    assert first["grad_norm"] == pytest.approx(expected_norm, rel=1e-3)
    losses = [first["loss"]] + [group.train_sft(items)["loss"] for _ in range(3)]
    print(f"sft losses: {[round(l, 3) for l in losses]}")
    assert losses[-1] < losses[0] - 0.05


def test_a_sequence_of_loss_weight_2_steps_as_two_copies_of_it(group, items, tiny_model_dir):
    state = group.weights()
    expected_norm = whole_batch_sft_grad_norm(state, tiny_model_dir, [items[0], *items])
    assert expected_norm != pytest.approx(whole_batch_sft_grad_norm(state, tiny_model_dir, items),
                                          rel=2e-3)  # the weight changes the step
    weighted = [dataclasses.replace(items[0], loss_weight=2.0), *items[1:]]
    assert group.train_sft(weighted)["grad_norm"] == pytest.approx(expected_norm, rel=1e-3)


def test_a_text_only_micro_batch_steps_beside_image_ones(group, items, tiny_model_dir):
    """A batch that puts a text-only sequence (a copying sequence's kind) in its own
    micro-batch on one rank while the other rank runs an image sequence: the ranks' gradients
    still add up to the whole batch's, and they stay identical."""
    batch = [fake(40), *items[:3]]
    assert any(not any(shard.items[i].seq.visuals for i, _ in group_)
               for shard in make_shards(batch, 2, 256) for group_ in shard.micro_batches)
    expected_norm = whole_batch_sft_grad_norm(group.weights(), tiny_model_dir, batch)
    assert group.train_sft(batch)["grad_norm"] == pytest.approx(expected_norm, rel=1e-3)
    r0, r1 = rank_weights(group)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)


def with_engine_logprobs(items, logprobs):
    """The sequences as an engine would have returned them: its log-probs on action tokens."""
    return [dataclasses.replace(it, seq=dataclasses.replace(
        it.seq, logprobs=[lp if a else None for lp, a in zip(lps, it.seq.action_mask)]))
        for it, lps in zip(items, logprobs)]


def grpo_step_changes_weights_identically(group, items):
    batch = with_engine_logprobs(items[:3], group.logprobs(items[:3]))  # 3: one rank pads
    before = group.weights()
    metrics = group.train_grpo(batch, advantages=[1.0, -1.0, 0.5])
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-3)  # on-policy
    assert metrics["clip_fraction"] == 0.0 and metrics["grad_norm"] > 0
    r0, r1 = rank_weights(group)
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    changed = [k for k in r0 if not torch.equal(r0[k], before[k])]
    assert len(changed) > len(r0) // 2
    return metrics


def test_grpo_step_changes_weights_and_ranks_stay_identical(group, items):
    version = group.version()
    metrics = grpo_step_changes_weights_identically(group, items)
    assert group.version() == version + 1
    print(f"grpo step: {metrics['step_s']:.2f}s {metrics}")


def test_save_writes_a_loadable_policy_with_the_new_weights(group, tmp_path, tiny_model_dir):
    out = tmp_path / "ckpt" / "step-1"
    assert group.save(str(out)) == str(out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # staging renamed
    loaded = load_policy(out).state_dict()
    state = group.weights()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert load_processor(out).tokenizer.convert_tokens_to_ids("<answer>") == \
        load_processor(tiny_model_dir).tokenizer.convert_tokens_to_ids("<answer>")


def test_zero3_group_steps_gathers_and_scores(ray_local, items, tiny_model_dir, tmp_path):
    """ZeRO-3 with gradient checkpointing and a cosine schedule."""
    group = make_group(tiny_model_dir, zero_stage=3, gradient_checkpointing=True,
                       lr_schedule="cosine")
    try:
        print(f"\nlearner group start (ZeRO-3): {group.start_s:.1f}s")
        local = local_logprobs(group.weights(), tiny_model_dir, items[:2])
        for got, want in zip(group.logprobs(items[:2]), local):
            assert got == pytest.approx(want.tolist(), abs=1e-4)
        metrics = grpo_step_changes_weights_identically(group, items)
        assert 0 < metrics["lr"] < 2e-3  # cosine decay after one of 4 steps
        out = group.save(str(tmp_path / "zero3"))  # parameters gathered from both ranks
        loaded, state = load_policy(out).state_dict(), group.weights()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    finally:
        group.shutdown()
