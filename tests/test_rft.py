"""RFT: the filter keeps all-correct trajectories once per distinct text; fine-tuning on kept
(teacher-replayed) trajectories lowers their loss; a whole `rft` run on local Ray adds up."""
import pytest
from data_helpers import stage_overrides
from mlflow.tracking import MlflowClient

from vrt_ray import config
from vrt_ray.data.synth import SynthSettings, generate


def _score(all_correct, **correct):
    return {"all_correct": all_correct, "format": 1.0, "correct": correct}


def _traj(pair, tokens):
    return {"pair_id": pair, "sample_index": 0, "policy_version": 0, "preset": "vrt",
            "videos": {}, "budget": {"min_pixels": 1, "max_pixels": 2, "backend": "pyav"},
            "turns": [{"prompt_ids": [1], "token_ids": tokens, "logprobs": [], "finish_reason":
                       "stop", "visuals": []}]}


def test_select_keeps_all_correct_once_per_text_and_keep_rates_by_hand():
    from jobs.rft import select
    from vrt_ray.rewards import score_rates

    trajectories = [_traj("p", [5, 6]), _traj("p", [5, 6]), _traj("p", [7]), _traj("q", [5, 6]),
                    _traj("q", [9])]
    scores = [_score(True, TA=True, overall=True), _score(True, TA=True, overall=True),
              _score(False, TA=False, overall=True), _score(True, TA=True, overall=True),
              _score(False, overall=False)]
    kept = select(trajectories, scores)
    assert [(t.pair_id, t.turns[0].token_ids) for t in kept] == [("p", [5, 6]), ("q", [5, 6])]
    rates = score_rates(scores, ["TA", "VQ"])
    assert rates == {"all_correct": 0.6, "format": 1.0, "TA": 0.75, "overall": 0.8}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, local_ray):
    root = tmp_path_factory.mktemp("rft")
    generate(root / "data", SynthSettings(pairs=6, min_frames=16, max_frames=32, seed=4))
    return root, tiny_model_dir


def _cfg(root, model, *more):
    return config.load("tiny_cpu", stage_overrides(
        root, model, "rft.samples_per_pair=2", "protocol.max_new_tokens=32", "protocol.max_turns=2",
        "rft.batch_size=2", "rft.lr=2e-3", "rft.epochs=3", *more))


def test_fine_tuning_on_kept_trajectories_lowers_their_loss(setup):
    """Teacher traces replayed stand in for kept samples: all correct by construction."""
    from actors.learner import LearnerGroup
    from jobs import cold_start, rft
    from vrt_ray.learner_core import train_sequences
    from vrt_ray.model_inputs import PixelBudget
    from vrt_ray.models import load_processor
    from vrt_ray.token_loss import TokenClasses
    from vrt_ray.tracking import Tracker

    root, model = setup
    cfg = _cfg(root, model, "tracking.enabled=false")
    traces = [t for t in cold_start.read_traces(cfg) if t["split"] == "train"][:3]
    kept = cold_start.trace_trajectories(cfg, str(model), traces)
    items = [s for t in kept for s in train_sequences(t)]
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    classes = TokenClasses(load_processor(str(model)).tokenizer)

    def loss_of(model_dir):
        probe = LearnerGroup(cfg.learner, str(model_dir), pixels=pixels)
        try:
            return cold_start.held_out_loss(probe, items, classes)["all"]
        finally:
            probe.shutdown()

    before = loss_of(model)
    assert rft._fine_tune(cfg, str(model), str(root / "tuned"), kept, Tracker(cfg, "x")) == 3 * 2
    assert loss_of(root / "tuned") < before


def test_sampled_pairs_are_a_seeded_subset_in_file_order():
    from jobs.rft import sampled_pairs

    pairs = list("abcdefgh")
    assert sampled_pairs(pairs, 0, 1) == pairs and sampled_pairs(pairs, 9, 1) == pairs
    three = sampled_pairs(pairs, 3, 1)
    assert len(three) == 3 and three == sorted(three) and set(three) <= set(pairs)
    assert sampled_pairs(pairs, 3, 1) == three
    assert any(sampled_pairs(pairs, 3, seed) != three for seed in range(2, 6))


def test_an_rft_run_samples_every_pair_and_logs_keep_rates(setup):
    from jobs import rft
    from vrt_ray.models import load_policy

    root, model = setup
    summary = rft.main(_cfg(root, model))
    train_pairs = len((root / "data" / "train.jsonl").read_text().splitlines())
    assert summary["samples"] == 2 * train_pairs
    assert 0 <= summary["kept"] <= summary["samples"]
    assert 0.0 <= summary["keep_rate"]["all_correct"] <= 1.0
    load_policy(summary["model"])
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    logged = client.get_run(summary["tracking_run_id"]).data.metrics
    assert logged["keep_rate/all_correct"] == summary["keep_rate"]["all_correct"]
    assert logged["kept_trajectories"] == summary["kept"]
